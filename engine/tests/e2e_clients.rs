//! End to end with real BitTorrent clients from Debian: a libtorrent (python3-libtorrent 2.0)
//! seeder and an aria2c or libtorrent leecher download a private torrent through the real
//! `pbts` binary on 127.0.0.1, once over HTTP and once over UDP (BEP 41 passkey path).
//! `.ci/run` installs the clients; this test fails, never skips, when they are missing.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HELPER: &str = pbts_testkit::LT_CLIENT;
const PYTHON: &str = "/usr/bin/python3";
const PAYLOAD_LEN: usize = 300_000;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn passkey(addr: std::net::SocketAddr, name: &str) -> String {
    let (status, _, body) =
        http_request(addr, "POST", "/admin/users", Some(&format!(r#"{{"name":"{name}"}}"#)));
    assert_eq!(status, 201);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["passkey"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn make_torrent(payload: &Path, out: &Path, url: &str) -> String {
    let o = Command::new(PYTHON).arg(HELPER).arg("make").arg(payload).arg(out).arg(url).output();
    let o = o.expect("python3-libtorrent is required (apt-get install python3-libtorrent)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// Runs `cmd`, killing it after `limit`; returns whether it exited successfully.
fn run_bounded(mut cmd: Command, limit: Duration) -> bool {
    let mut child = Kill(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn download(proto: &str, leecher: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Proc::spawn(dir.path(), "");
    let port = tracker.addr.port();
    let (seed_pk, leech_pk) = (passkey(tracker.addr, "seeder"), passkey(tracker.addr, "leecher"));
    let seed_dir = dir.path().join("seed");
    let leech_dir = dir.path().join("leech");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::create_dir_all(&leech_dir).unwrap();
    let payload: Vec<u8> = (0..PAYLOAD_LEN).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(seed_dir.join("payload.bin"), &payload).unwrap();
    let url = |pk: &str| format!("{proto}://127.0.0.1:{port}/{pk}/announce");
    let seed_torrent = dir.path().join("seed.torrent");
    let leech_torrent = dir.path().join("leech.torrent");
    let ih = make_torrent(&seed_dir.join("payload.bin"), &seed_torrent, &url(&seed_pk));
    assert_eq!(make_torrent(&seed_dir.join("payload.bin"), &leech_torrent, &url(&leech_pk)), ih);

    let mut seeder = Kill(
        Command::new(PYTHON)
            .arg(HELPER)
            .args(["seed"])
            .arg(&seed_torrent)
            .arg(&seed_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(seeder.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "seeding");
    // Wait until the seeder's announce reached the tracker.
    let ih_bytes: Vec<u8> =
        (0..20).map(|i| u8::from_str_radix(&ih[2 * i..2 * i + 2], 16).unwrap()).collect();
    let scrape = format!("/{seed_pk}/scrape?info_hash={}", pct(&ih_bytes));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get_body(tracker.addr, &scrape).windows(14).any(|w| w == b"d8:completei1e") {
        assert!(Instant::now() < deadline, "seeder never announced");
        std::thread::sleep(Duration::from_millis(50));
    }

    let cmd = match leecher {
        "aria2c" => {
            let mut c = Command::new("aria2c");
            c.arg(format!("--dir={}", leech_dir.display())).args([
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--seed-time=0",
                "--summary-interval=0",
                "--allow-overwrite=true",
            ]);
            c.arg(&leech_torrent);
            c
        }
        _ => {
            let mut c = Command::new(PYTHON);
            c.arg(HELPER).arg("leech").arg(&leech_torrent).arg(&leech_dir).arg("50");
            c
        }
    };
    assert!(run_bounded(cmd, Duration::from_secs(60)), "{leecher} did not finish over {proto}");
    assert_eq!(std::fs::read(leech_dir.join("payload.bin")).unwrap(), payload);

    // The tracker saw a completed download (snatch) and credited the leecher's download.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get_body(tracker.addr, &scrape);
        let user = get_body(tracker.addr, "/admin/users/leecher");
        let user: serde_json::Value = serde_json::from_slice(&user).unwrap();
        if body.windows(16).any(|w| w == b"10:downloadedi1e")
            && user["downloaded"].as_u64() == Some(PAYLOAD_LEN as u64)
        {
            break;
        }
        assert!(Instant::now() < deadline, "scrape {} user {user}", String::from_utf8_lossy(&body));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn aria2c_downloads_from_libtorrent_over_http() {
    download("http", "aria2c");
}

#[test]
fn libtorrent_downloads_from_libtorrent_over_udp() {
    download("udp", "libtorrent");
}

/// A hybrid (v1 + v2) torrent made by libtorrent registers as one torrent under both hashes,
/// with the info-hashes, piece length and size libtorrent computed (an independent
/// implementation of the metainfo hashing).
#[test]
fn libtorrent_hybrid_torrent_registers_under_both_hashes() {
    let srv = TestServer::start(pbts_engine::config::TrackerMode::Private, |c| {
        c.tracker.require_registered_torrents = true;
    });
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.bin");
    std::fs::write(&payload, (0..PAYLOAD_LEN).map(|i| (i % 253) as u8).collect::<Vec<_>>())
        .unwrap();
    let torrent = dir.path().join("hybrid.torrent");
    let o =
        Command::new(PYTHON).arg(HELPER).arg("make-hybrid").arg(&payload).arg(&torrent).output();
    let o = o.expect("python3-libtorrent is required");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let fields: Vec<&str> = out.split_whitespace().collect();
    let (v1, v2) = (fields[0], fields[1]);
    assert_eq!((fields[2], fields[3]), ("16384", "300000"));

    let bytes = std::fs::read(&torrent).unwrap();
    let mut req = format!(
        "POST /admin/torrents HTTP/1.1\r\nContent-Type: application/x-bittorrent\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        bytes.len()
    )
    .into_bytes();
    req.extend_from_slice(&bytes);
    let (status, _, body) = split_response(&raw_exchange(srv.v4, &req));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["info_hash"], v1);
    assert_eq!(v["v2_info_hash"], v2);
    assert_eq!(
        (v["piece_length"].as_u64(), v["total_size"].as_u64()),
        (Some(16384), Some(300_000))
    );
    // Registering again is not new.
    let (status, ..) = split_response(&raw_exchange(srv.v4, &req));
    assert_eq!(status, 200);

    let pk = passkey(srv.v4, "alice");
    let hex = |h: &str| -> Vec<u8> {
        (0..20).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap()).collect()
    };
    for ih in [hex(v1), hex(&v2[..40])] {
        let ih: [u8; 20] = ih.try_into().unwrap();
        let q = announce_query(&ih, b"-lt2080-000000000001", 6881, "&left=0");
        let body = get_body(srv.v4, &format!("/{pk}/announce?{q}"));
        assert!(body.starts_with(b"d8:complete"), "{}", String::from_utf8_lossy(&body));
    }
    let q = announce_query(&[9; 20], b"-lt2080-000000000001", 6881, "&left=0");
    let body = get_body(srv.v4, &format!("/{pk}/announce?{q}"));
    assert_eq!(body, b"d14:failure reason20:unregistered torrente");

    // Not a torrent: a clear 400.
    let bad = b"POST /admin/torrents HTTP/1.1\r\nContent-Type: application/x-bittorrent\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (status, _, body) = split_response(&raw_exchange(srv.v4, bad));
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("invalid bencode"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
