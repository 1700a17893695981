//! `parse_request`: never panics, never over-consumes, is stable under re-parsing, and agrees
//! with httparse on the syntax both parsers share.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_http::request::{Limits, Method, ParseError, Status, parse_request};

fuzz_target!(|data: &[u8]| {
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

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut theirs = httparse::Request::new(&mut headers);
    let theirs_status = theirs.parse(data);
    match (&ours, &theirs_status) {
        (Ok(Status::Complete(req, used)), Ok(httparse::Status::Complete(head_len))) => {
            assert_eq!(head_len + req.body.len(), *used);
            assert_eq!(theirs.version, Some(req.minor_version));
            let method = theirs.method.expect("complete requests have a method").as_bytes();
            let expected = match method {
                b"GET" => Method::Get,
                b"HEAD" => Method::Head,
                b"POST" => Method::Post,
                b"PUT" => Method::Put,
                b"DELETE" => Method::Delete,
                _ => Method::Other,
            };
            assert_eq!(req.method, expected);
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
});
