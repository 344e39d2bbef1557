//! IVF, H.264 Annex B and Ogg/Opus files: frames or an error, never a panic or a hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| media_file::fuzz_reader(data));
