//! Faults of the real `pbts` binary: a request or datagram whose handler panics costs only that
//! request (every core keeps serving), a worker thread that dies ends the process non-zero and
//! names the worker, SIGTERM ends it in bounded time, and a process that may not use io_uring
//! refuses to start with the cause and the fix.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{announce_query, split_response};

/// A `pbts` with 2 serving cores in open mode, its stderr kept; `env` set for it.
struct Tracker {
    child: Child,
    addr: SocketAddr,
    stderr: Option<std::thread::JoinHandle<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("pbts.toml");
    std::fs::write(
        &path,
        format!(
            "[network]\nlisten = [\"127.0.0.1:0\"]\ncores = 2\nfirst_cpu = -1\nio_memory_kib = 256\n\
             [tracker]\nmode = \"open\"\ninterval_jitter_secs = 0\n\
             [storage]\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

fn command(dir: &std::path::Path, fault: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pbts"));
    cmd.args(["serve", "-c"]).arg(config(dir)).env("PBTS_FAULT_PANIC", fault);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

impl Tracker {
    fn spawn(fault: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = command(dir.path(), fault).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.rsplit("http://").next().unwrap().trim().parse().unwrap();
        let stderr = Some(drain(&mut child));
        Self { child, addr, stderr, _dir: dir }
    }
}

/// Reads the child's stderr to the end on a thread: a full pipe would block the child's
/// logging (each panic writes a message, and a backtrace when RUST_BACKTRACE is set).
fn drain(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut err = String::new();
        pipe.read_to_string(&mut err).unwrap();
        err
    })
}

/// One request on a fresh connection; the whole answer (the server closes or sends one).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let (status, _, body) = split_response(&common::read_response(&mut s, &mut Vec::new()));
    (status, body)
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Vec<u8>) {
    let req =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    exchange(addr, req.as_bytes())
}

/// Waits for the process to end, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pbts did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP connect from a fresh socket (a fresh source port: SO_REUSEPORT spreads them over
/// both cores); the 16-byte answer.
fn udp_connect(addr: SocketAddr) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = 0x41727101980u64.to_be_bytes().to_vec();
    req.extend_from_slice(&[0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
    s.send_to(&req, addr).unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).unwrap();
    buf[..n].to_vec()
}

#[test]
fn a_panicking_request_or_datagram_never_stops_a_core() {
    let mut t = Tracker::spawn("request");
    // The reported crash: a 2-byte character split by 2-byte hex slices. Now a clear 400.
    for _ in 0..8 {
        let (status, body) = post(t.addr, "/verify-attestation", r#"{"quote":"aé0"}"#);
        assert_eq!(status, 400);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"success": false, "error": "quote must be hex"})
        );
    }
    // Handlers that do panic (fault injection): 20 connections, spread over both cores.
    for _ in 0..20 {
        let (status, body) = exchange(t.addr, b"GET /fault/panic HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status, body), (500, b"internal error\n".to_vec()));
    }
    for _ in 0..20 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"pbts-fault-panic and then some", t.addr).unwrap();
    }
    // Every core still answers: 40 fresh connections and 40 fresh UDP sockets.
    for i in 0..40u8 {
        let q = announce_query(&[i; 20], &[i; 20], 6881, "&compact=1");
        let (status, body) =
            exchange(t.addr, format!("GET /announce?{q} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(status, 200);
        assert!(body.starts_with(b"d8:complete"), "{}", String::from_utf8_lossy(&body));
        let connect = udp_connect(t.addr);
        assert_eq!((connect.len(), &connect[..8]), (16, &[0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd][..]));
    }
    let (_, metrics) = exchange(t.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let metrics = String::from_utf8(metrics).unwrap();
    let total = |proto: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(&format!("pbts_panics_total{{protocol=\"{proto}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    // The datagrams were sent before the announces that were answered, on the same sockets'
    // paths; all 20 were handled by now.
    assert_eq!((total("http"), total("udp")), (20, 20), "{metrics}");
    // SIGTERM still ends it, cleanly and promptly.
    let status = Command::new("kill").arg("-TERM").arg(t.child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut t.child, Duration::from_secs(10)).success());
    let err = t.stderr.take().unwrap().join().unwrap();
    assert!(err.contains("panic while handling a request: answered 500"), "{err}");
    assert!(err.contains("route=/fault/panic"), "{err}");
}

#[test]
fn a_dead_worker_ends_the_process_non_zero_naming_it() {
    for role in ["cleaner-01", "store-01", "socket-02", "verifier-01", "attest-01"] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = command(dir.path(), role).spawn().unwrap();
        let err = drain(&mut child);
        let status = wait_exit(&mut child, Duration::from_secs(15));
        let err = err.join().unwrap();
        assert_eq!(status.code(), Some(1), "{role}: {err}");
        assert!(err.contains(&format!("injected fault: PBTS_FAULT_PANIC={role}")), "{err}");
        assert!(err.contains(&format!("pbts: worker {role} panicked")), "{role}: {err}");
    }
}

/// Installs a seccomp filter that makes `io_uring_setup` fail with EPERM, as Docker's default
/// profile does, in the child before it executes `pbts`.
fn deny_io_uring(cmd: &mut Command) {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
    const ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO
    let stmt = |code, k| libc::sock_filter { code, jt: 0, jf: 0, k };
    let jeq = |k, jt, jf| libc::sock_filter { code: JEQ_K, jt, jf, k };
    let filter = [
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jeq(ARCH, 1, 0),
        stmt(RET_K, ALLOW),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(RET_K, ERRNO | libc::EPERM as u32),
        stmt(RET_K, ALLOW),
    ];
    // SAFETY: between fork and exec the closure only calls prctl(2), which is
    // async-signal-safe, with a filter program that lives (copied into the child) until exec.
    unsafe {
        cmd.pre_exec(move || {
            let prog =
                libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn without_io_uring_start_up_fails_with_the_cause_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), "");
    deny_io_uring(&mut cmd);
    let out = cmd.output().unwrap();
    common::assert_io_uring_refused(&out);
}
