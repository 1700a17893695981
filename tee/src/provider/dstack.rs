//! The dstack guest agent (dstack OS 0.5 protocol): JSON over HTTP/1.1 on a Unix socket, or on
//! an `http://` endpoint (the simulator).
//!
//! ```text
//! POST /GetKey   {"path", "purpose", "algorithm": "secp256k1"} → {"key": hex, "signature_chain": [hex]}
//! POST /GetQuote {"report_data": hex (1..=64 bytes)}           → {"quote": hex, "event_log": json text}
//! POST /Info     {}                                            → {"app_id", "instance_id", ...}
//! ```
//!
//! `GetKey` is deterministic per application, path and purpose (the agent derives it from the
//! KMS); the tracker uses it as root material for [`crate::derive`]. The request is plain
//! blocking I/O with timeouts: callers run it on a blocking thread.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Provider;
use crate::error::TeeError;
use crate::quote::{hex, unhex};

/// Socket paths tried, in order, when no endpoint is configured.
pub const SOCKET_PATHS: &[&str] = &[
    "/var/run/dstack.sock",
    "/run/dstack.sock",
    "/var/run/dstack/dstack.sock",
    "/run/dstack/dstack.sock",
];

/// Largest agent response read, bytes (a quote with its event log is ~30 KB).
const MAX_RESPONSE: usize = 4 << 20;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(String),
    /// `host:port` of an HTTP endpoint.
    Http(String),
}

/// A dstack agent client.
#[derive(Debug)]
pub struct Dstack {
    endpoint: Endpoint,
    timeout: Duration,
}

/// The endpoint: `configured`, else `DSTACK_SIMULATOR_ENDPOINT`, else the first socket of
/// [`SOCKET_PATHS`] that exists.
pub fn resolve(configured: &str) -> Endpoint {
    let chosen = if configured.is_empty() {
        std::env::var("DSTACK_SIMULATOR_ENDPOINT").unwrap_or_else(|_| {
            SOCKET_PATHS
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .unwrap_or(&SOCKET_PATHS[0])
                .to_string()
        })
    } else {
        configured.to_owned()
    };
    match chosen.strip_prefix("http://") {
        Some(rest) => Endpoint::Http(rest.trim_end_matches('/').to_owned()),
        None => Endpoint::Unix(chosen.strip_prefix("unix:").unwrap_or(&chosen).to_owned()),
    }
}

impl Dstack {
    /// Connects to the agent and asks `Info`, so a missing agent fails at start-up.
    ///
    /// # Errors
    /// [`TeeError::Unavailable`] when the agent does not answer.
    pub fn open(configured: &str, timeout_secs: u64) -> Result<Self, TeeError> {
        let this = Self {
            endpoint: resolve(configured),
            timeout: Duration::from_secs(timeout_secs.max(1)),
        };
        this.call("/Info", &json!({})).map_err(|e| {
            TeeError::Unavailable(format!(
                "tee.mode = dstack but the agent at {:?} did not answer Info: {e}",
                this.endpoint
            ))
        })?;
        Ok(this)
    }

    /// One request: POST `path` with a JSON body; the JSON answer.
    ///
    /// # Errors
    /// I/O, a non-200 status (with the agent's text), or a body that is not JSON.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, TeeError> {
        let body = body.to_string();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: dstack\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let io = |e: std::io::Error| TeeError::Provider(format!("dstack {path}: {e}"));
        let raw = match &self.endpoint {
            Endpoint::Unix(p) => {
                let mut s = UnixStream::connect(p).map_err(io)?;
                s.set_read_timeout(Some(self.timeout)).map_err(io)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io)?;
                exchange(&mut s, req.as_bytes()).map_err(io)?
            }
            Endpoint::Http(addr) => {
                let mut s = TcpStream::connect(addr).map_err(io)?;
                s.set_read_timeout(Some(self.timeout)).map_err(io)?;
                s.set_write_timeout(Some(self.timeout)).map_err(io)?;
                exchange(&mut s, req.as_bytes()).map_err(io)?
            }
        };
        parse_response(path, &raw)
    }
}

