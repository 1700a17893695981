//! Integration tests over real sockets on 127.0.0.1 and ::1: exact wire bytes of HTTP and UDP
//! announce/scrape, private-mode passkeys, the ratio gate, limits and the API.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use pbts_engine::config::TrackerMode;
use pbts_proto::udp::{self, ConnectionId, TransactionId};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

/// An info-hash full of bytes >= 0x80 (what broke the original for nearly every torrent).
const IH: [u8; 20] = [
    0xff, 0x80, 0x81, 0x00, 0x25, 0x2b, 0x20, 0xc3, 0xa9, 0x7f, 0x26, 0x3d, 0xfe, 0x99, 0x10, 0x42,
    0x88, 0x90, 0xaa, 0xbb,
];

fn peer_id(n: u8) -> [u8; 20] {
    let mut p = *b"-qB4630-000000000000";
    p[19] = n;
    p[18] = 0x80 | n;
    p
}

/// A bencoded failure body.
fn failure(text: &str) -> Vec<u8> {
    let mut v = b"d14:failure reason".to_vec();
    v.extend_from_slice(&bstr(text.as_bytes()));
    v.push(b'e');
    v
}

fn bstr(s: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", s.len()).into_bytes();
    v.extend_from_slice(s);
    v
}

/// The exact compact answer to a seeder announcing into a swarm whose only other peer is a
/// leecher at 127.0.0.1:6881.
fn one_seeder_and_one_leecher_at_6881(srv: &TestServer) -> Vec<u8> {
    let mut want = b"d8:completei1e10:downloadedi0e11:external ip4:\x7f\x00\x00\x01".to_vec();
    want.extend_from_slice(b"10:incompletei1e8:intervali1800e12:min intervali900e");
    want.extend_from_slice(b"5:peers6:\x7f\x00\x00\x01\x1a\xe1");
    want.extend_from_slice(b"10:tracker id");
    want.extend_from_slice(&bstr(srv.instance_id().as_bytes()));
    want.push(b'e');
    want
}

/// Port 0 (a client without a listening port) is accepted and counted, over HTTP and UDP, and
/// never handed out: nobody could connect to it.
#[test]
fn port_zero_is_counted_and_never_handed_out() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let q = announce_query(&IH, &peer_id(1), 0, "&left=100&event=started&compact=1");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert!(
        body.starts_with(b"d8:completei0e10:downloadedi0e"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let u = Udp::new(srv.v4);
    let conn = u.connect();
    let resp = u.exchange(&udp_announce(conn, 0, 100, AnnounceEvent::Started, b""));
    // A second port-0 peer from the same address takes the same key (127.0.0.1, 0): still one.
    assert_eq!(resp, [0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 1, 0, 0, 0, 0]);
    let q = announce_query(&IH, &peer_id(2), 6881, "&left=100&event=started&compact=1");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("10:incompletei2e") && text.contains("5:peers0:"), "{text}");
}

#[test]
fn http_compact_announce_exact_bytes() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let q = announce_query(&IH, &peer_id(1), 6881, "&left=100&event=started&compact=1");
    get_body(srv.v4, &format!("/announce?{q}"));
    let q = announce_query(&IH, &peer_id(2), 6882, "&left=0&compact=1");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert_eq!(
        body,
        one_seeder_and_one_leecher_at_6881(&srv),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn http_dict_peers_and_no_peer_id() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    get_body(srv.v4, &format!("/announce?{}", announce_query(&IH, &peer_id(1), 6881, "&left=5")));
    let q = announce_query(&IH, &peer_id(2), 6882, "&left=5&compact=0");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    let mut peers = b"5:peersld2:ip9:127.0.0.17:peer id20:".to_vec();
    peers.extend_from_slice(&peer_id(1));
    peers.extend_from_slice(b"4:porti6881eee");
    assert!(body.windows(peers.len()).any(|w| w == peers), "{}", String::from_utf8_lossy(&body));
    let q = announce_query(&IH, &peer_id(2), 6882, "&left=5&compact=0&no_peer_id=1");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    let peers = b"5:peersld2:ip9:127.0.0.14:porti6881eee";
    assert!(body.windows(peers.len()).any(|w| w == peers), "{}", String::from_utf8_lossy(&body));
}

#[test]
fn http_ipv6_client_gets_peers6_and_v4_peers() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    get_body(srv.v4, &format!("/announce?{}", announce_query(&IH, &peer_id(1), 6881, "&left=5")));
    get_body(srv.v6, &format!("/announce?{}", announce_query(&IH, &peer_id(2), 6882, "&left=5")));
    let body = get_body(
        srv.v6,
        &format!("/announce?{}", announce_query(&IH, &peer_id(3), 6883, "&left=5")),
    );
    let mut v6 = b"6:peers618:".to_vec();
    v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    v6.extend_from_slice(&6882u16.to_be_bytes());
    assert!(body.windows(v6.len()).any(|w| w == v6), "{}", String::from_utf8_lossy(&body));
    let v4 = b"5:peers6:\x7f\x00\x00\x01\x1a\xe1";
    assert!(body.windows(v4.len()).any(|w| w == v4));
    let ext = b"11:external ip16:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01";
    assert!(body.windows(ext.len()).any(|w| w == ext));
}

