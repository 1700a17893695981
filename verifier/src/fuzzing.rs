//! The bodies of the fuzz targets in `verifier/fuzz/`: one function per target, each taking the
//! fuzzer's bytes. They assert more than "no panic": the decoder never over-consumes, and what
//! it accepts re-encodes to a frame that decodes to the same value.
//!
//! The nightly fuzzer calls them from `fuzz/fuzz_targets/<target>.rs`; on stable,
//! `tests/fuzz_corpus.rs` replays every seed (`fuzz/seeds/<target>/`) and every crash input
//! (`fuzz/regressions/<target>/`) through them, so CI keeps what the fuzzer found.
//! `scripts/fuzz.sh` runs them all.
//!
//! Not an API: for the fuzzer and the replay test only.

use crate::bep10::{
    ExtensionIds, Frame, MAX_MESSAGE_LEN, decode_frame, write_handshake, write_message,
};

/// A fuzz target: the name of its `[[bin]]` in `fuzz/Cargo.toml`, and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[("bep10_frame", bep10_frame)];

/// BEP 10 frame decoding: never over-consumes; every message of ours and every extended
/// handshake it accepts re-encodes to a frame that decodes to the same value (unknown keys are
/// dropped, so the bytes may differ); every refusal has a message.
pub fn bep10_frame(data: &[u8]) {
    let ids = ExtensionIds::LOCAL_DEFAULT;
    let (frame, used) = match decode_frame(data, &ids) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    assert!(used <= data.len());
    match frame {
        Frame::Pbts(message) => {
            let mut again = Vec::new();
            write_message(&ids, &message, &mut again).expect("a decoded message re-encodes");
            let (back, n) = decode_frame(&again, &ids).expect("decodes").expect("complete");
            assert_eq!(n, again.len());
            assert_eq!(back, Frame::Pbts(message));
        }
        Frame::Handshake(h) => {
            let mut again = Vec::new();
            write_handshake(&h, &mut again);
            // A lossily decoded `v` may grow past the limit; anything else must come back.
            if again.len() - 4 <= MAX_MESSAGE_LEN {
                let (back, n) = decode_frame(&again, &ids).expect("decodes").expect("complete");
                assert_eq!(n, again.len());
                assert_eq!(back, Frame::Handshake(h));
            }
        }
        _ => {}
    }
}
