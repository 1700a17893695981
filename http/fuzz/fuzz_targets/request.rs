//! The body and what it checks: `pbts_http::fuzzing::request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_http::fuzzing::request(data));
