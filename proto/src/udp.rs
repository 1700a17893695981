//! BEP 15 UDP tracker protocol codec (with BEP 41 URL data). Pure: no sockets, no runtime.
//!
//! Requests decode from a borrowed datagram; responses encode into a caller-owned buffer.
//!
//! ```text
//! connect  req: conn_id=0x41727101980 (8) action=0 (4) txid (4)                    = 16 bytes
//! announce req: conn_id (8) action=1 (4) txid (4) info_hash (20) peer_id (20)
//!               downloaded (8) left (8) uploaded (8) event (4) ip (4) key (4)
//!               num_want (4, i32, -1 = default) port (2) [BEP 41 options]         >= 98 bytes
//! scrape   req: conn_id (8) action=2 (4) txid (4) info_hash (20) × n               16 + 20n
//!
//! connect  resp: action=0 (4) txid (4) conn_id (8)                                  = 16 bytes
//! announce resp: action=1 (4) txid (4) interval (4) leechers (4) seeders (4)
//!                peers: ip (4) port (2) × n, or ip (16) port (2) × n over IPv6      20 + 6n / 18n
//! scrape   resp: action=2 (4) txid (4) (seeders, completed, leechers) (4 each) × n  8 + 12n
//! error    resp: action=3 (4) txid (4) message (the rest)                          >= 8 bytes
//! ```
//!
//! Clients decode responses with [`parse_response`], which borrows the datagram (peers and
//! scrape entries are views over its bytes, decoded as they are iterated).

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::{AnnounceEvent, InfoHash, PeerId};

/// The magic connection id of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Largest datagram we read; anything longer is truncated and rejected.
pub const MAX_REQUEST_BYTES: usize = 2048;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

/// A connection id handed out by connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionId(pub u64);

/// A transaction id chosen by the client and echoed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionId(pub u32);

/// A decoded announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceRequest<'a> {
    /// Connection id to check.
    pub connection_id: ConnectionId,
    /// Echoed back.
    pub transaction_id: TransactionId,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The client's peer id.
    pub peer_id: PeerId,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes left.
    pub left: u64,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// The event.
    pub event: AnnounceEvent,
    /// The `ip` field (0 = use the source address). IPv4 only.
    pub ip: Ipv4Addr,
    /// The client's key.
    pub key: u32,
    /// Peers wanted; `None` for the default (-1 or any negative value).
    pub num_want: Option<u32>,
    /// The client's listening port.
    pub port: u16,
    /// BEP 41 URL data (path and query, e.g. `/<passkey>/announce`), concatenated.
    pub url_data: &'a [u8],
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Connect.
    Connect {
        /// Echoed back.
        transaction_id: TransactionId,
    },
    /// Announce.
    Announce(AnnounceRequest<'a>),
    /// Scrape of up to 74 info-hashes.
    Scrape {
        /// Connection id to check.
        connection_id: ConnectionId,
        /// Echoed back.
        transaction_id: TransactionId,
        /// The raw info-hashes (a multiple of 20 bytes, at least one).
        info_hashes: &'a [u8],
    },
}

/// Why a datagram was not accepted, and what to do about it.
///
/// UDP source addresses are trivially spoofed, so nothing but a connect response may go to a
/// source that has not proven it receives our packets (BEP 15's connection id). An error packet
/// is therefore only *possible*: the caller sends it once `connection_id` validates for the
/// source, and drops the datagram silently otherwise (a 17-byte scrape must not earn a
/// 59-byte error at a victim's address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Answer with an error packet carrying this text, if `connection_id` is valid for the
    /// source; else drop silently.
    Sendable {
        /// The connection id the datagram carried (check it before answering).
        connection_id: ConnectionId,
        /// Echoed back.
        transaction_id: TransactionId,
        /// Text for the client.
        message: &'static str,
    },
    /// Too short or unidentifiable: drop silently (never amplify garbage).
    Drop,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn arr20(b: &[u8], at: usize) -> [u8; 20] {
    let mut a = [0u8; 20];
    a.copy_from_slice(&b[at..at + 20]);
    a
}

