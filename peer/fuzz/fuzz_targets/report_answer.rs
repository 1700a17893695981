//! The body and what it checks: `pbts_peer::fuzzing::report_answer`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_peer::fuzzing::report_answer(data));
