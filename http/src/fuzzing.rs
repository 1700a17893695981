//! The bodies of the fuzz targets in `http/fuzz/`: one function per target, each taking the
//! fuzzer's bytes. They assert more than "no panic": parsers never over-consume, whatever parses
//! writes back to bytes that parse to the same value, and (with the `fuzz-oracle` feature) the
//! request parser agrees with httparse on the syntax both share.
//!
//! The nightly fuzzer calls them from `fuzz/fuzz_targets/<target>.rs`; on stable,
//! `tests/fuzz_corpus.rs` replays every seed (`fuzz/seeds/<target>/`) and every crash input
//! (`fuzz/regressions/<target>/`) through them, so CI keeps what the fuzzer found.
//! `scripts/fuzz.sh` runs them all.
//!
//! Not an API: for the fuzzer and the replay test only.

use crate::query::{
    pairs, parse_announce, parse_scrape, percent_decode, percent_decode_into, percent_encode_into,
    write_announce_query, write_scrape_query,
};
use crate::request::{Limits, Status, parse_request, parse_response_head};

/// A fuzz target: the name of its `[[bin]]` in `fuzz/Cargo.toml`, and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] =
    &[("request", request), ("announce_query", announce_query), ("response_head", response_head)];

/// `parse_request`: never over-consumes, is stable under re-parsing, every proper prefix of a
/// complete request is partial, and (with `fuzz-oracle`) it agrees with httparse.
pub fn request(data: &[u8]) {
    let limits = Limits::default();
    let ours = parse_request(data, &limits);

    if let Ok(Status::Complete(req, used)) = &ours {
        assert!(*used <= data.len());
        // The consumed bytes alone parse to the same request.
        assert_eq!(
            parse_request(&data[..*used], &limits),
            Ok(Status::Complete(req.clone(), *used))
        );
        // Every proper prefix is incomplete.
        if *used > 0 {
            assert_eq!(parse_request(&data[..used - 1], &limits), Ok(Status::Partial));
        }
    }

    #[cfg(feature = "fuzz-oracle")]
    against_httparse(data, &ours);
}

/// The differential check: a request we accept is one httparse accepts (when its target is
/// UTF-8, as httparse requires) with the same method, version, path and query; a request
/// httparse accepts may fail only our semantic checks, never syntax ones.
#[cfg(feature = "fuzz-oracle")]
fn against_httparse(
    data: &[u8],
    ours: &Result<Status<crate::request::Request<'_>>, crate::request::ParseError>,
) {
    use crate::request::{Method, ParseError};

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut theirs = httparse::Request::new(&mut headers);
    let theirs_status = theirs.parse(data);
    match (ours, &theirs_status) {
        (Ok(Status::Complete(req, used)), Ok(httparse::Status::Complete(head_len))) => {
            assert_eq!(head_len + req.body.len(), *used);
            assert_eq!(theirs.version, Some(req.minor_version));
            let method = theirs.method.expect("complete requests have a method").as_bytes();
            assert_eq!(req.method, Method::from_bytes(method));
            let target = theirs.path.expect("complete requests have a path").as_bytes();
            let rest = target.strip_prefix(req.path).expect("path is a prefix of the target");
            assert!(rest.is_empty() || (rest[0] == b'?' && &rest[1..] == req.query));
        }
        // httparse rejects non-UTF-8 targets (it returns the path as `&str`); we accept
        // obs-text. Otherwise a request we accept must be one httparse accepts.
        (Ok(Status::Complete(req, _)), other)
            if std::str::from_utf8(req.path).is_ok() && std::str::from_utf8(req.query).is_ok() =>
        {
            panic!("accepted a request httparse did not: {other:?}");
        }
        // A request httparse accepts may only fail our semantic checks, never syntax ones.
        (Err(e), Ok(httparse::Status::Complete(_))) => assert!(
            matches!(
                e,
                ParseError::HeadersTooLarge { .. }
                    | ParseError::BodyTooLarge { .. }
                    | ParseError::InvalidContentLength
                    | ParseError::TransferEncodingUnsupported
            ),
            "rejected a request httparse accepted: {e:?}"
        ),
        _ => {}
    }
}

/// Announce and scrape queries: whatever parses writes back to a query that parses to the same
/// value; percent-decoding agrees with its lazy twin and round-trips.
pub fn announce_query(data: &[u8]) {
    if let Ok(req) = parse_announce(data) {
        let mut out = Vec::new();
        write_announce_query(&req, &mut out);
        assert_eq!(parse_announce(&out), Ok(req));
    }

    if let Ok(hashes) = parse_scrape(data, 128) {
        let mut out = Vec::new();
        write_scrape_query(&hashes, &mut out);
        assert_eq!(parse_scrape(&out, 128), Ok(hashes));
    }

    for (k, v) in pairs(data) {
        assert!(k.len() + v.len() <= data.len());
    }

    let mut decoded = Vec::new();
    let eager = percent_decode_into(data, &mut decoded).map(|()| decoded.clone());
    let lazy: Result<Vec<u8>, _> = percent_decode(data).collect();
    assert_eq!(eager, lazy);
    if eager.is_ok() {
        let mut encoded = Vec::new();
        percent_encode_into(&decoded, &mut encoded);
        let mut again = Vec::new();
        percent_decode_into(&encoded, &mut again).expect("encoder output decodes");
        assert_eq!(again, decoded);
    }
}

/// The client-side response-head parser: never over-consumes, a complete head has a
/// three-digit status and a length equal to what it consumed, the head alone parses to the same
/// head, and every proper prefix of it is partial.
pub fn response_head(data: &[u8]) {
    if let Ok(Status::Complete(head, used)) = parse_response_head(data) {
        assert!(used <= data.len());
        assert_eq!(head.head_len, used);
        assert!((100..=999).contains(&head.status));
        assert_eq!(parse_response_head(&data[..used]), Ok(Status::Complete(head, used)));
        assert_eq!(parse_response_head(&data[..used - 1]), Ok(Status::Partial));
    }
}
