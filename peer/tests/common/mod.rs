//! What the peer's integration tests share: the pbts tracker in-process, child processes
//! killed on drop, the test tree and torrents, pbts-peer and other clients' command lines.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbts_engine::config::{Config, TrackerMode};
use pbts_testkit::http::{get_body, http_request};
use sha2::{Digest, Sha256};

pub const PEER: &str = env!("CARGO_BIN_EXE_pbts-peer");
pub const PYTHON: &str = "/usr/bin/python3";
/// Longest any one transfer of these few megabytes may take, however loaded the machine.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

/// The pbts tracker, in-process, on 127.0.0.1 (UDP and HTTP on one port), private mode.
pub struct Tracker {
    pub server: Option<pbts_engine::Server>,
    pub addr: SocketAddr,
    pub _dir: tempfile::TempDir,
}

impl Tracker {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// The tracker on `ip` (any port).
    pub fn start_on(ip: &str) -> Self {
        Self::start_with(ip, |_| {})
    }

    /// The tracker on `ip`, its configuration changed by `tweak` first.
    pub fn start_with(ip: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.network.listen = vec![SocketAddr::new(ip.parse().unwrap(), 0)];
        c.network.cores = 1;
        c.network.first_cpu = -1;
        c.network.io_memory_kib = 256;
        c.tracker.mode = TrackerMode::Private;
        c.tracker.interval_jitter_secs = 0;
        c.storage.data_dir = dir.path().to_owned();
        c.storage.flush_interval_ms = 50;
        c.registration.policy = Some(pbts_engine::config::RegistrationPolicy::Open);
        c.limits.expensive_burst = 10_000;
        // Every peer here is 127.0.0.1.
        c.limits.max_peers_per_ip_per_swarm = 0;
        tweak(&mut c);
        let server = pbts_engine::start(c).unwrap();
        let addr = server.addrs()[0];
        Self { server: Some(server), addr, _dir: dir }
    }

    /// A new user's passkey.
    pub fn user(&self, name: &str) -> String {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let (status, _, resp) = http_request(self.addr, "POST", "/admin/users", Some(&body));
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
        let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        v["passkey"].as_str().unwrap().to_owned()
    }

    /// A user's (uploaded, downloaded) as the tracker accounts them.
    pub fn account(&self, name: &str) -> (u64, u64) {
        let body = get_body(self.addr, &format!("/admin/users/{name}"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (v["uploaded"].as_u64().unwrap(), v["downloaded"].as_u64().unwrap())
    }

    /// Waits until the user's account is `want`.
    pub fn await_account(&self, name: &str, want: (u64, u64)) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.account(name);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: tracker accounts {got:?}, moved {want:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the tracker has `seeders` seeds for `info_hash`.
    pub fn await_seeders(&self, passkey: &str, info_hash: &[u8; 20], seeders: u32) {
        let pct: String = info_hash.iter().map(|b| format!("%{b:02X}")).collect();
        let scrape = format!("/{passkey}/scrape?info_hash={pct}");
        let want = format!("8:completei{seeders}e");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get_body(self.addr, &scrape).windows(want.len()).any(|w| w == want.as_bytes()) {
            assert!(Instant::now() < deadline, "the tracker never saw {seeders} seeder(s)");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, proto: &str, passkey: &str) -> String {
        format!("{proto}://{}/{passkey}/announce", self.addr)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            let _ = s.join();
        }
    }
}

/// A child process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}")))
    }

    /// Waits for the process to exit within `limit`; its output.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let (out, err) = self.outputs();
                return (status, out, err);
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                let (out, err) = self.outputs();
                panic!("{:?} did not finish in {limit:?}:\n{out}\n{err}", self.0);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the exited process wrote to its piped stdout and stderr.
    fn outputs(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            std::io::Read::read_to_string(&mut o, &mut out).unwrap();
        }
        if let Some(mut e) = self.0.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        (out, err)
    }

    /// SIGTERM, then [`Proc::finish`].
    pub fn terminate(self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.finish(limit)
    }
}

/// The files of the multi-file test torrent: sizes that make pieces straddle files, a tiny
/// file, a nested directory.
pub const FILES: [(&str, usize); 4] =
    [("a.bin", 300_001), ("sub/b.bin", 123_457), ("sub/deeper/c.txt", 17), ("d.bin", 1_000_000)];

