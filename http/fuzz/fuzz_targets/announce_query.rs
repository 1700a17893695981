//! Announce and scrape queries: never panic; whatever parses writes back to a query that
//! parses to the same value; percent-decoding agrees with its lazy twin and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_http::query::{
    pairs, parse_announce, parse_scrape, percent_decode, percent_decode_into, percent_encode_into,
    write_announce_query, write_scrape_query,
};

fuzz_target!(|data: &[u8]| {
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
});
