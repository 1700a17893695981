//! The body and what it checks: `pbts_tee::fuzzing::tdx_quote`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_tee::fuzzing::tdx_quote(data));
