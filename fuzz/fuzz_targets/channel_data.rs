//! TURN ChannelData from untrusted peers: parsing never panics and round-trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stun::fuzz::channel_data(data));
