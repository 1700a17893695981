//! Test helpers: an in-process server on 127.0.0.1/::1 with port 0, and minimal blocking HTTP
//! and UDP clients that expose exact wire bytes.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod receipts;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use pbts_testkit::http::{
    IO_TIMEOUT, call, fails, get_body, http_request, http_request_with, raw_exchange,
    read_response, split_response,
};

use pbts_engine::config::{Config, TrackerMode};
use pbts_proto::udp::{self, ConnectionId, TransactionId};

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

/// The value of one series of `/metrics` (its name with labels, as the text shows it).
pub fn metric(addr: SocketAddr, series: &str) -> u64 {
    let text = String::from_utf8(get_body(addr, "/metrics")).unwrap();
    let line = text.lines().find(|l| l.split(' ').next() == Some(series));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// A `pbts` process, killed on drop.
/// Where [`Proc`] appends the log (stderr) of every process it starts in `dir`.
pub fn log_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("pbts.log")
}

fn log_file(dir: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new().create(true).append(true).open(log_path(dir)).unwrap()
}

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
            .stderr(log_file(dir))
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

/// Says that a test (or a part of one) cannot run on this machine, and why: on stderr, and as a
/// line appended to the file `PBTS_SKIP_LOG` names, which `scripts/test.sh` prints after the
/// run (cargo hides a passing test's output).
pub fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os("PBTS_SKIP_LOG") {
        let line = format!("{test}: {}\n", why.replace('\n', " / "));
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// pbts refused to start because a seccomp filter blocks io_uring: exit status 1, nothing on
/// stdout (no "listening" line), and the cause and fix as the last line of stderr.
pub fn assert_io_uring_refused(out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing may claim to be listening");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        "pbts: io_uring is unavailable (io_uring_setup: Operation not permitted (os error 1)); \
         pbts serves through io_uring: a seccomp filter blocks it: Docker 25 and later block \
         io_uring in their default profile, so run the container with pbts's profile \
         (`security_opt: [seccomp=deploy/docker/seccomp.json]`, as compose.yaml does) or another \
         that allows io_uring_setup, io_uring_enter and io_uring_register; under systemd, \
         SystemCallFilter= must allow those three"
    );
}