fn count_compact_peers(body: &[u8]) -> usize {
    let at = body.windows(7).position(|w| w == b"5:peers").unwrap() + 7;
    let colon = body[at..].iter().position(|&b| b == b':').unwrap();
    let len: usize = std::str::from_utf8(&body[at..at + colon]).unwrap().parse().unwrap();
    len / 6
}

#[test]
fn numwant_is_honoured_and_capped_by_max_peers() {
    let srv = TestServer::start(TrackerMode::Open, |c| c.tracker.max_peers = 20);
    for n in 0..30u16 {
        let q = announce_query(&IH, &peer_id(n as u8), 7000 + n, "&left=5&numwant=0");
        get_body(srv.v4, &format!("/announce?{q}"));
    }
    let q = announce_query(&IH, &peer_id(99), 9000, "&left=5&numwant=5");
    assert_eq!(count_compact_peers(&get_body(srv.v4, &format!("/announce?{q}"))), 5);
    let q = announce_query(&IH, &peer_id(99), 9000, "&left=5&numwant=500");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert_eq!(count_compact_peers(&body), 20);
    // Counts cover the whole swarm, not the returned slice (the original capped them).
    assert!(body.starts_with(b"d8:completei0e10:downloadedi0e"));
    assert!(body.windows(17).any(|w| w == b"10:incompletei31e"));
}

/// `numwant=-1` (BEP 15's "default", sent over HTTP by clients that reuse their UDP value) is
/// the default numwant, not a failed announce.
#[test]
fn negative_numwant_means_the_default() {
    let srv = TestServer::start(TrackerMode::Open, |c| c.tracker.default_numwant = 2);
    let q = announce_query(&IH, &peer_id(1), 6881, "&left=100&compact=1&numwant=0");
    get_body(srv.v4, &format!("/announce?{q}"));
    let q = announce_query(&IH, &peer_id(2), 6882, "&left=0&compact=1&numwant=-1");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert_eq!(
        body,
        one_seeder_and_one_leecher_at_6881(&srv),
        "{}",
        String::from_utf8_lossy(&body)
    );
    for n in 3..8u8 {
        let q = announce_query(&IH, &peer_id(n), 7000 + u16::from(n), "&left=5&numwant=0");
        get_body(srv.v4, &format!("/announce?{q}"));
    }
    for numwant in ["-1", "-50", "-99999999999999999999"] {
        let q = announce_query(&IH, &peer_id(99), 9000, &format!("&left=5&numwant={numwant}"));
        let body = get_body(srv.v4, &format!("/announce?{q}"));
        assert_eq!(count_compact_peers(&body), 2, "numwant={numwant}");
    }
    // A minus sign without digits is still malformed.
    let q = announce_query(&IH, &peer_id(99), 9000, "&left=5&numwant=-");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert_eq!(body, failure("invalid numwant: expected a decimal number"));
}

#[test]
fn stopped_completed_paused_and_multi_scrape() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let other = [0x11u8; 20];
    let a = |pid: u8, port: u16, extra: &str| {
        get_body(srv.v4, &format!("/announce?{}", announce_query(&IH, &peer_id(pid), port, extra)))
    };
    a(1, 6881, "&left=10&event=started");
    a(2, 6882, "&left=10&event=started");
    a(1, 6881, "&left=0&event=completed");
    a(2, 6882, "&left=10&event=paused");
    a(3, 6883, "&left=10&event=started");
    let body = a(3, 6883, "&left=10&event=stopped");
    assert!(
        body.starts_with(b"d8:completei1e10:downloadedi1e"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    get_body(srv.v4, &format!("/announce?{}", announce_query(&other, &peer_id(9), 1, "&left=0")));
    let body =
        get_body(srv.v4, &format!("/scrape?info_hash={}&info_hash={}", pct(&IH), pct(&other)));
    let mut want = b"d5:filesd20:".to_vec();
    want.extend_from_slice(&other);
    want.extend_from_slice(b"d8:completei1e10:downloadedi0e10:incompletei0ee20:");
    want.extend_from_slice(&IH);
    want.extend_from_slice(b"d8:completei1e10:downloadedi1e10:incompletei1eeee");
    assert_eq!(body, want, "{}", String::from_utf8_lossy(&body));
    // Unknown torrent: all zero; no hash: empty files.
    let body = get_body(srv.v4, &format!("/scrape?info_hash={}", pct(&[7; 20])));
    assert!(body.ends_with(b"d8:completei0e10:downloadedi0e10:incompletei0eeee"));
    assert_eq!(get_body(srv.v4, "/scrape"), b"d5:filesdee");
}

#[test]
fn http_announce_errors_are_bencoded_failures() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let body = get_body(srv.v4, "/announce?info_hash=abc&peer_id=x&port=1");
    assert!(body.starts_with(b"d14:failure reason"), "{}", String::from_utf8_lossy(&body));
    assert!(body.windows(9).any(|w| w == b"info_hash"));
    let q = announce_query(&IH, &peer_id(1), 6881, "&event=bogus");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert!(body.starts_with(b"d14:failure reason"));
}

