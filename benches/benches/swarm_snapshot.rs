//! Swarm snapshots: writing 1M peers in 100k torrents to the snapshot file (fsynced) and
//! loading them into an empty table (checks included). Goal: under 1 s each.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pbts_engine::clock::Uptime;
use pbts_engine::swarm::table::snapshot::Restore;
use pbts_engine::swarm::{AnnounceInput, PeerAnnounce, SelectedPeers, SwarmTable};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const TORRENTS: u32 = 100_000;
const PEERS_PER_TORRENT: u32 = 10;
const INSTANCE: &str = "0123456789abcdef0123456789abcdef";

/// 1M peers: torrent `t` has peers 10.x.y.z:6881.. with a user each, a third of them seeders.
fn table() -> SwarmTable {
    let table = SwarmTable::new();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut out = SelectedPeers::default();
    for t in 0..TORRENTS {
        let mut ih = [0u8; 20];
        ih[..4].copy_from_slice(&t.to_be_bytes());
        for p in 0..PEERS_PER_TORRENT {
            let n = t * PEERS_PER_TORRENT + p;
            let input = AnnounceInput {
                peer: PeerAnnounce {
                    info_hash: InfoHash(ih),
                    peer_id: PeerId([p as u8; 20]),
                    ip: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)),
                    port: 6881 + p as u16,
                    event: AnnounceEvent::Started,
                    left: Some(if n.is_multiple_of(3) { 0 } else { 100 }),
                    uploaded: u64::from(n),
                    downloaded: 0,
                    both_families: false,
                    peer_ids: false,
                },
                numwant: 0,
                now: Uptime(1),
                valid_until: Uptime(3600),
                user: Some(n % 5000 + 1),
                durable_snatches: false,
                admit_new: true,
                max_peers_per_ip: 0,
            };
            table.announce(&input, &mut rng, &mut out);
        }
    }
    table
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("swarm_snapshot");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(u64::from(TORRENTS * PEERS_PER_TORRENT)));
    let source = table();
    // On the disk the tracker's data would be on (the temporary directory's), fsync included.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swarms.snapshot");
    g.bench_function("write_1m_peers", |b| {
        b.iter(|| {
            let s = source.write_snapshot(&path, INSTANCE, Uptime(2), 10_000).unwrap();
            assert_eq!(s.peers, 1_000_000);
        })
    });
    let at =
        Restore { instance_id: INSTANCE, now: Uptime(0), unix_now: 10_001, peer_timeout: 3600 };
    g.bench_function("load_1m_peers", |b| {
        b.iter_with_large_drop(|| {
            let t = SwarmTable::new();
            let s = t.load_snapshot(&path, &at, |_| true).unwrap().unwrap();
            assert_eq!((s.peers, s.torrents), (1_000_000, 100_000));
            t
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
