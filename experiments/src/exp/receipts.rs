//! Receipts (the original's 7.1, on correct paths): key generation, receipt creation, single
//! verification, aggregate creation, and batches verified one by one, by blst's own batch
//! verification, and by our pipeline, for batch sizes 10 to 1024.

use std::time::Instant;

use pbts_verifier::batch;
use pbts_verifier::keys::{self, SecretKey};
use pbts_verifier::receipt::{Receipt, SignatureBytes};
use rand::SeedableRng;

use super::{Settings, ms, timed};
use crate::report::{Cell, Outcome, Raw, Stats, Table};

pub use pbts_testkit::receipts::signed_receipts;

/// Runs the experiment.
pub fn run(s: &Settings) -> Outcome {
    let n = s.iterations.max(2);
    let mut raw = Raw::default();
    let mut ops = Table::new(
        "receipts_operations",
        "Receipt operations",
        "BLS12-381 min-pk (blst, one thread), milliseconds per operation; the original's py_ecc took \
         167 ms to sign and 485 ms to verify",
        &["operation", "n", "mean (ms)", "median (ms)", "stdev (ms)", "p95 (ms)"],
    );
    let mut add = |name: &str, samples: Vec<f64>, raw: &mut Raw| {
        raw.add(name, "", &samples, "ms");
        let st = Stats::of(&samples);
        ops.row(vec![
            name.into(),
            st.n.into(),
            Cell::num(st.mean, 3),
            Cell::num(st.median, 3),
            Cell::num(st.stdev, 3),
            Cell::num(st.p95, 3),
        ]);
    };
    let keygen = timed(n, || {
        std::hint::black_box(SecretKey::random().public_key().to_bytes());
    });
    add("key generation", keygen, &mut raw);
    let base = signed_receipts(1, 1, 1)[0];
    let signer = SecretKey::from_ikm(&[1; 32]).expect("32 bytes");
    let create: Vec<f64> = (0..n)
        .map(|i| {
            let mut r = Receipt { piece_index: i as u32, ..base };
            let t = Instant::now();
            signer.sign_receipt(&mut r);
            ms(t)
        })
        .collect();
    add("receipt creation (sign)", create, &mut raw);
    let verify = timed(n, || assert_eq!(batch::verify_one(&base), Ok(())));
    add("single verification", verify, &mut raw);

    let sizes: &[usize] = if s.quick { &[10, 25, 50] } else { &[10, 25, 50, 100, 500, 1024] };
    let mut agg = Table::new(
        "receipts_aggregation",
        "Aggregate creation",
        "Summing b signatures (each decompressed and subgroup-checked), milliseconds",
        &["batch size", "runs", "mean (ms)", "per signature (µs)"],
    );
    let mut batches = Table::new(
        "receipts_batches",
        "Batch verification",
        "Milliseconds per batch: every receipt verified alone, blst's verify_multiple_aggregate_signatures, \
         and our pipeline (grouped by signer, one final exponentiation, bisection on failure); all \
         receipts valid; speedups are over one by one",
        &[
            "batch size",
            "signers",
            "one by one (ms)",
            "blst batch (ms)",
            "pipeline (ms)",
            "pipeline speedup",
            "vs blst",
        ],
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    for &b in sizes {
        let mut cases = vec![b];
        if b >= 100 {
            cases.push(16);
        }
        for signers in cases {
            let rs = signed_receipts(b, signers, 0x5a);
            let runs = if s.quick { 2 } else { (200 / b).clamp(3, 10) };
            if signers == b {
                let sigs: Vec<SignatureBytes> = rs.iter().map(|r| r.signature).collect();
                let a = timed(runs.max(5), || {
                    keys::aggregate_signatures(&sigs).expect("valid signatures");
                });
                raw.add("aggregate creation", &b.to_string(), &a, "ms");
                let st = Stats::of(&a);
                agg.row(vec![
                    b.into(),
                    st.n.into(),
                    Cell::num(st.mean, 3),
                    Cell::num(st.mean * 1000.0 / b as f64, 2),
                ]);
            }
            let mut one = Vec::new();
            let mut blst = Vec::new();
            let mut ours = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                assert!(rs.iter().all(|r| batch::verify_one(r).is_ok()));
                one.push(ms(t));
                let t = Instant::now();
                assert!(batch::blst_batch_verify(&rs, &mut rng));
                blst.push(ms(t));
                let t = Instant::now();
                let v = batch::verify_batch(&rs, &mut rng).expect("non-empty");
                assert!(v.iter().all(Result::is_ok));
                ours.push(ms(t));
            }
            let param = format!("{b}x{signers}");
            raw.add("verify one by one", &param, &one, "ms");
            raw.add("verify blst batch", &param, &blst, "ms");
            raw.add("verify pipeline", &param, &ours, "ms");
            let (o, bl, p) = (Stats::of(&one).mean, Stats::of(&blst).mean, Stats::of(&ours).mean);
            batches.row(vec![
                b.into(),
                signers.into(),
                Cell::num(o, 2),
                Cell::num(bl, 2),
                Cell::num(p, 2),
                Cell::num(o / p, 2),
                Cell::num(bl / p, 2),
            ]);
        }
    }
    Outcome { name: "receipts", tables: vec![ops, agg, batches], raw }
}
