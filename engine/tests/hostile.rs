//! Hostile clients over 127.0.0.1 (issue 10's reproductions): registration policy and invites,
//! per-address rate limits, a trusted proxy header that must not make everyone loopback,
//! clients that never read, idle connections from one address, and passkey holders inventing
//! torrents.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::receipts::*;
use common::*;
use pbts_engine::config::{ProxyHeader, RegistrationPolicy, TrackerMode};
use pbts_verifier::keys::SecretKey;
use serde_json::{Value, json};

fn registration(name: &str, seed: u8, invite: Option<&str>) -> Value {
    let sk = SecretKey::from_ikm(&[seed; 32]).unwrap();
    let mut body = json!({
        "user_id": name,
        "public_key": b64(&sk.public_key().to_bytes().0),
        "proof_of_possession": b64(&sk.prove_possession().0),
    });
    if let Some(code) = invite {
        body["invite"] = code.into();
    }
    body
}

#[test]
fn private_mode_registers_by_invite_only_and_each_code_works_once() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.registration.policy = None; // the private-mode default: invite
        c.registration.user_invites = 1;
    });
    fails(
        post(&srv, "/register", &registration("mallory", 9, None)),
        403,
        "an invite code is required to register: send \"invite\": \"<code>\"",
    );
    fails(
        post(&srv, "/register", &registration("mallory", 9, Some("0123"))),
        403,
        "invalid or already used invite code",
    );
    let (status, v) = post(&srv, "/admin/invites", &json!({}));
    assert_eq!(status, 201, "{v}");
    let code = v["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 32);
    let (status, alice) = post(&srv, "/register", &registration("alice", 1, Some(&code)));
    assert_eq!(status, 200, "{alice}");
    fails(
        post(&srv, "/register", &registration("bob", 2, Some(&code))),
        403,
        "invalid or already used invite code",
    );
    // Alice may invite one friend.
    let passkey = alice["passkey"].as_str().unwrap();
    let (status, v) = post(&srv, "/invites", &json!({"passkey": passkey}));
    assert_eq!(status, 201, "{v}");
    let friend_code = v["code"].as_str().unwrap().to_owned();
    fails(
        post(&srv, "/invites", &json!({"passkey": passkey})),
        403,
        "no invites left (1 of 1 used)",
    );
    fails(post(&srv, "/invites", &json!({"passkey": "0".repeat(32)})), 401, "unknown passkey");
    assert_eq!(post(&srv, "/register", &registration("bob", 2, Some(&friend_code))).0, 200);
    // Non-admins cannot mint invites.
    let srv2 = TestServer::start(TrackerMode::Private, |c| c.admin.allow_loopback = false);
    let (status, _, _) = http_request(srv2.v4, "POST", "/admin/invites", Some("{}"));
    assert_eq!(status, 403);
}

#[test]
fn closed_registration_only_attaches_keys_to_admin_made_accounts() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.registration.policy = Some(RegistrationPolicy::Closed);
    });
    fails(
        post(&srv, "/register", &registration("mallory", 9, None)),
        403,
        "registration is closed: an admin creates accounts",
    );
    let passkey = srv.create_user("carol");
    let mut body = registration("carol", 3, None);
    body["passkey"] = passkey.into();
    assert_eq!(post(&srv, "/register", &body).0, 200);
}

#[test]
fn expensive_endpoints_are_rate_limited_per_address() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.limits.expensive_burst = 3;
        c.limits.expensive_per_minute = 1;
    });
    for _ in 0..3 {
        let (status, _, _) = http_request(srv.v4, "POST", "/verify-receipt", Some("{}"));
        assert_eq!(status, 400);
    }
    for path in ["/verify-receipt", "/register", "/verify-attestation"] {
        let (status, head, body) = http_request(srv.v4, "POST", path, Some("{}"));
        assert_eq!(status, 429, "{path}");
        let retry: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("Retry-After: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!((55..=60).contains(&retry), "{retry}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"success": false,
                   "error": format!("too many requests from this address: retry in {retry} s")})
        );
    }
    // Cheap endpoints are not limited, and another address (::1) has its own bucket.
    assert_eq!(http_request(srv.v4, "GET", "/health", None).0, 200);
    assert_eq!(http_request(srv.v6, "POST", "/verify-receipt", Some("{}")).0, 400);
}

