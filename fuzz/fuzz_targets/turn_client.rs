//! Server responses to the TURN client (raw, challenges, signed answers with any attributes), between API calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turn::fuzz::client_responses(data));
