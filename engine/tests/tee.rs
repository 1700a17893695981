//! The TEE endpoints over real HTTP: without a TEE (baseline: verification still works, quotes
//! and TEE keys are refused), and with the dstack provider against the development agent on a
//! Unix socket (derived keys, quotes binding payloads, the factory attestation, the chain
//! account derived in the TEE).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use pbts_engine::config::TrackerMode;
use pbts_tee::{Tee, TeeConfig, TeeMode, quote};
use pbts_testkit::dstack::{self as agent, AgentConfig};
use serde_json::{Value, json};

const SAMPLE: &[u8] = include_bytes!("../../tee/tests/data/tdx_quote");
const COLLATERAL: &[u8] = include_bytes!("../../tee/tests/data/tdx_quote_collateral.json");

fn verify_time() -> u64 {
    let c = pbts_tee::verify::parse_collateral(COLLATERAL).unwrap();
    pbts_tee::verify::collateral_issue_time(&c).unwrap() + 3600
}

fn dev_agent(dir: &std::path::Path) -> String {
    let path = dir.join("dstack.sock");
    let config = AgentConfig {
        secret: b"app".to_vec(),
        template_quote: SAMPLE.to_vec(),
        fail_quotes: false,
    };
    agent::serve_unix(&path, config).unwrap();
    path.display().to_string()
}

