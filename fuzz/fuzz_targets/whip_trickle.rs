//! WHIP/WHEP PATCH bodies (trickle-ice-sdpfrag): parse or a clear error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfu::trickle::fuzz(data));