#[test]
fn behind_a_proxy_loopback_privileges_follow_the_forwarded_address() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.network.proxy_header = ProxyHeader::XForwardedFor;
    });
    let create = |headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        http_request_with(srv.v4, "POST", "/admin/users", &h, br#"{"name":"eve"}"#).0
    };
    // The finding: a proxied client from 203.0.113.7 was an admin because the proxy is local.
    assert_eq!(create(&[("X-Forwarded-For", "203.0.113.7")]), 403);
    // A client-supplied entry before the proxy's own does not help.
    assert_eq!(create(&[("X-Forwarded-For", "127.0.0.1, 203.0.113.7")]), 403);
    // No header: the proxy did not forward, or someone bypassed it: no privileges either.
    assert_eq!(create(&[]), 403);
    let keygen =
        http_request_with(srv.v4, "POST", "/keygen", &[("X-Forwarded-For", "203.0.113.7")], b"{}");
    assert_eq!(keygen.0, 403);
    // A loopback client going through the proxy is loopback.
    assert_eq!(create(&[("X-Forwarded-For", "203.0.113.7, 127.0.0.1")]), 201);
}

/// A `pbts` process with `network` (extra TOML lines of its `[network]` table) and `pre` run in
/// the child before exec.
fn spawn_with(
    dir: &std::path::Path,
    network: &str,
    pre: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> (Child, SocketAddr) {
    let path = dir.join("pbts.toml");
    std::fs::write(
        &path,
        format!(
            "[network]\nlisten = [\"127.0.0.1:0\"]\ncores = 1\nfirst_cpu = -1\nio_memory_kib = 256\n\
             {network}[storage]\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pbts"));
    cmd.args(["serve", "-c"]).arg(&path).stdout(Stdio::piped()).stderr(Stdio::null());
    // SAFETY: the closures given below only call setrlimit(2), which is async-signal-safe.
    unsafe { cmd.pre_exec(pre) };
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.rsplit("http://").next().unwrap().trim().parse().unwrap();
    (child, addr)
}

fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `r` is a valid rlimit read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn soft_nofile(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Opens `n` connections from 127.0.0.2 (the attacker's address) that send nothing.
fn idle_connections(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into()).unwrap();
            s.connect_timeout(&to.into(), Duration::from_secs(2)).ok()?;
            Some(s.into())
        })
        .collect()
}

