//! Blocking HTTP/1.1 clients for tests and the experiments harness: a keep-alive [`Http`]
//! client (pipelining, `Result`s), and one-shot helpers that panic with the exchange in the
//! message (for tests). Both read responses with `pbts_http`'s response-head parser, so there is
//! one header loop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use pbts_http::request::{Status, parse_response_head};

const JSON: &str = "application/json";

/// How long a test client waits for the server before failing.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A blocking keep-alive HTTP/1.1 client.
#[derive(Debug)]
pub struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    /// Connects (read timeout 30 s: the experiments load the server hard).
    ///
    /// # Errors
    /// Connection failures.
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { stream, buf: Vec::with_capacity(8192) })
    }

    /// Writes one request without waiting (for pipelining).
    ///
    /// # Errors
    /// I/O errors.
    pub fn send(&mut self, method: &str, target: &str, body: Option<&[u8]>) -> anyhow::Result<()> {
        let req = request_bytes(method, target, "pbts", false, &[], body, Some(JSON));
        self.stream.write_all(&req)?;
        Ok(())
    }

    /// Reads one response: (status, body).
    ///
    /// # Errors
    /// I/O errors, or a connection closed before a whole response.
    pub fn recv(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        let resp = try_read_response(&mut self.stream, &mut self.buf)?;
        let Some((status, _, body)) = try_split_response(&resp) else {
            bail!("connection closed mid-response");
        };
        Ok((status, body))
    }

    /// One request and its response.
    ///
    /// # Errors
    /// As [`Http::send`] and [`Http::recv`].
    pub fn call(
        &mut self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send(method, target, body)?;
        self.recv()
    }

    /// A JSON request whose answer must be 2xx; its JSON.
    ///
    /// # Errors
    /// Any other status, with the body.
    pub fn json_ok(
        &mut self,
        method: &str,
        target: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, resp) = self.call(method, target, Some(body.to_string().as_bytes()))?;
        if !(200..300).contains(&status) {
            bail!("{method} {target}: {status} {}", String::from_utf8_lossy(&resp));
        }
        Ok(serde_json::from_slice(&resp)?)
    }
}

/// The bytes of one request. A body gets `Content-Length`, and `Content-Type` when
/// `content_type` names one.
pub fn request_bytes(
    method: &str,
    target: &str,
    host: &str,
    close: bool,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    content_type: Option<&str>,
) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Some(b) => {
            if let Some(t) = content_type {
                req.push_str(&format!("Content-Type: {t}\r\n"));
            }
            req.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
            let mut bytes = req.into_bytes();
            bytes.extend_from_slice(b);
            bytes
        }
        None => {
            req.push_str("\r\n");
            req.into_bytes()
        }
    }
}

/// Reads one response (head and `Content-Length` body) from `s`; bytes past it stay in `buf`
/// for the next call (pipelined responses). If the server closes first, whatever arrived.
///
/// # Errors
/// I/O errors (a read timeout included) and unparseable response heads.
pub fn try_read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Status::Complete(head, _) = parse_response_head(buf)? {
            let end = head.head_len + head.content_length.unwrap_or(0);
            if buf.len() >= end {
                let rest = buf.split_off(end);
                return Ok(std::mem::replace(buf, rest));
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return Ok(std::mem::take(buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("read; got {:?}", String::from_utf8_lossy(buf)));
            }
        }
    }
}

/// [`try_read_response`] for tests.
///
/// # Panics
/// On I/O errors, with what arrived so far.
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    try_read_response(s, buf).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Splits a whole response into (status, head text, body); `None` without a whole head.
pub fn try_split_response(resp: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let Ok(Status::Complete(head, _)) = parse_response_head(resp) else { return None };
    let text = String::from_utf8_lossy(&resp[..head.head_len]).trim_end().to_owned();
    Some((head.status, text, resp[head.head_len..].to_vec()))
}

/// [`try_split_response`] for tests.
///
/// # Panics
/// Without a whole response head, showing the bytes.
pub fn split_response(resp: &[u8]) -> (u16, String, Vec<u8>) {
    try_split_response(resp)
        .unwrap_or_else(|| panic!("incomplete response: {:?}", String::from_utf8_lossy(resp)))
}

/// Sends raw bytes on a fresh connection and reads one response (or until the server closes).
/// Returns everything read.
///
/// # Panics
/// On connection or read failures (test helper).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("set a read timeout");
    s.write_all(bytes).unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    read_response(&mut s, &mut Vec::new())
}

/// One request with `Connection: close` and an optional JSON body; (status, head, body).
///
/// # Panics
/// On I/O failures or an incomplete response (test helper).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    json: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let body = json.map(str::as_bytes);
    let req = request_bytes(method, target, &addr.to_string(), true, &[], body, Some(JSON));
    exchange(addr, &req)
}

/// A request with extra headers and a raw body (always with `Content-Length`); (status, head,
/// body).
///
/// # Panics
/// On I/O failures or an incomplete response (test helper).
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let req = request_bytes(method, target, &addr.to_string(), true, headers, Some(body), None);
    exchange(addr, &req)
}

fn exchange(addr: SocketAddr, req: &[u8]) -> (u16, String, Vec<u8>) {
    split_response(&raw_exchange(addr, req))
}

/// One JSON request; (status, JSON answer).
///
/// # Panics
/// On I/O failures or an answer that is not JSON (test helper).
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, _, resp) =
        http_request(addr, method, path, body.map(|b| b.to_string()).as_deref());
    let v = serde_json::from_slice(&resp)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&resp)));
    (status, v)
}

/// Asserts the JSON API's failure shape: `status` and `{"success": false, "error": text}`.
///
/// # Panics
/// When the answer differs.
pub fn fails(got: (u16, serde_json::Value), status: u16, text: &str) {
    assert_eq!(got, (status, serde_json::json!({"success": false, "error": text})));
}

/// GET and return the body of a 200 response.
///
/// # Panics
/// For any other status (test helper).
pub fn get_body(addr: SocketAddr, target: &str) -> Vec<u8> {
    let (status, head, body) = http_request(addr, "GET", target, None);
    assert_eq!(status, 200, "{head}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_exact() {
        assert_eq!(
            request_bytes("GET", "/health", "h", true, &[], None, None),
            b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            request_bytes("POST", "/r", "h", false, &[], Some(b"{}"), Some(JSON)),
            b"POST /r HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert_eq!(
            request_bytes("POST", "/r", "h", false, &[("X-A", "1")], Some(b"x"), None),
            b"POST /r HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 1\r\n\r\nx"
        );
    }

    #[test]
    fn split_exact() {
        let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
        assert_eq!(
            try_split_response(resp),
            Some((404, "HTTP/1.1 404 Not Found\r\nContent-Length: 2".to_owned(), b"no".to_vec()))
        );
        assert_eq!(try_split_response(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
