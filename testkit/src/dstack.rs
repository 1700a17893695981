//! A development dstack agent: serves the dstack OS 0.5 guest-agent protocol (`POST /GetKey`,
//! `/GetQuote`, `/Info`) on a Unix socket or a loopback TCP port, so the `dstack` provider can
//! be exercised and demonstrated without TDX hardware.
//!
//! It is not a TEE: keys are HMAC-style derivations of a secret the caller gives (as a KMS would
//! derive them per app, path and purpose), and quotes are a template quote with the requested
//! report data written in (so they parse, and bind the data, but their signature no longer
//! verifies). Every request is logged for inspection.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::Digest as _;

use pbts_tee::quote;

/// A request the agent received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The method path (`/GetKey`, ...).
    pub path: String,
    /// The `Host` header.
    pub host: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The JSON body (`null` if it was not JSON).
    pub body: Value,
}

/// Requests the agent received, in order.
pub type RequestLog = Arc<Mutex<Vec<Logged>>>;

/// How the agent answers.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The app secret keys derive from.
    pub secret: Vec<u8>,
    /// A real quote used as the template of every answered quote.
    pub template_quote: Vec<u8>,
    /// Answer `/GetQuote` with HTTP 500 (a machine without TDX).
    pub fail_quotes: bool,
}

fn answer(config: &AgentConfig, path: &str, body: &Value) -> (u16, String) {
    match path {
        "/GetKey" => {
            let mut h = sha2::Sha256::new();
            h.update(&config.secret);
            h.update(body["path"].as_str().unwrap_or_default());
            h.update([0]);
            h.update(body["purpose"].as_str().unwrap_or_default());
            let key = quote::hex(&h.finalize());
            (200, json!({"key": key, "signature_chain": []}).to_string())
        }
        "/GetQuote" if config.fail_quotes => (500, "TDX not available".to_owned()),
        "/GetQuote" => {
            let Some(rd) = body["report_data"].as_str().and_then(|s| quote::unhex(s).ok()) else {
                return (400, "report_data must be hex".to_owned());
            };
            if rd.is_empty() || rd.len() > 64 {
                return (400, "report_data must be 1 to 64 bytes".to_owned());
            }
            let Ok(parsed) = quote::parse(&config.template_quote) else {
                return (500, "the template is not a TDX quote".to_owned());
            };
            let at = if parsed.version == 5 { 54 + 520 } else { 48 + 520 };
            let mut q = config.template_quote.clone();
            q[at..at + 64].fill(0);
            q[at..at + rd.len()].copy_from_slice(&rd);
            (200, json!({"quote": quote::hex(&q), "event_log": "[]"}).to_string())
        }
        "/Info" => (
            200,
            json!({"app_id": "pbts-dev", "instance_id": "dev-0", "app_name": "pbts", "device_id": "dev"})
                .to_string(),
        ),
        _ => (404, "no such method".to_owned()),
    }
}

/// Serves one request on `s` and closes.
fn serve(mut s: impl Read + Write, config: &AgentConfig, log: &RequestLog) {
    use pbts_http::request::{Limits, Status, parse_request};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let logged = loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 || buf.len() > 1 << 20 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf, &Limits::default()) {
            Ok(Status::Complete(req, _)) => {
                let text = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
                break Logged {
                    path: String::from_utf8_lossy(req.path).into_owned(),
                    host: text(req.host),
                    content_type: text(req.content_type),
                    body: serde_json::from_slice::<Value>(req.body).unwrap_or(Value::Null),
                };
            }
            Ok(Status::Partial) => {}
            Err(_) => return,
        }
    };
    let (status, text) = answer(config, &logged.path, &logged.body);
    if let Ok(mut l) = log.lock() {
        l.push(logged);
    }
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = s.write_all(resp.as_bytes());
}

/// Serves every connection of `incoming` from a background thread; returns the request log.
fn spawn_agent<S, I>(incoming: I, config: AgentConfig) -> std::io::Result<RequestLog>
where
    S: Read + Write,
    I: Iterator<Item = std::io::Result<S>> + Send + 'static,
{
    let log = RequestLog::default();
    let l = log.clone();
    std::thread::Builder::new().name("dstack-dev-agent".into()).spawn(move || {
        for conn in incoming.flatten() {
            serve(conn, &config, &l);
        }
    })?;
    Ok(log)
}

/// Serves on a Unix socket at `path` from a background thread, for the life of the process.
///
/// # Errors
/// The socket cannot be bound.
pub fn serve_unix(path: &Path, config: AgentConfig) -> std::io::Result<RequestLog> {
    let listener = UnixListener::bind(path)?;
    spawn_agent(std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s))), config)
}

/// Serves over TCP on a free loopback port (the simulator's `http://` form); returns the URL.
///
/// # Errors
/// No port can be bound.
pub fn serve_http(config: AgentConfig) -> std::io::Result<(String, RequestLog)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let incoming = std::iter::from_fn(move || Some(listener.accept().map(|(s, _)| s)));
    Ok((url, spawn_agent(incoming, config)?))
}