#[test]
fn idle_connections_from_one_address_leave_room_for_everyone_else() {
    let (_, hard) = {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `r` is valid and writable for the call.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        (r.rlim_cur, r.rlim_max)
    };
    assert!(hard >= 4096, "this test opens 1100 connections (hard RLIMIT_NOFILE {hard})");
    let _ = set_nofile(hard, hard); // this process holds the client ends
    for (soft, child_hard) in [(1024, hard), (1024, 1024)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, addr) = spawn_with(dir.path(), "", move || set_nofile(soft, child_hard));
        if child_hard > 1024 {
            // The stock soft limit was raised to fit every connection the config allows.
            assert!(soft_nofile(child.id()) >= 16384 + 512, "{}", soft_nofile(child.id()));
        }
        let idle = idle_connections(addr, 1100);
        assert_eq!(idle.len(), 1100, "the kernel accepts the handshakes");
        // Everyone else is still served.
        let (status, _, body) = http_request(addr, "GET", "/health", None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let open = metric(addr, "pbts_http_open_connections{worker=\"0\"}");
        // At most 256 from 127.0.0.2 (max_connections_per_ip), plus the /metrics request.
        assert!(open <= 257, "{open}");
        drop(idle);
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_client_that_pipelines_and_never_reads_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_with(dir.path(), "request_timeout_secs = 2\n", || Ok(()));
    let pid = child.id();
    let before = proc_status(pid, "VmRSS:");
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4096);
    let mut streams: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Write for two seconds (or until the server stops reading), never read.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sent = 0usize;
    for s in &mut streams {
        s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    'outer: while Instant::now() < deadline {
        for s in &mut streams {
            match s.write(&request) {
                Ok(n) => sent += n,
                Err(_) => break 'outer,
            }
        }
    }
    let grown_kib = proc_status(pid, "VmRSS:").saturating_sub(before);
    assert!(sent > 1 << 20, "sent {sent} bytes");
    // Each connection holds at most 64 KiB of responses and its 4 KiB input buffer: the
    // finding was 245 MB for 4 connections.
    assert!(grown_kib < 16 << 10, "RSS grew by {grown_kib} KiB after {sent} bytes of requests");
    // The write timeout closes them: the open-connections gauge drains.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = metric(addr, "pbts_http_open_connections{worker=\"0\"}");
        if open == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} connections still open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn invented_torrents_are_capped_per_user_and_leave_nothing_durable() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.limits.max_torrents_per_user = 50;
        c.limits.max_peers_per_ip_per_swarm = 2;
    });
    let pk = srv.create_user("mallory");
    let announce = |ih: [u8; 20], port: u16, extra: &str| -> Vec<u8> {
        let q = announce_query(&ih, &[7; 20], port, &format!("&left=0{extra}"));
        get_body(srv.v4, &format!("/{pk}/announce?{q}"))
    };
    let invented = |i: u32| {
        let mut ih = [0x11; 20];
        ih[..4].copy_from_slice(&i.to_be_bytes());
        ih
    };
    for i in 0..50 {
        let body = announce(invented(i), 6881, "&event=completed");
        assert!(body.starts_with(b"d8:complete"), "{i}: {}", String::from_utf8_lossy(&body));
    }
    let refused = b"d14:failure reason69:too many active torrents for this account (limit 50): \
                    stop some firste"
        .to_vec();
    assert_eq!(announce(invented(50), 6881, "&event=completed"), refused);
    // Re-announcing a torrent it is in is fine; stopping one makes room for another.
    assert!(announce(invented(0), 6881, "").starts_with(b"d8:complete"));
    assert!(announce(invented(0), 6881, "&event=stopped").starts_with(b"d8:complete"));
    assert!(announce(invented(50), 6881, "").starts_with(b"d8:complete"));
    // Peers per address per swarm (room for two more peers of the user first).
    assert!(announce(invented(2), 6881, "&event=stopped").starts_with(b"d8:complete"));
    assert!(announce(invented(4), 6881, "&event=stopped").starts_with(b"d8:complete"));
    assert!(announce(invented(1), 6882, "").starts_with(b"d8:complete"));
    assert_eq!(
        announce(invented(1), 6883, ""),
        b"d14:failure reason56:too many peers from this address in this swarm (limit 2)e".to_vec()
    );
    // Nothing of the invented torrents is durable: after a restart no snatch was kept. (A
    // graceful restart carries live swarms over in the swarm snapshot, invented or not, until
    // their peers time out; the store is what must not keep them, so restart without it.)
    let srv = srv.restart(TrackerMode::Private, |c| c.storage.swarm_snapshot = false);
    let q = format!("info_hash={}", pct(&invented(3)));
    let scrape = get_body(srv.v4, &format!("/{pk}/scrape?{q}"));
    assert!(
        scrape.ends_with(b"d8:completei0e10:downloadedi0e10:incompletei0eeee"),
        "{}",
        String::from_utf8_lossy(&scrape)
    );
}

#[test]
fn stats_follow_the_swarms_within_a_second() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    assert_eq!(get(&srv, "/stats")["total_peers"], 0);
    for i in 0..3u8 {
        let q = announce_query(&[i; 20], &[i; 20], 6881, "");
        assert!(get_body(srv.v4, &format!("/announce?{q}")).starts_with(b"d8:complete"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&srv, "/stats")["total_peers"] != 3 {
        assert!(Instant::now() < deadline, "stats never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&srv, "/stats")["total_torrents"], 3);
}
