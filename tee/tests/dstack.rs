//! The dstack provider against an agent that speaks the dstack OS 0.5 guest-agent protocol
//! (the one dstack-sdk 0.1.x uses): HTTP/1.1 `POST /GetKey`, `/GetQuote`, `/Info` with JSON
//! bodies and `Host: dstack`, on a Unix socket and, as the simulator serves it, over TCP.
//!
//! The agent here derives keys as a KMS would (deterministic per app, path and purpose) and
//! answers quotes by writing the requested report data into a real sample quote, so what the
//! provider sends and how it reads the answers are checked byte for byte.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};

use pbts_http::request::{Limits, Method, Status, parse_request};
use pbts_tee::{Tee, TeeConfig, TeeError, TeeMode, quote};
use serde_json::{Value, json};
use sha2::Digest as _;

const SAMPLE: &[u8] = include_bytes!("data/tdx_quote");

/// Requests the agent saw: (path, JSON body).
type Log = Arc<Mutex<Vec<(String, Value)>>>;

fn answer(path: &str, body: &Value, fail_quotes: bool) -> (u16, String) {
    match path {
        "/GetKey" => {
            let mut h = sha2::Sha256::new();
            h.update(b"app-secret");
            h.update(body["path"].as_str().unwrap_or_default());
            h.update([0]);
            h.update(body["purpose"].as_str().unwrap_or_default());
            let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            (200, json!({"key": key, "signature_chain": ["00", "11"]}).to_string())
        }
        "/GetQuote" if fail_quotes => (500, "TDX not available".to_owned()),
        "/GetQuote" => {
            let rd = quote::unhex(body["report_data"].as_str().unwrap()).unwrap();
            let mut q = SAMPLE.to_vec();
            q[48 + 520..48 + 520 + 64].fill(0);
            q[48 + 520..48 + 520 + rd.len()].copy_from_slice(&rd);
            (200, json!({"quote": quote::hex(&q), "event_log": "[]"}).to_string())
        }
        "/Info" => {
            (200, json!({"app_id": "a1", "instance_id": "i1", "app_name": "pbts"}).to_string())
        }
        _ => (404, "no such method".to_owned()),
    }
}

/// Serves one connection: one request, one response, close.
fn serve(mut s: impl Read + Write, log: &Log, fail_quotes: bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (path, body) = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "client closed before a full request");
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(Status::Complete(req, _)) = parse_request(&buf, &Limits::default()) {
            assert_eq!(req.method, Method::Post);
            let text = String::from_utf8_lossy(&buf).to_lowercase();
            assert!(text.contains("\r\nhost: dstack\r\n"), "{text}");
            assert!(text.contains("\r\ncontent-type: application/json\r\n"), "{text}");
            break (
                String::from_utf8(req.path.to_vec()).unwrap(),
                serde_json::from_slice::<Value>(req.body).unwrap(),
            );
        }
    };
    log.lock().unwrap().push((path.clone(), body.clone()));
    let (status, text) = answer(&path, &body, fail_quotes);
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    s.write_all(resp.as_bytes()).unwrap();
}

/// An agent on a Unix socket in `dir`; serves until the test ends.
fn unix_agent(dir: &std::path::Path, fail_quotes: bool) -> (String, Log) {
    let path = dir.join("dstack.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            serve(conn.unwrap(), &l, fail_quotes);
        }
    });
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
    assert_eq!(log.lock().unwrap()[0], ("/Info".to_owned(), json!({})), "open asks Info first");

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
        assert_eq!(
            log[1],
            (
                "/GetKey".to_owned(),
                json!({"path": "pbts/bls/tracker", "purpose": "signature", "algorithm": "secp256k1"})
            )
        );
        assert!(log.iter().any(|(p, b)| p == "/GetKey"
            && b["path"] == "ethereum/pbts"
            && b["purpose"] == "tracker"));
    }

    let payload = b"PBTS-Tracker-v1.0:factory=0x00000000000000000000000000000000000000aa:referrer=0x0000000000000000000000000000000000000000";
    let (raw, report_data) = tee.quote(payload).unwrap();
    assert_eq!(report_data, quote::report_data_for(payload));
    assert_eq!(quote::parse(&raw).unwrap().report.report_data, report_data);
    let sent = log.lock().unwrap().iter().rev().find(|(p, _)| p == "/GetQuote").unwrap().1.clone();
    assert_eq!(sent, json!({"report_data": quote::hex(&report_data)}));

    let info = tee.info();
    assert_eq!((info["provider"].as_str(), info["app_id"].as_str()), (Some("dstack"), Some("a1")));
    let stats = tee.stats.snapshot();
    assert_eq!((stats.key_generations, stats.attestations_generated), (5, 1));
}

#[test]
fn agent_failures_are_errors_with_the_agents_words() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, _) = unix_agent(dir.path(), true);
    let tee = open(&socket).unwrap();
    assert_eq!(
        tee.quote(b"x").unwrap_err(),
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            serve(conn.unwrap(), &log, false);
        }
    });
    let tee = open(&format!("http://{addr}")).unwrap();
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
        tee.quote(b"x").unwrap_err(),
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
