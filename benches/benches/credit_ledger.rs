//! The double-spend ledger: reserving a 1024-receipt batch against 100 000 credited pieces,
//! refusing a replayed batch, and what the piece sets cost on disk for 10 000 users × 1 000
//! torrents.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pbts_proto::InfoHash;
use pbts_verifier::credit::{Freshness, Ledger, PieceClaim, PieceSet, Rejection, SetKey};
use pbts_verifier::receipt::PublicKeyBytes;
use rand::{Rng, SeedableRng};

const NOW: u64 = 1_800_000_000;
const USERS: u64 = 10_000;
const TORRENTS: u64 = 1_000;
/// Pieces per torrent in the footprint model (a 1 GiB torrent in 1 MiB pieces).
const PIECES: u32 = 1024;

type Books = HashMap<SetKey, PieceSet>;

fn claims(n: u32, salt: u32) -> Vec<(PieceClaim, u64)> {
    (0..n)
        .map(|i| {
            let claim = PieceClaim {
                downloader: PublicKeyBytes([(i % 16) as u8; 48]),
                torrent: InfoHash([(i % 7) as u8; 20]),
                piece_index: i + salt,
            };
            (claim, NOW - u64::from(i % 3000))
        })
        .collect()
}

fn credit(books: &mut Books, claims: &[(PieceClaim, u64)]) {
    for (c, _) in claims {
        books.entry(c.set_key()).or_default().insert(c.piece_index);
    }
}

fn credited(books: &Books, c: &PieceClaim) -> Result<bool, ()> {
    Ok(books.get(&c.set_key()).is_some_and(|s| s.contains(c.piece_index)))
}

/// Bytes on disk (key + serialized set) of `n` sets shaped like `set`.
fn footprint(set: &PieceSet, n: u64) -> u64 {
    n * (set.serialized_size() + pbts_verifier::credit::SET_KEY_LEN) as u64
}

fn report_footprint() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let whole: PieceSet = {
        let mut s = PieceSet::default();
        (0..PIECES).for_each(|i| {
            s.insert(i);
        });
        s
    };
    let mut half = PieceSet::default();
    while half.len() < u64::from(PIECES / 2) {
        half.insert(rng.random_range(0..PIECES));
    }
    let mut few = PieceSet::default();
    for _ in 0..10 {
        few.insert(rng.random_range(0..PIECES));
    }
    let sets = USERS * TORRENTS;
    eprintln!("piece sets for {USERS} users x {TORRENTS} torrents of {PIECES} pieces:");
    for (shape, set) in [("every torrent whole", &whole), ("every torrent half, random", &half)] {
        let bytes = footprint(set, sets);
        eprintln!(
            "  {shape}: {} B per set, {:.1} GiB in all",
            set.serialized_size(),
            bytes as f64 / (1u64 << 30) as f64
        );
    }
    // A realistic private tracker: each user completes 50 torrents and samples 10 pieces of
    // 100 more.
    let realistic = footprint(&whole, USERS * 50) + footprint(&few, USERS * 100);
    eprintln!(
        "  50 whole + 100 sampled per user: {:.1} MiB in all ({} B per whole set, {} B per \
         10-piece set)",
        realistic as f64 / (1u64 << 20) as f64,
        whole.serialized_size(),
        few.serialized_size()
    );
    // Whole torrents are runs: a few bytes, not a bit per piece.
    assert!(whole.serialized_size() < 64, "{}", whole.serialized_size());
    assert!(half.serialized_size() <= 2 * PIECES as usize / 2 + 64);
}

fn bench(c: &mut Criterion) {
    report_footprint();
    let mut g = c.benchmark_group("credit_ledger");
    g.sample_size(20);
    let batch = claims(1024, 0);
    g.throughput(Throughput::Elements(1024));
    let mut books = Books::new();
    credit(&mut books, &claims(100_000, 1 << 20));
    g.bench_function("reserve_finish_1024_against_100k", |b| {
        b.iter_batched_ref(
            || Ledger::new(Freshness::default()),
            |l| {
                let v = l.reserve(black_box(&batch), NOW, |c| credited(&books, c)).unwrap();
                assert!(v.iter().all(Result::is_ok));
                for (c, _) in &batch {
                    l.finish(c);
                }
                assert_eq!(l.reserved_len(), 0);
            },
            BatchSize::SmallInput,
        )
    });
    let mut replayed = books.clone();
    credit(&mut replayed, &batch);
    g.bench_function("reject_replayed_1024", |b| {
        let mut l = Ledger::new(Freshness::default());
        b.iter(|| {
            let v = l.reserve(black_box(&batch), NOW, |c| credited(&replayed, c)).unwrap();
            assert!(v.iter().all(|x| *x == Err(Rejection::AlreadyCredited)));
        })
    });
    g.bench_function("piece_set_round_trip_1024", |b| {
        let set = replayed.values().next().unwrap().clone();
        b.iter(|| {
            let bytes = black_box(&set).to_bytes();
            assert_eq!(PieceSet::from_bytes(&bytes).unwrap().len(), set.len());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