#[test]
fn keep_alive_pipelining_and_bad_requests() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let mut s = TcpStream::connect(srv.v4).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /scrape HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let (st1, h1, _) = split_response(&read_response(&mut s, &mut rest));
    let (st2, _, b2) = split_response(&read_response(&mut s, &mut rest));
    assert_eq!((st1, st2), (200, 200));
    assert!(h1.contains("Connection: keep-alive"), "{h1}");
    assert_eq!(b2, b"d5:filesdee");
    // Garbage: 400 and the connection closes.
    let (status, head, _) = split_response(&raw_exchange(srv.v4, b"\x16\x03\x01garbage\r\n\r\n"));
    assert_eq!(status, 400);
    assert!(head.contains("Connection: close"));
    // A head larger than the limit: 431, without waiting for the end of the head.
    let mut big = b"GET /announce HTTP/1.1\r\nX-Pad: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    let (status, ..) = split_response(&raw_exchange(srv.v4, &big));
    assert_eq!(status, 431);
    // HEAD: the GET head without the body; announces refuse HEAD (they change state).
    let (status, head, body) = http_request(srv.v4, "HEAD", "/health", None);
    assert_eq!(status, 200);
    assert!(body.is_empty() && !head.contains("Content-Length: 0"), "{head}");
    let q = announce_query(&IH, &peer_id(1), 6881, "");
    let (status, ..) = http_request(srv.v4, "HEAD", &format!("/announce?{q}"), None);
    assert_eq!(status, 405);
    let (status, _, body) = http_request(srv.v4, "GET", "/nope", None);
    assert_eq!((status, body), (404, br#"{"success":false,"error":"not found"}"#.to_vec()));
}

#[test]
fn slow_request_is_cut_off() {
    let srv = TestServer::start(TrackerMode::Open, |c| c.network.request_timeout_secs = 1);
    let mut s = TcpStream::connect(srv.v4).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "server must close a request that never completes");
    assert!(started.elapsed() < Duration::from_secs(4));
}

fn udp_announce(
    conn: ConnectionId,
    port: u16,
    left: u64,
    event: AnnounceEvent,
    url: &[u8],
) -> Vec<u8> {
    let mut req = Vec::new();
    udp::write_announce_request(
        &mut req,
        &udp::AnnounceRequest {
            connection_id: conn,
            transaction_id: TransactionId(0x0102_0304),
            info_hash: InfoHash(IH),
            peer_id: PeerId(peer_id(port as u8)),
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            key: 1,
            num_want: None,
            port,
            url_data: url,
        },
    );
    req
}

