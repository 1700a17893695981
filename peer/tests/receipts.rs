//! Receipts end to end with real pbts-peer processes, the real tracker in private mode and a
//! real chain (anvil, the tracker's outbox writing `creditUsers`):
//!
//! - a swarm of one seeder and three leechers that trade among themselves: after the reports
//!   drain, each uploader's verified upload equals the bytes of the pieces credited to it in
//!   the downloaders' own transfer logs, each downloader's verified download is the torrent,
//!   the totals are zero-sum, and the chain holds the same numbers;
//! - the seeder killed with SIGKILL mid-transfer and restarted: every receipt it had stored is
//!   credited, once;
//! - enforcement: a leecher that withholds receipts is choked after the slack, a libtorrent
//!   leecher is served under `prefer` and refused under `require`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pbts_chain::worker::wait;
use pbts_chain::{ChainConfig, ChainHandle};
use pbts_testkit::anvil::{Anvil, DEV_KEYS, dev_key};
use pbts_testkit::http::{call, http_request_with};
use serde_json::{Value, json};

/// Piece length of the test torrent: 64 pieces of 32 KiB.
const PIECE: u32 = 32 * 1024;
const SIZE: usize = 64 * PIECE as usize;

/// The tracker in private mode with its chain: anvil, a factory, the tracker's Reputation
/// contract, the outbox flushing every second.
struct Chained {
    tracker: Tracker,
    _anvil: Anvil,
    _keys: tempfile::TempDir,
}

fn chained_tracker() -> Chained {
    let anvil = Anvil::start().unwrap();
    let ours = ChainHandle::start(
        ChainConfig { rpc_url: anvil.url(), ..ChainConfig::default() },
        dev_key(0),
    )
    .unwrap();
    let factory = wait(&ours.deploy_factory()).unwrap().address;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("chain-key");
    std::fs::write(&key_file, DEV_KEYS[0]).unwrap();
    let tracker = Tracker::start_with("127.0.0.1", |c| {
        c.chain = ChainConfig {
            rpc_url: anvil.url(),
            key_file: key_file.display().to_string(),
            factory_address: factory.to_string(),
            flush_interval_secs: 1,
            max_backoff_secs: 1,
            rpc_timeout_secs: 5,
            tx_timeout_secs: 10,
            ..ChainConfig::default()
        };
    });
    let (status, v) = call(tracker.addr, "POST", "/contract/init", Some(json!({})));
    assert_eq!(status, 200, "{v}");
    Chained { tracker, _anvil: anvil, _keys: keys }
}

/// One pbts-peer user: its own configuration and state directories (identity, receipts), its
/// torrent (its passkey in the announce URL), its data directory and its transfer log.
struct User {
    name: String,
    passkey: String,
    info_hash: [u8; 20],
    home: tempfile::TempDir,
    public_key: String,
    torrent: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl User {
    /// Registers `name` with `pbts-peer register` and makes its torrent of `data`.
    fn register(tracker: &Tracker, name: &str, data: &Path, info_hash: Option<[u8; 20]>) -> Self {
        let home = tempfile::tempdir().unwrap();
        let out = Command::new(PEER)
            .args(["register", "--tracker", &format!("http://{}", tracker.addr), "--user", name])
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_STATE_HOME", home.path().join("state"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let passkey = stdout
            .lines()
            .find_map(|l| l.strip_prefix("passkey: "))
            .unwrap_or_else(|| panic!("no passkey in {stdout:?}"))
            .to_owned();
        let file = home
            .path()
            .join("config/pbts-peer/trackers")
            .join(format!("127.0.0.1_{}.json", tracker.addr.port()));
        let identity: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the identity file is private");
        }
        let torrent = home.path().join("t.torrent");
        let url = tracker.url("http", &passkey);
        let ih = make_torrent(data, &torrent, &url, PIECE);
        if let Some(expected) = info_hash {
            assert_eq!(ih, expected);
        }
        let dir = home.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            name: name.to_owned(),
            passkey,
            info_hash: ih,
            public_key: identity["public_key"].as_str().unwrap().to_owned(),
            torrent,
            dir,
            log: home.path().join("transfers.jsonl"),
            home,
        }
    }

    /// `pbts-peer ARGS` as this user, logging its transfers.
    fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_on(args, 0)
    }

    /// [`User::cmd`] listening on `port`.
    fn cmd_on(&self, args: &[&str], port: u16) -> Command {
        let mut c = peer_cmd_on(args, &self.torrent, &self.dir, port);
        c.env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_STATE_HOME", self.home.path().join("state"))
            .arg("--transfer-log")
            .arg(&self.log);
        c
    }

    /// The lines of its transfer log.
    fn transfers(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Its receipt store for the torrent.
    fn store_path(&self, tracker: SocketAddr, info_hash: &[u8; 20]) -> PathBuf {
        self.home
            .path()
            .join("state/pbts-peer")
            .join(format!("127.0.0.1_{}", tracker.port()))
            .join(format!("{}.redb", const_hex::encode(info_hash)))
    }
}

