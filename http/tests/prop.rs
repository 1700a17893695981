//! Property tests: round trips for queries and bencode, the request parser against the slow
//! oracle in `oracle/mod.rs`, and "never panics, never over-consumes" on arbitrary bytes.

mod oracle;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pbts_http::query::{
    self, AnnounceRequest, MAX_KEY_LEN, MAX_TRACKER_ID_LEN, percent_decode_into,
    percent_encode_into,
};
use pbts_http::request::{Limits, Status, parse_request};
use pbts_proto::bencode::{self, DecodeLimits, Encoder, Value};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Announce and scrape queries

fn event() -> impl Strategy<Value = AnnounceEvent> {
    prop_oneof![
        Just(AnnounceEvent::None),
        Just(AnnounceEvent::Started),
        Just(AnnounceEvent::Stopped),
        Just(AnnounceEvent::Completed),
        Just(AnnounceEvent::Paused),
    ]
}

prop_compose! {
    fn announce()(
        info_hash in any::<[u8; 20]>(),
        peer_id in any::<[u8; 20]>(),
        port in 1u16..,
        uploaded in any::<u64>(),
        downloaded in any::<u64>(),
        left in any::<Option<u64>>(),
        event in event(),
        compact in any::<bool>(),
        no_peer_id in any::<bool>(),
        numwant in any::<Option<u32>>(),
        key in proptest::option::of(vec(any::<u8>(), 0..=MAX_KEY_LEN)),
        tracker_id in proptest::option::of(vec(any::<u8>(), 0..=MAX_TRACKER_ID_LEN)),
        ip in any::<Option<IpAddr>>(),
        ipv4 in any::<Option<Ipv4Addr>>(),
        ipv6 in any::<Option<Ipv6Addr>>(),
    ) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
            port, uploaded, downloaded, left, event, compact, no_peer_id, numwant, key,
            tracker_id, ip, ipv4, ipv6,
        }
    }
}

proptest! {
    #[test]
    fn announce_round_trip(req in announce()) {
        let mut out = Vec::new();
        query::write_announce_query(&req, &mut out);
        prop_assert_eq!(query::parse_announce(&out), Ok(req));
    }

    #[test]
    fn scrape_round_trip(hashes in vec(any::<[u8; 20]>().prop_map(InfoHash), 0..80)) {
        let mut out = Vec::new();
        query::write_scrape_query(&hashes, &mut out);
        prop_assert_eq!(query::parse_scrape(&out, 80), Ok(hashes.clone()));
        if !hashes.is_empty() {
            let limit = hashes.len() - 1;
            prop_assert_eq!(
                query::parse_scrape(&out, limit),
                Err(query::QueryError::TooManyInfoHashes { limit })
            );
        }
    }

    #[test]
    fn percent_round_trip(bytes in vec(any::<u8>(), 0..100)) {
        let mut encoded = Vec::new();
        percent_encode_into(&bytes, &mut encoded);
        prop_assert!(encoded.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
        let mut decoded = Vec::new();
        prop_assert_eq!(percent_decode_into(&encoded, &mut decoded), Ok(()));
        prop_assert_eq!(&decoded, &bytes);
        let lazy: Result<Vec<u8>, _> = query::percent_decode(&encoded).collect();
        prop_assert_eq!(lazy, Ok(bytes));
    }

    #[test]
    fn percent_decode_agrees_with_lazy(input in vec(prop_oneof![Just(b'%'), Just(b'+'), Just(b'a'), Just(b'F'), any::<u8>()], 0..40)) {
        let mut eager = Vec::new();
        let eager = percent_decode_into(&input, &mut eager).map(|()| eager);
        let lazy: Result<Vec<u8>, _> = query::percent_decode(&input).collect();
        prop_assert_eq!(eager, lazy);
    }

    #[test]
    fn query_parsers_never_panic(input in vec(any::<u8>(), 0..300)) {
        let _ = query::parse_announce(&input);
        let _ = query::parse_scrape(&input, 10);
        prop_assert!(query::pairs(&input).all(|(k, v)| k.len() + v.len() <= input.len()));
    }

    #[test]
    fn announce_mutations_never_panic(
        req in announce(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut out = Vec::new();
        query::write_announce_query(&req, &mut out);
        for (at, byte) in edits {
            let i = at.index(out.len());
            out[i] = byte;
        }
        if let Ok(parsed) = query::parse_announce(&out) {
            // Whatever parses writes back to something that parses the same way.
            let mut again = Vec::new();
            query::write_announce_query(&parsed, &mut again);
            prop_assert_eq!(query::parse_announce(&again), Ok(parsed));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bencode

/// An owned bencode tree; `BTreeMap` keeps dictionary keys sorted and unique, i.e. canonical.
#[derive(Clone, Debug)]
enum Owned {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Self>),
    Dict(BTreeMap<Vec<u8>, Self>),
}

fn owned() -> impl Strategy<Value = Owned> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Owned::Int),
        (-20i64..20).prop_map(Owned::Int),
        vec(any::<u8>(), 0..24).prop_map(Owned::Bytes),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Owned::List),
            btree_map(vec(any::<u8>(), 0..6), inner, 0..8).prop_map(Owned::Dict),
        ]
    })
}

