//! BEP 10 frame decoding: never panics, never over-consumes, and every message of ours it
//! accepts re-encodes to a frame that decodes to the same message (unknown keys are dropped, so
//! the bytes may differ). `cargo fuzz run bep10_frame` from `verifier/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_verifier::bep10::{ExtensionIds, Frame, decode_frame, write_message};

fuzz_target!(|data: &[u8]| {
    let ids = ExtensionIds::LOCAL_DEFAULT;
    if let Ok(Some((frame, used))) = decode_frame(data, &ids) {
        assert!(used <= data.len());
        if let Frame::Pbts(message) = frame {
            let mut again = Vec::new();
            write_message(&ids, &message, &mut again).expect("a decoded message re-encodes");
            let (back, n) = decode_frame(&again, &ids).expect("decodes").expect("complete");
            assert_eq!(n, again.len());
            assert_eq!(back, Frame::Pbts(message));
        }
    }
});