/// The seed data: one file of [`SIZE`] bytes.
fn seed_data(work: &Path) -> PathBuf {
    let path = work.join("data.bin");
    std::fs::write(&path, payload(7, SIZE)).unwrap();
    path
}

/// Registers the torrent with the tracker from its `.torrent` (piece length and hashes).
fn register_torrent(tracker: &Tracker, torrent: &Path) {
    let bytes = std::fs::read(torrent).unwrap();
    let (status, _, body) = http_request_with(
        tracker.addr,
        "POST",
        "/admin/torrents",
        &[("Content-Type", "application/x-bittorrent")],
        &bytes,
    );
    assert!(status == 201 || status == 200, "{}", String::from_utf8_lossy(&body));
}

/// (verified uploaded, verified downloaded) of a user.
fn verified(tracker: &Tracker, name: &str) -> (u64, u64) {
    let (_, v) = call(tracker.addr, "GET", &format!("/admin/users/{name}"), None);
    (v["verified_uploaded"].as_u64().unwrap(), v["verified_downloaded"].as_u64().unwrap())
}

/// (downloadSize, uploadSize) of a user on the chain, once it is there.
fn on_chain(tracker: &Tracker, name: &str) -> Option<(u64, u64)> {
    let (status, v) = call(tracker.addr, "GET", &format!("/contract/user/{name}"), None);
    (status == 200).then(|| {
        (v["user"]["downloadSize"].as_u64().unwrap(), v["user"]["uploadSize"].as_u64().unwrap())
    })
}

/// Polls `f` until it returns `Some` (at most `limit`).
fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Per user, the bytes the downloaders' transfer logs credit to its key, and per downloader
/// the bytes it credited to anyone.
fn expected_credit(users: &[&User]) -> (HashMap<String, u64>, HashMap<String, u64>) {
    let by_key: HashMap<&str, &str> =
        users.iter().map(|u| (u.public_key.as_str(), u.name.as_str())).collect();
    let mut up: HashMap<String, u64> = users.iter().map(|u| (u.name.clone(), 0)).collect();
    let mut down: HashMap<String, u64> = users.iter().map(|u| (u.name.clone(), 0)).collect();
    for u in users {
        for line in u.transfers() {
            let Some(key) = line["credited"].as_str() else { continue };
            let bytes = line["bytes"].as_u64().unwrap();
            *up.get_mut(by_key[key]).unwrap() += bytes;
            *down.get_mut(&u.name).unwrap() += bytes;
        }
    }
    (up, down)
}

