//! UDP announces (BEP 15), with the URL's path and query as BEP 41 URL data so a passkey in
//! the path reaches the tracker.
//!
//! ```text
//!  connection id cached and < 60 s old? ──no──▶ connect ──▶ connection id (cached)
//!                 │ yes                                            │
//!                 ▼                                                ▼
//!              announce (connection id, fresh transaction id, URL data) ──▶ peers
//! ```
//!
//! Each request is sent, then sent again after `first · 2^n` ([`UdpTimeouts`]) until an
//! answer for its transaction id arrives; datagrams for other transactions (a late answer to
//! an earlier send) are ignored. The retransmission count is shared by the connect and the
//! announce of one exchange, so an announce never takes longer than BEP 15's schedule; if the
//! connection id expires while an announce is being retransmitted, a new one is fetched first.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use pbts_proto::udp::{
    self, AddressFamily, ConnectionId, Response, TransactionId, write_announce_request,
    write_connect_request,
};
use tokio::net::UdpSocket;

use super::announce::{AnnounceParams, AnnounceResult, Config, TrackerError, UdpTimeouts};
use super::url::TrackerUrl;

/// How long a connection id may be used (BEP 15: "up to one minute").
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);

/// Largest datagram read: an announce answer with 3 600 IPv6 peers. Anything longer would
/// be truncated by the kernel and then refused as a ragged peer list.
const MAX_DATAGRAM: usize = 64 << 10;

/// A connection id obtained from a tracker address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UdpConnection {
    /// The tracker address it is valid for.
    pub(crate) addr: SocketAddr,
    /// The id.
    pub(crate) id: ConnectionId,
    /// When the connect answer arrived.
    pub(crate) obtained: Instant,
}

impl UdpConnection {
    fn valid_until(&self) -> Instant {
        self.obtained + CONNECTION_ID_LIFETIME
    }
}

/// Announces to the UDP tracker at `url`, reusing `cached` when it is for the same address
/// and fresh, and leaving the connection id in use there (`None` after a failure, so the next
/// announce starts with a connect).
pub(crate) async fn announce(
    url: &TrackerUrl,
    params: &AnnounceParams,
    cached: &mut Option<UdpConnection>,
    config: &Config,
) -> Result<AnnounceResult, TrackerError> {
    let addrs = url.resolve(config.resolve_timeout).await?;
    // Stay on the address the cached id is for, if the name still resolves to it.
    let addr = match (*cached, addrs.first()) {
        (Some(c), _) if addrs.contains(&c.addr) => c.addr,
        (_, Some(&first)) => first,
        (_, None) => return Err(TrackerError::NoAddress { host: url.host.to_string() }),
    };
    let result = exchange(addr, url, params, cached, &config.udp).await;
    if result.is_err() {
        *cached = None;
    }
    result
}

async fn exchange(
    addr: SocketAddr,
    url: &TrackerUrl,
    params: &AnnounceParams,
    cached: &mut Option<UdpConnection>,
    timeouts: &UdpTimeouts,
) -> Result<AnnounceResult, TrackerError> {
    let family = AddressFamily::of(&addr);
    let local: SocketAddr = match family {
        AddressFamily::V4 => (Ipv4Addr::UNSPECIFIED, 0).into(),
        AddressFamily::V6 => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // A connected socket drops datagrams from any other source.
    socket.connect(addr).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sent = 0u32;
    let mut request = Vec::with_capacity(128 + url.path_and_query.len());
    loop {
        let connection = match *cached {
            Some(c) if c.addr == addr && Instant::now() < c.valid_until() => c,
            _ => {
                let c = connect(&socket, addr, family, timeouts, &mut sent, &mut buf).await?;
                *cached = Some(c);
                c
            }
        };
        let tx = TransactionId(rand::random());
        request.clear();
        write_announce_request(
            &mut request,
            &udp::AnnounceRequest {
                connection_id: connection.id,
                transaction_id: tx,
                info_hash: params.info_hash,
                peer_id: params.peer_id,
                downloaded: params.downloaded,
                left: params.left,
                uploaded: params.uploaded,
                event: params.event,
                ip: Ipv4Addr::UNSPECIFIED,
                key: params.key,
                num_want: params.numwant,
                port: params.port,
                url_data: url.path_and_query.as_bytes(),
            },
        );
        let until = Some(connection.valid_until());
        let Some(n) =
            round_trip(&socket, &request, tx, timeouts, &mut sent, until, &mut buf).await?
        else {
            // The id expired between retransmissions: fetch a new one.
            *cached = None;
            continue;
        };
        return match udp::parse_response(&buf[..n], family)? {
            Response::Announce(a) => Ok(AnnounceResult {
                interval: Duration::from_secs(u64::from(a.interval)),
                min_interval: None,
                peers: a.peers.iter().filter(|p| p.port() != 0).collect(),
                seeders: Some(a.seeders),
                leechers: Some(a.leechers),
                warning: None,
                tracker_id: None,
            }),
            Response::Error { message, .. } => Err(TrackerError::Failure(message.into_owned())),
            Response::Connect { .. } | Response::Scrape { .. } => {
                Err(TrackerError::Malformed("the tracker answered an announce with another action"))
            }
        };
    }
}

async fn connect(
    socket: &UdpSocket,
    addr: SocketAddr,
    family: AddressFamily,
    timeouts: &UdpTimeouts,
    sent: &mut u32,
    buf: &mut [u8],
) -> Result<UdpConnection, TrackerError> {
    let tx = TransactionId(rand::random());
    let mut request = Vec::with_capacity(16);
    write_connect_request(&mut request, tx);
    let Some(n) = round_trip(socket, &request, tx, timeouts, sent, None, buf).await? else {
        return Err(TrackerError::Malformed("connect round trip ended without an answer"));
    };
    match udp::parse_response(&buf[..n], family)? {
        Response::Connect { connection_id, .. } => {
            Ok(UdpConnection { addr, id: connection_id, obtained: Instant::now() })
        }
        Response::Error { message, .. } => Err(TrackerError::Failure(message.into_owned())),
        Response::Announce(_) | Response::Scrape { .. } => {
            Err(TrackerError::Malformed("the tracker answered a connect with another action"))
        }
    }
}

/// Sends `request` until a datagram for `tx` arrives; returns its length (in `buf`), or
/// `None` when `until` passed before a retransmission (the connection id in `request` has
/// expired). `sent` counts transmissions across the exchange.
async fn round_trip(
    socket: &UdpSocket,
    request: &[u8],
    tx: TransactionId,
    timeouts: &UdpTimeouts,
    sent: &mut u32,
    until: Option<Instant>,
    buf: &mut [u8],
) -> Result<Option<usize>, TrackerError> {
    loop {
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(None);
        }
        socket.send(request).await?;
        let wait = timeouts.wait(*sent);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(buf)).await {
                Err(_) => break,
                // ICMP port unreachable surfaces here as "connection refused": the tracker is
                // down, no need to wait out the schedule.
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(n)) if buf.get(4..8) == Some(&tx.0.to_be_bytes()[..]) => return Ok(Some(n)),
                Ok(Ok(_)) => {
                    tracing::debug!("udp tracker: ignored a datagram for another transaction");
                }
            }
        }
        if *sent >= timeouts.max_retransmits {
            let total = (0..=*sent)
                .map(|n| timeouts.wait(n))
                .fold(Duration::ZERO, Duration::saturating_add);
            return Err(TrackerError::Timeout(total));
        }
        *sent += 1;
    }
}