/// The JSON answer in `raw`, the agent's whole response to a request for `path` (read until it
/// closed the connection).
///
/// # Errors
/// A truncated or malformed response, a non-200 status (with the agent's text), or a body that
/// is not JSON.
pub(crate) fn parse_response(path: &str, raw: &[u8]) -> Result<Value, TeeError> {
    let head = match pbts_http::request::parse_response_head(raw) {
        Ok(pbts_http::request::Status::Complete(h, _)) => h,
        Ok(pbts_http::request::Status::Partial) => {
            return Err(TeeError::Provider(format!("dstack {path}: truncated response")));
        }
        Err(e) => return Err(TeeError::Provider(format!("dstack {path}: bad response: {e}"))),
    };
    let body = &raw[head.head_len..];
    let body = match head.content_length {
        Some(n) if n <= body.len() => &body[..n],
        Some(n) => {
            return Err(TeeError::Provider(format!(
                "dstack {path}: body cut at {} of {n} bytes",
                body.len()
            )));
        }
        None => body,
    };
    if head.status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
        return Err(TeeError::Provider(format!("dstack {path}: HTTP {}: {text}", head.status)));
    }
    serde_json::from_slice(body).map_err(|e| TeeError::Provider(format!("dstack {path}: {e}")))
}

/// Writes the request and reads until the agent closes (bounded).
fn exchange(s: &mut (impl Read + Write), req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > MAX_RESPONSE {
            return Err(std::io::Error::other(format!("response over {MAX_RESPONSE} bytes")));
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn field<'a>(v: &'a Value, name: &str, path: &str) -> Result<&'a str, TeeError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| TeeError::Provider(format!("dstack {path}: answer has no string {name:?}")))
}

/// The root key in a `/GetKey` answer.
///
/// # Errors
/// No `key` string, not hex, or shorter than [`crate::derive::MIN_ROOT_LEN`].
pub(crate) fn key_from_answer(v: &Value) -> Result<Zeroizing<Vec<u8>>, TeeError> {
    let key = Zeroizing::new(unhex(field(v, "key", "/GetKey")?)?);
    if key.len() < crate::derive::MIN_ROOT_LEN {
        return Err(TeeError::Provider(format!("dstack /GetKey: key is {} bytes", key.len())));
    }
    Ok(key)
}

/// The quote in a `/GetQuote` answer.
///
/// # Errors
/// No `quote` string, or not hex.
pub(crate) fn quote_from_answer(v: &Value) -> Result<Vec<u8>, TeeError> {
    unhex(field(v, "quote", "/GetQuote")?)
}

impl Provider for Dstack {
    fn root_key(&self, path: &str, purpose: &str) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        let v = self.call(
            "/GetKey",
            &json!({"path": path, "purpose": purpose, "algorithm": "secp256k1"}),
        )?;
        key_from_answer(&v)
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let v = self.call("/GetQuote", &json!({"report_data": hex(report_data)}))?;
        quote_from_answer(&v)
    }

    fn info(&self) -> Value {
        let mut out = json!({ "provider": "dstack", "endpoint": format!("{:?}", self.endpoint) });
        if let Ok(v) = self.call("/Info", &json!({})) {
            for k in ["app_id", "instance_id", "app_name", "device_id", "compose_hash"] {
                if let Some(x) = v.get(k) {
                    out[k] = x.clone();
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(resolve("http://127.0.0.1:8090/"), Endpoint::Http("127.0.0.1:8090".into()));
        assert_eq!(resolve("/tmp/d.sock"), Endpoint::Unix("/tmp/d.sock".into()));
        assert_eq!(resolve("unix:/tmp/d.sock"), Endpoint::Unix("/tmp/d.sock".into()));
    }
}
