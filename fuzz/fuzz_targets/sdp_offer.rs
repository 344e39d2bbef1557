//! Any bytes as an SDP offer (WHIP/WHEP POST body, a member's first offer) joining the SFU in each role.
//!
//! The SFU contains str0m's panics (catch_unwind around the engine); those are not crashes, so
//! the hook is silenced and only a panic that escapes the SFU aborts the run.
#![no_main]

static QUIET: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    sfu::fuzz::offer(data)
});