#[test]
fn a_pbts_swarm_is_credited_exactly_what_moved_on_the_tracker_and_on_chain() {
    let chained = chained_tracker();
    let tracker = &chained.tracker;
    let work = tempfile::tempdir().unwrap();
    let data = seed_data(work.path());
    let seeder = User::register(tracker, "seeder", &data, None);
    let ih = seeder.info_hash;
    register_torrent(tracker, &seeder.torrent);
    let leechers: Vec<User> =
        (0..3).map(|i| User::register(tracker, &format!("leecher{i}"), &data, Some(ih))).collect();

    std::fs::copy(&data, seeder.dir.join("data.bin")).unwrap();
    // Limited, so the leechers get much of the torrent from each other.
    let seed = Proc::spawn(&mut seeder.cmd(&["seed", "--max-up", "1M"]));
    tracker.await_seeders(&seeder.passkey, &ih, 1);
    let procs: Vec<Proc> =
        leechers.iter().map(|u| Proc::spawn(&mut u.cmd(&["download"]))).collect();

    // Every leecher verified every piece (and keeps seeding, so receipts keep flowing).
    for u in &leechers {
        eventually(&format!("{} to complete", u.name), TRANSFER_LIMIT, || {
            (u.transfers().len() == 64).then_some(())
        });
    }
    let mut all: Vec<&User> = vec![&seeder];
    all.extend(leechers.iter());
    let (up, down) = expected_credit(&all);
    for u in &leechers {
        // Every piece was credited to someone: all the peers speak the extension.
        assert_eq!(down[&u.name], SIZE as u64, "{}: {:?}", u.name, u.transfers());
    }
    assert_eq!(up.values().sum::<u64>(), down.values().sum::<u64>());
    assert!(leechers.iter().any(|u| up[&u.name] > 0), "the leechers never traded: {up:?}");

    // The reports drain: the tracker's verified credit is exactly the logs'.
    await_verified(tracker, &all);
    // And the chain holds the same totals.
    for u in &all {
        let want = (down[&u.name], up[&u.name]);
        eventually(&format!("{} on chain {want:?}", u.name), Duration::from_secs(60), || {
            (on_chain(tracker, &u.name) == Some(want)).then_some(())
        });
    }

    let mut sent = 0;
    for (u, p) in leechers.iter().zip(procs) {
        let (_, out, err) = p.terminate(Duration::from_secs(30));
        assert!(!err.contains("panicked"), "{err}");
        let s = summary_json(&out);
        assert_eq!(s["receipts"]["signed"], 64, "{}: {s}", u.name);
        assert_eq!(s["receipts"]["bad"], 0, "{s}");
        sent += s["receipts"]["sent"].as_u64().unwrap();
    }
    assert!(sent >= 3 * 64);
    let (_, out, err) = seed.terminate(Duration::from_secs(30));
    assert!(!err.contains("panicked"), "{err}");
    let s = summary_json(&out);
    assert_eq!(s["receipts"]["bad"], 0, "{s}");
    assert_eq!(s["receipts"]["signed"], 0, "a seeder downloads nothing: {s}");
}