#[test]
fn udp_connect_announce_scrape_v4_and_v6() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    for (addr, ip_bytes) in
        [(srv.v4, vec![127, 0, 0, 1]), (srv.v6, std::net::Ipv6Addr::LOCALHOST.octets().to_vec())]
    {
        let a = Udp::new(addr);
        let conn = a.connect();
        let resp = a.exchange(&udp_announce(conn, 6881, 0, AnnounceEvent::Started, b""));
        // action 1, txid, interval 1800, leechers 0, seeders 1, no peers (only us).
        assert_eq!(resp, [0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        let b = Udp::new(addr);
        let conn_b = b.connect();
        let resp = b.exchange(&udp_announce(conn_b, 6882, 9, AnnounceEvent::Started, b""));
        let mut want = vec![0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 1, 0, 0, 0, 1];
        want.extend_from_slice(&ip_bytes);
        want.extend_from_slice(&6881u16.to_be_bytes());
        assert_eq!(resp, want);
        // The connection id is bound to the IP, not the port: b may use a's id.
        let mut scrape = Vec::new();
        udp::write_scrape_request(
            &mut scrape,
            conn,
            TransactionId(9),
            &[InfoHash(IH), InfoHash([3; 20])],
        );
        let resp = b.exchange(&scrape);
        assert_eq!(
            resp,
            [
                0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0
            ]
        );
        // Remove both so the v6 round starts from an empty swarm... per family.
        a.exchange(&udp_announce(conn, 6881, 0, AnnounceEvent::Stopped, b""));
        b.exchange(&udp_announce(conn_b, 6882, 9, AnnounceEvent::Stopped, b""));
    }
}

/// `pbts serve --udp-ceiling` (the benchmark ceiling): the same connection ids, no swarm.
#[test]
fn udp_ceiling_answers_without_a_swarm() {
    let srv = TestServer::start(TrackerMode::Private, |c| c.network.udp_ceiling = true);
    let a = Udp::new(srv.v4);
    let conn = a.connect();
    for port in [6881, 6882] {
        let resp = a.exchange(&udp_announce(conn, port, 0, AnnounceEvent::Started, b""));
        // action 1, txid, interval 1800, no leechers, no seeders, no peers: not even the first.
        assert_eq!(resp, [0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    let mut scrape = Vec::new();
    udp::write_scrape_request(&mut scrape, conn, TransactionId(9), &[InfoHash(IH)]);
    assert_eq!(a.exchange(&scrape), [0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    a.expect_silence(
        &udp_announce(ConnectionId(42), 6881, 0, AnnounceEvent::None, b""),
        Duration::from_millis(200),
    );
    // And the real tracker kept nothing.
    assert_eq!(srv.server.as_ref().unwrap().state().swarms.totals().peers_v4, 0);
}

#[test]
fn udp_bad_connection_id_and_garbage_get_no_answer() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let c = Udp::new(srv.v4);
    c.expect_silence(
        &udp_announce(ConnectionId(42), 6881, 0, AnnounceEvent::None, b""),
        Duration::from_millis(300),
    );
    c.expect_silence(b"hello", Duration::from_millis(200));
    // A malformed request from a real connection gets an error packet.
    let conn = c.connect();
    let mut req = udp_announce(conn, 6881, 0, AnnounceEvent::None, b"");
    req[83] = 9; // event 9
    assert_eq!(c.exchange(&req), b"\x00\x00\x00\x03\x01\x02\x03\x04invalid event");
    // Still serving.
    c.connect();
}

/// Malformed requests whose connection id does not validate are dropped, whatever is wrong with
/// them: an error packet to an unproven (spoofable) source would make the tracker a reflector.
#[test]
fn udp_malformed_requests_get_an_error_only_after_a_valid_connection_id() {
    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let c = Udp::new(srv.v4);
    let quiet = Duration::from_millis(300);
    // 17 bytes: a scrape header and one stray byte (it earned a 59-byte error before).
    let mut short_scrape = vec![0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 2, 0, 0, 0, 7];
    short_scrape.push(0xff);
    assert_eq!(short_scrape.len(), 17);
    c.expect_silence(&short_scrape, quiet);
    // An announce cut short, an unknown action, an unknown action under the connect magic, a
    // bad event: all under ids the tracker never gave out.
    let mut short_announce = udp_announce(ConnectionId(42), 6881, 0, AnnounceEvent::None, b"");
    short_announce.truncate(60);
    c.expect_silence(&short_announce, quiet);
    c.expect_silence(&[0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 9, 0, 0, 0, 7], quiet);
    let mut magic_unknown = udp::PROTOCOL_ID.to_be_bytes().to_vec();
    magic_unknown.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 7]);
    c.expect_silence(&magic_unknown, quiet);
    let mut bad_event = udp_announce(ConnectionId(42), 6881, 0, AnnounceEvent::None, b"");
    bad_event[83] = 9;
    c.expect_silence(&bad_event, quiet);
    let stats: serde_json::Value = serde_json::from_slice(&get_body(srv.v4, "/stats")).unwrap();
    assert_eq!(stats["requests"]["udp_dropped"], 5);
    assert_eq!(stats["requests"]["udp_error"], 0);

    // The same malformed requests under a connection id the tracker gave this address.
    let conn = c.connect();
    short_scrape[..8].copy_from_slice(&conn.0.to_be_bytes());
    let mut want = b"\x00\x00\x00\x03\x00\x00\x00\x07".to_vec();
    want.extend_from_slice(b"scrape request must carry whole 20-byte info hashes");
    assert_eq!(c.exchange(&short_scrape), want);
    short_announce[..8].copy_from_slice(&conn.0.to_be_bytes());
    assert_eq!(
        c.exchange(&short_announce),
        b"\x00\x00\x00\x03\x01\x02\x03\x04announce request too short"
    );
    let mut unknown = conn.0.to_be_bytes().to_vec();
    unknown.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 7]);
    assert_eq!(c.exchange(&unknown), b"\x00\x00\x00\x03\x00\x00\x00\x07unknown action");
    let stats: serde_json::Value = serde_json::from_slice(&get_body(srv.v4, "/stats")).unwrap();
    assert_eq!(stats["requests"]["udp_dropped"], 5);
    assert_eq!(stats["requests"]["udp_error"], 3);
}

#[test]
fn private_mode_requires_a_known_passkey() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let pk = srv.create_user("alice");
    let q = announce_query(&IH, &peer_id(1), 6881, "&left=0");
    let body = get_body(srv.v4, &format!("/announce?{q}"));
    assert_eq!(body, failure("passkey required: announce to /<passkey>/announce"));
    let body = get_body(srv.v4, &format!("/{}/announce?{q}", "f".repeat(32)));
    assert_eq!(body, failure("unknown passkey"));
    let body = get_body(srv.v4, &format!("/nothex/announce?{q}"));
    assert_eq!(body, failure("invalid passkey: expected 32 lowercase hex characters"));
    for path in [format!("/{pk}/announce"), format!("/announce/{pk}")] {
        let body = get_body(srv.v4, &format!("{path}?{q}"));
        assert!(body.starts_with(b"d8:completei1e"), "{}", String::from_utf8_lossy(&body));
    }
    let body = get_body(srv.v4, &format!("/scrape?info_hash={}", pct(&IH)));
    assert!(body.starts_with(b"d14:failure reason"));
    let body = get_body(srv.v4, &format!("/{pk}/scrape?info_hash={}", pct(&IH)));
    assert!(body.starts_with(b"d5:files"));

    // UDP: BEP 41 URL data carries the passkey.
    let u = Udp::new(srv.v4);
    let conn = u.connect();
    let resp = u.exchange(&udp_announce(conn, 7000, 0, AnnounceEvent::None, b"/announce"));
    let mut want = b"\x00\x00\x00\x03\x01\x02\x03\x04".to_vec();
    want.extend_from_slice(b"passkey required: announce to /<passkey>/announce");
    assert_eq!(resp, want);
    // No URL data at all (Transmission, rtorrent, aria2): no URL to fix, so say what is missing.
    let resp = u.exchange(&udp_announce(conn, 7000, 0, AnnounceEvent::None, b""));
    let mut want = b"\x00\x00\x00\x03\x01\x02\x03\x04".to_vec();
    want.extend_from_slice(
        b"passkey required: your client sent no URL data (BEP 41) with this UDP announce, so \
          the passkey cannot reach the tracker over UDP; use the HTTP announce URL",
    );
    assert_eq!(resp, want, "{}", String::from_utf8_lossy(&resp));
    let url = format!("/{pk}/announce");
    let resp = u.exchange(&udp_announce(conn, 7000, 0, AnnounceEvent::Started, url.as_bytes()));
    assert_eq!(&resp[..4], &[0, 0, 0, 1]);
    assert_eq!(&resp[16..20], &[0, 0, 0, 2], "two seeders: the HTTP one and us");
    let url = format!("/announce/{pk}?foo=1");
    let resp = u.exchange(&udp_announce(conn, 7000, 0, AnnounceEvent::None, url.as_bytes()));
    assert_eq!(&resp[..4], &[0, 0, 0, 1]);
}

