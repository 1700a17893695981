//! Replays the fuzz seeds and every crash input the fuzzer found (`fuzz/seeds/`,
//! `fuzz/regressions/`) through the target bodies in [`pbts_peer::fuzzing`], on stable.

#[path = "../../scripts/fuzz_replay.rs"]
mod fuzz_replay;

#[test]
fn fuzz_seeds_and_regressions_replay() {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    fuzz_replay::replay(&fuzz, pbts_peer::fuzzing::TARGETS);
}