/// Credit per user per the transfer logs, then waits until the tracker's verified credit is
/// exactly that for each of `users`.
fn await_verified(tracker: &Tracker, users: &[&User]) -> HashMap<String, u64> {
    let (up, down) = expected_credit(users);
    for u in users {
        let want = (up[&u.name], down[&u.name]);
        let mut got = verified(tracker, &u.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got != want {
            assert!(
                Instant::now() < deadline,
                "{}: verified {got:?}, the logs say {want:?}",
                u.name
            );
            std::thread::sleep(Duration::from_millis(100));
            got = verified(tracker, &u.name);
        }
    }
    up
}

#[test]
fn a_seeder_killed_mid_transfer_has_every_stored_receipt_credited_once() {
    use pbts_peer::receipts::store::Store;
    let tracker = Tracker::start();
    let work = tempfile::tempdir().unwrap();
    let data = seed_data(work.path());
    let seeder = User::register(&tracker, "seeder", &data, None);
    let ih = seeder.info_hash;
    register_torrent(&tracker, &seeder.torrent);
    let leechers: Vec<User> =
        (0..2).map(|i| User::register(&tracker, &format!("leecher{i}"), &data, Some(ih))).collect();
    std::fs::copy(&data, seeder.dir.join("data.bin")).unwrap();

    // Slow (about 7 s for one copy), so it is caught mid-transfer.
    let first = Proc::spawn(&mut seeder.cmd(&["seed", "--max-up", "300K"]));
    tracker.await_seeders(&seeder.passkey, &ih, 1);
    let procs: Vec<Proc> =
        leechers.iter().map(|u| Proc::spawn(&mut u.cmd(&["download"]))).collect();
    let credited_to_seeder = || {
        leechers
            .iter()
            .flat_map(User::transfers)
            .filter(|l| l["credited"].as_str() == Some(seeder.public_key.as_str()))
            .count()
    };
    eventually("pieces from the seeder", TRANSFER_LIMIT, || {
        (credited_to_seeder() >= 16).then_some(())
    });
    // A moment for those receipts to be signed, sent and stored; then SIGKILL.
    std::thread::sleep(Duration::from_millis(700));
    let pid = first.0.id().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    drop(first);

    let store_path = seeder.store_path(tracker.addr, &ih);
    let (pending_at_kill, stored_at_kill) = {
        let store = Store::open(&store_path).unwrap();
        let pending = store.pending(10_000).unwrap();
        let stored = pending.len() as u64 + store.settled_len().unwrap();
        (pending, stored)
    };
    assert!(stored_at_kill > 0, "nothing was stored before the kill");
    assert!(credited_to_seeder() < 2 * 64, "killed too late");

    // Restarted, without a limit: the leechers finish, and the reports drain.
    let second_log = work.path().join("second.log");
    let mut cmd = seeder.cmd(&["seed"]);
    cmd.stderr(std::fs::File::create(&second_log).unwrap());
    let second = Proc::spawn(&mut cmd);
    for u in &leechers {
        eventually(&format!("{} to complete", u.name), TRANSFER_LIMIT, || {
            (u.transfers().len() == 64).then_some(())
        });
    }
    let mut all: Vec<&User> = vec![&seeder];
    all.extend(leechers.iter());
    let up =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| await_verified(&tracker, &all)))
            .unwrap_or_else(|e| {
                eprintln!(
                    "seeder after restart:\n{}",
                    std::fs::read_to_string(&second_log).unwrap()
                );
                std::panic::resume_unwind(e)
            });
    let receipts_for_seeder = up["seeder"] / u64::from(PIECE);
    assert_eq!(receipts_for_seeder as usize, credited_to_seeder());

    // Every receipt pending at the kill is among those the logs credit to the seeder (so it
    // was credited, and the tracker's total equals the logs': once).
    let by_key: HashMap<String, &User> =
        leechers.iter().map(|u| (u.public_key.clone(), u)).collect();
    use base64::Engine;
    for r in &pending_at_kill {
        let signer = base64::engine::general_purpose::STANDARD.encode(r.receiver_pk.0);
        let log = by_key[&signer].transfers();
        assert!(
            log.iter().any(|l| l["piece"] == r.piece_index
                && l["credited"].as_str() == Some(seeder.public_key.as_str())),
            "piece {} of {signer} was stored but is not credited to the seeder",
            r.piece_index
        );
    }

    for p in procs {
        let (_, _, err) = p.terminate(Duration::from_secs(30));
        assert!(!err.contains("panicked"), "{err}");
    }
    let (_, out, err) = second.terminate(Duration::from_secs(30));
    assert!(!err.contains("panicked"), "{err}");
    let s = summary_json(&out);
    assert_eq!(s["receipts"]["bad"], 0, "{s}");
    // Nothing left to report, and each receipt settled once.
    let store = Store::open(&store_path).unwrap();
    assert_eq!(store.pending_len().unwrap(), 0);
    assert_eq!(store.settled_len().unwrap(), receipts_for_seeder);
}