#[test]
fn ratio_gate_rejects_leechers_below_min_ratio() {
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.ratio.grace_bytes = 0;
        c.ratio.min_ratio = 0.5;
    });
    let pk = srv.create_user("leech");
    let go = |extra: &str| {
        let q = format!("info_hash={}&peer_id={}&port=6881{extra}", pct(&IH), pct(&peer_id(1)));
        get_body(srv.v4, &format!("/{pk}/announce?{q}"))
    };
    assert!(go("&uploaded=0&downloaded=0&left=1000&event=started").starts_with(b"d8:complete"));
    assert!(go("&uploaded=100&downloaded=1000&left=10").starts_with(b"d8:complete"));
    let body = go("&uploaded=100&downloaded=1000&left=10");
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&failure(
            "insufficient ratio: 0.10 < 0.50 (uploaded 100 bytes, downloaded 1000 bytes)"
        ))
    );
    // The rejected leecher was taken out of the swarm.
    let scrape = get_body(srv.v4, &format!("/{pk}/scrape?info_hash={}", pct(&IH)));
    assert!(scrape.ends_with(b"d8:completei0e10:downloadedi0e10:incompletei0eeee"));
    // Seeding is always allowed (and is how the ratio recovers).
    // (The first announce after removal sets the baseline; the next one is credited.)
    assert!(go("&uploaded=100&downloaded=1000&left=0").starts_with(b"d8:completei1e"));
    assert!(go("&uploaded=500&downloaded=1000&left=0").starts_with(b"d8:completei1e"));
    let (_, _, user) = http_request(srv.v4, "GET", "/admin/users/leech", None);
    let user: serde_json::Value = serde_json::from_slice(&user).unwrap();
    assert_eq!((user["uploaded"].as_u64(), user["downloaded"].as_u64()), (Some(500), Some(1000)));
    assert_eq!(user["ratio"].as_f64(), Some(0.5));
    assert!(go("&uploaded=500&downloaded=1000&left=10").starts_with(b"d8:complete"));
}

/// Claimed totals stop at `u64::MAX` in memory, as in the database; they used to wrap, so a
/// second announce made a user who claimed 2^64-1 bytes look like one who uploaded 9.
#[test]
fn claimed_totals_saturate_instead_of_wrapping() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let pk = srv.create_user("big");
    let go = |ih: &[u8; 20], extra: &str| {
        let q = format!("info_hash={}&peer_id={}&port=6881{extra}", pct(ih), pct(&peer_id(1)));
        get_body(srv.v4, &format!("/{pk}/announce?{q}"))
    };
    let max = u64::MAX;
    assert!(
        go(&IH, &format!("&uploaded={max}&downloaded=0&left=0&event=started"))
            .starts_with(b"d8:complete")
    );
    assert!(
        go(&[0x22; 20], "&uploaded=10&downloaded=0&left=0&event=started")
            .starts_with(b"d8:complete")
    );
    let (_, _, user) = http_request(srv.v4, "GET", "/admin/users/big", None);
    let user: serde_json::Value = serde_json::from_slice(&user).unwrap();
    assert_eq!(
        (user["uploaded"].as_u64(), user["total_uploaded"].as_u64()),
        (Some(max), Some(max)),
        "{user}"
    );
}