#[test]
fn without_a_tee_quotes_are_refused_and_verification_still_works() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let a = srv.v4;
    let (status, s) = call(a, "GET", "/tee/status", None);
    assert_eq!(status, 200);
    assert_eq!((s["tee_available"].as_bool(), s["tee_mode"].as_str()), (Some(false), Some("none")));
    assert_eq!(s["provider"]["provider"], "none");
    let refused = "TEE not available (tee.mode = none): set tee.mode or TEE_MODE to tdx or dstack";
    fails(call(a, "POST", "/keygen-tee", None), 503, refused);
    fails(call(a, "POST", "/generate-attestation", Some(json!({}))), 400, "Missing payload");
    fails(call(a, "POST", "/generate-attestation", Some(json!({"payload": "x"}))), 503, refused);

    let rd = quote::parse(SAMPLE).unwrap().report.report_data;
    let collateral: Value = serde_json::from_slice(COLLATERAL).unwrap();
    let body = |extra: Value| {
        let mut b =
            json!({"quote": quote::hex(SAMPLE), "collateral": collateral, "now": verify_time()});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let (status, v) = call(
        a,
        "POST",
        "/verify-attestation",
        Some(body(json!({"expected_report_data": quote::hex(&rd)}))),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["is_valid"].as_bool(), v["report_data_matches"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    assert_eq!(v["quote_version"], 4);
    assert_eq!(v["tee_type"], "TDX");
    assert_eq!(v["measurements"]["mr_td"], quote::hex(&quote::parse(SAMPLE).unwrap().report.mr_td));
    assert_eq!(v["reason"], Value::Null);

    // The original never enforced the payload: here a mismatch is invalid.
    let (_, v) = call(
        a,
        "POST",
        "/verify-attestation",
        Some(body(json!({"expected_payload": "something else"}))),
    );
    assert_eq!(
        (v["is_valid"].as_bool(), v["report_data_matches"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(v["reason"], "report data does not match the expected payload");
    // A flipped byte fails the signature.
    let mut tampered = SAMPLE.to_vec();
    tampered[48 + 136] ^= 1;
    let mut b = body(json!({"expected_report_data": quote::hex(&rd)}));
    b["quote"] = quote::hex(&tampered).into();
    let (_, v) = call(a, "POST", "/verify-attestation", Some(b));
    assert_eq!(v["is_valid"], false);
    assert!(v["reason"].as_str().unwrap().starts_with("quote verification failed"), "{v}");

    fails(
        call(a, "POST", "/verify-attestation", Some(json!({"expected_payload": "x"}))),
        400,
        "Missing quote",
    );
    fails(
        call(
            a,
            "POST",
            "/verify-attestation",
            Some(json!({"quote": "zz", "expected_payload": "x"})),
        ),
        400,
        "quote must be hex",
    );
    fails(
        call(a, "POST", "/verify-attestation", Some(json!({"quote": quote::hex(SAMPLE)}))),
        400,
        "Missing expected_payload",
    );
    fails(
        call(
            a,
            "POST",
            "/verify-attestation",
            Some(json!({"quote": quote::hex(SAMPLE), "expected_payload": "x"})),
        ),
        400,
        "collateral required (no tee.pccs_url is configured)",
    );
    // Clients do not choose what the tracker fetches (SSRF), with or without collateral.
    let refused = "pccs_url is not accepted: send the collateral in the request (\"collateral\"), \
                   or let the tracker fetch it from the PCCS its operator configured (tee.pccs_url)";
    fails(
        call(
            a,
            "POST",
            "/verify-attestation",
            Some(json!({
                "quote": quote::hex(SAMPLE),
                "expected_payload": "x",
                "pccs_url": "http://169.254.169.254/latest/meta-data/",
            })),
        ),
        400,
        refused,
    );
    fails(
        call(
            a,
            "POST",
            "/verify-attestation",
            Some(body(json!({"expected_payload": "x", "pccs_url": "http://127.0.0.1:1"}))),
        ),
        400,
        refused,
    );
    let s = call(a, "GET", "/tee/status", None).1;
    assert_eq!(s["statistics"]["attestations_verified"], 3);
}

#[test]
fn with_dstack_keys_are_derived_in_the_tee_and_quotes_bind_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dev_agent(dir.path());
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.tee.mode = TeeMode::Dstack;
        c.tee.dstack_endpoint = socket.clone();
    });
    let a = srv.v4;
    let (_, s) = call(a, "GET", "/tee/status", None);
    assert_eq!(
        (s["tee_available"].as_bool(), s["tee_mode"].as_str()),
        (Some(true), Some("dstack"))
    );
    assert_eq!(s["provider"]["app_id"], "pbts-dev");
    // `GET /config` says the same (it used to say `false` whatever the provider).
    let (_, c) = call(a, "GET", "/config", None);
    assert_eq!(
        (c["tee_available"].as_bool(), c["tee_mode"].as_str()),
        (Some(true), Some("dstack"))
    );

    // The same agent, asked directly, derives the same key: deterministic by path.
    let direct = Tee::open(
        &TeeConfig { mode: TeeMode::Dstack, dstack_endpoint: socket, ..TeeConfig::default() },
        dir.path(),
    )
    .unwrap();
    let expected =
        pbts_engine::encoding::b64(&direct.bls_key("tracker").unwrap().public_key().to_bytes().0);
    let (status, k) = call(a, "POST", "/keygen-tee", Some(json!({"salt": "ignored"})));
    assert_eq!(status, 200, "{k}");
    assert_eq!(k["public_key"], expected);
    assert_eq!(
        (k["tee_derived"].as_bool(), k["derivation_path"].as_str()),
        (Some(true), Some("tracker"))
    );
    let mut keys: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "derivation_path",
            "derivation_time_ms",
            "key_type",
            "public_key",
            "public_key_size",
            "success",
            "tee_derived",
            "tee_mode"
        ],
        "no private key ever leaves"
    );
    let (_, other) = call(a, "POST", "/keygen-tee", Some(json!({"path": "other"})));
    assert_ne!(other["public_key"], expected);

    let payload = "x".repeat(100);
    let (status, q) = call(a, "POST", "/generate-attestation", Some(json!({"payload": payload})));
    assert_eq!(status, 200, "{q}");
    let raw = quote::unhex(q["quote"].as_str().unwrap()).unwrap();
    assert_eq!(q["quote_size_bytes"], raw.len(), "binary size, not the hex length");
    // Client payloads are bound in their own domain, never as a tracker statement would be.
    let rd = quote::client_report_data(payload.as_bytes());
    assert_eq!(q["report_data"], quote::hex(&rd));
    assert_eq!(
        q["report_data_binding"],
        "sha256(\"pbts/client-attestation/v1\" || payload), zero-padded to 64 bytes"
    );
    assert_eq!(quote::parse(&raw).unwrap().report.report_data, rd);
    assert_ne!(rd, quote::report_data_for(payload.as_bytes()));
    // A payload spelling the factory statement does not get the statement's report data.
    let statement = format!(
        "PBTS-Tracker-v1.0:factory={}:referrer={}",
        pbts_chain::Address::repeat_byte(0xaa),
        pbts_chain::Address::ZERO
    );
    let (_, forged) = call(a, "POST", "/generate-attestation", Some(json!({"payload": statement})));
    assert_ne!(forged["report_data"], quote::hex(&quote::report_data_for(statement.as_bytes())));
    let s = call(a, "GET", "/tee/status", None).1;
    assert_eq!(s["statistics"]["key_generations"], 2);
    assert_eq!(s["statistics"]["attestations_generated"], 2);

    // Round trip: /verify-attestation checks expected_payload in the client domain. (The dev
    // agent writes report data into a real quote, so its signature no longer verifies: the
    // binding is what this checks.)
    let collateral: Value = serde_json::from_slice(COLLATERAL).unwrap();
    let verify = |expected: Value| {
        let mut b = json!({"quote": q["quote"], "collateral": collateral, "now": verify_time()});
        for (k, v) in expected.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, v) = call(a, "POST", "/verify-attestation", Some(b));
        assert_eq!(status, 200, "{v}");
        (v["report_data_matches"].as_bool().unwrap(), v["reason"].as_str().unwrap().to_owned())
    };
    let (matches, reason) = verify(json!({"expected_payload": payload}));
    assert!(matches);
    assert!(reason.starts_with("quote verification failed"), "{reason}");
    assert!(verify(json!({"expected_report_data": quote::hex(&rd)})).0);
    let tracker_scheme = quote::hex(&quote::report_data_for(payload.as_bytes()));
    assert!(!verify(json!({"expected_report_data": tracker_scheme})).0);
    assert!(!verify(json!({"expected_payload": "y".repeat(100)})).0);

    // Asking for dstack where there is no agent fails the start.
    let mut config = test_config(TrackerMode::Private, dir.path());
    config.tee.mode = TeeMode::Dstack;
    config.tee.dstack_endpoint = dir.path().join("none.sock").display().to_string();
    let err = format!("{:#}", pbts_engine::start(config).unwrap_err());
    assert!(err.starts_with("open the TEE provider (tee.mode = dstack): TEE unavailable: tee.mode = dstack but the agent"), "{err}");
}

