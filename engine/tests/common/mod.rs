//! Test helpers: an in-process server on 127.0.0.1/::1 with port 0, and minimal blocking HTTP
//! and UDP clients that expose exact wire bytes.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod receipts;

use pbts_engine::config::{Config, TrackerMode};
use pbts_proto::udp::{self, ConnectionId, TransactionId};

pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub server: Option<pbts_engine::Server>,
    pub v4: SocketAddr,
    pub v6: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server on 127.0.0.1:0 and [::1]:0 with deterministic intervals (no jitter).
    pub fn start(mode: TrackerMode, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), mode, tweak)
    }

    /// A server whose database lives in `dir` (kept from an earlier server for restarts).
    pub fn start_in(
        dir: tempfile::TempDir,
        mode: TrackerMode,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = test_config(mode, dir.path());
        tweak(&mut config);
        let server = pbts_engine::start(config).unwrap();
        let v4 = server.addrs()[0];
        let v6 = server.addrs()[1];
        Self { server: Some(server), v4, v6, dir }
    }

    /// Stops this server gracefully and starts a new one on the same database (new ports).
    pub fn restart(mut self, mode: TrackerMode, tweak: impl FnOnce(&mut Config)) -> Self {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_in(dir, mode, tweak)
    }

    pub fn instance_id(&self) -> String {
        self.server.as_ref().unwrap().state().instance_id.clone()
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            s.join().unwrap();
        }
    }

    /// Creates a user through the admin API; returns its passkey.
    pub fn create_user(&self, name: &str) -> String {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let (status, _, resp) = http_request(self.v4, "POST", "/admin/users", Some(&body));
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
        let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        v["passkey"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn test_config(mode: TrackerMode, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.network.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    c.network.cores = 1;
    c.network.first_cpu = -1;
    c.network.io_memory_kib = 256;
    c.network.udp_batch_size = 4;
    c.tracker.mode = mode;
    c.tracker.interval_jitter_secs = 0;
    c.storage.data_dir = dir.to_owned();
    c.storage.flush_interval_ms = 50;
    // Tests register throwaway users freely; the policy tests set it themselves.
    c.registration.policy = Some(pbts_engine::config::RegistrationPolicy::Open);
    c.limits.expensive_burst = 10_000;
    // Every test peer is 127.0.0.1 or ::1.
    c.limits.max_peers_per_ip_per_swarm = 0;
    c
}

/// Sends raw bytes on a fresh connection and reads until the server closes or one complete
/// response (by Content-Length) arrived. Returns everything read.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(bytes).unwrap();
    read_response(&mut s, &mut Vec::new())
}

/// Reads one response (head + Content-Length body) from `s`; bytes past it stay in `buf` for
/// the next call (pipelined responses).
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let rest = buf.split_off(end + 4 + len);
                return std::mem::replace(buf, rest);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return std::mem::take(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read: {e}; got {:?}", String::from_utf8_lossy(buf)),
        }
    }
}

/// Splits a response into (status, head, body).
pub fn split_response(resp: &[u8]) -> (u16, String, Vec<u8>) {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("complete head");
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, resp[end + 4..].to_vec())
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    json: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = json {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    split_response(&raw_exchange(addr, req.as_bytes()))
}

/// A request with extra headers and a raw body; (status, head, body).
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    split_response(&raw_exchange(addr, &bytes))
}

/// One JSON request; (status, JSON answer).
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

/// Asserts the original API's failure shape: `status` and `{"success": false, "error": text}`.
pub fn fails(got: (u16, serde_json::Value), status: u16, text: &str) {
    assert_eq!(got, (status, serde_json::json!({"success": false, "error": text})));
}

/// GET and return the body of a 200 response.
pub fn get_body(addr: SocketAddr, target: &str) -> Vec<u8> {
    let (status, head, body) = http_request(addr, "GET", target, None);
    assert_eq!(status, 200, "{head}");
    body
}

/// Percent-encodes every byte (valid for any client to send).
pub fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// An announce query.
pub fn announce_query(ih: &[u8; 20], peer_id: &[u8; 20], port: u16, extra: &str) -> String {
    format!(
        "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0{extra}",
        pct(ih),
        pct(peer_id)
    )
}

/// A UDP client bound to the matching loopback.
pub struct Udp {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl Udp {
    pub fn new(server: SocketAddr) -> Self {
        let bind = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Self { sock, server }
    }

    pub fn exchange(&self, req: &[u8]) -> Vec<u8> {
        self.sock.send_to(req, self.server).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = self.sock.recv_from(&mut buf).expect("udp response");
        buf[..n].to_vec()
    }

    /// Sends and expects no answer within `wait`.
    pub fn expect_silence(&self, req: &[u8], wait: Duration) {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        self.sock.send_to(req, self.server).unwrap();
        let mut buf = [0u8; 4096];
        let r = self.sock.recv_from(&mut buf);
        assert!(r.is_err(), "unexpected answer {:?}", r.map(|(n, _)| buf[..n].to_vec()));
        self.sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }

    pub fn connect(&self) -> ConnectionId {
        let mut req = Vec::new();
        udp::write_connect_request(&mut req, TransactionId(0xabcd));
        let resp = self.exchange(&req);
        assert_eq!(resp.len(), 16);
        assert_eq!(&resp[..8], &[0, 0, 0, 0, 0, 0, 0xab, 0xcd]);
        ConnectionId(u64::from_be_bytes(resp[8..16].try_into().unwrap()))
    }
}

/// A `pbts` process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Runs the real `pbts` binary on 127.0.0.1:0 with its data in `dir`; `extra` is appended to
    /// the generated TOML config. Returns once it printed its address.
    pub fn spawn(dir: &std::path::Path, extra: &str) -> Self {
        Self::spawn_env(dir, extra, &[])
    }

    /// [`Proc::spawn`] with environment variables set for the process.
    pub fn spawn_env(dir: &std::path::Path, extra: &str, env: &[(&str, &str)]) -> Self {
        let config = dir.join("pbts.toml");
        std::fs::write(
        &config,
        format!(
            "[network]\nlisten = [\"127.0.0.1:0\"]\ncores = 1\nfirst_cpu = -1\nio_memory_kib = 256\n\
             [tracker]\ninterval_jitter_secs = 0\n\
             [registration]\npolicy = \"open\"\n\
             [limits]\nexpensive_burst = 10000\nmax_peers_per_ip_per_swarm = 0\n\
             [storage]\ndata_dir = \"{}\"\nflush_interval_ms = 50\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_pbts"))
            .args(["serve", "-c"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "pbts listening on udp://127.0.0.1:PORT and http://127.0.0.1:PORT"
        let addr = line.rsplit("http://").next().unwrap().trim().parse().unwrap();
        Self { child, addr }
    }
}
