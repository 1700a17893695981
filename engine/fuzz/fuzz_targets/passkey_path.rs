//! The body and what it checks: `pbts_engine::fuzzing::passkey_path`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_engine::fuzzing::passkey_path(data));