/// Verifications run on their own bounded threads: a PCCS that never answers holds one of them,
/// the next verification is turned away at once (503 + Retry-After), and the rest of the API,
/// `/register`'s signature checks included, is served meanwhile (a tarpit once held `/register`
/// for 7.5 s on the core's only blocking thread).
#[test]
fn verifications_are_bounded_and_a_slow_pccs_stalls_nothing_else() {
    use pbts_verifier::keys::SecretKey;
    use std::time::Duration;
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pccs = format!("http://{}", tarpit.local_addr().unwrap());
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.tee.pccs_url = pccs.clone();
        c.tee.timeout_secs = 60;
        c.tee.verify_threads = 1;
        c.tee.max_pending_verifications = 1;
    });
    let a = srv.v4;
    let body = json!({"quote": quote::hex(SAMPLE), "expected_payload": "x"});
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    std::thread::spawn(move || accepted_tx.send(tarpit.accept().map(|(conn, _)| conn)));
    let (done_tx, done) = std::sync::mpsc::channel();
    let first = body.clone();
    let waiting = std::thread::spawn(move || {
        let answer = call(a, "POST", "/verify-attestation", Some(first));
        done_tx.send(()).unwrap();
        answer
    });
    // The PCCS fetch has begun once the tarpit has its connection; it never gets an answer.
    let conn = accepted.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();

    let (status, head, resp) =
        http_request(a, "POST", "/verify-attestation", Some(&body.to_string()));
    assert_eq!(status, 503);
    assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&resp).unwrap(),
        json!({
            "success": false,
            "error": "attestation verifier busy: 1 verifications in progress (limit 1); retry later"
        })
    );

    let sk = SecretKey::from_ikm(&[5; 32]).unwrap();
    let registration = json!({
        "user_id": "carol",
        "public_key": pbts_engine::encoding::b64(&sk.public_key().to_bytes().0),
        "proof_of_possession": pbts_engine::encoding::b64(&sk.prove_possession().0),
    });
    let (status, v) = call(a, "POST", "/register", Some(registration));
    assert_eq!((status, v["user_id"].as_str()), (200, Some("carol")), "{v}");
    assert!(done.try_recv().is_err(), "/register was answered while the PCCS still hangs");

    // The tarpit hangs up: the verification fails naming the PCCS, and its slot is free again.
    drop(conn);
    let (status, v) = waiting.join().unwrap();
    assert_eq!(status, 400, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("collateral: PCCS {pccs}: ")), "{error}");
    let collateral: Value = serde_json::from_slice(COLLATERAL).unwrap();
    let rd = quote::parse(SAMPLE).unwrap().report.report_data;
    let offline = json!({
        "quote": quote::hex(SAMPLE),
        "expected_report_data": quote::hex(&rd),
        "collateral": collateral,
        "now": verify_time(),
    });
    let (status, v) = call(a, "POST", "/verify-attestation", Some(offline));
    assert_eq!((status, v["is_valid"].as_bool()), (200, Some(true)), "{v}");
}