/// A seeder that requires receipts serves a pbts leecher that pays them, chokes one that
/// withholds them after the slack, and serves a libtorrent leecher nothing.
#[test]
fn require_serves_paying_pbts_peers_only() {
    let tracker = Tracker::start();
    let work = tempfile::tempdir().unwrap();
    let data = seed_data(work.path());
    let seeder = User::register(&tracker, "seeder", &data, None);
    let ih = seeder.info_hash;
    register_torrent(&tracker, &seeder.torrent);
    let payer = User::register(&tracker, "payer", &data, Some(ih));
    let withholder = User::register(&tracker, "withholder", &data, Some(ih));
    let lt_key = tracker.user("lt");
    let lt_torrent = work.path().join("lt.torrent");
    assert_eq!(make_torrent(&data, &lt_torrent, &tracker.url("http", &lt_key), PIECE), ih);
    std::fs::copy(&data, seeder.dir.join("data.bin")).unwrap();

    let seed_log = work.path().join("seed.log");
    let mut cmd = seeder.cmd(&["seed", "--receipts", "require", "--receipt-slack", "4"]);
    cmd.env("RUST_LOG", "pbts_peer=debug").stderr(std::fs::File::create(&seed_log).unwrap());
    let seed = Proc::spawn(&mut cmd);
    tracker.await_seeders(&seeder.passkey, &ih, 1);

    // The withholder, alone with the seeder: a few pieces, then choked.
    let w = Proc::spawn(&mut withholder.cmd(&["download", "--withhold-receipts"]));
    eventually("the withholder to be choked", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&seed_log).unwrap_or_default();
        log.contains("choked: behind in receipts").then_some(())
    });
    // Whole pieces sent before the choke: the slack and the one that crossed it; blocks the
    // seeder had already written may complete one or two more.
    std::thread::sleep(Duration::from_secs(3));
    let got = withholder.transfers().len();
    assert!((5..=8).contains(&got), "the withholder got {got} pieces");
    // It goes (it would serve libtorrent what it has).
    drop(w);

    // libtorrent: connected, served nothing.
    let out = lt_leech(&lt_torrent, &work.path().join("lt"), 6);
    assert!(out.contains("timeout: progress 0.00"), "libtorrent: {out}");

    // The payer: everything, and the withholder still has no more than before.
    let (status, out, err) =
        Proc::spawn(&mut payer.cmd(&["download", "--seed-time", "0"])).finish(TRANSFER_LIMIT);
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(payer.transfers().len(), 64);
    let (_, _, _) = seed.terminate(Duration::from_secs(30));
    let log = std::fs::read_to_string(&seed_log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// Under `prefer` (the default) a libtorrent leecher is served: receipts are an addition to
/// BitTorrent, not a fork of it.
#[test]
fn prefer_serves_a_libtorrent_leecher() {
    let tracker = Tracker::start();
    let work = tempfile::tempdir().unwrap();
    let data = seed_data(work.path());
    let seeder = User::register(&tracker, "seeder", &data, None);
    let ih = seeder.info_hash;
    let lt_key = tracker.user("lt");
    let lt_torrent = work.path().join("lt.torrent");
    assert_eq!(make_torrent(&data, &lt_torrent, &tracker.url("http", &lt_key), PIECE), ih);
    std::fs::copy(&data, seeder.dir.join("data.bin")).unwrap();
    let seed = Proc::spawn(&mut seeder.cmd(&["seed"]));
    tracker.await_seeders(&seeder.passkey, &ih, 1);
    let out = lt_leech(&lt_torrent, &work.path().join("lt"), 60);
    assert!(out.contains("done"), "libtorrent: {out}");
    assert_eq!(std::fs::read(work.path().join("lt/data.bin")).unwrap(), payload(7, SIZE));
    let (_, out, _) = seed.terminate(Duration::from_secs(30));
    let s = summary_json(&out);
    // Served without receipts: nothing earned, nothing to report.
    assert_eq!(
        (s["uploaded"].as_u64(), s["receipts"]["earned"].as_u64()),
        (Some(SIZE as u64), Some(0))
    );
}

/// A pbts peer that pays with a forged receipt (a valid signature by another key) is choked at
/// once, and nothing it sends afterwards is verified, not even a genuine receipt.
#[test]
fn a_forged_receipt_gets_its_sender_choked() {
    use std::io::Write;

    use pbts_verifier::bep10::{self, ExtensionIds, Handshake, Message};
    use pbts_verifier::keys::SecretKey;
    use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
    use sha1::Digest;

    let tracker = Tracker::start();
    let work = tempfile::tempdir().unwrap();
    let data = seed_data(work.path());
    let seeder = User::register(&tracker, "seeder", &data, None);
    let ih = seeder.info_hash;
    std::fs::copy(&data, seeder.dir.join("data.bin")).unwrap();
    let port = free_port();
    let log = work.path().join("seed.log");
    let mut cmd = seeder.cmd_on(&["seed"], port);
    cmd.env("RUST_LOG", "pbts_peer=debug").stderr(std::fs::File::create(&log).unwrap());
    let seed = Proc::spawn(&mut cmd);
    tracker.await_seeders(&seeder.passkey, &ih, 1);

    // We speak the extension, under a key of our own.
    let ours = SecretKey::random();
    let our_pk = ours.public_key().to_bytes();
    let mut s = raw_peer(format!("127.0.0.1:{port}").parse().unwrap(), &ih, 0x77);
    let mut hello = Vec::new();
    let h = Handshake { public_key: Some(our_pk), ..Handshake::default() };
    bep10::write_handshake(&h, &mut hello);
    hello.extend_from_slice(&[0, 0, 0, 1, 2]);
    s.write_all(&hello).unwrap();

    // Its extended handshake (its key, its ids), then an unchoke.
    let mut theirs: Option<Handshake> = None;
    loop {
        let m = read_message(&mut s).expect("the seeder closed the connection");
        match m.first() {
            Some(20) if m.get(1) == Some(&0) => {
                theirs = Some(bep10::parse_handshake(&m[2..]).unwrap());
            }
            Some(1) => break,
            _ => {}
        }
    }
    let theirs = theirs.expect("no extended handshake before the unchoke");
    let seeder_pk: PublicKeyBytes = theirs.public_key.expect("a pbts seeder advertises its key");
    assert_eq!(theirs.ids, ExtensionIds::LOCAL_DEFAULT);

    // Piece 0, both blocks.
    let mut ask = Vec::new();
    for begin in [0u32, 16384] {
        ask.extend_from_slice(&[0, 0, 0, 13, 6, 0, 0, 0, 0]);
        ask.extend_from_slice(&begin.to_be_bytes());
        ask.extend_from_slice(&16384u32.to_be_bytes());
    }
    s.write_all(&ask).unwrap();
    let mut got = 0;
    while got < 2 {
        let m = read_message(&mut s).expect("the seeder closed the connection");
        got += usize::from(m.first() == Some(&7));
    }

    // A receipt for it, right in every field, signed by another key.
    let piece_hash: [u8; 20] = sha1::Sha1::digest(&data_bytes()[..PIECE as usize]).into();
    let mut receipt = Receipt {
        info_hash: pbts_proto::InfoHash(ih),
        sender_pk: seeder_pk,
        receiver_pk: our_pk,
        piece_hash: PieceHash::from_slice(&piece_hash).unwrap(),
        piece_index: 0,
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        signature: SignatureBytes([0; 96]),
    };
    SecretKey::random().sign_receipt(&mut receipt);
    let mut forged = Vec::new();
    bep10::write_message(&theirs.ids, &Message::ReceiptBatch(vec![receipt]), &mut forged).unwrap();
    s.write_all(&forged).unwrap();
    loop {
        let m = read_message(&mut s).expect("the seeder closed the connection");
        if m.first() == Some(&0) {
            break;
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("sent 1 invalid receipt(s): choked"), "{text}");

    // The genuine receipt now: ignored.
    ours.sign_receipt(&mut receipt);
    let mut genuine = Vec::new();
    bep10::write_message(&theirs.ids, &Message::Receipt(receipt), &mut genuine).unwrap();
    s.write_all(&genuine).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    let (_, out, err) = seed.terminate(Duration::from_secs(30));
    assert!(!err.contains("panicked"), "{err}");
    let v = summary_json(&out);
    assert_eq!(
        (v["receipts"]["bad"].as_u64(), v["receipts"]["earned"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
}

/// The bytes of [`seed_data`].
fn data_bytes() -> Vec<u8> {
    payload(7, SIZE)
}

/// A libtorrent leecher of `torrent` into `dir`, given `secs` seconds; what it printed ("done",
/// or "timeout: progress P peers N").
fn lt_leech(torrent: &Path, dir: &Path, secs: u32) -> String {
    let o = Command::new(PYTHON)
        .arg(pbts_testkit::LT_CLIENT)
        .arg("leech")
        .arg(torrent)
        .arg(dir)
        .arg(secs.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}
