//! pbts-peer moving real data with real clients, through the real pbts tracker (in-process, private
//! mode, passkey URLs) on 127.0.0.1:
//!
//! - the interop matrix: pbts-peer leeches a multi-file private torrent from a libtorrent
//!   (python3-libtorrent 2.0) and from an aria2 seeder, and seeds to a libtorrent and to an
//!   aria2 leecher, over HTTP and UDP trackers; every file's SHA-256 matches and the tracker's
//!   per-user accounting equals the bytes that moved;
//! - a swarm: one seeder and four pbts-peer leechers that also trade among themselves;
//! - resume: a leecher killed with SIGKILL half way restarts and downloads only what it lacked;
//! - hostile peers: oversized frames, requests never read, a stalled reader, corrupt pieces
//!   (banned).
//!
//! `.ci/run` installs the clients; these tests fail, never skip, when they are missing.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbts_engine::config::{Config, TrackerMode};
use pbts_testkit::http::{get_body, http_request};
use sha2::{Digest, Sha256};

const PEER: &str = env!("CARGO_BIN_EXE_pbts-peer");
const PYTHON: &str = "/usr/bin/python3";
/// Longest any one transfer of these few megabytes may take, however loaded the machine.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

/// The pbts tracker, in-process, on 127.0.0.1 (UDP and HTTP on one port), private mode.
struct Tracker {
    server: Option<pbts_engine::Server>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Tracker {
    fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// The tracker on `ip` (any port).
    fn start_on(ip: &str) -> Self {
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
        let server = pbts_engine::start(c).unwrap();
        let addr = server.addrs()[0];
        Self { server: Some(server), addr, _dir: dir }
    }

    /// A new user's passkey.
    fn user(&self, name: &str) -> String {
        let body = format!(r#"{{"name":"{name}"}}"#);
        let (status, _, resp) = http_request(self.addr, "POST", "/admin/users", Some(&body));
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&resp));
        let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
        v["passkey"].as_str().unwrap().to_owned()
    }

    /// A user's (uploaded, downloaded) as the tracker accounts them.
    fn account(&self, name: &str) -> (u64, u64) {
        let body = get_body(self.addr, &format!("/admin/users/{name}"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (v["uploaded"].as_u64().unwrap(), v["downloaded"].as_u64().unwrap())
    }

    /// Waits until the user's account is `want`.
    fn await_account(&self, name: &str, want: (u64, u64)) {
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
    fn await_seeders(&self, passkey: &str, info_hash: &[u8; 20], seeders: u32) {
        let pct: String = info_hash.iter().map(|b| format!("%{b:02X}")).collect();
        let scrape = format!("/{passkey}/scrape?info_hash={pct}");
        let want = format!("8:completei{seeders}e");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !get_body(self.addr, &scrape).windows(want.len()).any(|w| w == want.as_bytes()) {
            assert!(Instant::now() < deadline, "the tracker never saw {seeders} seeder(s)");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, proto: &str, passkey: &str) -> String {
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
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}")))
    }

    /// Waits for the process to exit within `limit`; its output.
    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut o) = self.0.stdout.take() {
                    std::io::Read::read_to_string(&mut o, &mut out).unwrap();
                }
                if let Some(mut e) = self.0.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).unwrap();
                }
                return (status, out, err);
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                let mut out = String::new();
                let mut err = String::new();
                if let Some(mut o) = self.0.stdout.take() {
                    std::io::Read::read_to_string(&mut o, &mut out).unwrap();
                }
                if let Some(mut e) = self.0.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).unwrap();
                }
                panic!("{:?} did not finish in {limit:?}:\n{out}\n{err}", self.0);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then [`Proc::finish`].
    fn terminate(self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.finish(limit)
    }
}

/// The files of the multi-file test torrent: sizes that make pieces straddle files, a tiny
/// file, a nested directory.
const FILES: [(&str, usize); 4] =
    [("a.bin", 300_001), ("sub/b.bin", 123_457), ("sub/deeper/c.txt", 17), ("d.bin", 1_000_000)];