#[test]
fn the_factory_attestation_is_a_quote_and_the_chain_account_lives_in_the_tee() {
    use pbts_chain::worker::wait;
    use pbts_testkit::anvil::{Anvil, dev_key};
    let anvil = Anvil::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dev_agent(dir.path());
    let config = pbts_chain::ChainConfig { rpc_url: anvil.url(), ..Default::default() };
    let own = pbts_chain::ChainHandle::start(config, dev_key(0)).unwrap();
    let factory = wait(&own.deploy_factory()).unwrap().address;

    // The account the TEE derives, funded on the dev chain.
    let tee_cfg =
        TeeConfig { mode: TeeMode::Dstack, dstack_endpoint: socket, ..TeeConfig::default() };
    let direct = Tee::open(&tee_cfg, dir.path()).unwrap();
    let secret = direct.ethereum_key(pbts_tee::derive::ETHEREUM_PATH).unwrap();
    let account = pbts_chain::SigningKey::from_bytes(&secret).unwrap().address();
    let fund = json!({"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                      "params": [account.to_string(), "0x56BC75E2D63100000"]});
    let anvil_addr: SocketAddr = anvil.url().trim_start_matches("http://").parse().unwrap();
    let (status, _) = call(anvil_addr, "POST", "/", Some(fund));
    assert_eq!(status, 200);

    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.tee = tee_cfg.clone();
        c.tee.chain_key = true;
        c.chain = pbts_chain::ChainConfig {
            rpc_url: anvil.url(),
            key_env: "PBTS_TEST_UNSET_KEY".into(),
            factory_address: factory.to_string(),
            ..Default::default()
        };
    });
    let (_, s) = call(srv.v4, "GET", "/contract/status", None);
    assert_eq!(
        s["account_address"],
        account.to_string(),
        "signing with the TEE-derived key, no PK0"
    );
    let (status, v) = call(srv.v4, "POST", "/contract/init", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["attestation"], "tdx-quote");
    let rep: pbts_chain::Address = v["reputation_address"].as_str().unwrap().parse().unwrap();
    let (owner, _) = wait(&own.describe(rep)).unwrap();
    assert_eq!(owner, account, "the contract belongs to the TEE's account");
    // The quote published in ReputationCreated binds the factory and referrer.
    let payload =
        format!("PBTS-Tracker-v1.0:factory={factory}:referrer={}", pbts_chain::Address::ZERO);
    let published = wait(&own.reputation_attestation(factory, rep)).unwrap().unwrap();
    assert_eq!(
        quote::parse(&published).unwrap().report.report_data,
        quote::report_data_for(payload.as_bytes())
    );
}
