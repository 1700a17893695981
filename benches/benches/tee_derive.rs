//! TEE costs: BLS key generation from OS randomness (the baseline) beside a TEE-derived key
//! (HKDF from root material, then KeyGen), the provider round trip of the `none` provider and of
//! the dstack protocol (to a local development agent on a Unix socket), and quote parsing and
//! verification of a real TDX quote against its collateral.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pbts_tee::verify::{self, Expected};
use pbts_tee::{Tee, TeeConfig, TeeMode, derive, quote};
use pbts_verifier::keys::SecretKey;

const SAMPLE: &[u8] = include_bytes!("../../tee/tests/data/tdx_quote");
const COLLATERAL: &[u8] = include_bytes!("../../tee/tests/data/tdx_quote_collateral.json");

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tee");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));

    g.bench_function("keygen/baseline_random", |b| {
        b.iter(|| {
            let sk = SecretKey::random();
            black_box(sk.public_key().to_bytes())
        })
    });
    let root = [7u8; 32];
    let expected = derive::bls_key(&root, "tracker").unwrap().public_key().to_bytes();
    g.bench_function("keygen/derived_hkdf", |b| {
        b.iter(|| {
            let pk = derive::bls_key(black_box(&root), "tracker").unwrap().public_key().to_bytes();
            assert_eq!(pk, expected);
        })
    });
    g.bench_function("ethereum_key/derived_hkdf", |b| {
        b.iter(|| black_box(derive::ethereum_key(black_box(&root), derive::ETHEREUM_PATH).unwrap()))
    });

    let dir = tempfile::tempdir().unwrap();
    let none = Tee::open(&TeeConfig::default(), dir.path()).unwrap();
    let none_pk = none.bls_key("tracker").unwrap().public_key().to_bytes();
    g.bench_function("keygen/provider_none", |b| {
        b.iter(|| assert_eq!(none.bls_key("tracker").unwrap().public_key().to_bytes(), none_pk))
    });
    let socket = dir.path().join("dstack.sock");
    let agent = pbts_testkit::dstack::AgentConfig {
        secret: b"bench".to_vec(),
        template_quote: SAMPLE.to_vec(),
        fail_quotes: false,
    };
    pbts_testkit::dstack::serve_unix(&socket, agent).unwrap();
    let config = TeeConfig {
        mode: TeeMode::Dstack,
        dstack_endpoint: socket.display().to_string(),
        ..TeeConfig::default()
    };
    let dstack = Tee::open(&config, dir.path()).unwrap();
    let dstack_pk = dstack.bls_key("tracker").unwrap().public_key().to_bytes();
    g.bench_function("keygen/provider_dstack_dev_agent", |b| {
        b.iter(|| assert_eq!(dstack.bls_key("tracker").unwrap().public_key().to_bytes(), dstack_pk))
    });

    let rd = quote::parse(SAMPLE).unwrap().report.report_data;
    g.bench_function("quote/parse", |b| {
        b.iter(|| assert_eq!(quote::parse(black_box(SAMPLE)).unwrap().report.report_data, rd))
    });
    let collateral = verify::parse_collateral(COLLATERAL).unwrap();
    let now = verify::collateral_issue_time(&collateral).unwrap() + 3600;
    g.bench_function("quote/verify_dcap_qvl", |b| {
        b.iter(|| {
            let v = verify::verify(black_box(SAMPLE), &collateral, now, Expected::ReportData(&rd));
            assert!(v.valid, "{v:?}");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
