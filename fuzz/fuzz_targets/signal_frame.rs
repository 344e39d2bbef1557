//! Signaling frames from untrusted clients: parsing never panics and round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signal::fuzz_client_frame(data));
