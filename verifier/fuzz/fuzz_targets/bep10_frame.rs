//! The body and what it checks: `pbts_verifier::fuzzing::bep10_frame`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_verifier::fuzzing::bep10_frame(data));
