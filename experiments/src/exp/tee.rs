//! TEE (the original's 7.2): baseline key generation beside TEE-derived key generation, and
//! attestation generation and verification. On a machine without a TEE the derived keys come
//! from the `none` provider's local root (and, for the protocol cost, the dstack development
//! agent on a Unix socket), generation rows are left out, and the table says so; verification
//! always runs, on a real sample TDX quote and its collateral.

use pbts_tee::verify::{self, Expected};
use pbts_tee::{Tee, TeeConfig, TeeMode, quote};
use pbts_verifier::keys::SecretKey;

use super::{Settings, timed};
use crate::report::{Cell, Outcome, Raw, Stats, Table};

const SAMPLE: &[u8] = include_bytes!("../../../tee/tests/data/tdx_quote");
const COLLATERAL: &[u8] = include_bytes!("../../../tee/tests/data/tdx_quote_collateral.json");

/// Runs the experiment. `TEE_MODE` (tdx or dstack) makes it measure a real TEE too.
pub fn run(s: &Settings) -> anyhow::Result<Outcome> {
    let n = s.iterations.max(2);
    let dir = tempfile::tempdir()?;
    let mut raw = Raw::default();
    let real = std::env::var("TEE_MODE")
        .ok()
        .and_then(|m| TeeMode::parse(&m).ok())
        .filter(|m| *m != TeeMode::None);
    let caption = match real {
        Some(m) => format!("Milliseconds; TEE present ({})", m.as_str()),
        None => "Milliseconds. No TEE on this machine: derived keys use the none provider's local \
                 root and the dstack protocol against the development agent; quote generation \
                 rows are omitted; verification uses a real sample TDX quote with its collateral"
            .to_owned(),
    };
    let mut t = Table::new(
        "tee_operations",
        "TEE key derivation and attestation",
        &caption,
        &["operation", "n", "mean (ms)", "median (ms)", "p95 (ms)", "overhead vs baseline (%)"],
    );
    let baseline = timed(n, || {
        std::hint::black_box(SecretKey::random().public_key().to_bytes());
    });
    let base_mean = Stats::of(&baseline).mean;
    let add = |name: &str, samples: Vec<f64>, t: &mut Table, raw: &mut Raw, overhead: bool| {
        raw.add(name, "", &samples, "ms");
        let st = Stats::of(&samples);
        let oh = if overhead { (st.mean / base_mean - 1.0) * 100.0 } else { 0.0 };
        t.row(vec![
            name.into(),
            st.n.into(),
            Cell::num(st.mean, 3),
            Cell::num(st.median, 3),
            Cell::num(st.p95, 3),
            Cell::num(oh, 1),
        ]);
    };
    add("BLS keygen, OS randomness (baseline)", baseline, &mut t, &mut raw, true);

    let none = Tee::open(&TeeConfig::default(), dir.path())?;
    let derived = timed(n, || {
        std::hint::black_box(none.bls_key("tracker").expect("local root").public_key().to_bytes());
    });
    add("BLS keygen, derived (none provider)", derived, &mut t, &mut raw, true);

    let socket = dir.path().join("dstack.sock");
    pbts_testkit::dstack::serve_unix(
        &socket,
        pbts_testkit::dstack::AgentConfig {
            secret: b"bench".to_vec(),
            template_quote: SAMPLE.to_vec(),
            fail_quotes: false,
        },
    )?;
    let cfg = TeeConfig {
        mode: TeeMode::Dstack,
        dstack_endpoint: socket.display().to_string(),
        ..TeeConfig::default()
    };
    let dev = Tee::open(&cfg, dir.path())?;
    let via = timed(n, || {
        std::hint::black_box(dev.bls_key("tracker").expect("agent").public_key().to_bytes());
    });
    add("BLS keygen, derived via dstack protocol (dev agent)", via, &mut t, &mut raw, true);

    if let Some(mode) = real {
        let cfg = TeeConfig { mode, ..TeeConfig::default() };
        let tee = Tee::open(&cfg, dir.path())?;
        let k = timed(n, || {
            std::hint::black_box(tee.bls_key("tracker").expect("TEE key").public_key().to_bytes());
        });
        add(&format!("BLS keygen, derived in {}", mode.as_str()), k, &mut t, &mut raw, true);
        let mut i = 0;
        let g = timed(n, || {
            i += 1;
            let payload = format!("test_payload_{i}");
            tee.quote(pbts_tee::quote::Binding::Client(payload.as_bytes())).expect("quote");
        });
        add(&format!("attestation generation ({})", mode.as_str()), g, &mut t, &mut raw, false);
    }

    let collateral = verify::parse_collateral(COLLATERAL)?;
    let now = verify::collateral_issue_time(&collateral)? + 3600;
    let rd = quote::parse(SAMPLE)?.report.report_data;
    let v = timed(n, || {
        let r = verify::verify(SAMPLE, &collateral, now, Expected::ReportData(&rd));
        assert!(r.valid, "{r:?}");
    });
    add("attestation verification (sample quote, dcap-qvl)", v, &mut t, &mut raw, false);
    Ok(Outcome { name: "tee", tables: vec![t], raw })
}
