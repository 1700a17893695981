//! The dstack provider against an agent that speaks the dstack OS 0.5 guest-agent protocol
//! (the one dstack-sdk 0.1.x uses): HTTP/1.1 `POST /GetKey`, `/GetQuote`, `/Info` with JSON
//! bodies and `Host: dstack`, on a Unix socket and, as the simulator serves it, over TCP.
//!
//! The agent ([`pbts_testkit::dstack`]) derives keys as a KMS would (deterministic per app, path and
//! purpose) and answers quotes by writing the requested report data into a real sample quote,
//! so what the provider sends and how it reads the answers are checked byte for byte; the
//! request checks below pin the wire format.

#![allow(clippy::unwrap_used, missing_docs)]

use pbts_tee::{Tee, TeeConfig, TeeError, TeeMode, quote};
use pbts_testkit::dstack::{self as agent, AgentConfig, RequestLog};
use serde_json::json;

const SAMPLE: &[u8] = include_bytes!("data/tdx_quote");

fn agent_config(fail_quotes: bool) -> AgentConfig {
    AgentConfig { secret: b"app-secret".to_vec(), template_quote: SAMPLE.to_vec(), fail_quotes }
}

/// An agent on a Unix socket in `dir`; serves until the test ends.
fn unix_agent(dir: &std::path::Path, fail_quotes: bool) -> (String, RequestLog) {
    let path = dir.join("dstack.sock");
    let log = agent::serve_unix(&path, agent_config(fail_quotes)).unwrap();
    (path.display().to_string(), log)
}

fn open(endpoint: &str) -> Result<Tee, TeeError> {
    let config = TeeConfig {
        mode: TeeMode::Dstack,
        dstack_endpoint: endpoint.to_owned(),
        ..TeeConfig::default()
    };
    Tee::open(&config, std::path::Path::new("/nonexistent"))
}

#[test]
fn keys_are_derived_from_the_agent_deterministically_and_quotes_bind_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, log) = unix_agent(dir.path(), false);
    let tee = open(&socket).unwrap();
    assert_eq!(tee.mode(), TeeMode::Dstack);
    assert!(tee.can_quote());
    let first = log.lock().unwrap()[0].clone();
    assert_eq!(
        first,
        agent::Logged {
            path: "/Info".into(),
            host: Some("dstack".into()),
            content_type: Some("application/json".into()),
            body: json!({}),
        },
        "open asks Info first"
    );

    let a = tee.bls_key("tracker").unwrap().public_key().to_bytes();
    assert_eq!(a, tee.bls_key("tracker").unwrap().public_key().to_bytes());
    assert_ne!(a, tee.bls_key("other").unwrap().public_key().to_bytes());
    let e = tee.ethereum_key(pbts_tee::derive::ETHEREUM_PATH).unwrap();
    assert_eq!(*e, *tee.ethereum_key(pbts_tee::derive::ETHEREUM_PATH).unwrap());
    // A second client of the same agent (a restarted tracker) gets the same keys.
    let again = open(&socket).unwrap();
    assert_eq!(a, again.bls_key("tracker").unwrap().public_key().to_bytes());
    {
        let log = log.lock().unwrap();
        assert_eq!(log[1].path, "/GetKey");
        assert_eq!(
            log[1].body,
            json!({"path": "pbts/bls/tracker", "purpose": "signature", "algorithm": "secp256k1"})
        );
        assert!(log.iter().any(|r| r.path == "/GetKey"
            && r.body["path"] == "ethereum/pbts"
            && r.body["purpose"] == "tracker"));
    }

    let payload = b"PBTS-Tracker-v1.0:factory=0x00000000000000000000000000000000000000aa:referrer=0x0000000000000000000000000000000000000000";
    let (raw, report_data) = tee.quote(quote::Binding::Tracker(payload)).unwrap();
    assert_eq!(report_data, quote::report_data_for(payload));
    assert_eq!(quote::parse(&raw).unwrap().report.report_data, report_data);
    let sent =
        log.lock().unwrap().iter().rev().find(|r| r.path == "/GetQuote").unwrap().body.clone();
    assert_eq!(sent, json!({"report_data": quote::hex(&report_data)}));

    let info = tee.info();
    assert_eq!(
        (info["provider"].as_str(), info["app_id"].as_str()),
        (Some("dstack"), Some("pbts-dev"))
    );
    let stats = tee.stats.snapshot();
    assert_eq!((stats.key_generations, stats.attestations_generated), (5, 1));
}

#[test]
fn agent_failures_are_errors_with_the_agents_words() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, _) = unix_agent(dir.path(), true);
    let tee = open(&socket).unwrap();
    assert_eq!(
        tee.quote(quote::Binding::Client(b"x")).unwrap_err(),
        TeeError::Provider("dstack /GetQuote: HTTP 500: TDX not available".to_owned())
    );
    // No agent: a start-up error, never a silent fallback to no TEE.
    let missing = dir.path().join("nobody.sock").display().to_string();
    let err = open(&missing).unwrap_err();
    assert!(
        matches!(&err, TeeError::Unavailable(m) if m.starts_with("tee.mode = dstack but the agent at")),
        "{err}"
    );
}

#[test]
fn the_simulator_endpoint_over_http_works_the_same() {
    let (url, log) = agent::serve_http(agent_config(false)).unwrap();
    let tee = open(&url).unwrap();
    assert_eq!(log.lock().unwrap().len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let (socket, _) = unix_agent(dir.path(), false);
    let unix = open(&socket).unwrap();
    // Same agent secret, same keys, whichever transport.
    assert_eq!(
        tee.bls_key("tracker").unwrap().public_key().to_bytes(),
        unix.bls_key("tracker").unwrap().public_key().to_bytes()
    );
}

#[test]
fn without_a_tee_keys_come_from_the_root_file_and_quotes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tee = Tee::open(&TeeConfig::default(), dir.path()).unwrap();
    let a = tee.bls_key("tracker").unwrap().public_key().to_bytes();
    // The root secret file persists: a restart gives the same key.
    let again = Tee::open(&TeeConfig::default(), dir.path()).unwrap();
    assert_eq!(a, again.bls_key("tracker").unwrap().public_key().to_bytes());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("tee-root.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        tee.quote(quote::Binding::Client(b"x")).unwrap_err(),
        TeeError::Unavailable("no TEE (tee.mode = none): quotes need tdx or dstack".to_owned())
    );
    // Asking for TDX where there is none is a clear error.
    let config = TeeConfig {
        mode: TeeMode::Tdx,
        tsm_report_dir: dir.path().join("tsm").display().to_string(),
        ..TeeConfig::default()
    };
    let err = Tee::open(&config, dir.path()).unwrap_err().to_string();
    assert!(err.starts_with("TEE unavailable: tee.mode = tdx but "), "{err}");
    assert_eq!(TeeMode::parse("ENABLED"), Ok(TeeMode::Dstack));
    assert_eq!(TeeMode::parse("disabled"), Ok(TeeMode::None));
    assert!(TeeMode::parse("sgx").is_err());
}
