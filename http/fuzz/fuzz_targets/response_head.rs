//! The body and what it checks: `pbts_http::fuzzing::response_head`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_http::fuzzing::response_head(data));
