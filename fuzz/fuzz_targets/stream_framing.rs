//! STUN and ChannelData over a byte stream (RFC 4571-style framing): whole frames or an error, no byte lost.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| net::fuzz_stream_decoder(data));