/// Decodes one datagram.
///
/// # Errors
/// [`RequestError::Drop`] for datagrams without a full header, [`RequestError::Sendable`] for
/// identifiable requests that are malformed (answerable only once their connection id
/// validates).
pub fn parse_request(b: &[u8]) -> Result<Request<'_>, RequestError> {
    if b.len() < 16 || b.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::Drop);
    }
    let connection_id = ConnectionId(u64_at(b, 0));
    let action = u32_at(b, 8);
    let transaction_id = TransactionId(u32_at(b, 12));
    let sendable = |message| RequestError::Sendable { connection_id, transaction_id, message };
    match action {
        ACTION_CONNECT => {
            if connection_id.0 != PROTOCOL_ID {
                return Err(RequestError::Drop);
            }
            Ok(Request::Connect { transaction_id })
        }
        ACTION_ANNOUNCE => {
            if b.len() < 98 {
                return Err(sendable("announce request too short"));
            }
            let event = AnnounceEvent::from_udp(u32_at(b, 80)).ok_or(sendable("invalid event"))?;
            let num_want = i32::from_be_bytes(u32_at(b, 92).to_be_bytes());
            let url_data = parse_options(&b[98..]).map_err(sendable)?;
            Ok(Request::Announce(AnnounceRequest {
                connection_id,
                transaction_id,
                info_hash: InfoHash(arr20(b, 16)),
                peer_id: PeerId(arr20(b, 36)),
                downloaded: u64_at(b, 56),
                left: u64_at(b, 64),
                uploaded: u64_at(b, 72),
                event,
                ip: Ipv4Addr::from(u32_at(b, 84)),
                key: u32_at(b, 88),
                num_want: u32::try_from(num_want).ok(),
                port: u16::from_be_bytes([b[96], b[97]]),
                url_data,
            }))
        }
        ACTION_SCRAPE => {
            let hashes = &b[16..];
            if hashes.is_empty() || !hashes.len().is_multiple_of(20) {
                return Err(sendable("scrape request must carry whole 20-byte info hashes"));
            }
            Ok(Request::Scrape { connection_id, transaction_id, info_hashes: hashes })
        }
        _ => Err(sendable("unknown action")),
    }
}

/// Collects BEP 41 URL data. Options: 0 end, 1 no-op, otherwise a type byte, a length byte
/// and that many bytes; type 2 is URL data, other types are skipped as BEP 41 asks.
fn parse_options(mut opts: &[u8]) -> Result<&[u8], &'static str> {
    let base = opts;
    let mut start: Option<usize> = None;
    let mut end = 0usize;
    while let Some((&kind, rest)) = opts.split_first() {
        match kind {
            0 => break,
            1 => opts = rest,
            kind => {
                let (&len, rest) = rest.split_first().ok_or("truncated BEP 41 option")?;
                let len = len as usize;
                if rest.len() < len {
                    return Err("truncated BEP 41 option");
                }
                if kind != 2 {
                    opts = &rest[len..];
                    continue;
                }
                if start.is_some() {
                    // URL data longer than 255 bytes spans several options; a passkey path is
                    // ~45 bytes, so we keep requests zero-copy and refuse the split form.
                    return Err("split BEP 41 URL data is not supported");
                }
                let at = base.len() - rest.len();
                start = Some(at);
                end = at + len;
                opts = &rest[len..];
            }
        }
    }
    Ok(start.map_or(&[][..], |s| &base[s..end]))
}

/// Writes a connect response.
pub fn write_connect(out: &mut Vec<u8>, tx: TransactionId, id: ConnectionId) {
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&tx.0.to_be_bytes());
    out.extend_from_slice(&id.0.to_be_bytes());
}

/// Writes an announce response header; append peers with [`write_peer_v4`] / [`write_peer_v6`].
pub fn write_announce_head(
    out: &mut Vec<u8>,
    tx: TransactionId,
    interval: u32,
    leechers: u32,
    seeders: u32,
) {
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&tx.0.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
}

/// Appends a 6-byte IPv4 peer.
pub fn write_peer_v4(out: &mut Vec<u8>, ip: Ipv4Addr, port: u16) {
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&port.to_be_bytes());
}

