//! Access tokens (HS256 JWTs) from untrusted clients: verify gives claims or an error, never a
//! panic; accepted claims re-mint to a token that verifies to the same claims.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| auth::fuzz::verify(data));
