//! HTTP request parsing plus announce-query decoding, for real clients' requests.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pbts_benches::{QBITTORRENT_ANNOUNCE, TRANSMISSION_ANNOUNCE};
use pbts_http::query::parse_announce;
use pbts_http::request::{Limits, Status, parse_request};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("http_parse_announce");
    for (name, raw) in
        [("qbittorrent", QBITTORRENT_ANNOUNCE), ("transmission", TRANSMISSION_ANNOUNCE)]
    {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let Ok(Status::Complete(req, n)) = parse_request(black_box(raw), &limits) else {
                    panic!("request must parse")
                };
                assert_eq!(n, raw.len());
                let a = parse_announce(req.query).expect("announce must parse");
                assert_eq!(a.info_hash.0[0], 0xb4);
                a.port
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
