//! The body and what it checks: `pbts_proto::fuzzing::udp_response`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_proto::fuzzing::udp_response(data));
