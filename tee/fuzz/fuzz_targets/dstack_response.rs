//! The body and what it checks: `pbts_tee::fuzzing::dstack_response`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_tee::fuzzing::dstack_response(data));
