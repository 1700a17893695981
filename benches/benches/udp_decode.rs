//! BEP 15 decoding of announce (plain and with a BEP 41 passkey path) and scrape datagrams.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pbts_proto::udp::{self, AnnounceRequest, ConnectionId, Request, TransactionId};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use std::hint::black_box;
use std::net::Ipv4Addr;

fn announce(url: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    udp::write_announce_request(
        &mut out,
        &AnnounceRequest {
            connection_id: ConnectionId(0x1234_5678_9abc_def0),
            transaction_id: TransactionId(42),
            info_hash: InfoHash([0xb4; 20]),
            peer_id: PeerId(*b"-qB4630-k8hj0wgej6ch"),
            downloaded: 1 << 20,
            left: 1 << 30,
            uploaded: 1 << 18,
            event: AnnounceEvent::Started,
            ip: Ipv4Addr::UNSPECIFIED,
            key: 0x7f1a_3c2b,
            num_want: Some(200),
            port: 6881,
            url_data: url,
        },
    );
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_decode");
    let plain = announce(b"");
    let bep41 = announce(b"/0123456789abcdef0123456789abcdef/announce");
    let mut scrape = Vec::new();
    let hashes: Vec<InfoHash> = (0..74u8).map(|i| InfoHash([i; 20])).collect();
    udp::write_scrape_request(&mut scrape, ConnectionId(1), TransactionId(2), &hashes);
    for (name, dgram) in
        [("announce_98", &plain), ("announce_bep41", &bep41), ("scrape_74", &scrape)]
    {
        g.throughput(Throughput::Bytes(dgram.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| match udp::parse_request(black_box(dgram)) {
                Ok(Request::Announce(a)) => {
                    assert_eq!(a.port, 6881);
                    a.url_data.len()
                }
                Ok(Request::Scrape { info_hashes, .. }) => {
                    assert_eq!(info_hashes.len(), 74 * 20);
                    info_hashes.len()
                }
                other => panic!("unexpected {other:?}"),
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