#[test]
fn admin_users_and_api_endpoints() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let (status, _, body) =
        http_request(srv.v4, "POST", "/admin/users", Some(r#"{"user_id":"bob"}"#));
    assert_eq!(status, 201);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let pk = v["passkey"].as_str().unwrap();
    assert_eq!(pk.len(), 32);
    assert_eq!(v["announce_url"], format!("http://127.0.0.1:8000/{pk}/announce"));
    assert_eq!(v["udp_announce_url"], format!("udp://127.0.0.1:8000/{pk}/announce"));
    let (status, _, body) = http_request(srv.v4, "POST", "/admin/users", Some(r#"{"name":"bob"}"#));
    assert_eq!(
        (status, body),
        (409, br#"{"success":false,"error":"user \"bob\" already exists"}"#.to_vec())
    );
    let (status, _, body) = http_request(srv.v4, "POST", "/admin/users", Some(r#"{"name":"a b"}"#));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = http_request(srv.v4, "POST", "/admin/users", Some("{"));
    assert_eq!(status, 400);
    let (_, _, user) = http_request(srv.v4, "GET", "/admin/users/bob", None);
    let user: serde_json::Value = serde_json::from_slice(&user).unwrap();
    assert_eq!(user["ratio"], serde_json::Value::Null);

    let health: serde_json::Value = serde_json::from_slice(&get_body(srv.v4, "/health")).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["instance_id"], srv.instance_id());
    let stats: serde_json::Value = serde_json::from_slice(&get_body(srv.v4, "/stats")).unwrap();
    assert_eq!(stats["total_users"], 1);
    assert_eq!(stats["mode"], "private");
    let metrics = String::from_utf8(get_body(srv.v4, "/metrics")).unwrap();
    assert!(metrics.contains("pbts_users 1\n"), "{metrics}");
    assert!(metrics.contains("pbts_requests_total{protocol=\"http\",kind=\"api\",worker=\"0\"}"));
}

/// Path parameters are percent-decoded once (clients escape freely: `%61lice` is `alice`), and
/// a parameter that does not decode is a 400 naming the problem, not a 404.
#[test]
fn path_parameters_are_percent_decoded() {
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    srv.create_user("alice");
    let get = |target: &str| {
        let (status, _, body) = http_request(srv.v4, "GET", target, None);
        (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    };
    let (status, user) = get("/user/%61lice");
    assert_eq!((status, user["user_id"].as_str()), (200, Some("alice")), "{user}");
    let (status, user) = get("/admin/users/%61lic%65");
    assert_eq!((status, user["user_id"].as_str()), (200, Some("alice")), "{user}");
    let bad_escape = "invalid percent-encoding at byte 0: '%' must be followed by two hex digits";
    fails(get("/user/%zz"), 400, &format!("user id in the path: {bad_escape}"));
    fails(
        get("/admin/users/al%C3%28"),
        400,
        "user name in the path: not UTF-8 after percent-decoding (invalid byte at offset 2)",
    );
    fails(get("/contract/user/%zz"), 400, &format!("username in the path: {bad_escape}"));
    // A name that decodes goes on to the lookup (here: no chain is configured).
    fails(
        get("/contract/user/alice%20smith"),
        503,
        "on-chain reputation is not configured: set chain.rpc_url (RPC) and the signing key (PK0)",
    );
    fails(get("/user/alice%20smith"), 404, "User not found");
}

#[test]
fn admin_token_when_loopback_is_not_trusted() {
    // SAFETY: this variable name is used by this test alone.
    unsafe { std::env::set_var("PBTS_TEST_ADMIN_TOKEN_1", "s3cret") };
    let srv = TestServer::start(TrackerMode::Private, |c| {
        c.admin.allow_loopback = false;
        c.admin.token_env = "PBTS_TEST_ADMIN_TOKEN_1".into();
    });
    let body = r#"{"name":"carol"}"#;
    let (status, _, _) = http_request(srv.v4, "POST", "/admin/users", Some(body));
    assert_eq!(status, 403);
    let req = format!(
        "POST /admin/users HTTP/1.1\r\nAuthorization: Bearer s3cret\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, ..) = split_response(&raw_exchange(srv.v4, req.as_bytes()));
    assert_eq!(status, 201);
}

#[test]
fn registered_torrents_only_when_required() {
    let srv =
        TestServer::start(TrackerMode::Open, |c| c.tracker.require_registered_torrents = true);
    let q = announce_query(&IH, &peer_id(1), 6881, "&left=0");
    assert_eq!(get_body(srv.v4, &format!("/announce?{q}")), failure("unregistered torrent"));
    let hex: String = IH.iter().map(|b| format!("{b:02x}")).collect();
    let (status, ..) = http_request(
        srv.v4,
        "POST",
        "/admin/torrents",
        Some(&format!(r#"{{"info_hash":"{hex}"}}"#)),
    );
    assert_eq!(status, 201);
    assert!(get_body(srv.v4, &format!("/announce?{q}")).starts_with(b"d8:complete"));
}

#[test]
fn connection_cap_refuses_extra_connections() {
    let srv = TestServer::start(TrackerMode::Open, |c| c.network.max_connections_per_core = 2);
    let open = || {
        let mut s = TcpStream::connect(srv.v4).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        s
    };
    let mut held: Vec<TcpStream> = (0..2).map(|_| open()).collect();
    for s in &mut held {
        let (status, ..) = split_response(&read_response(s, &mut Vec::new()));
        assert_eq!(status, 200);
    }
    // The third is closed without an answer.
    let mut third = open();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut third, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "got {:?}", String::from_utf8_lossy(&buf[..n]));
    let stats: serde_json::Value = serde_json::from_slice(&{
        let mut s = held.pop().unwrap();
        s.write_all(b"GET /stats HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        split_response(&read_response(&mut s, &mut Vec::new())).2
    })
    .unwrap();
    assert_eq!(stats["open_connections"], 2);
    // Once one is closed, new connections are served again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = open();
        if let Ok(n) = std::io::Read::read(&mut s, &mut buf)
            && n > 0
        {
            assert!(buf.starts_with(b"HTTP/1.1 200"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "capacity never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn proxy_header_is_used_only_when_trusted() {
    let ext = |srv: &TestServer| {
        let q = announce_query(&IH, &peer_id(1), 6881, "&left=0");
        let req = format!(
            "GET /announce?{q} HTTP/1.1\r\nX-Real-IP: 10.1.2.3\r\nX-Forwarded-For: 1.1.1.1, 10.9.8.7\r\nConnection: close\r\n\r\n"
        );
        let (_, _, body) = split_response(&raw_exchange(srv.v4, req.as_bytes()));
        let at = body.windows(14).position(|w| w == b"11:external ip").unwrap() + 16;
        body[at..at + 4].to_vec()
    };
    let plain = TestServer::start(TrackerMode::Open, |_| {});
    assert_eq!(ext(&plain), [127, 0, 0, 1]);
    let real_ip = TestServer::start(TrackerMode::Open, |c| {
        c.network.proxy_header = pbts_engine::config::ProxyHeader::XRealIp;
    });
    assert_eq!(ext(&real_ip), [10, 1, 2, 3]);
    let xff = TestServer::start(TrackerMode::Open, |c| {
        c.network.proxy_header = pbts_engine::config::ProxyHeader::XForwardedFor;
    });
    // The last hop is the one the trusted proxy appended.
    assert_eq!(ext(&xff), [10, 9, 8, 7]);
}

use pbts_engine::encoding::b64;

#[test]
fn register_binds_a_proven_key_and_returns_a_working_passkey() {
    use pbts_verifier::keys::SecretKey;
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let alice = SecretKey::from_ikm(&[7; 32]).unwrap();
    let mallory = SecretKey::from_ikm(&[8; 32]).unwrap();
    let pk = b64(&alice.public_key().to_bytes().0);
    let pop = b64(&alice.prove_possession().0);
    let mut msg = b"register".to_vec();
    msg.extend_from_slice(srv.instance_id().as_bytes());
    msg.extend_from_slice(b"alice");
    let sig = b64(&alice.sign(&msg).0);
    let post = |body: String| {
        let (status, _, resp) = http_request(srv.v4, "POST", "/register", Some(&body));
        (status, serde_json::from_slice::<serde_json::Value>(&resp).unwrap())
    };
    let body = |user: &str, pk: &str, pop: &str, sig: Option<&str>| {
        let mut v =
            serde_json::json!({"user_id": user, "public_key": pk, "proof_of_possession": pop});
        if let Some(sig) = sig {
            v["signature"] = sig.into();
        }
        v.to_string()
    };
    let (status, v) = post(body("alice", &pk, &pop, Some(&sig)));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"], "User registered successfully");
    assert_eq!(v["instance_id"], srv.instance_id());
    let passkey = v["passkey"].as_str().unwrap().to_owned();
    let q = announce_query(&IH, &peer_id(1), 6881, "&left=0");
    assert!(get_body(srv.v4, &format!("/{passkey}/announce?{q}")).starts_with(b"d8:complete"));

    let err = |status: u16, text: &str, got: (u16, serde_json::Value)| {
        assert_eq!(got.0, status, "{}", got.1);
        assert_eq!(got.1, serde_json::json!({"success": false, "error": text}));
    };
    err(409, "User already exists", post(body("alice", &pk, &pop, None)));
    err(409, "public key already registered", post(body("alice2", &pk, &pop, None)));
    let mallory_pop = b64(&mallory.prove_possession().0);
    err(401, "invalid proof_of_possession", post(body("bob", &pk, &mallory_pop, None)));
    let wrong_sig = b64(&alice.sign(b"register-something-else").0);
    let mallory_pk = b64(&mallory.public_key().to_bytes().0);
    err(
        401,
        "invalid registration signature",
        post(body("carol", &mallory_pk, &mallory_pop, Some(&wrong_sig))),
    );
    err(400, "public_key must decode to 48 bytes, got 3", post(body("dave", "AAAA", &pop, None)));
    err(400, "public_key is not valid base64", post(body("dave", "!!", &pop, None)));
    let (status, v) = post(body("dave", &b64(&[0x11; 48]), &pop, None));
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("invalid public_key: "), "{v}");
    err(
        400,
        "user_id must be 1-64 characters of A-Z a-z 0-9 _ - .",
        post(body("", &pk, &pop, None)),
    );
    let (status, v) = post("{}".to_owned());
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("invalid JSON body: missing field"), "{v}");

    let user: serde_json::Value = serde_json::from_slice(&get_body(srv.v4, "/user/alice")).unwrap();
    assert_eq!(user["public_key"], pk.as_str());

    // A user created by an admin gains a key with their passkey (and keeps that passkey).
    let bob_passkey = srv.create_user("bob");
    let bob = SecretKey::from_ikm(&[9; 32]).unwrap();
    let bob_pk = b64(&bob.public_key().to_bytes().0);
    let bob_pop = b64(&bob.prove_possession().0);
    let attach = |passkey: &str| {
        let mut v = serde_json::json!({"user_id": "bob", "public_key": bob_pk, "proof_of_possession": bob_pop});
        v["passkey"] = passkey.into();
        post(v.to_string())
    };
    err(403, "passkey does not belong to user_id", attach(&passkey));
    let (status, v) = attach(&bob_passkey);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["passkey"], bob_passkey.as_str());
    err(409, "user already has a public key", attach(&bob_passkey));
    let user: serde_json::Value = serde_json::from_slice(&get_body(srv.v4, "/user/bob")).unwrap();
    assert_eq!(user["public_key"], bob_pk.as_str());
    assert_eq!(user["ratio"], serde_json::Value::Null);
    let (status, _, body404) = http_request(srv.v4, "GET", "/user/nobody", None);
    assert_eq!((status, body404), (404, br#"{"success":false,"error":"User not found"}"#.to_vec()));
}

#[test]
fn verify_receipt_checks_one_signature_with_the_originals_field_names() {
    use pbts_verifier::keys::SecretKey;
    use pbts_verifier::receipt::{PieceHash, Receipt, SignatureBytes};
    let srv = TestServer::start(TrackerMode::Private, |_| {});
    let uploader = SecretKey::from_ikm(&[1; 32]).unwrap();
    let downloader = SecretKey::from_ikm(&[2; 32]).unwrap();
    let mut r = Receipt {
        info_hash: InfoHash(IH),
        sender_pk: uploader.public_key().to_bytes(),
        receiver_pk: downloader.public_key().to_bytes(),
        piece_hash: PieceHash::from_slice(&[0x5a; 20]).unwrap(),
        piece_index: 7,
        timestamp: 1_700_000_000,
        signature: SignatureBytes([0; 96]),
    };
    downloader.sign_receipt(&mut r);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let body = |index: u32| {
        serde_json::json!({
            "receiver_public_key": b64(&r.receiver_pk.0),
            "sender_public_key": b64(&r.sender_pk.0),
            "piece_hash": hex(r.piece_hash.as_bytes()),
            "piece_index": index,
            "infohash": hex(&IH),
            "timestamp": r.timestamp,
            "receipt": b64(&r.signature.0),
        })
        .to_string()
    };
    let post = |b: String| {
        let (status, _, resp) = http_request(srv.v4, "POST", "/verify-receipt", Some(&b));
        (status, serde_json::from_slice::<serde_json::Value>(&resp).unwrap())
    };
    assert_eq!(
        post(body(7)),
        (200, serde_json::json!({"success": true, "valid": true, "message": "Receipt is valid"}))
    );
    assert_eq!(
        post(body(8)),
        (
            200,
            serde_json::json!({
                "success": true, "valid": false, "message": "Receipt is invalid",
                "reason": "bad signature"
            })
        )
    );
    let (status, v) = post(r#"{"infohash":"00"}"#.to_owned());
    assert_eq!((status, v["error"].as_str()), (400, Some("missing sender_pk")));
    let short = body(7).replace(&hex(&IH), "00");
    let (status, v) = post(short);
    assert_eq!((status, v["error"].as_str()), (400, Some("infohash must be 20 bytes, got 1")));
}
