//! Any bytes as the server's TOML configuration: parse and validate never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::config::fuzz_toml(data));
