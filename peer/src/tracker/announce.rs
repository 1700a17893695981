//! What goes into an announce and what comes out, whichever protocol carries it, and the
//! client's bounds.

use std::net::SocketAddr;
use std::time::Duration;

use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

/// One announce's parameters (BEP 3), the same for HTTP and UDP trackers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceParams {
    /// The torrent (v1 info-hash, or a v2 info-hash truncated to 20 bytes, as BEP 52 says).
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our listening port.
    pub port: u16,
    /// Bytes uploaded since `Started`.
    pub uploaded: u64,
    /// Bytes downloaded since `Started`.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// `Started`, `Completed` or `Stopped`; [`AnnounceEvent::None`] for a regular announce
    /// (`Paused` is sent as none over UDP, which has no such event).
    pub event: AnnounceEvent,
    /// Peers wanted; `None` lets the tracker choose (50 is typical).
    pub numwant: Option<u32>,
    /// A random number fixed for the session: lets the tracker recognise us when our IP
    /// changes. Sent as 8 hex digits over HTTP.
    pub key: u32,
}

/// A tracker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResult {
    /// Wait this long before the next regular announce.
    pub interval: Duration,
    /// Never announce sooner than this (HTTP `min interval`; UDP has none).
    pub min_interval: Option<Duration>,
    /// Peers, IPv4 and IPv6, in the tracker's order; entries with port 0 are left out.
    pub peers: Vec<SocketAddr>,
    /// Peers with the whole torrent, if the tracker said.
    pub seeders: Option<u32>,
    /// Peers still downloading, if the tracker said.
    pub leechers: Option<u32>,
    /// The tracker's `warning message` (lossy UTF-8), worth showing to the user.
    pub warning: Option<String>,
    /// The tracker's `tracker id`, sent back as `trackerid` on later HTTP announces.
    pub tracker_id: Option<Vec<u8>>,
}

/// Why an announce failed. Every variant but [`TrackerError::UnsupportedScheme`] and
/// [`TrackerError::BadUrl`] is worth retrying later; those two never change for a URL.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The URL's scheme is neither `http` nor `udp` (this client has no TLS stack).
    #[error("{scheme} trackers are not supported (only http:// and udp://)")]
    UnsupportedScheme {
        /// The scheme, lowercased.
        scheme: String,
    },
    /// The URL cannot be used.
    #[error("bad tracker URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot resolve tracker host {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The host name resolved to no address.
    #[error("tracker host {host} has no address")]
    NoAddress {
        /// The host.
        host: String,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to tracker {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("tracker i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No (complete) answer in time.
    #[error("no answer from the tracker within {0:?}")]
    Timeout(Duration),
    /// The HTTP tracker answered with a status other than 200.
    #[error("tracker answered HTTP {status}")]
    HttpStatus {
        /// The status code.
        status: u16,
    },
    /// The tracker refused the announce: its `failure reason` (HTTP) or error packet (UDP),
    /// as lossy UTF-8.
    #[error("tracker failure: {0}")]
    Failure(String),
    /// The answer is not a tracker response.
    #[error("malformed tracker response: {0}")]
    Malformed(&'static str),
    /// The HTTP response head is malformed.
    #[error("malformed tracker response: {0}")]
    Http(#[from] pbts_http::request::ParseError),
    /// The HTTP response body is not bencode.
    #[error("malformed tracker response: {0}")]
    Bencode(#[from] pbts_proto::bencode::DecodeError),
    /// A UDP response for our transaction is malformed.
    #[error("malformed tracker response: {0}")]
    Udp(#[from] pbts_proto::udp::ResponseError),
    /// The HTTP response is longer than [`Config::max_response_bytes`].
    #[error("tracker response larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// The torrent lists no tracker.
    #[error("no trackers to announce to")]
    NoTrackers,
}

/// Retransmission schedule of UDP requests (BEP 15): a request is sent, then sent again after
/// `first · 2^n` for n = 0, 1, ... up to `max_retransmits` times, then given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTimeouts {
    /// Wait before the first retransmission. Default 15 s (BEP 15). Too short floods a slow
    /// tracker with duplicates; too long makes a dead tracker cost minutes before the next
    /// tier is tried.
    pub first: Duration,
    /// Retransmissions before giving up. Default 8 (BEP 15: about an hour in all). A client
    /// with several trackers may prefer 2 or 3, so a dead one costs under two minutes.
    pub max_retransmits: u32,
}

impl Default for UdpTimeouts {
    fn default() -> Self {
        Self { first: Duration::from_secs(15), max_retransmits: 8 }
    }
}

impl UdpTimeouts {
    /// The wait after transmission `n` (0 for the first send): `first · 2^n`, saturating.
    pub fn wait(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
    }
}

/// The tracker client's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Time for one whole HTTP announce: name resolution, connection, request and the complete
    /// response. Default 30 s.
    pub http_timeout: Duration,
    /// Time to resolve a UDP tracker's host name. Default 10 s.
    pub resolve_timeout: Duration,
    /// Largest HTTP response accepted, head and body (after chunked decoding, the encoded
    /// body counts). Default 1 MiB: 50 compact peers take 300 bytes, and even a dictionary
    /// list of 200 peers stays under 20 KiB.
    pub max_response_bytes: usize,
    /// UDP retransmissions.
    pub udp: UdpTimeouts,
    /// The HTTP `User-Agent`. Default `pbts-peer/<version>`. Some private trackers allow only
    /// known clients; changing it to impersonate one is the user's call, not ours.
    pub user_agent: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_timeout: Duration::from_secs(30),
            resolve_timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            udp: UdpTimeouts::default(),
            user_agent: concat!("pbts-peer/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}
