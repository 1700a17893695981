//! The body and what it checks: `pbts_engine::fuzzing::swarm_snapshot`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pbts_engine::fuzzing::swarm_snapshot(data));
