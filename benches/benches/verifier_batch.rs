//! Receipt verification: one by one, blst's own batch verification, our batched pipeline
//! (grouped by signer) and the verifier pool. Throughput is in receipts.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use blst::BLST_ERROR;
use blst::min_pk;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pbts_engine::workers::verifier::VerifierPool;
use pbts_verifier::batch::{self, ReceiptError};
use pbts_verifier::keys::DST;
use pbts_verifier::receipt::Receipt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::hint::black_box;
use std::time::Duration;

/// `n` valid receipts for one uploader, signed in turn by `signers` downloaders.
fn receipts(n: usize, signers: usize) -> Vec<Receipt> {
    pbts_testkit::receipts::signed_receipts(n, signers, 0x5a)
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut g = c.benchmark_group("verifier_batch");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    let one = receipts(1, 1)[0];
    g.throughput(Throughput::Elements(1));
    // Everything a lone receipt needs: both keys validated, signature decoded and checked.
    g.bench_function("single/verify_one", |b| {
        b.iter(|| assert_eq!(batch::verify_one(black_box(&one)), Ok(())))
    });
    // blst's verify alone, key already decoded (signature decode and subgroup check included).
    let pk = min_pk::PublicKey::key_validate(&one.receiver_pk.0).unwrap();
    let msg = one.message();
    g.bench_function("single/blst_verify", |b| {
        b.iter(|| {
            let sig = min_pk::Signature::uncompress(black_box(&one.signature.0)).unwrap();
            assert_eq!(sig.verify(true, &msg, DST, &[], &pk, false), BLST_ERROR::BLST_SUCCESS);
        })
    });

    // 32x1 and 256x1: an uploading pbts-peer's batches (one downloader's receipts at a time).
    for (n, signers) in [(32, 1), (256, 1), (64, 16), (1024, 16), (1024, 1024)] {
        let batch = receipts(n, signers);
        let id = format!("{n}x{signers}");
        g.throughput(Throughput::Elements(n as u64));
        if n == 1024 {
            g.bench_with_input(BenchmarkId::new("blst_multiple", &id), &batch, |b, batch| {
                b.iter(|| assert!(batch::blst_batch_verify(black_box(batch), &mut rng)))
            });
        }
        g.bench_with_input(BenchmarkId::new("verify_batch", &id), &batch, |b, batch| {
            b.iter(|| {
                let verdicts = batch::verify_batch(black_box(batch), &mut rng).unwrap();
                assert!(verdicts.iter().all(Result::is_ok));
            })
        });
    }

    // The worst case under attack: every receipt invalid, so bisection reaches every leaf.
    let mut all_bad = receipts(1024, 16);
    for r in &mut all_bad {
        r.timestamp += 1;
    }
    g.throughput(Throughput::Elements(1024));
    g.bench_with_input(
        BenchmarkId::new("verify_batch_all_bad", "1024x16"),
        &all_bad,
        |b, batch| {
            b.iter(|| {
                let verdicts = batch::verify_batch(black_box(batch), &mut rng).unwrap();
                assert!(verdicts.iter().all(|v| *v == Err(ReceiptError::BadSignature)));
            })
        },
    );

    let batch = receipts(1024, 16);
    for threads in [1, 2] {
        let pool = VerifierPool::new(threads);
        g.bench_with_input(
            BenchmarkId::new(format!("pool_{threads}t"), "1024x16"),
            &batch,
            |b, batch| {
                b.iter(|| {
                    let verdicts = pool.verify_blocking(black_box(batch.clone()));
                    assert_eq!(verdicts.len(), 1024);
                    assert!(verdicts.iter().all(Result::is_ok));
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
