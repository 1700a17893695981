//! The tracker client: announces over HTTP (BEP 3, 23, 7) and UDP (BEP 15 with BEP 41 URL
//! data), and tiers of trackers (BEP 12).
//!
//! ```text
//!  TrackerList ── tier 0: [Tracker, Tracker, ...]   shuffled once; the one that answers
//!             ├── tier 1: [Tracker, ...]            moves to the front of its tier
//!             └── ...                               (next tier only when a whole tier failed)
//!  Tracker ── url (parsed at each announce) + state: UDP connection id, tracker id,
//!             next / earliest announce time
//! ```
//!
//! Announces are one-shot: a TCP connection or a UDP socket per announce, nothing kept open
//! between them. Every exchange is bounded in time ([`Config::http_timeout`],
//! [`UdpTimeouts`]) and in size ([`Config::max_response_bytes`], one datagram), and nothing a
//! tracker sends can panic the client.
//!
//! Not here: scrapes, `https://` and `wss://` trackers (no TLS stack in this crate), DHT and
//! PEX (a private torrent must not use them anyway, BEP 27).

mod announce;
pub(crate) mod http;
mod udp;
mod url;

use std::time::Instant;

use pbts_proto::metainfo::Metainfo;
use rand::seq::SliceRandom;

pub use self::announce::{AnnounceParams, AnnounceResult, Config, TrackerError, UdpTimeouts};
pub use self::udp::CONNECTION_ID_LIFETIME;
use self::udp::UdpConnection;
pub use self::url::{Host, Scheme, TrackerUrl};

/// One tracker URL and what the client remembers about it.
#[derive(Debug)]
pub struct Tracker {
    url: String,
    udp: Option<UdpConnection>,
    tracker_id: Option<Vec<u8>>,
    next_announce: Option<Instant>,
    earliest_announce: Option<Instant>,
}

impl Tracker {
    /// A tracker not yet announced to. The URL is checked at each announce, so a bad one
    /// fails there (and its tier moves on) rather than here.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            udp: None,
            tracker_id: None,
            next_announce: None,
            earliest_announce: None,
        }
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `tracker id` of the tracker's last answer that had one.
    pub fn tracker_id(&self) -> Option<&[u8]> {
        self.tracker_id.as_deref()
    }

    /// When the last answer asks for the next regular announce (its `interval`).
    pub fn next_announce(&self) -> Option<Instant> {
        self.next_announce
    }

    /// The earliest the last answer allows another announce (its `min interval`), if it set one.
    pub fn earliest_announce(&self) -> Option<Instant> {
        self.earliest_announce
    }

    /// Announces to this tracker.
    ///
    /// # Errors
    /// Any [`TrackerError`]: the URL, the network, the time or size bounds of `config`, or the
    /// tracker's refusal.
    pub async fn announce(
        &mut self,
        params: &AnnounceParams,
        config: &Config,
    ) -> Result<AnnounceResult, TrackerError> {
        let url = TrackerUrl::parse(&self.url)?;
        let result = match url.scheme {
            Scheme::Http => http::announce(&url, params, self.tracker_id.as_deref(), config).await,
            Scheme::Udp => udp::announce(&url, params, &mut self.udp, config).await,
        }?;
        if let Some(id) = &result.tracker_id {
            self.tracker_id = Some(id.clone());
        }
        let now = Instant::now();
        self.next_announce = now.checked_add(result.interval);
        self.earliest_announce = result.min_interval.and_then(|m| now.checked_add(m));
        Ok(result)
    }
}

/// A torrent's trackers in BEP 12 tiers.
#[derive(Debug)]
pub struct TrackerList {
    tiers: Vec<Vec<Tracker>>,
    config: Config,
}

impl TrackerList {
    /// The tiers of `urls`, each shuffled (BEP 12); empty tiers are dropped.
    pub fn new(urls: &[Vec<String>], config: Config) -> Self {
        let mut list = Self::in_order(urls, config);
        let mut rng = rand::rng();
        for tier in &mut list.tiers {
            tier.shuffle(&mut rng);
        }
        list
    }

