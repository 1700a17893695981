//! The body and what it checks: `pbts_peer::fuzzing::tracker_response`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_peer::fuzzing::tracker_response(data));
