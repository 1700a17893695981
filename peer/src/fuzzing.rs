//! The bodies of the fuzz targets in `peer/fuzz/`: one function per target, each taking the
//! fuzzer's bytes. The nightly fuzzer calls them from `fuzz/fuzz_targets/<target>.rs`; on
//! stable, `tests/fuzz_corpus.rs` replays every seed and crash input through them.
//!
//! Not an API: for the fuzzer and the replay test only. (The peer wire, UDP tracker and
//! BEP 10 decoders the peer uses are fuzzed in `pbts-proto` and `pbts-verifier`.)

use crate::tracker::TrackerError;

/// A fuzz target: the name of its `[[bin]]` in `fuzz/Cargo.toml`, and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] =
    &[("tracker_response", tracker_response), ("report_answer", report_answer)];

/// A whole HTTP tracker response as it arrives (head, framing, chunked body, bencoded
/// announce): decoded with the connection open and closed, never past the size bound, and
/// every error with a message.
pub fn tracker_response(data: &[u8]) {
    const LIMIT: usize = 1 << 20;
    for eof in [false, true] {
        let mut head = None;
        match crate::tracker::http::complete_body(data, &mut head, eof, LIMIT) {
            Ok(Some(body)) => {
                assert!(body.len() <= data.len());
                match crate::tracker::http::parse_announce_body(&body) {
                    Ok(r) => assert!(r.peers.iter().all(|p| p.port() != 0)),
                    Err(e) => has_message(&e),
                }
            }
            Ok(None) => {}
            Err(e) => has_message(&e),
        }
    }
}

/// The tracker's answer to a `/report`: the first byte is how many receipts were sent, the
/// rest the JSON. Either one verdict per receipt sent, in order, or an error.
pub fn report_answer(data: &[u8]) {
    let Some((&n, json)) = data.split_first() else { return };
    let n = usize::from(n);
    match crate::receipts::report::parse_verdicts(json, n) {
        Ok(v) => assert_eq!(v.len(), n),
        Err(e) => assert!(!e.is_empty()),
    }
}

fn has_message(e: &TrackerError) {
    assert!(!e.to_string().is_empty());
}