/// Deterministic, incompressible-looking bytes.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes the payload tree `name/` under `dir`; returns its total size.
pub fn write_tree(dir: &Path, name: &str) -> u64 {
    let mut total = 0;
    for (i, (path, len)) in FILES.iter().enumerate() {
        let p = dir.join(name).join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, payload(i as u64, *len)).unwrap();
        total += *len as u64;
    }
    total
}

/// SHA-256 of every file of the tree, in order.
pub fn tree_digests(dir: &Path, name: &str) -> Vec<[u8; 32]> {
    FILES
        .iter()
        .map(|(path, _)| {
            let bytes =
                std::fs::read(dir.join(name).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            Sha256::digest(&bytes).into()
        })
        .collect()
}

/// A tracker with users `seeder` and `leecher`, the test tree under `work/seed`, an empty
/// `work/leech`, and the torrent once per user (their passkeys in the announce URL).
pub struct Setup {
    pub tracker: Tracker,
    pub work: tempfile::TempDir,
    pub seed_dir: PathBuf,
    pub leech_dir: PathBuf,
    pub total: u64,
    pub seed_key: String,
    pub seed_torrent: PathBuf,
    pub leech_torrent: PathBuf,
    pub ih: [u8; 20],
}

impl Setup {
    pub fn new(proto: &str) -> Self {
        Self::on(proto, "127.0.0.1")
    }

    /// The tracker on `ip`.
    pub fn on(proto: &str, ip: &str) -> Self {
        let tracker = Tracker::start_on(ip);
        let work = tempfile::tempdir().unwrap();
        let (seed_dir, leech_dir) = (work.path().join("seed"), work.path().join("leech"));
        std::fs::create_dir_all(&leech_dir).unwrap();
        let total = write_tree(&seed_dir, "tree");
        let (seed_key, leech_key) = (tracker.user("seeder"), tracker.user("leecher"));
        let seed_torrent = work.path().join("seed.torrent");
        let leech_torrent = work.path().join("leech.torrent");
        let tree = seed_dir.join("tree");
        let ih = make_torrent(&tree, &seed_torrent, &tracker.url(proto, &seed_key), 16384);
        torrent_for(&tree, &leech_torrent, &tracker.url(proto, &leech_key), &ih);
        Self {
            tracker,
            work,
            seed_dir,
            leech_dir,
            total,
            seed_key,
            seed_torrent,
            leech_torrent,
            ih,
        }
    }
}

/// Makes a private v1 torrent of `path` (a file or a directory) announcing to `url`; returns
/// its info-hash.
pub fn make_torrent(path: &Path, out: &Path, url: &str, piece_len: u32) -> [u8; 20] {
    let o = Command::new(PYTHON)
        .arg(pbts_testkit::LT_CLIENT)
        .arg("make")
        .arg(path)
        .arg(out)
        .arg(url)
        .arg(piece_len.to_string())
        .output()
        .expect("python3-libtorrent is required (apt-get install python3-libtorrent)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hex = String::from_utf8(o.stdout).unwrap();
    const_hex::decode_to_array(hex.trim()).unwrap()
}

/// The same torrent with another user's passkey in its announce URL (the info dictionary, and
/// so the info-hash, is the same).
pub fn torrent_for(src: &Path, out: &Path, url: &str, info_hash: &[u8; 20]) {
    let piece_len = 16384;
    assert_eq!(&make_torrent(src, out, url, piece_len), info_hash);
}

/// The last line of a `pbts-peer --json` run's output: its summary.
pub fn summary_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// What a `pbts-peer --json` run reports.
#[derive(Debug)]
pub struct Summary {
    pub complete: bool,
    pub had: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub wasted: u64,
    pub failed_pieces: u64,
}

pub fn summary(stdout: &str) -> Summary {
    let v = summary_json(stdout);
    Summary {
        complete: v["complete"].as_bool().unwrap(),
        had: v["had"].as_u64().unwrap(),
        downloaded: v["downloaded"].as_u64().unwrap(),
        uploaded: v["uploaded"].as_u64().unwrap(),
        wasted: v["wasted"].as_u64().unwrap(),
        failed_pieces: v["failed_pieces"].as_u64().unwrap(),
    }
}

/// A `pbts-peer` command on 127.0.0.1, any port, JSON summary, no progress.
pub fn peer_cmd(args: &[&str], torrent: &Path, dir: &Path) -> Command {
    peer_cmd_on(args, torrent, dir, 0)
}

/// [`peer_cmd`] listening on `port`.
pub fn peer_cmd_on(args: &[&str], torrent: &Path, dir: &Path, port: u16) -> Command {
    peer_cmd_at(args, torrent, dir, "127.0.0.1", port)
}

/// [`peer_cmd`] listening on `ip`:`port`.
pub fn peer_cmd_at(args: &[&str], torrent: &Path, dir: &Path, ip: &str, port: u16) -> Command {
    let port = port.to_string();
    let mut c = Command::new(PEER);
    c.args(args).arg(torrent);
    if args[0] == "download" {
        c.arg("-o");
    }
    c.arg(dir)
        .args(["--bind", ip, "--port", &port, "--json", "--quiet"])
        .env("RUST_LOG", std::env::var("PBTS_TEST_LOG").unwrap_or_else(|_| "pbts_peer=info".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A seeder of another client, until dropped.
pub fn other_seeder(client: &str, torrent: &Path, dir: &Path) -> Proc {
    match client {
        "libtorrent" => {
            let mut p = Proc::spawn(
                Command::new(PYTHON)
                    .arg(pbts_testkit::LT_CLIENT)
                    .arg("seed")
                    .arg(torrent)
                    .arg(dir)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null()),
            );
            let mut line = String::new();
            BufReader::new(p.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "seeding");
            p
        }
        "aria2" => Proc::spawn(
            Command::new("aria2c")
                .arg(format!("--dir={}", dir.display()))
                .args(aria2_common(dir))
                .args(["--check-integrity=true", "--seed-ratio=0.0"])
                .arg(format!("--listen-port={}", free_port()))
                .arg(torrent)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ),
        _ => unreachable!(),
    }
}

/// A leecher of another client; returns once it finished (panics after the limit, showing
/// `seed_log`).
pub fn other_leecher(client: &str, torrent: &Path, dir: &Path, seed_log: &Path) {
    let cmd = match client {
        "libtorrent" => {
            let mut c = Command::new(PYTHON);
            c.arg(pbts_testkit::LT_CLIENT).arg("leech").arg(torrent).arg(dir).arg("100");
            c
        }
        "aria2" => {
            let mut c = Command::new("aria2c");
            c.arg(format!("--dir={}", dir.display()))
                .args(aria2_common(dir))
                .args(["--seed-time=0"])
                .arg(format!("--listen-port={}", free_port()))
                .arg(torrent);
            c
        }
        _ => unreachable!(),
    };
    let mut cmd = cmd;
    let leecher = Proc::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (status, out, err) = leecher.finish(TRANSFER_LIMIT);
        assert!(status.success(), "{client} leecher failed: {out}\n{err}");
    }));
    if let Err(e) = finished {
        let log = std::fs::read_to_string(seed_log).unwrap_or_default();
        eprintln!("seeder's log:\n{log}");
        std::panic::resume_unwind(e);
    }
}

/// aria2 options of every run: no peer source but the tracker. aria2 sends its UDP tracker
/// requests from its DHT socket, so DHT stays on (on a free port, its state in `dir`), which for
/// a private torrent never serves as a peer source (BEP 27).
pub fn aria2_common(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "--enable-dht=true",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--summary-interval=0",
        "--allow-overwrite=true",
        "--console-log-level=warn",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("--dht-listen-port={}", free_udp_port()));
    v.push(format!("--dht-file-path={}", dir.join("dht.dat").display()));
    v
}

/// A UDP port free right now on 0.0.0.0.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

/// A TCP port free right now on 127.0.0.1 (for clients that cannot be told "any port").
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Our side of a raw peer connection to `addr`: the handshake sent and the peer's read.
pub fn raw_peer(addr: SocketAddr, info_hash: &[u8; 20], id: u8) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hs = Vec::with_capacity(68);
    hs.push(19);
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
    hs.extend_from_slice(info_hash);
    hs.extend_from_slice(&[id; 20]);
    s.write_all(&hs).unwrap();
    let mut theirs = [0u8; 68];
    s.read_exact(&mut theirs).unwrap();
    assert_eq!(&theirs[28..48], info_hash);
    s
}

/// Reads `s` to its end; fails if the peer keeps it open (a read times out) instead.
pub fn assert_closed(s: &mut std::net::TcpStream) {
    use std::io::{ErrorKind, Read};
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the connection stayed open: {e}"),
        }
    }
}

/// Waits until the log file at `path` has a line containing `text`.
pub fn await_log(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A connection to `addr` once something listens there.
pub fn await_listener(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one length-prefixed peer-wire message (`None` at the end of the connection).
pub fn read_message(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}
