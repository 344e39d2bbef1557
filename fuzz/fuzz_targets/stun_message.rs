//! STUN messages from untrusted peers: parsing and checks never panic; attributes round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stun::fuzz::message(data));