/// Appends an 18-byte IPv6 peer.
pub fn write_peer_v6(out: &mut Vec<u8>, ip: Ipv6Addr, port: u16) {
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&port.to_be_bytes());
}

/// Writes a scrape response header; append [`write_scrape_entry`] per hash, in request order.
pub fn write_scrape_head(out: &mut Vec<u8>, tx: TransactionId) {
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tx.0.to_be_bytes());
}

/// Appends one scrape entry.
pub fn write_scrape_entry(out: &mut Vec<u8>, seeders: u32, completed: u32, leechers: u32) {
    out.extend_from_slice(&seeders.to_be_bytes());
    out.extend_from_slice(&completed.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
}

/// Writes an error response.
pub fn write_error(out: &mut Vec<u8>, tx: TransactionId, message: &str) {
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&tx.0.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// Client side (tests, load generators): encodes an announce request.
pub fn write_announce_request(out: &mut Vec<u8>, r: &AnnounceRequest<'_>) {
    out.extend_from_slice(&r.connection_id.0.to_be_bytes());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&r.transaction_id.0.to_be_bytes());
    out.extend_from_slice(&r.info_hash.0);
    out.extend_from_slice(&r.peer_id.0);
    out.extend_from_slice(&r.downloaded.to_be_bytes());
    out.extend_from_slice(&r.left.to_be_bytes());
    out.extend_from_slice(&r.uploaded.to_be_bytes());
    out.extend_from_slice(&r.event.to_udp().to_be_bytes());
    out.extend_from_slice(&r.ip.octets());
    out.extend_from_slice(&r.key.to_be_bytes());
    let nw: i32 = r.num_want.map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    out.extend_from_slice(&nw.to_be_bytes());
    out.extend_from_slice(&r.port.to_be_bytes());
    for chunk in r.url_data.chunks(255) {
        out.push(2);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
    if !r.url_data.is_empty() {
        out.push(0);
    }
}

/// Client side: encodes a connect request.
pub fn write_connect_request(out: &mut Vec<u8>, tx: TransactionId) {
    out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&tx.0.to_be_bytes());
}

/// Client side: encodes a scrape request.
pub fn write_scrape_request(
    out: &mut Vec<u8>,
    id: ConnectionId,
    tx: TransactionId,
    hashes: &[InfoHash],
) {
    out.extend_from_slice(&id.0.to_be_bytes());
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&tx.0.to_be_bytes());
    for h in hashes {
        out.extend_from_slice(&h.0);
    }
}

/// Longest error message [`parse_response`] keeps, bytes; the rest of the datagram is ignored.
/// A tracker's error text is a sentence: this only stops a hostile tracker from handing the
/// client a 64 KiB "message" to log.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// Which address family the peers of an announce response are in: BEP 15 gives no marker in
/// the packet, so it follows from how the tracker was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// The tracker was reached over IPv4: 6-byte peers (address, port).
    V4,
    /// The tracker was reached over IPv6: 18-byte peers (address, port).
    V6,
}

impl AddressFamily {
    /// The family of `addr` (an IPv4-mapped IPv6 address counts as IPv6: that is the socket
    /// the tracker answered on).
    pub fn of(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(_) => Self::V4,
            SocketAddr::V6(_) => Self::V6,
        }
    }

    /// Bytes per compact peer entry: 6 or 18.
    pub fn peer_len(self) -> usize {
        match self {
            Self::V4 => 6,
            Self::V6 => 18,
        }
    }
}

/// The compact peer list of an announce response: whole entries only, decoded lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peers<'a> {
    raw: &'a [u8],
    family: AddressFamily,
}

impl<'a> Peers<'a> {
    /// A view over `raw`, which must hold whole entries of `family`.
    ///
    /// # Errors
    /// [`ResponseError::RaggedPeers`] when `raw` does not split into whole entries.
    pub fn new(raw: &'a [u8], family: AddressFamily) -> Result<Self, ResponseError> {
        let entry = family.peer_len();
        if !raw.len().is_multiple_of(entry) {
            return Err(ResponseError::RaggedPeers { len: raw.len(), entry });
        }
        Ok(Self { raw, family })
    }