/// Deterministic, incompressible-looking bytes.
fn payload(seed: u64, len: usize) -> Vec<u8> {
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
fn write_tree(dir: &Path, name: &str) -> u64 {
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
fn tree_digests(dir: &Path, name: &str) -> Vec<[u8; 32]> {
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
struct Setup {
    tracker: Tracker,
    work: tempfile::TempDir,
    seed_dir: PathBuf,
    leech_dir: PathBuf,
    total: u64,
    seed_key: String,
    seed_torrent: PathBuf,
    leech_torrent: PathBuf,
    ih: [u8; 20],
}

impl Setup {
    fn new(proto: &str) -> Self {
        Self::on(proto, "127.0.0.1")
    }

    /// The tracker on `ip`.
    fn on(proto: &str, ip: &str) -> Self {
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
fn make_torrent(path: &Path, out: &Path, url: &str, piece_len: u32) -> [u8; 20] {
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
fn torrent_for(src: &Path, out: &Path, url: &str, info_hash: &[u8; 20]) {
    let piece_len = 16384;
    assert_eq!(&make_torrent(src, out, url, piece_len), info_hash);
}

/// What a `pbts-peer --json` run reports.
#[derive(Debug)]
struct Summary {
    complete: bool,
    had: u64,
    downloaded: u64,
    uploaded: u64,
    wasted: u64,
    failed_pieces: u64,
}

fn summary(stdout: &str) -> Summary {
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no summary in {stdout:?}"));
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
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
fn peer_cmd(args: &[&str], torrent: &Path, dir: &Path) -> Command {
    peer_cmd_on(args, torrent, dir, 0)
}

/// [`peer_cmd`] listening on `port`.
fn peer_cmd_on(args: &[&str], torrent: &Path, dir: &Path, port: u16) -> Command {
    peer_cmd_at(args, torrent, dir, "127.0.0.1", port)
}

/// [`peer_cmd`] listening on `ip`:`port`.
fn peer_cmd_at(args: &[&str], torrent: &Path, dir: &Path, ip: &str, port: u16) -> Command {
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
fn other_seeder(client: &str, torrent: &Path, dir: &Path) -> Proc {
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
fn other_leecher(client: &str, torrent: &Path, dir: &Path, seed_log: &Path) {
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
fn aria2_common(dir: &Path) -> Vec<String> {
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
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

/// A TCP port free right now on 127.0.0.1 (for clients that cannot be told "any port").
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One cell of the matrix: `seeder` serves the multi-file torrent to `leecher`, one of them
/// being pbts-peer, over the `proto` tracker.
fn transfer(proto: &str, seeder: &str, leecher: &str) {
    let Setup {
        tracker,
        work,
        seed_dir,
        leech_dir,
        total,
        seed_key,
        seed_torrent,
        leech_torrent,
        ih,
    } = Setup::new(proto);

    let pbts_seeder = seeder == "pbts-peer";
    let seed_log = work.path().join("seed.log");
    let seed = if pbts_seeder {
        let mut cmd = peer_cmd(&["seed"], &seed_torrent, &seed_dir);
        Proc::spawn(cmd.stderr(std::fs::File::create(&seed_log).unwrap()))
    } else {
        other_seeder(seeder, &seed_torrent, &seed_dir)
    };
    tracker.await_seeders(&seed_key, &ih, 1);

    if leecher == "pbts-peer" {
        let mut cmd = peer_cmd(&["download", "--seed-time", "0"], &leech_torrent, &leech_dir);
        let (status, out, err) = Proc::spawn(&mut cmd).finish(TRANSFER_LIMIT);
        assert!(status.success(), "pbts-peer leecher: {out}\n{err}");
        assert!(!err.contains("panicked"), "{err}");
        let s = summary(&out);
        assert!(s.complete && s.had == 0, "{s:?}");
        assert_eq!(s.downloaded, total, "{s:?}");
        // Its `stopped` announce reported exactly what moved.
        tracker.await_account("leecher", (0, total));
    } else {
        other_leecher(leecher, &leech_torrent, &leech_dir, &seed_log);
        tracker.await_account("leecher", (0, total));
    }
    assert_eq!(tree_digests(&leech_dir, "tree"), tree_digests(&seed_dir, "tree"));

    if pbts_seeder {
        let (_, out, _) = seed.terminate(Duration::from_secs(20));
        let err = std::fs::read_to_string(&seed_log).unwrap_or_default();
        assert!(!err.contains("panicked"), "{err}");
        let s = summary(&out);
        assert!(s.complete && s.had == total && s.downloaded == 0, "{s:?}\n{err}");
        assert_eq!(s.uploaded, total, "{s:?}");
        tracker.await_account("seeder", (total, 0));
    }
}

#[test]
fn pbts_peer_leeches_from_libtorrent_over_http() {
    transfer("http", "libtorrent", "pbts-peer");
}

#[test]
fn pbts_peer_leeches_from_aria2_over_http() {
    // Over HTTP: aria2 1.36 never announced to the private tracker over UDP with a passkey URL
    // (it sends from its DHT socket, and no seeder appeared within 30 s).
    transfer("http", "aria2", "pbts-peer");
}

#[test]
fn pbts_peer_seeds_to_libtorrent_over_udp() {
    transfer("udp", "pbts-peer", "libtorrent");
}

#[test]
fn pbts_peer_seeds_to_aria2_over_http() {
    transfer("http", "pbts-peer", "aria2");
}

#[test]
fn pbts_peer_leeches_from_pbts_peer_over_udp() {
    transfer("udp", "pbts-peer", "pbts-peer");
}

/// pbts-peer to pbts-peer with nothing but IPv6 on ::1: the tracker returns the seeder as a
/// v6 peer (BEP 7 `peers6` over HTTP, 18-byte entries over UDP) and the transfer is exact.
fn transfer_v6(proto: &str) {
    let Setup {
        tracker,
        work: _work,
        seed_dir,
        leech_dir,
        total,
        seed_key,
        seed_torrent,
        leech_torrent,
        ih,
    } = Setup::on(proto, "::1");
    let seed = Proc::spawn(&mut peer_cmd_at(&["seed"], &seed_torrent, &seed_dir, "::1", 0));
    tracker.await_seeders(&seed_key, &ih, 1);
    let mut cmd =
        peer_cmd_at(&["download", "--seed-time", "0"], &leech_torrent, &leech_dir, "::1", 0);
    let (status, out, err) = Proc::spawn(&mut cmd).finish(TRANSFER_LIMIT);
    assert!(status.success(), "{out}\n{err}");
    let s = summary(&out);
    assert!(s.complete && s.downloaded == total, "{s:?}");
    assert_eq!(tree_digests(&leech_dir, "tree"), tree_digests(&seed_dir, "tree"));
    tracker.await_account("leecher", (0, total));
    let (_, out, err) = seed.terminate(Duration::from_secs(20));
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(summary(&out).uploaded, total);
    tracker.await_account("seeder", (total, 0));
}

#[test]
fn pbts_peer_to_pbts_peer_over_ipv6_with_an_http_tracker() {
    transfer_v6("http");
}

#[test]
fn pbts_peer_to_pbts_peer_over_ipv6_with_a_udp_tracker() {
    transfer_v6("udp");
}

/// One seeder (upload-limited, so the leechers must trade) and four pbts-peer leechers that
/// start together: all finish, and the leechers uploaded to each other.
#[test]
fn a_swarm_of_four_leechers_trades_pieces_among_themselves() {
    let tracker = Tracker::start();
    let work = tempfile::tempdir().unwrap();
    let seed_dir = work.path().join("seed");
    let total = write_tree(&seed_dir, "tree");
    let seed_key = tracker.user("seeder");
    let seed_torrent = work.path().join("seed.torrent");
    let ih =
        make_torrent(&seed_dir.join("tree"), &seed_torrent, &tracker.url("http", &seed_key), 16384);
    let mut seed_cmd = peer_cmd(&["seed"], &seed_torrent, &seed_dir);
    seed_cmd.args(["--max-up", "400K"]);
    let seed = Proc::spawn(&mut seed_cmd);
    tracker.await_seeders(&seed_key, &ih, 1);

    let leechers: Vec<(PathBuf, Proc)> = (0..4)
        .map(|i| {
            let name = format!("leecher{i}");
            let key = tracker.user(&name);
            let torrent = work.path().join(format!("{name}.torrent"));
            torrent_for(&seed_dir.join("tree"), &torrent, &tracker.url("http", &key), &ih);
            let dir = work.path().join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            // Each keeps seeding a little while so that the slower ones can still take from it.
            let cmd = &mut peer_cmd(&["download", "--seed-time", "5s"], &torrent, &dir);
            (dir, Proc::spawn(cmd))
        })
        .collect();
    let mut traded = 0;
    for (i, (dir, p)) in leechers.into_iter().enumerate() {
        let (status, out, err) = p.finish(TRANSFER_LIMIT);
        assert!(status.success(), "leecher{i}: {out}\n{err}");
        let s = summary(&out);
        assert!(s.complete && s.downloaded >= total, "leecher{i}: {s:?}");
        assert_eq!(tree_digests(&dir, "tree"), tree_digests(&seed_dir, "tree"));
        traded += s.uploaded;
        tracker.await_account(&format!("leecher{i}"), (s.uploaded, s.downloaded));
    }
    let (_, out, _) = seed.terminate(Duration::from_secs(20));
    let seeded = summary(&out).uploaded;
    // At 400 KiB/s the seeder alone would need 10 s for the 4 × 1.4 MB it would have to send.
    assert!(traded > 0, "the leechers never traded (seeder uploaded {seeded})");
    tracker.await_account("seeder", (seeded, 0));
}

/// A leecher killed with SIGKILL at half of the torrent restarts and downloads only the pieces
/// that were not verified on disk.
#[test]
fn a_leecher_killed_half_way_resumes_without_downloading_verified_pieces_again() {
    let Setup {
        tracker,
        work: _work,
        seed_dir,
        leech_dir,
        total,
        seed_key,
        seed_torrent,
        leech_torrent,
        ih,
    } = Setup::new("udp");
    let _seed = Proc::spawn(&mut peer_cmd(&["seed"], &seed_torrent, &seed_dir));
    tracker.await_seeders(&seed_key, &ih, 1);

    // Slow enough (~3.5 s for the torrent) to be caught half way.
    let slow = &["download", "--seed-time", "0", "--max-down", "400K"];
    let first = Proc::spawn(&mut peer_cmd(slow, &leech_torrent, &leech_dir));
    let pieces = (total as usize).div_ceil(16384);
    let source = concat_tree(&seed_dir);
    let deadline = Instant::now() + TRANSFER_LIMIT;
    loop {
        let done = pieces_on_disk(&leech_dir, &source);
        if done * 2 >= pieces {
            break;
        }
        assert!(Instant::now() < deadline, "the leecher stalled at {done}/{pieces} pieces");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = first.0.id().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    drop(first);
    let verified_at_kill = pieces_on_disk(&leech_dir, &source);
    assert!(verified_at_kill < pieces, "killed too late");

    let (status, out, err) =
        Proc::spawn(&mut peer_cmd(&["download", "--seed-time", "0"], &leech_torrent, &leech_dir))
            .finish(TRANSFER_LIMIT);
    assert!(status.success(), "{out}\n{err}");
    let s = summary(&out);
    // Every piece that was whole on disk was found again, and only the rest moved.
    assert!(s.had >= piece_bytes(verified_at_kill, total), "{s:?}, {verified_at_kill} pieces");
    assert_eq!(s.downloaded, total - s.had, "{s:?}");
    assert_eq!(tree_digests(&leech_dir, "tree"), tree_digests(&seed_dir, "tree"));
}

/// The torrent's bytes in order, from the seeder's files.
fn concat_tree(dir: &Path) -> Vec<u8> {
    FILES.iter().flat_map(|(p, _)| std::fs::read(dir.join("tree").join(p)).unwrap()).collect()
}

/// Pieces of 16 KiB whose bytes on disk equal the source's (missing files: none).
fn pieces_on_disk(dir: &Path, source: &[u8]) -> usize {
    let mut disk = Vec::with_capacity(source.len());
    for (p, len) in FILES {
        match std::fs::read(dir.join("tree").join(p)) {
            Ok(mut b) => {
                b.resize(len, 0);
                disk.extend_from_slice(&b);
            }
            Err(_) => disk.extend(std::iter::repeat_n(0u8, len)),
        }
    }
    source.chunks(16384).zip(disk.chunks(16384)).filter(|(a, b)| a == b).count()
}

/// Bytes of `n` pieces that are not the short last one.
fn piece_bytes(n: usize, total: u64) -> u64 {
    (n as u64 * 16384).min(total)
}

/// Our side of a raw peer connection to `addr`: the handshake sent and the peer's read.
fn raw_peer(addr: SocketAddr, info_hash: &[u8; 20], id: u8) -> std::net::TcpStream {
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

/// A peer announcing a 2 GiB frame is dropped at once; a peer that asks for thousands of blocks
/// and never reads does not stop the seeder from serving a real leecher.
#[test]
fn hostile_peers_are_dropped_or_contained_and_the_seeder_goes_on_serving() {
    use std::io::Write;
    let Setup {
        tracker,
        work,
        seed_dir,
        leech_dir,
        total: _,
        seed_key,
        seed_torrent,
        leech_torrent,
        ih,
    } = Setup::new("http");
    let port = free_port();
    let seed_log = work.path().join("seed.log");
    let mut cmd = peer_cmd_on(&["seed", "--stall-timeout", "3s"], &seed_torrent, &seed_dir, port);
    cmd.env("RUST_LOG", "pbts_peer=debug");
    let seed = Proc::spawn(cmd.stderr(std::fs::File::create(&seed_log).unwrap()));
    tracker.await_seeders(&seed_key, &ih, 1);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // A frame of 2 GiB: the connection is closed (what the seeder sent before is drained).
    let mut a = raw_peer(addr, &ih, 0xa1);
    a.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    assert_closed(&mut a);

    // Interested, then 20 000 requests, never reading a byte of the answers.
    let mut b = raw_peer(addr, &ih, 0xb2);
    b.write_all(&[0, 0, 0, 1, 2]).unwrap();
    let mut requests = Vec::new();
    for i in 0..20_000u32 {
        let piece = i % 80;
        requests.extend_from_slice(&[0, 0, 0, 13, 6]);
        requests.extend_from_slice(&piece.to_be_bytes());
        requests.extend_from_slice(&0u32.to_be_bytes());
        requests.extend_from_slice(&16384u32.to_be_bytes());
    }
    b.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The seeder reads requests while its answers pile up unread; the kernel's buffers may
    // eventually refuse more of them, which is fine.
    let _ = b.write_all(&requests);

    let mut cmd = peer_cmd(&["download", "--seed-time", "0"], &leech_torrent, &leech_dir);
    let (status, out, err) = Proc::spawn(&mut cmd).finish(TRANSFER_LIMIT);
    let log = std::fs::read_to_string(&seed_log).unwrap_or_default();
    assert!(status.success(), "leecher: {out}\n{err}\nseeder: {log}");
    assert_eq!(tree_digests(&leech_dir, "tree"), tree_digests(&seed_dir, "tree"));

    // The peer that never reads is dropped once it has taken nothing for the stall timeout;
    // reading now drains what the kernel held, then the end of the connection.
    await_log(&seed_log, "took nothing we sent for 3s");
    assert_closed(&mut b);
    let (_, _, _) = seed.terminate(Duration::from_secs(20));
    let log = std::fs::read_to_string(&seed_log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

/// Reads `s` to its end; fails if the peer keeps it open (a read times out) instead.
fn assert_closed(s: &mut std::net::TcpStream) {
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
fn await_log(path: &Path, text: &str) {
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
fn await_listener(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one length-prefixed peer-wire message (`None` at the end of the connection).
fn read_message(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// A peer that claims every piece and answers requests with garbage is banned after its
/// first piece fails the hash check: the connection closes, the same peer id is refused when
/// it comes back, and the download completes from an honest seeder, the bad bytes counted as
/// wasted.
#[test]
fn a_peer_sending_a_corrupt_piece_is_banned_and_the_download_completes_from_others() {
    use std::io::Write;
    let Setup {
        tracker,
        work,
        seed_dir,
        leech_dir,
        total,
        seed_key,
        seed_torrent,
        leech_torrent,
        ih,
    } = Setup::new("http");
    let port = free_port();
    let leech_log = work.path().join("leech.log");
    let mut cmd = peer_cmd_on(&["download", "--seed-time", "0"], &leech_torrent, &leech_dir, port);
    cmd.stderr(std::fs::File::create(&leech_log).unwrap());
    let leech = Proc::spawn(&mut cmd);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    await_listener(addr);

    // The liar: a full bitfield (spare bits clear), an unchoke, and 0xAA for every block asked.
    let mut liar = raw_peer(addr, &ih, 0x66);
    let pieces = total.div_ceil(16384) as usize;
    let mut bitfield = vec![0xffu8; pieces.div_ceil(8)];
    if !pieces.is_multiple_of(8) {
        *bitfield.last_mut().unwrap() = 0xff << (8 - pieces % 8);
    }
    let mut hello = (1 + bitfield.len() as u32).to_be_bytes().to_vec();
    hello.push(5);
    hello.extend_from_slice(&bitfield);
    hello.extend_from_slice(&[0, 0, 0, 1, 1]);
    liar.write_all(&hello).unwrap();
    let mut lies = 0u64;
    while let Some(m) = read_message(&mut liar) {
        if m.first() == Some(&6) && m.len() == 13 {
            let len = u32::from_be_bytes(m[9..13].try_into().unwrap());
            let mut piece = (9 + len).to_be_bytes().to_vec();
            piece.push(7);
            piece.extend_from_slice(&m[1..9]);
            piece.extend(std::iter::repeat_n(0xaa, len as usize));
            if liar.write_all(&piece).is_err() {
                break;
            }
            lies += 1;
        }
    }
    assert!(lies >= 1, "the leecher never asked the liar for a block");
    await_log(&leech_log, "banned: sent bad data");
    // Once, however many of its pieces were still being checked.
    let log = std::fs::read_to_string(&leech_log).unwrap();
    assert_eq!(log.matches("banned: sent bad data").count(), 1, "{log}");

    // Back under the same peer id: the handshake is answered, then the connection is closed
    // before a single message.
    let mut again = raw_peer(addr, &ih, 0x66);
    assert_eq!(read_message(&mut again), None);

    // An honest seeder, started after the leecher: it dials the leecher (which would otherwise
    // hear of it only at its next announce), and the download completes and is exact.
    let seed_log = work.path().join("seed.log");
    let mut cmd = peer_cmd(&["seed"], &seed_torrent, &seed_dir);
    let _seed = Proc::spawn(cmd.stderr(std::fs::File::create(&seed_log).unwrap()));
    tracker.await_seeders(&seed_key, &ih, 1);
    let (status, out, _) = leech.finish(TRANSFER_LIMIT);
    let log = std::fs::read_to_string(&leech_log).unwrap_or_default();
    assert!(status.success(), "{out}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(tree_digests(&leech_dir, "tree"), tree_digests(&seed_dir, "tree"));
    let s = summary(&out);
    // Every garbage block the leecher took completed a (one-block) piece that failed.
    assert!(s.failed_pieces >= 1 && s.failed_pieces <= lies, "{s:?}, {lies} lies");
    // Whole pieces of 16 KiB, but for the short last one.
    let most = s.failed_pieces * 16384;
    assert!(s.wasted <= most && s.wasted > most - 16384, "{s:?}");
    // `downloaded` is every payload byte received (BEP 3), good or bad, and the tracker was
    // told exactly that.
    assert_eq!(s.downloaded, total + s.wasted, "{s:?}");
    tracker.await_account("leecher", (0, s.downloaded));
}