fn borrow(o: &Owned) -> Value<'_> {
    match o {
        Owned::Int(v) => Value::Int(*v),
        Owned::Bytes(b) => Value::Bytes(b),
        Owned::List(items) => Value::List(items.iter().map(borrow).collect()),
        Owned::Dict(map) => {
            Value::Dict(map.iter().map(|(k, v)| (k.as_slice(), borrow(v))).collect())
        }
    }
}

/// Streams `o` through the token encoder (independent of `Value::encode`).
fn stream(o: &Owned, enc: &mut Encoder<'_>) {
    match o {
        Owned::Int(v) => enc.int(*v),
        Owned::Bytes(b) => enc.bytes(b),
        Owned::List(items) => {
            enc.begin_list();
            items.iter().for_each(|i| stream(i, enc));
            enc.end();
        }
        Owned::Dict(map) => {
            enc.begin_dict();
            for (k, v) in map {
                enc.bytes(k);
                stream(v, enc);
            }
            enc.end();
        }
    }
}

const LIMITS: DecodeLimits = DecodeLimits { max_depth: 64, max_items: 1 << 20 };

proptest! {
    #[test]
    fn bencode_round_trip(o in owned(), junk in vec(any::<u8>(), 0..8)) {
        let value = borrow(&o);
        let mut encoded = Vec::new();
        value.encode(&mut encoded);

        let mut streamed = Vec::new();
        let mut enc = Encoder::new(&mut streamed);
        stream(&o, &mut enc);
        prop_assert_eq!(enc.depth(), 0);
        prop_assert_eq!(&streamed, &encoded);

        prop_assert_eq!(bencode::decode(&encoded, &LIMITS), Ok(value.clone()));
        let mut with_junk = encoded.clone();
        with_junk.extend_from_slice(&junk);
        prop_assert_eq!(bencode::decode_prefix(&with_junk, &LIMITS), Ok((value, encoded.len())));
    }

    #[test]
    fn dict_spans_decode_to_entries(o in owned()) {
        let value = borrow(&o);
        let mut encoded = Vec::new();
        value.encode(&mut encoded);
        if let Value::Dict(entries) = &value {
            for (k, v) in entries {
                let span = bencode::dict_value_span(&encoded, k, &LIMITS).unwrap().unwrap();
                prop_assert_eq!(&bencode::decode(&encoded[span], &LIMITS).unwrap(), v);
            }
            prop_assert_eq!(bencode::dict_value_span(&encoded, b"\xff\xff\xff\xff\xff\xff\xff", &LIMITS), Ok(None));
        } else {
            prop_assert_eq!(bencode::dict_value_span(&encoded, b"info", &LIMITS), Ok(None));
        }
    }

    /// Canonical decoding is injective: anything that decodes re-encodes to the same bytes.
    #[test]
    fn decode_arbitrary_is_canonical(input in vec(prop_oneof![
        Just(b'i'), Just(b'l'), Just(b'd'), Just(b'e'), Just(b':'), Just(b'-'),
        (b'0'..=b'9'), any::<u8>(),
    ], 0..64)) {
        check_decode(&input)?;
    }

    #[test]
    fn decode_mutated_is_canonical(
        o in owned(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut encoded = Vec::new();
        borrow(&o).encode(&mut encoded);
        for (at, byte) in edits {
            if !encoded.is_empty() {
                let i = at.index(encoded.len());
                encoded[i] = byte;
            }
        }
        check_decode(&encoded)?;
    }
}

fn check_decode(input: &[u8]) -> Result<(), TestCaseError> {
    let limits = DecodeLimits { max_depth: 8, max_items: 64 };
    match bencode::decode_prefix(input, &limits) {
        Ok((value, used)) => {
            prop_assert!(used <= input.len());
            let mut again = Vec::new();
            value.encode(&mut again);
            prop_assert_eq!(&again[..], &input[..used]);
            let whole = bencode::decode(input, &limits);
            if used == input.len() {
                prop_assert_eq!(whole, Ok(value));
            } else {
                prop_assert_eq!(whole, Err(bencode::DecodeError::TrailingBytes { offset: used }));
            }
        }
        Err(e) => {
            prop_assert!(e.offset().is_none_or(|o| o <= input.len()), "{e:?}");
            prop_assert_eq!(bencode::decode(input, &limits), Err(e));
            prop_assert!(bencode::dict_value_span(input, b"a", &limits).is_err());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request parser against the oracle

fn eol() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![16 => Just(&b"\r\n"[..]), 8 => Just(&b"\n"[..]), 1 => Just(&b"\r\r\n"[..])]
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        16 => Just(b"GET".to_vec()),
        2 => prop::sample::select(vec!["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get", "G(T", "", "GET\t"])
            .prop_map(|m| m.as_bytes().to_vec()),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        100 => prop::sample::select(b"/abcXYZ09%?=&!(*~-._+".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        8 => vec(byte, 0..30).prop_map(|mut t| { t.insert(0, b'/'); t }),
        1 => Just(b"*".to_vec()),
        1 => Just(Vec::new()),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        10 => Just(b"HTTP/1.1".to_vec()),
        4 => Just(b"HTTP/1.0".to_vec()),
        1 => prop::sample::select(vec!["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "HTTP/1.10", "HTTP/1", "HTTP/1.1 ", "", "HTTP/a.b"])
            .prop_map(|v| v.as_bytes().to_vec()),
    ]
}

fn random_case(name: &str, upper: Vec<bool>) -> Vec<u8> {
    name.bytes()
        .zip(upper.into_iter().chain(std::iter::repeat(false)))
        .map(|(b, up)| if up { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() })
        .collect()
}

fn header() -> impl Strategy<Value = Vec<u8>> {
    let known = prop::sample::select(vec![
        "Host",
        "Content-Type",
        "Authorization",
        "X-Forwarded-For",
        "X-Real-IP",
        "Connection",
        "Content-Length",
        "Transfer-Encoding",
        "User-Agent",
        "Accept-Encoding",
    ]);
    let name = prop_oneof![
        16 => (known, vec(any::<bool>(), 0..20)).prop_map(|(n, up)| random_case(n, up)),
        1 => vec(prop::sample::select(b"aZ-_!:( \t".to_vec()), 0..6),
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec![
            "close", "keep-alive", "Keep-Alive, close", "upgrade", " close ", "closed",
            "0", "3", "5", "12", "+3", "", "99999999999999999999", "chunked",
            "1.2.3.4, 10.0.0.1", "tracker.example:8000", "Bearer abc",
        ]).prop_map(|v| v.as_bytes().to_vec()),
        1 => vec(prop_oneof![30 => prop::sample::select(b"ab ,\t:-.".to_vec()), 1 => any::<u8>()], 0..12),
    ];
    (name, prop_oneof![8 => Just(&b": "[..]), 2 => Just(&b":"[..]), 1 => Just(&b" : "[..])], value)
        .prop_map(|(n, sep, v)| [n.as_slice(), sep, v.as_slice()].concat())
}

prop_compose! {
    fn request_bytes()(
        leading in vec(eol(), 0..3),
        method in method(),
        target in target(),
        version in version(),
        eol1 in eol(),
        headers in vec((header(), eol()), 0..8),
        eol2 in eol(),
        body in vec(any::<u8>(), 0..16),
        framing in 0u8..3,
        tail in vec(any::<u8>(), 0..24),
    ) -> Vec<u8> {
        let mut out = leading.concat();
        out.extend_from_slice(&[method.as_slice(), b" ", &target, b" ", &version, eol1].concat());
        if framing == 0 {
            // A correct Content-Length header first, so most generated bodies are well framed.
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        for (h, e) in headers {
            out.extend_from_slice(&h);
            out.extend_from_slice(e);
        }
        out.extend_from_slice(eol2);
        out.extend_from_slice(&body);
        if framing == 2 {
            // A pipelined second request.
            out.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        }
        out.extend_from_slice(&tail);
        out
    }
}

#[derive(Clone, Debug)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![prop::sample::select(b"\r\n :\t?/%HTTP/1.0".to_vec()), any::<u8>(),];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(buf: &mut Vec<u8>, edit: &Edit) {
    if buf.is_empty() {
        return;
    }
    match edit {
        Edit::Set(i, b) => {
            let i = i.index(buf.len());
            buf[i] = *b;
        }
        Edit::Insert(i, b) => buf.insert(i.index(buf.len() + 1), *b),
        Edit::Remove(i) => {
            buf.remove(i.index(buf.len()));
        }
        Edit::Truncate(i) => buf.truncate(i.index(buf.len() + 1)),
    }
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        3 => Just(Limits::default()),
        2 => (1usize..200, 0usize..8, 0usize..20).prop_map(|(h, n, b)| Limits {
            max_header_bytes: h,
            max_headers: n,
            max_body_bytes: b,
        }),
    ]
}

fn check_against_oracle(buf: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let fast = parse_request(buf, limits);
    let slow = oracle::parse(buf, limits);
    prop_assert_eq!(&fast, &slow, "input {:?}", String::from_utf8_lossy(buf));
    if let Ok(Status::Complete(_, used)) = fast {
        prop_assert!(used <= buf.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn parser_matches_oracle(buf in request_bytes(), limits in limits()) {
        check_against_oracle(&buf, &limits)?;
    }

    #[test]
    fn parser_matches_oracle_after_mutation(
        buf in request_bytes(),
        edits in vec(edit(), 1..4),
        limits in limits(),
    ) {
        let mut buf = buf;
        for e in &edits {
            apply(&mut buf, e);
        }
        check_against_oracle(&buf, &limits)?;
    }

    #[test]
    fn parser_matches_oracle_on_arbitrary_bytes(buf in vec(any::<u8>(), 0..256), limits in limits()) {
        check_against_oracle(&buf, &limits)?;
    }

    /// Every proper prefix of a complete request is `Partial`; the request itself parses the
    /// same with or without what follows it.
    #[test]
    fn prefixes_of_complete_requests_are_partial(buf in request_bytes()) {
        let limits = Limits::default();
        if let Ok(Status::Complete(req, used)) = parse_request(&buf, &limits) {
            for cut in 0..used {
                prop_assert_eq!(parse_request(&buf[..cut], &limits), Ok(Status::Partial), "cut {}", cut);
            }
            prop_assert_eq!(parse_request(&buf[..used], &limits), Ok(Status::Complete(req, used)));
        }
    }
}

/// The generators above are only useful if they reach every outcome; check that they do
/// (deterministic seed, so this never flakes).
#[test]
fn generators_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;

    let mut runner = TestRunner::deterministic();
    let strategy = (request_bytes(), vec(edit(), 0..3), limits());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20_000 {
        let (mut buf, edits, limits) = strategy.new_tree(&mut runner).unwrap().current();
        for e in &edits {
            apply(&mut buf, e);
        }
        let class = match parse_request(&buf, &limits) {
            Ok(Status::Complete(..)) => "Complete".to_owned(),
            Ok(Status::Partial) => "Partial".to_owned(),
            Err(e) => format!("{e:?}").split([' ', '{']).next().unwrap().to_owned(),
        };
        *seen.entry(class).or_default() += 1;
    }
    for class in [
        "Complete",
        "Partial",
        "HeadersTooLarge",
        "TooManyHeaders",
        "BodyTooLarge",
        "InvalidRequestLine",
        "InvalidVersion",
        "UnsupportedVersion",
        "InvalidHeader",
        "InvalidContentLength",
        "TransferEncodingUnsupported",
    ] {
        assert!(seen.get(class).copied().unwrap_or(0) >= 20, "{class} rarely generated: {seen:?}");
    }
}