    /// The raw entries.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The family of the entries.
    pub fn family(&self) -> AddressFamily {
        self.family
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.raw.len() / self.family.peer_len()
    }

    /// True when the tracker sent no peers.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The peers, in the tracker's order (port-0 entries included: the caller decides).
    pub fn iter(&self) -> PeersIter<'a> {
        PeersIter { chunks: self.raw.chunks_exact(self.family.peer_len()) }
    }
}

impl<'a> IntoIterator for Peers<'a> {
    type Item = SocketAddr;
    type IntoIter = PeersIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Peers`].
#[derive(Clone, Debug)]
pub struct PeersIter<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for PeersIter<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.chunks.next().map(peer_from_bytes)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for PeersIter<'_> {}

/// A 6-byte or 18-byte compact peer (BEP 23, BEP 7): address then big-endian port. Entries of
/// any other length decode as `0.0.0.0:0` (never produced by [`PeersIter`]).
fn peer_from_bytes(entry: &[u8]) -> SocketAddr {
    match entry {
        &[a, b, c, d, p0, p1] => SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(a, b, c, d),
            u16::from_be_bytes([p0, p1]),
        )),
        [ip @ .., p0, p1] if ip.len() == 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(ip);
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                u16::from_be_bytes([*p0, *p1]),
                0,
                0,
            ))
        }
        _ => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
    }
}

/// A decoded announce response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceResponse<'a> {
    /// The transaction id of the announce it answers.
    pub transaction_id: TransactionId,
    /// Seconds to wait before the next regular announce.
    pub interval: u32,
    /// Peers still downloading.
    pub leechers: u32,
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// The peers.
    pub peers: Peers<'a>,
}

/// One torrent's counts in a scrape response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeEntry {
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// Completed downloads, ever.
    pub completed: u32,
    /// Peers still downloading.
    pub leechers: u32,
}

/// The entries of a scrape response (12 bytes each, in request order), decoded lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeEntries<'a> {
    raw: &'a [u8],
}

impl<'a> ScrapeEntries<'a> {
    /// The raw entries.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.raw.len() / 12
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The entries, in request order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = ScrapeEntry> + 'a {
        self.raw.chunks_exact(12).map(|e| ScrapeEntry {
            seeders: u32_at(e, 0),
            completed: u32_at(e, 4),
            leechers: u32_at(e, 8),
        })
    }
}

/// A decoded response (client side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// Connect: the connection id to use for the next minute.
    Connect {
        /// The transaction id of the connect it answers.
        transaction_id: TransactionId,
        /// The connection id.
        connection_id: ConnectionId,
    },
    /// Announce.
    Announce(AnnounceResponse<'a>),
    /// Scrape.
    Scrape {
        /// The transaction id of the scrape it answers.
        transaction_id: TransactionId,
        /// One entry per requested info-hash.
        entries: ScrapeEntries<'a>,
    },
    /// Error: the request was refused.
    Error {
        /// The transaction id of the request it answers.
        transaction_id: TransactionId,
        /// The tracker's text, decoded as lossy UTF-8 and cut to [`MAX_ERROR_MESSAGE_BYTES`].
        message: Cow<'a, str>,
    },
}

impl Response<'_> {
    /// The transaction id the response echoes.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Self::Connect { transaction_id, .. }
            | Self::Scrape { transaction_id, .. }
            | Self::Error { transaction_id, .. } => *transaction_id,
            Self::Announce(a) => a.transaction_id,
        }
    }
}

/// Why a response datagram was not understood. A client ignores a datagram whose transaction
/// id is not the one it waits for before looking at these; for its own transaction, the
/// tracker is broken: give up on this tracker for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Shorter than its action's fixed part (or than the 8-byte header).
    #[error("udp tracker response too short: {got} bytes, need {need}")]
    TooShort {
        /// The datagram's length.
        got: usize,
        /// The least its action needs.
        need: usize,
    },
    /// An action other than connect, announce, scrape and error.
    #[error("udp tracker response has unknown action {action}")]
    UnknownAction {
        /// The action.
        action: u32,
    },
    /// The peer list does not split into whole entries.
    #[error("udp tracker peer list of {len} bytes is not a whole number of {entry}-byte entries")]
    RaggedPeers {
        /// Bytes of peers.
        len: usize,
        /// Bytes per entry (6 over IPv4, 18 over IPv6).
        entry: usize,
    },
    /// The scrape entries do not split into whole 12-byte entries.
    #[error("udp tracker scrape response of {len} entry bytes is not a multiple of 12")]
    RaggedScrape {
        /// Bytes of entries.
        len: usize,
    },
}

/// Decodes one response datagram; `family` is how the tracker was reached, which fixes the
/// size of announce peers (BEP 15 has no marker). Bytes after a connect response's 16 are
/// ignored, as BEP 15 asks of clients.
///
/// # Errors
/// A [`ResponseError`] when the datagram is too short for its action, names an unknown action,
/// or has a peer list or scrape list that does not split into whole entries.
pub fn parse_response(b: &[u8], family: AddressFamily) -> Result<Response<'_>, ResponseError> {
    if b.len() < 8 {
        return Err(ResponseError::TooShort { got: b.len(), need: 8 });
    }
    let action = u32_at(b, 0);
    let transaction_id = TransactionId(u32_at(b, 4));
    let need = |need: usize| {
        if b.len() < need { Err(ResponseError::TooShort { got: b.len(), need }) } else { Ok(()) }
    };
    match action {
        ACTION_CONNECT => {
            need(16)?;
            Ok(Response::Connect { transaction_id, connection_id: ConnectionId(u64_at(b, 8)) })
        }
        ACTION_ANNOUNCE => {
            need(20)?;
            Ok(Response::Announce(AnnounceResponse {
                transaction_id,
                interval: u32_at(b, 8),
                leechers: u32_at(b, 12),
                seeders: u32_at(b, 16),
                peers: Peers::new(&b[20..], family)?,
            }))
        }
        ACTION_SCRAPE => {
            let raw = &b[8..];
            if !raw.len().is_multiple_of(12) {
                return Err(ResponseError::RaggedScrape { len: raw.len() });
            }
            Ok(Response::Scrape { transaction_id, entries: ScrapeEntries { raw } })
        }
        ACTION_ERROR => {
            let text = &b[8..];
            let text = &text[..text.len().min(MAX_ERROR_MESSAGE_BYTES)];
            Ok(Response::Error { transaction_id, message: String::from_utf8_lossy(text) })
        }
        action => Err(ResponseError::UnknownAction { action }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(url: &[u8]) -> AnnounceRequest<'_> {
        AnnounceRequest {
            connection_id: ConnectionId(0x1122_3344_5566_7788),
            transaction_id: TransactionId(7),
            info_hash: InfoHash([0xfe; 20]),
            peer_id: PeerId(*b"-TR3000-abcdefghijkl"),
            downloaded: 1,
            left: 2,
            uploaded: 3,
            event: AnnounceEvent::Started,
            ip: Ipv4Addr::UNSPECIFIED,
            key: 0xdead_beef,
            num_want: None,
            port: 6881,
            url_data: url,
        }
    }

    #[test]
    fn announce_is_98_bytes_without_options() {
        let mut b = Vec::new();
        write_announce_request(&mut b, &sample(b""));
        assert_eq!(b.len(), 98);
        assert_eq!(parse_request(&b).unwrap(), Request::Announce(sample(b"")));
        // num_want -1 on the wire.
        assert_eq!(&b[92..96], &[0xff; 4]);
    }

    #[test]
    fn bep41_url_data_is_collected() {
        let mut b = Vec::new();
        let url = b"/0123456789abcdef0123456789abcdef/announce";
        write_announce_request(&mut b, &sample(url));
        assert_eq!(b.len(), 98 + 2 + url.len() + 1);
        let Request::Announce(a) = parse_request(&b).unwrap() else { panic!() };
        assert_eq!(a.url_data, url);
        // NOPs before the data and no end marker are fine.
        let mut c = b[..98].to_vec();
        c.extend_from_slice(&[1, 1, 2, 3, b'/', b'a', b'b']);
        let Request::Announce(a) = parse_request(&c).unwrap() else { panic!() };
        assert_eq!(a.url_data, b"/ab");
        // Truncated option.
        let mut d = b[..98].to_vec();
        d.extend_from_slice(&[2, 9, b'/']);
        assert_eq!(
            parse_request(&d),
            Err(RequestError::Sendable {
                connection_id: ConnectionId(0x1122_3344_5566_7788),
                transaction_id: TransactionId(7),
                message: "truncated BEP 41 option"
            })
        );
    }

    #[test]
    fn garbage_is_dropped_or_answered() {
        assert_eq!(parse_request(&[0; 15]), Err(RequestError::Drop));
        // Connect without the magic is dropped.
        let mut c = vec![0u8; 16];
        assert_eq!(parse_request(&c), Err(RequestError::Drop));
        write_connect_request(&mut c.clone(), TransactionId(1));
        c.clear();
        write_connect_request(&mut c, TransactionId(9));
        assert_eq!(parse_request(&c), Ok(Request::Connect { transaction_id: TransactionId(9) }));
        let mut bad = c.clone();
        bad[11] = 9;
        assert_eq!(
            parse_request(&bad),
            Err(RequestError::Sendable {
                connection_id: ConnectionId(PROTOCOL_ID),
                transaction_id: TransactionId(9),
                message: "unknown action"
            })
        );
        let mut s = Vec::new();
        write_scrape_request(&mut s, ConnectionId(1), TransactionId(2), &[InfoHash([1; 20])]);
        s.pop();
        assert_eq!(
            parse_request(&s),
            Err(RequestError::Sendable {
                connection_id: ConnectionId(1),
                transaction_id: TransactionId(2),
                message: "scrape request must carry whole 20-byte info hashes"
            })
        );
    }

    #[test]
    fn response_layouts() {
        let mut out = Vec::new();
        write_connect(&mut out, TransactionId(0x01020304), ConnectionId(0x0a0b0c0d0e0f1011));
        assert_eq!(out, [0, 0, 0, 0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17]);
        out.clear();
        write_announce_head(&mut out, TransactionId(1), 1800, 2, 3);
        write_peer_v4(&mut out, Ipv4Addr::new(127, 0, 0, 1), 0x1ae1);
        assert_eq!(
            out,
            [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 7, 8, 0, 0, 0, 2, 0, 0, 0, 3, 127, 0, 0, 1, 0x1a, 0xe1]
        );
        out.clear();
        write_error(&mut out, TransactionId(5), "no");
        assert_eq!(out, [0, 0, 0, 3, 0, 0, 0, 5, b'n', b'o']);
    }

    #[test]
    fn connect_response_decodes() {
        let b = [0, 0, 0, 0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 0xee];
        assert_eq!(
            parse_response(&b, AddressFamily::V4),
            Ok(Response::Connect {
                transaction_id: TransactionId(0x0102_0304),
                connection_id: ConnectionId(0x0a0b_0c0d_0e0f_1011),
            })
        );
        let mut out = Vec::new();
        write_connect(&mut out, TransactionId(9), ConnectionId(u64::MAX));
        let r = parse_response(&out, AddressFamily::V6).unwrap();
        assert_eq!(r.transaction_id(), TransactionId(9));
        assert_eq!(
            r,
            Response::Connect {
                transaction_id: TransactionId(9),
                connection_id: ConnectionId(u64::MAX)
            }
        );
    }

    #[test]
    fn announce_response_v4_peers() {
        let b = [
            0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 7, 8, 0, 0, 0, 2, 0, 0, 0, 3, // head
            127, 0, 0, 1, 0x1a, 0xe1, // 127.0.0.1:6881
            10, 0, 0, 2, 0, 0, // 10.0.0.2:0
        ];
        let Ok(Response::Announce(a)) = parse_response(&b, AddressFamily::V4) else { panic!() };
        assert_eq!(
            (a.transaction_id, a.interval, a.leechers, a.seeders),
            (TransactionId(1), 1800, 2, 3)
        );
        assert_eq!(a.peers.len(), 2);
        assert_eq!(a.peers.as_bytes(), &b[20..]);
        let peers: Vec<SocketAddr> = a.peers.iter().collect();
        assert_eq!(peers, ["127.0.0.1:6881".parse().unwrap(), "10.0.0.2:0".parse().unwrap()]);
        // The same 12 peer bytes are not whole 18-byte entries.
        assert_eq!(
            parse_response(&b, AddressFamily::V6),
            Err(ResponseError::RaggedPeers { len: 12, entry: 18 })
        );
        assert_eq!(
            parse_response(&b[..31], AddressFamily::V4).unwrap_err().to_string(),
            "udp tracker peer list of 11 bytes is not a whole number of 6-byte entries"
        );
    }

    #[test]
    fn announce_response_v6_round_trip() {
        let mut out = Vec::new();
        write_announce_head(&mut out, TransactionId(77), 900, 0, 1);
        write_peer_v6(&mut out, "2001:db8::1".parse().unwrap(), 51413);
        write_peer_v6(&mut out, Ipv6Addr::LOCALHOST, 1);
        assert_eq!(out.len(), 20 + 36);
        let Ok(Response::Announce(a)) = parse_response(&out, AddressFamily::V6) else { panic!() };
        assert_eq!(a.peers.family(), AddressFamily::V6);
        let peers: Vec<SocketAddr> = a.peers.into_iter().collect();
        assert_eq!(peers, ["[2001:db8::1]:51413".parse().unwrap(), "[::1]:1".parse().unwrap()]);
        // An empty list is fine, in either family.
        let Ok(Response::Announce(a)) = parse_response(&out[..20], AddressFamily::V4) else {
            panic!()
        };
        assert!(a.peers.is_empty());
        assert_eq!(AddressFamily::of(&"[::1]:1".parse().unwrap()), AddressFamily::V6);
        assert_eq!(AddressFamily::of(&"1.2.3.4:1".parse().unwrap()), AddressFamily::V4);
    }

    #[test]
    fn scrape_response_decodes() {
        let mut out = Vec::new();
        write_scrape_head(&mut out, TransactionId(3));
        write_scrape_entry(&mut out, 1, 2, 3);
        write_scrape_entry(&mut out, 4, 5, 6);
        let Ok(Response::Scrape { transaction_id, entries }) =
            parse_response(&out, AddressFamily::V4)
        else {
            panic!()
        };
        assert_eq!(transaction_id, TransactionId(3));
        assert_eq!(entries.len(), 2);
        let got: Vec<ScrapeEntry> = entries.iter().collect();
        assert_eq!(
            got,
            [
                ScrapeEntry { seeders: 1, completed: 2, leechers: 3 },
                ScrapeEntry { seeders: 4, completed: 5, leechers: 6 }
            ]
        );
        out.pop();
        assert_eq!(
            parse_response(&out, AddressFamily::V4),
            Err(ResponseError::RaggedScrape { len: 23 })
        );
    }

    #[test]
    fn error_response_is_lossy_and_bounded() {
        let mut out = Vec::new();
        write_error(&mut out, TransactionId(5), "passkey required");
        assert_eq!(
            parse_response(&out, AddressFamily::V4),
            Ok(Response::Error {
                transaction_id: TransactionId(5),
                message: Cow::Borrowed("passkey required")
            })
        );
        let b = [0, 0, 0, 3, 0, 0, 0, 5, b'n', 0xff, b'o'];
        let Ok(Response::Error { message, .. }) = parse_response(&b, AddressFamily::V4) else {
            panic!()
        };
        assert_eq!(message, "n\u{fffd}o");
        let mut long = Vec::new();
        write_error(&mut long, TransactionId(5), &"x".repeat(4000));
        let Ok(Response::Error { message, .. }) = parse_response(&long, AddressFamily::V4) else {
            panic!()
        };
        assert_eq!(message.len(), MAX_ERROR_MESSAGE_BYTES);
        // An empty message is still an error response.
        let Ok(Response::Error { message, .. }) = parse_response(&b[..8], AddressFamily::V4) else {
            panic!()
        };
        assert_eq!(message, "");
    }

    #[test]
    fn short_and_unknown_responses() {
        let cases: &[(&[u8], ResponseError, &str)] = &[
            (
                &[0, 0, 0],
                ResponseError::TooShort { got: 3, need: 8 },
                "udp tracker response too short: 3 bytes, need 8",
            ),
            (
                &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
                ResponseError::TooShort { got: 15, need: 16 },
                "udp tracker response too short: 15 bytes, need 16",
            ),
            (
                &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
                ResponseError::TooShort { got: 12, need: 20 },
                "udp tracker response too short: 12 bytes, need 20",
            ),
            (
                &[0, 0, 0, 4, 0, 0, 0, 1],
                ResponseError::UnknownAction { action: 4 },
                "udp tracker response has unknown action 4",
            ),
            (
                &[0, 0, 0, 2, 0, 0, 0, 1, 0],
                ResponseError::RaggedScrape { len: 1 },
                "udp tracker scrape response of 1 entry bytes is not a multiple of 12",
            ),
        ];
        for (bytes, err, text) in cases {
            assert_eq!(parse_response(bytes, AddressFamily::V4).as_ref(), Err(err), "{bytes:?}");
            assert_eq!(err.to_string(), *text);
        }
    }

    proptest! {
        #[test]
        fn announce_round_trip(
            ih in any::<[u8; 20]>(), pid in any::<[u8; 20]>(), d in any::<u64>(), l in any::<u64>(),
            u in any::<u64>(), ev in 0u32..4, key in any::<u32>(), nw in proptest::option::of(0u32..=i32::MAX as u32),
            port in any::<u16>(), url in proptest::collection::vec(any::<u8>(), 0..255)
        ) {
            let r = AnnounceRequest {
                connection_id: ConnectionId(d ^ 5), transaction_id: TransactionId(key ^ 3),
                info_hash: InfoHash(ih), peer_id: PeerId(pid), downloaded: d, left: l, uploaded: u,
                event: AnnounceEvent::from_udp(ev).unwrap(), ip: Ipv4Addr::from(key), key, num_want: nw,
                port, url_data: &url,
            };
            let mut b = Vec::new();
            write_announce_request(&mut b, &r);
            prop_assert_eq!(parse_request(&b), Ok(Request::Announce(r)));
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&b);
            let _ = parse_response(&b, AddressFamily::V4);
            let _ = parse_response(&b, AddressFamily::V6);
        }

        /// The fuzz target's checks, on datagrams with a plausible action (random bytes
        /// almost never have one), so stable CI exercises them beyond the seeds.
        #[test]
        fn fuzz_body_holds(
            pick in any::<u8>(), action in 0u32..5, tx in any::<u32>(),
            tail in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut d = vec![pick];
            d.extend_from_slice(&action.to_be_bytes());
            d.extend_from_slice(&tx.to_be_bytes());
            d.extend_from_slice(&tail);
            crate::fuzzing::udp_response(&d);
        }

        #[test]
        fn announce_response_round_trip(
            tx in any::<u32>(), interval in any::<u32>(), l in any::<u32>(), s in any::<u32>(),
            v4 in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..20),
            v6 in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..20),
        ) {
            for family in [AddressFamily::V4, AddressFamily::V6] {
                let mut out = Vec::new();
                write_announce_head(&mut out, TransactionId(tx), interval, l, s);
                let want: Vec<SocketAddr> = match family {
                    AddressFamily::V4 => v4.iter().map(|&(ip, port)| {
                        write_peer_v4(&mut out, Ipv4Addr::from(ip), port);
                        SocketAddr::from((Ipv4Addr::from(ip), port))
                    }).collect(),
                    AddressFamily::V6 => v6.iter().map(|&(ip, port)| {
                        write_peer_v6(&mut out, Ipv6Addr::from(ip), port);
                        SocketAddr::from((Ipv6Addr::from(ip), port))
                    }).collect(),
                };
                let Ok(Response::Announce(a)) = parse_response(&out, family) else {
                    return Err(TestCaseError::fail("not an announce"));
                };
                prop_assert_eq!((a.transaction_id, a.interval, a.leechers, a.seeders), (TransactionId(tx), interval, l, s));
                prop_assert_eq!(a.peers.iter().collect::<Vec<_>>(), want);
            }
        }
    }
}
