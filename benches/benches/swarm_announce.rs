//! One announce against the swarm store: small (inline) and large (indexed) swarms.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pbts_engine::clock::Uptime;
use pbts_engine::swarm::{AnnounceInput, PeerAnnounce, SelectedPeers, SwarmTable};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

fn input(port: u16, ih: u8) -> AnnounceInput {
    AnnounceInput {
        peer: PeerAnnounce {
            info_hash: InfoHash([ih; 20]),
            peer_id: PeerId([port as u8; 20]),
            ip: IpAddr::V4(Ipv4Addr::new(10, (port >> 8) as u8, port as u8, 1)),
            port,
            event: AnnounceEvent::None,
            left: Some(if port.is_multiple_of(3) { 0 } else { 100 }),
            uploaded: 0,
            downloaded: 0,
            both_families: false,
            peer_ids: false,
        },
        numwant: 50,
        now: Uptime(1),
        valid_until: Uptime(3600),
        user: Some(1),
        durable_snatches: false,
        admit_new: true,
        max_peers_per_ip: 0,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("swarm_announce");
    for peers in [8u16, 1000, 20_000] {
        let store = SwarmTable::new();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut out = SelectedPeers::default();
        // Ports from 1: a port-0 peer is counted but never handed out.
        for p in 1..=peers {
            store.announce(&input(p, 1), &mut rng, &mut out);
        }
        g.bench_with_input(BenchmarkId::new("reannounce", peers), &peers, |b, &peers| {
            let mut i = 0u16;
            b.iter(|| {
                out.clear();
                let o = store.announce(black_box(&input(i % peers + 1, 1)), &mut rng, &mut out);
                i = i.wrapping_add(1);
                assert_eq!(o.complete + o.incomplete, u32::from(peers));
                assert_eq!(out.v4.len(), usize::from(peers - 1).min(50));
                out.v4.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
