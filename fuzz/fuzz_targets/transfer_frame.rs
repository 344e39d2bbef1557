//! Transfer-protocol messages from an untrusted peer: decoding never panics, and what decodes
//! re-encodes to the same message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| transfer::fuzz_decode(data));
