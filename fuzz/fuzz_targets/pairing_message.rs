//! Pairing messages from an untrusted peer: a pairing fed arbitrary JSON never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pairing::fuzz_pairing(data));
