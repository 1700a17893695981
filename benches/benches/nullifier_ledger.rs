//! The double-spend ledger: reserving and committing a 1024-receipt batch into a ledger that
//! already holds 100 000 credited receipts, rejecting a replayed batch, and pruning.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pbts_http::InfoHash;
use pbts_verifier::nullifier::{Freshness, Ledger, Rejection};
use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
use std::hint::black_box;

const NOW: u64 = 1_800_000_000;

fn receipts(n: u32, salt: u32) -> Vec<Receipt> {
    (0..n)
        .map(|i| Receipt {
            info_hash: InfoHash([0xb4; 20]),
            sender_pk: PublicKeyBytes([1; 48]),
            receiver_pk: PublicKeyBytes([(i % 16) as u8; 48]),
            piece_hash: PieceHash::from_slice(&[7; 20]).unwrap(),
            piece_index: i + salt,
            timestamp: NOW - u64::from(i % 3000),
            signature: SignatureBytes([0; 96]),
        })
        .collect()
}

fn filled() -> Ledger {
    let mut l = Ledger::new(Freshness::default());
    for r in receipts(100_000, 1 << 20) {
        let n = l.reserve(&[r], NOW)[0].unwrap();
        l.commit(&n, r.timestamp);
    }
    l
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("nullifier_ledger");
    g.sample_size(20);
    let batch = receipts(1024, 0);
    g.throughput(Throughput::Elements(1024));
    let base = filled();
    g.bench_function("reserve_commit_1024_into_100k", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |l| {
                let v = l.reserve(black_box(&batch), NOW);
                for (r, n) in batch.iter().zip(&v) {
                    l.commit(n.as_ref().unwrap(), r.timestamp);
                }
                assert_eq!(l.len(), 101_024);
            },
            BatchSize::LargeInput,
        )
    });
    let mut replayed = base.clone();
    for (r, n) in batch.iter().zip(replayed.reserve(&batch, NOW)) {
        replayed.commit(&n.unwrap(), r.timestamp);
    }
    g.bench_function("reject_replayed_1024", |b| {
        b.iter(|| {
            let v = replayed.reserve(black_box(&batch), NOW);
            assert!(v.iter().all(|x| *x == Err(Rejection::AlreadyCredited)));
        })
    });
    g.bench_function("prune_100k", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |l| assert_eq!(l.prune(NOW + 10_000).len(), 100_000),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
