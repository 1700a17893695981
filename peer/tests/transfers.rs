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

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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