    /// The trackers of a torrent (`announce-list`, or `announce` alone), shuffled per tier.
    pub fn from_metainfo(metainfo: &Metainfo, config: Config) -> Self {
        Self::new(&metainfo.trackers, config)
    }

    /// The tiers of `urls` without shuffling (tests need a known order).
    fn in_order(urls: &[Vec<String>], config: Config) -> Self {
        let tiers = urls
            .iter()
            .filter(|tier| !tier.is_empty())
            .map(|tier| tier.iter().map(Tracker::new).collect())
            .collect();
        Self { tiers, config }
    }

    /// The tiers, in the order they are tried.
    pub fn tiers(&self) -> &[Vec<Tracker>] {
        &self.tiers
    }

    /// The bounds every announce uses.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Announces to the first tracker that answers, trying each tier's trackers in order and
    /// the next tier only when all of a tier failed. The tracker that answers moves to the
    /// front of its tier (BEP 12), so the next announce goes to it first.
    ///
    /// # Errors
    /// The last tracker's error when every tracker failed; [`TrackerError::NoTrackers`] for
    /// an empty list.
    pub async fn announce_all(
        &mut self,
        params: &AnnounceParams,
    ) -> Result<AnnounceResult, TrackerError> {
        let mut last = None;
        for tier in &mut self.tiers {
            for i in 0..tier.len() {
                match tier[i].announce(params, &self.config).await {
                    Ok(result) => {
                        tier[..=i].rotate_right(1);
                        return Ok(result);
                    }
                    Err(e) => {
                        tracing::debug!(url = tier[i].url(), "announce failed: {e:#}");
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or(TrackerError::NoTrackers))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use pbts_proto::udp::{
        self as wire, ConnectionId, PROTOCOL_ID, Request, TransactionId, parse_request,
    };
    use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, UdpSocket};
    use tokio::task::JoinHandle;

    use super::*;

    fn params() -> AnnounceParams {
        AnnounceParams {
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId(*b"-PB0100-0123456789ab"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: AnnounceEvent::Started,
            numwant: Some(50),
            key: 0x00ab_cdef,
        }
    }

    /// The query of [`params`].
    const QUERY: &str = "info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB\
        &peer_id=-PB0100-0123456789ab&port=6881&uploaded=1&downloaded=2&left=3&event=started\
        &compact=1&numwant=50&key=00ABCDEF";

    fn config() -> Config {
        Config {
            http_timeout: Duration::from_secs(5),
            resolve_timeout: Duration::from_secs(5),
            max_response_bytes: 4096,
            udp: UdpTimeouts { first: Duration::from_millis(200), max_retransmits: 2 },
            user_agent: "pbts-test".to_owned(),
        }
    }

    /// An HTTP tracker on 127.0.0.1 that answers each connection with the next canned
    /// response and returns the request heads it read. `None` holds the connection open
    /// without answering.
    async fn http_tracker(answers: Vec<Option<Vec<u8>>>) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if stream.read(&mut byte).await.unwrap() == 0 {
                        break;
                    }
                    head.push(byte[0]);
                }
                heads.push(String::from_utf8(head).unwrap());
                match answer {
                    Some(bytes) => stream.write_all(&bytes).await.unwrap(),
                    None => std::future::pending::<()>().await,
                }
            }
            heads
        });
        (addr, task)
    }

    fn ok_response(body: &[u8]) -> Option<Vec<u8>> {
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        Some(r)
    }

    fn get(target: &str, addr: SocketAddr) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pbts-test\r\nConnection: close\r\n\r\n"
        )
    }

    #[tokio::test]
    async fn http_compact_peers_passkey_path_and_tracker_id() {
        let body = b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e\
            5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x00\
            6:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc8\xd5\
            10:tracker id3:t-1e";
        let (addr, server) = http_tracker(vec![ok_response(body), ok_response(body)]).await;
        let mut tracker = Tracker::new(format!("http://{addr}/pk123/announce"));
        let r = tracker.announce(&params(), &config()).await.unwrap();
        assert_eq!(
            r,
            AnnounceResult {
                interval: Duration::from_secs(1800),
                min_interval: Some(Duration::from_secs(60)),
                peers: vec!["127.0.0.1:6881".parse().unwrap(), "[::1]:51413".parse().unwrap()],
                seeders: Some(5),
                leechers: Some(7),
                warning: None,
                tracker_id: Some(b"t-1".to_vec()),
            }
        );
        assert_eq!(tracker.tracker_id(), Some(&b"t-1"[..]));
        assert!(tracker.next_announce().unwrap() > tracker.earliest_announce().unwrap());
        // The next announce sends the tracker id back.
        tracker.announce(&params(), &config()).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            [
                get(&format!("/pk123/announce?{QUERY}"), addr),
                get(&format!("/pk123/announce?{QUERY}&trackerid=t-1"), addr)
            ]
        );
    }

    #[tokio::test]
    async fn http_dictionary_peers_passkey_query_chunked() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            10\r\nd8:intervali900e\r\n\
            2F\r\n5:peersld2:ip9:127.0.0.14:porti6881eed2:ip3:::1\r\n\
            10\r\n4:porti51413eeee\r\n\
            0\r\n\r\n";
        let (addr, server) = http_tracker(vec![Some(chunked.to_vec())]).await;
        let mut tracker = Tracker::new(format!("http://{addr}/announce.php?passkey=pk123"));
        let r = tracker.announce(&params(), &config()).await.unwrap();
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(r.peers, ["127.0.0.1:6881".parse().unwrap(), "[::1]:51413".parse().unwrap()]);
        assert_eq!((r.seeders, r.leechers), (None, None));
        assert_eq!(
            server.await.unwrap(),
            [get(&format!("/announce.php?passkey=pk123&{QUERY}"), addr)]
        );
    }

    #[tokio::test]
    async fn http_refusals() {
        let mut big_eof = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
        big_eof.resize(5000, b'x');
        let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
            (
                ok_response(b"d14:failure reason17:passkey not founde"),
                "tracker failure: passkey not found",
            ),
            (
                Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
                "tracker answered HTTP 404",
            ),
            (
                Some(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nd8:interval".to_vec()),
                "tracker response larger than 4096 bytes",
            ),
            (Some(big_eof), "tracker response larger than 4096 bytes"),
            (
                Some(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nd8:".to_vec()),
                "malformed tracker response: the tracker closed the connection mid-response",
            ),
        ];
        for (answer, text) in cases {
            let (addr, _server) = http_tracker(vec![answer]).await;
            let mut tracker = Tracker::new(format!("http://{addr}/announce"));
            let err = tracker.announce(&params(), &config()).await.unwrap_err();
            assert_eq!(err.to_string(), text);
        }
    }

    #[tokio::test]
    async fn http_silent_tracker_times_out() {
        let (addr, _server) = http_tracker(vec![None]).await;
        let mut tracker = Tracker::new(format!("http://{addr}/announce"));
        let config = Config { http_timeout: Duration::from_millis(300), ..config() };
        let started = Instant::now();
        let err = tracker.announce(&params(), &config).await.unwrap_err();
        assert_eq!(err.to_string(), "no answer from the tracker within 300ms");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// A UDP tracker on `bind` that logs every datagram and answers it with `answer`'s
    /// datagrams.
    async fn udp_tracker(
        bind: &str,
        mut answer: impl FnMut(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Option<(SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>)> {
        let socket = UdpSocket::bind(bind).await.ok()?;
        let addr = socket.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                seen.lock().unwrap().push(buf[..n].to_vec());
                for datagram in answer(&buf[..n]) {
                    socket.send_to(&datagram, from).await.unwrap();
                }
            }
        });
        Some((addr, log))
    }

    const CONN: ConnectionId = ConnectionId(0x1122_3344_5566_7788);

    /// Answers connects with [`CONN`] and announces with `peers` (written by the closure).
    fn tracker_answer(
        write_peers: impl Fn(&mut Vec<u8>) + Send + 'static,
    ) -> impl FnMut(&[u8]) -> Vec<Vec<u8>> + Send + 'static {
        move |req| {
            let mut out = Vec::new();
            match parse_request(req) {
                Ok(Request::Connect { transaction_id }) => {
                    wire::write_connect(&mut out, transaction_id, CONN)
                }
                Ok(Request::Announce(a)) => {
                    wire::write_announce_head(&mut out, a.transaction_id, 1800, 3, 4);
                    write_peers(&mut out);
                }
                _ => return Vec::new(),
            }
            vec![out]
        }
    }

    /// The announce [`params`] make, as BEP 15 and BEP 41 lay it out, by hand.
    fn expected_announce(tx: &[u8], url_data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&CONN.0.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 1]);
        b.extend_from_slice(tx);
        b.extend_from_slice(&[0xab; 20]);
        b.extend_from_slice(b"-PB0100-0123456789ab");
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]); // downloaded
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]); // left
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // uploaded
        b.extend_from_slice(&[0, 0, 0, 2]); // started
        b.extend_from_slice(&[0, 0, 0, 0]); // ip
        b.extend_from_slice(&[0x00, 0xab, 0xcd, 0xef]); // key
        b.extend_from_slice(&[0, 0, 0, 50]); // num_want
        b.extend_from_slice(&[0x1a, 0xe1]); // port 6881
        b.push(2);
        b.push(u8::try_from(url_data.len()).unwrap());
        b.extend_from_slice(url_data);
        b.push(0);
        b
    }

    #[tokio::test]
    async fn udp_connect_announce_and_connection_id_reuse() {
        let answer = tracker_answer(|out| {
            wire::write_peer_v4(out, "127.0.0.1".parse().unwrap(), 6881);
            wire::write_peer_v4(out, "10.0.0.1".parse().unwrap(), 0);
        });
        let (addr, log) = udp_tracker("127.0.0.1:0", answer).await.unwrap();
        let mut tracker = Tracker::new(format!("udp://{addr}/pk123/announce?x=1"));
        let r = tracker.announce(&params(), &config()).await.unwrap();
        assert_eq!(
            r,
            AnnounceResult {
                interval: Duration::from_secs(1800),
                min_interval: None,
                peers: vec!["127.0.0.1:6881".parse().unwrap()],
                seeders: Some(4),
                leechers: Some(3),
                warning: None,
                tracker_id: None,
            }
        );
        tracker.announce(&params(), &config()).await.unwrap();
        let log = log.lock().unwrap().clone();
        // One connect, then two announces on its connection id.
        assert_eq!(log.len(), 3);
        assert_eq!(log[0][..12], [&PROTOCOL_ID.to_be_bytes()[..], &[0, 0, 0, 0]].concat());
        assert_eq!(log[0].len(), 16);
        for announce in &log[1..] {
            assert_eq!(*announce, expected_announce(&announce[12..16], b"/pk123/announce?x=1"));
        }
        // Fresh transaction ids.
        assert_ne!(log[1][12..16], log[2][12..16]);
    }

    #[tokio::test]
    async fn udp_error_and_wrong_transactions() {
        let answer = move |req: &[u8]| {
            let mut out = Vec::new();
            match parse_request(req) {
                Ok(Request::Connect { transaction_id }) => {
                    // A stale answer first, then garbage, then the real one.
                    let mut stale = Vec::new();
                    wire::write_connect(&mut stale, TransactionId(transaction_id.0 ^ 1), CONN);
                    wire::write_connect(&mut out, transaction_id, CONN);
                    vec![stale, vec![1, 2, 3], out]
                }
                Ok(Request::Announce(a)) => {
                    wire::write_error(&mut out, a.transaction_id, "passkey required");
                    vec![out]
                }
                _ => Vec::new(),
            }
        };
        let (addr, log) = udp_tracker("127.0.0.1:0", answer).await.unwrap();
        let mut tracker = Tracker::new(format!("udp://{addr}"));
        let err = tracker.announce(&params(), &config()).await.unwrap_err();
        assert_eq!(err.to_string(), "tracker failure: passkey required");
        // One connect (the stale answer and the garbage were ignored, nothing was resent),
        // and an announce without URL data: no BEP 41 option at all.
        let first = log.lock().unwrap().clone();
        assert_eq!(first.len(), 2);
        assert!(matches!(parse_request(&first[0]), Ok(Request::Connect { .. })));
        assert_eq!(first[1], expected_announce(&first[1][12..16], b"")[..98]);
        // The failure forgot the connection id: the next announce connects again.
        let _ = tracker.announce(&params(), &config()).await;
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), 4);
        assert!(matches!(parse_request(&log[2]), Ok(Request::Connect { .. })));
    }

    #[tokio::test]
    async fn udp_silent_tracker_retransmits_then_times_out() {
        let (addr, log) = udp_tracker("127.0.0.1:0", |_: &[u8]| Vec::new()).await.unwrap();
        let mut tracker = Tracker::new(format!("udp://{addr}/announce"));
        let config = Config {
            udp: UdpTimeouts { first: Duration::from_millis(100), max_retransmits: 2 },
            ..config()
        };
        let started = Instant::now();
        let err = tracker.announce(&params(), &config).await.unwrap_err();
        assert_eq!(err.to_string(), "no answer from the tracker within 700ms");
        assert!(started.elapsed() < Duration::from_secs(3));
        let log = log.lock().unwrap().clone();
        // The same connect, sent three times.
        assert_eq!(log.len(), 3);
        assert!(log.iter().all(|d| *d == log[0] && d.len() == 16));
    }

    #[tokio::test]
    async fn udp_ipv6_tracker_gives_18_byte_peers() {
        let answer = tracker_answer(|out| {
            wire::write_peer_v6(out, "2001:db8::1".parse().unwrap(), 51413);
        });
        let Some((addr, _log)) = udp_tracker("[::1]:0", answer).await else {
            return; // no IPv6 loopback here
        };
        let mut tracker = Tracker::new(format!("udp://{addr}/announce"));
        let r = tracker.announce(&params(), &config()).await.unwrap();
        assert_eq!(r.peers, ["[2001:db8::1]:51413".parse::<SocketAddr>().unwrap()]);
    }

    /// An address where nothing listens (TCP and, most likely, UDP).
    async fn dead_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn tiers_fall_back_and_promote() {
        let body = b"d8:intervali60e5:peers6:\x7f\x00\x00\x01\x1a\xe1e";
        let (live, _server) = http_tracker(vec![ok_response(body), ok_response(body)]).await;
        let dead = dead_addr().await;
        let live_url = format!("http://{live}/a");
        let dead_url = format!("http://{dead}/a");

        // Tier 0 is dead: tier 1 answers, tiers keep their order.
        let tiers = vec![vec![dead_url.clone()], vec![live_url.clone()]];
        let mut list = TrackerList::in_order(&tiers, config());
        let r = list.announce_all(&params()).await.unwrap();
        assert_eq!(r.peers, ["127.0.0.1:6881".parse::<SocketAddr>().unwrap()]);
        assert_eq!(list.tiers()[0][0].url(), dead_url);

        // Same tier: the one that answered moves to the front.
        let tiers = vec![vec![dead_url.clone(), "udp://127.0.0.1:1".to_owned(), live_url.clone()]];
        let mut list = TrackerList::in_order(&tiers, config());
        list.announce_all(&params()).await.unwrap();
        let order: Vec<&str> = list.tiers()[0].iter().map(Tracker::url).collect();
        assert_eq!(order, [live_url.as_str(), dead_url.as_str(), "udp://127.0.0.1:1"]);
    }

    #[tokio::test]
    async fn all_trackers_failing_gives_the_last_error() {
        let dead = dead_addr().await;
        let tiers = vec![vec![format!("http://{dead}/a")], vec!["https://t.example/a".to_owned()]];
        let mut list = TrackerList::new(&tiers, config());
        let err = list.announce_all(&params()).await.unwrap_err();
        assert_eq!(err.to_string(), "https trackers are not supported (only http:// and udp://)");

        let tiers = vec![vec!["https://t.example/a".to_owned()], vec![format!("http://{dead}/a")]];
        let mut list = TrackerList::new(&tiers, config());
        let err = list.announce_all(&params()).await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot connect to tracker {dead}: ")), "{err}");

        let mut list = TrackerList::new(&[vec![], vec![]], config());
        assert!(list.tiers().is_empty());
        let err = list.announce_all(&params()).await.unwrap_err();
        assert_eq!(err.to_string(), "no trackers to announce to");
    }
}
