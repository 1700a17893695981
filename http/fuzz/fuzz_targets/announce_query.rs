//! The body and what it checks: `pbts_http::fuzzing::announce_query`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_http::fuzzing::announce_query(data));
