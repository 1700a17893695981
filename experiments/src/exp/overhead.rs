//! Tracker overhead (the original's 7.4, on correct paths): end-to-end latency of an announce,
//! a registration, reports of 1, 10 and 50 fresh receipts, and an on-chain update, against a
//! pbts started by the harness (in this process) and anvil. Every request must succeed: the
//! original timed mostly error paths (bad hashes, replayed receipts, wrong field names).

use std::time::Instant;

use anyhow::bail;
use pbts_engine::config::TrackerMode;
use serde_json::json;

use super::{Http, Settings, Tracker, ms};
use crate::report::{Cell, Outcome, Raw, Stats, Table};

/// Runs the experiment.
pub fn run(s: &Settings) -> anyhow::Result<Outcome> {
    let n = s.iterations.max(2);
    let anvil = pbts_testkit::anvil::Anvil::start()?;
    let deployer = pbts_chain::ChainHandle::start(
        pbts_chain::ChainConfig { rpc_url: anvil.url(), ..Default::default() },
        pbts_testkit::anvil::dev_key(0),
    )?;
    let factory = pbts_chain::worker::wait(&deployer.deploy_factory())?.address;
    let keydir = tempfile::tempdir()?;
    let key_file = keydir.path().join("key");
    std::fs::write(&key_file, pbts_testkit::anvil::DEV_KEYS[0])?;
    let tracker = Tracker::start(TrackerMode::Private, 1, |c| {
        c.chain.rpc_url = anvil.url();
        c.chain.key_file = key_file.display().to_string();
        c.chain.factory_address = factory.to_string();
    })?;
    let mut http = Http::connect(tracker.addr)?;
    let up = super::register(&mut http, "uploader", 1)?;
    let down = super::register(&mut http, "downloader", 2)?;
    super::register_torrent(&mut http)?;
    http.json_ok("POST", "/contract/init", &json!({}))?;
    http.json_ok(
        "POST",
        "/contract/register",
        &json!({"username": "chainuser", "password_hash": "0x01", "upload_size": 0}),
    )?;

    let mut raw = Raw::default();
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();

    // Announces: a fresh peer each time, seeding (so the ratio gate is not in the way).
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let mut peer = *b"-PB0100-000000000000";
        peer[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let target = format!(
            "/{}/announce?info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=0&compact=1",
            up.passkey,
            super::pct(&super::INFO_HASH),
            super::pct(&peer)
        );
        let t = Instant::now();
        let (status, body) = http.call("GET", &target, None)?;
        samples.push(ms(t));
        if status != 200 || !body.starts_with(b"d8:complete") {
            bail!("announce failed: {}", String::from_utf8_lossy(&body));
        }
    }
    rows.push(("announce".into(), samples));

    // Registrations: keys and proofs made beforehand, as a client would.
    let fresh: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let mut ikm = [0x77u8; 32];
            ikm[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let sk = pbts_verifier::keys::SecretKey::from_ikm(&ikm).expect("32 bytes");
            let body = json!({"user_id": format!("user{i}"), "public_key": super::b64(&sk.public_key().to_bytes().0),
                              "proof_of_possession": super::b64(&sk.prove_possession().0)});
            (format!("user{i}"), body.to_string().into_bytes())
        })
        .collect();
    let mut samples = Vec::with_capacity(n);
    for (_, body) in &fresh {
        let t = Instant::now();
        let (status, resp) = http.call("POST", "/register", Some(body))?;
        samples.push(ms(t));
        if status != 200 {
            bail!("register failed: {}", String::from_utf8_lossy(&resp));
        }
    }
    rows.push(("register (proof of possession checked)".into(), samples));

    // Reports of fresh receipts: never replayed, so every one is verified and credited.
    let mut next_piece = 0u32;
    for k in [1u32, 10, 50] {
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let b = super::report_body(&up, &down, next_piece, k);
                next_piece += k;
                b
            })
            .collect();
        let mut samples = Vec::with_capacity(n);
        for b in &bodies {
            let t = Instant::now();
            let (status, resp) = http.call("POST", "/report", Some(b))?;
            samples.push(ms(t));
            super::check_report(status, &resp, k)?;
        }
        rows.push((format!("report, {k} receipts"), samples));
    }

    // On-chain updates, each mined by anvil before the answer.
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"username": "chainuser", "download_size": i, "upload_size": 2 * i});
        let t = Instant::now();
        http.json_ok("POST", "/contract/update", &body)?;
        samples.push(ms(t));
    }
    rows.push(("on-chain update (mined)".into(), samples));

    let mut t = Table::new(
        "tracker_overhead",
        "Tracker operation latency",
        "End-to-end over HTTP keep-alive on 127.0.0.1 against pbts (1 serving core) and anvil; \
         every request succeeded; milliseconds; relative to an announce",
        &["operation", "n", "mean (ms)", "p50 (ms)", "p95 (ms)", "p99 (ms)", "vs announce"],
    );
    let base = Stats::of(&rows[0].1).mean;
    for (name, samples) in &rows {
        raw.add(name, "", samples, "ms");
        let st = Stats::of(samples);
        t.row(vec![
            name.as_str().into(),
            st.n.into(),
            Cell::num(st.mean, 3),
            Cell::num(st.median, 3),
            Cell::num(st.p95, 3),
            Cell::num(st.p99, 3),
            Cell::num(st.mean / base, 1),
        ]);
    }
    Ok(Outcome { name: "tracker_overhead", tables: vec![t], raw })
}
