//! The body and what it checks: `pbts_proto::fuzzing::peer_wire`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_proto::fuzzing::peer_wire(data));
