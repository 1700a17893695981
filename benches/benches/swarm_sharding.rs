//! Lock-sharded shared store vs per-core ownership with a channel mesh, two threads.
//!
//! Both variants handle the same announces (10 000 torrents of 20 peers, uniformly random) on
//! two OS threads:
//! - `shared`: each thread announces straight into one lock-sharded `SwarmTable`.
//! - `owned`: each thread owns the swarms whose info-hash maps to it; announces for the other
//!   thread's swarms travel over a channel (32 in flight, as an io_uring core keeps many
//!   requests outstanding) and the owner sends back the counts and the chosen peers.
//!
//! The result decides the engine's design (see `engine/src/swarm/table.rs`).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pbts_engine::clock::Uptime;
use pbts_engine::swarm::{AnnounceInput, AnnounceOutcome, PeerAnnounce, SelectedPeers, SwarmTable};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const TORRENTS: u32 = 10_000;
const PEERS: u32 = 20;
const PER_THREAD: usize = 50_000;
const IN_FLIGHT: usize = 32;

fn input(torrent: u32, peer: u32) -> AnnounceInput {
    let mut ih = [0u8; 20];
    ih[..4].copy_from_slice(&torrent.to_be_bytes());
    ih[4] = (torrent % 251) as u8;
    AnnounceInput {
        peer: PeerAnnounce {
            info_hash: InfoHash(ih),
            peer_id: PeerId([peer as u8; 20]),
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, (peer >> 8) as u8, peer as u8)),
            port: 6881,
            event: AnnounceEvent::None,
            left: Some(u64::from(peer % 2)),
            uploaded: 0,
            downloaded: 0,
            both_families: false,
            peer_ids: false,
        },
        numwant: 50,
        now: Uptime(1),
        valid_until: Uptime(3600),
        user: None,
        durable_snatches: false,
        admit_new: true,
        max_peers_per_ip: 0,
    }
}

fn workload(seed: u64) -> Vec<AnnounceInput> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..PER_THREAD)
        .map(|_| input(rng.random_range(0..TORRENTS), rng.random_range(0..PEERS)))
        .collect()
}

fn owner(ih: &InfoHash) -> usize {
    usize::from(ih.0[4] & 1)
}

fn fill(store: &SwarmTable) {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut out = SelectedPeers::default();
    for t in 0..TORRENTS {
        for p in 0..PEERS {
            store.announce(&input(t, p), &mut rng, &mut out);
            out.clear();
        }
    }
}

/// Returns (elapsed, sum of counts) for two threads on one shared store.
fn run_shared(store: &Arc<SwarmTable>, loads: &[Vec<AnnounceInput>; 2]) -> (Duration, u64) {
    let barrier = Arc::new(Barrier::new(2));
    std::thread::scope(|s| {
        let handles: Vec<_> = loads
            .iter()
            .map(|load| {
                let (store, barrier) = (store.clone(), barrier.clone());
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(2);
                    let mut out = SelectedPeers::default();
                    barrier.wait();
                    let start = Instant::now();
                    let mut sum = 0u64;
                    for a in load {
                        out.clear();
                        let o = store.announce(a, &mut rng, &mut out);
                        sum += u64::from(o.complete + o.incomplete) + out.v4.len() as u64;
                    }
                    (start.elapsed(), sum)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((Duration::ZERO, 0), |a, b| (a.0.max(b.0), a.1 + b.1))
    })
}

enum Envelope {
    Request(AnnounceInput),
    Response(AnnounceOutcome, Vec<(Ipv4Addr, u16)>),
}

/// Returns (elapsed, sum of counts) for two threads each owning half the swarms.
fn run_owned(stores: &[Arc<SwarmTable>; 2], loads: &[Vec<AnnounceInput>; 2]) -> (Duration, u64) {
    let barrier = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicUsize::new(0));
    let (tx0, rx0) = flume::unbounded::<Envelope>();
    let (tx1, rx1) = flume::unbounded::<Envelope>();
    let inboxes = [rx0, rx1];
    let senders = [tx0, tx1];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|me| {
                let store = stores[me].clone();
                let load = &loads[me];
                let inbox = inboxes[me].clone();
                let other = senders[1 - me].clone();
                let (barrier, done) = (barrier.clone(), done.clone());
                s.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(3);
                    let mut out = SelectedPeers::default();
                    barrier.wait();
                    let start = Instant::now();
                    let (mut sum, mut next, mut in_flight) = (0u64, 0usize, 0usize);
                    let mut finished = false;
                    loop {
                        while next < load.len() && in_flight < IN_FLIGHT {
                            let a = &load[next];
                            next += 1;
                            if owner(&a.peer.info_hash) == me {
                                out.clear();
                                let o = store.announce(a, &mut rng, &mut out);
                                sum += u64::from(o.complete + o.incomplete) + out.v4.len() as u64;
                            } else {
                                other.send(Envelope::Request(*a)).unwrap();
                                in_flight += 1;
                            }
                        }
                        if !finished && next == load.len() && in_flight == 0 {
                            finished = true;
                            done.fetch_add(1, Ordering::AcqRel);
                        }
                        if finished && done.load(Ordering::Acquire) == 2 && inbox.is_empty() {
                            break;
                        }
                        match inbox.try_recv() {
                            Ok(Envelope::Request(a)) => {
                                out.clear();
                                let o = store.announce(&a, &mut rng, &mut out);
                                other.send(Envelope::Response(o, out.v4.clone())).unwrap();
                            }
                            Ok(Envelope::Response(o, peers)) => {
                                in_flight -= 1;
                                sum += u64::from(o.complete + o.incomplete) + peers.len() as u64;
                            }
                            Err(_) => std::hint::spin_loop(),
                        }
                    }
                    (start.elapsed(), sum)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((Duration::ZERO, 0), |a, b| (a.0.max(b.0), a.1 + b.1))
    })
}

fn bench(c: &mut Criterion) {
    let loads = [workload(10), workload(11)];
    let shared = Arc::new(SwarmTable::new());
    fill(&shared);
    let owned = [Arc::new(SwarmTable::new()), Arc::new(SwarmTable::new())];
    for store in &owned {
        fill(store);
    }
    // Both designs must compute the same answers (the counts do not depend on who owns what).
    let expected = run_shared(&shared, &loads).1;
    assert_eq!(run_owned(&owned, &loads).1, expected);

    let mut g = c.benchmark_group("swarm_sharding_2_threads");
    g.throughput(Throughput::Elements(2 * PER_THREAD as u64));
    g.sample_size(20);
    g.bench_function("shared_lock_sharded", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (t, sum) = run_shared(&shared, &loads);
                    assert_eq!(sum, expected);
                    t
                })
                .sum()
        })
    });
    g.bench_function("per_core_owned_channels", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (t, sum) = run_owned(&owned, &loads);
                    assert_eq!(sum, expected);
                    t
                })
                .sum()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
