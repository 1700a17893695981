//! Percent-decoding and the announce/scrape query strings, for servers and clients.
//!
//! `info_hash` and `peer_id` are arbitrary bytes after percent-decoding and are never treated
//! as text. Clients differ in what they escape: libtorrent leaves bytes such as `!`, `(`, `*`
//! unescaped inside binary values, so any byte other than `%` and `+` is taken as itself.
//!
//! # What the parser reads
//!
//! | key | parsed as | absent |
//! |---|---|---|
//! | `info_hash`, `peer_id` | percent-decoded, exactly 20 bytes | error |
//! | `port` | decimal 0..=65535 (0: no listening port, see [`AnnounceRequest::port`]) | error |
//! | `uploaded`, `downloaded` | decimal `u64` | 0 |
//! | `left` | decimal `u64` | `None` |
//! | `event` | `""`, `started`, `stopped`, `completed`, `paused` | none |
//! | `compact` | `0` is false, anything else true | true |
//! | `no_peer_id` | present and not `0` is true | false |
//! | `numwant` | decimal, saturated to `u32::MAX`; negative (`-1`) is `None` | `None` |
//! | `key`, `trackerid` | percent-decoded, at most 64 bytes | `None` |
//! | `ip`, `ipv4`, `ipv6` | an IP literal; anything else is ignored | `None` |
//!
//! Keys are compared raw (clients never escape them). Numbers and `event` are compared raw
//! too: they are ASCII and no client escapes them. For single-valued keys the first occurrence
//! wins; later ones are not even validated. Unknown keys (`supportcrypto`, `corrupt`, ...) are
//! ignored.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use memchr::{memchr, memchr2};

use crate::util::hex_val;
use crate::util::{ip_text, push_u64};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

/// Longest `key` accepted, bytes. Clients send 4 to 8 bytes (often as 8 hex characters).
pub const MAX_KEY_LEN: usize = 64;
/// Longest `trackerid` accepted, bytes.
pub const MAX_TRACKER_ID_LEN: usize = 64;

/// Why a query was rejected. [`QueryError::as_str`] is meant for clients, as the bencoded
/// `failure reason` of an HTTP 200 response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// No `info_hash` parameter.
    MissingInfoHash,
    /// `info_hash` decoded to `len` bytes instead of 20.
    InvalidInfoHash {
        /// The decoded length.
        len: usize,
    },
    /// No `peer_id` parameter.
    MissingPeerId,
    /// `peer_id` decoded to `len` bytes instead of 20.
    InvalidPeerId {
        /// The decoded length.
        len: usize,
    },
    /// No `port` parameter.
    MissingPort,
    /// `port` is not a decimal number in 0..=65535.
    InvalidPort,
    /// A numeric parameter is empty, not plain decimal digits, or overflows `u64`.
    InvalidNumber {
        /// The parameter name (`uploaded`, `downloaded`, `left` or `numwant`).
        param: &'static str,
    },
    /// `event` is not one of the known events.
    InvalidEvent,
    /// A `%` not followed by two hex digits in a value that must be decoded.
    InvalidPercentEncoding,
    /// A scrape names more than `limit` info-hashes.
    TooManyInfoHashes {
        /// The most accepted.
        limit: usize,
    },
    /// A value is longer than allowed.
    ValueTooLong {
        /// The parameter name (`key` or `trackerid`).
        param: &'static str,
    },
}

impl QueryError {
    /// The text sent to the client as the `failure reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingInfoHash => "missing info_hash",
            Self::InvalidInfoHash { .. } => "invalid info_hash: expected 20 bytes",
            Self::MissingPeerId => "missing peer_id",
            Self::InvalidPeerId { .. } => "invalid peer_id: expected 20 bytes",
            Self::MissingPort => "missing port",
            Self::InvalidPort => "invalid port: expected a number from 0 to 65535",
            Self::InvalidNumber { param } => match param {
                "uploaded" => "invalid uploaded: expected a decimal number",
                "downloaded" => "invalid downloaded: expected a decimal number",
                "left" => "invalid left: expected a decimal number",
                "numwant" => "invalid numwant: expected a decimal number",
                _ => "invalid number",
            },
            Self::InvalidEvent => {
                "invalid event: expected started, stopped, completed, paused or empty"
            }
            Self::InvalidPercentEncoding => "invalid percent-encoding in query",
            Self::TooManyInfoHashes { .. } => "too many info_hash values in scrape",
            Self::ValueTooLong { param } => match param {
                "key" => "key too long: at most 64 bytes",
                "trackerid" => "trackerid too long: at most 64 bytes",
                _ => "value too long",
            },
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match *self {
            Self::InvalidInfoHash { len } | Self::InvalidPeerId { len } => {
                write!(f, ", got {len}")
            }
            Self::TooManyInfoHashes { limit } => write!(f, " (limit {limit})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for QueryError {}

/// An iterator over the decoded bytes of a percent-encoded value; `+` decodes to a space.
///
/// After an invalid escape it yields one [`QueryError::InvalidPercentEncoding`] and stops.
#[derive(Clone, Debug)]
pub struct PercentDecode<'a> {
    rest: &'a [u8],
}

/// Decodes `input` lazily; see [`PercentDecode`].
pub fn percent_decode(input: &[u8]) -> PercentDecode<'_> {
    PercentDecode { rest: input }
}

impl Iterator for PercentDecode<'_> {
    type Item = Result<u8, QueryError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(match b {
            b'%' => match *rest {
                [hi, lo, ref tail @ ..] => match (hex_val(hi), hex_val(lo)) {
                    (Some(hi), Some(lo)) => {
                        self.rest = tail;
                        Ok((hi << 4) | lo)
                    }
                    _ => {
                        self.rest = &[];
                        Err(QueryError::InvalidPercentEncoding)
                    }
                },
                _ => {
                    self.rest = &[];
                    Err(QueryError::InvalidPercentEncoding)
                }
            },
            b'+' => Ok(b' '),
            b => Ok(b),
        })
    }
}

/// Appends the percent-decoding of `input` to `out`. `+` becomes a space (form encoding);
/// clients send a literal `+` byte as `%2B`.
///
/// # Errors
///
/// [`QueryError::InvalidPercentEncoding`] for `%` not followed by two hex digits. `out` is then
/// left as it was.
pub fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), QueryError> {
    let start = out.len();
    let mut rest = input;
    // Copy runs of plain bytes at once; only `%` and `+` need work.
    while let Some(i) = memchr2(b'%', b'+', rest) {
        out.extend_from_slice(rest.get(..i).unwrap_or_default());
        let special = rest.get(i..).unwrap_or_default();
        match special {
            [b'+', tail @ ..] => {
                out.push(b' ');
                rest = tail;
            }
            [b'%', hi, lo, tail @ ..] => match (hex_val(*hi), hex_val(*lo)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    rest = tail;
                }
                _ => {
                    out.truncate(start);
                    return Err(QueryError::InvalidPercentEncoding);
                }
            },
            _ => {
                out.truncate(start);
                return Err(QueryError::InvalidPercentEncoding);
            }
        }
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// True for RFC 3986 unreserved bytes, which [`percent_encode_into`] leaves as they are.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends `bytes` percent-encoded as a client does: unreserved bytes (`A-Z a-z 0-9 - . _ ~`)
/// as they are, every other byte as `%XX` with uppercase hex.
pub fn percent_encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len());
    for &b in bytes {
        if is_unreserved(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Iterator over the `key=value` pairs of a query string; see [`pairs`].
#[derive(Clone, Debug)]
pub struct Pairs<'a> {
    rest: &'a [u8],
}

/// Splits `query` on `&` into raw (still percent-encoded) `(key, value)` pairs. Empty segments
/// are skipped; a segment without `=` has an empty value; only the first `=` splits.
pub fn pairs(query: &[u8]) -> Pairs<'_> {
    Pairs { rest: query }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (segment, rest) = match memchr(b'&', self.rest) {
                Some(i) => (
                    self.rest.get(..i).unwrap_or_default(),
                    self.rest.get(i + 1..).unwrap_or_default(),
                ),
                None => (self.rest, &b""[..]),
            };
            self.rest = rest;
            if segment.is_empty() {
                continue;
            }
            return Some(match memchr(b'=', segment) {
                Some(i) => {
                    (segment.get(..i).unwrap_or_default(), segment.get(i + 1..).unwrap_or_default())
                }
                None => (segment, &b""[..]),
            });
        }
    }
}

/// A parsed announce query (BEP 3, 7, 21, 23).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// The peer's listening port. 0 means it has none (incoming connections off): it is still
    /// counted and accounted, and may fetch peers to connect out to, but nobody can connect to
    /// it, so the tracker never hands it out.
    pub port: u16,
    /// Bytes uploaded this session, as claimed by the client (0 when absent).
    pub uploaded: u64,
    /// Bytes downloaded this session, as claimed by the client (0 when absent).
    pub downloaded: u64,
    /// Bytes still to download; `None` when absent.
    pub left: Option<u64>,
    /// The event.
    pub event: AnnounceEvent,
    /// Compact peer lists (BEP 23): true unless `compact=0`.
    pub compact: bool,
    /// Omit peer ids from dictionary-mode peer lists.
    pub no_peer_id: bool,
    /// Peers wanted; `None` when absent or negative (the default). Values above `u32::MAX`
    /// saturate. The tracker caps it.
    pub numwant: Option<u32>,
    /// The client's `key` (raw decoded bytes, at most [`MAX_KEY_LEN`]).
    pub key: Option<Vec<u8>>,
    /// The `trackerid` from an earlier response (raw decoded bytes, at most
    /// [`MAX_TRACKER_ID_LEN`]).
    pub tracker_id: Option<Vec<u8>>,
    /// `ip=` when it is an IP literal (hostnames are ignored). Not normalised: an IPv4-mapped
    /// IPv6 address stays IPv6. Client-controlled: do not trust it for accounting.
    pub ip: Option<IpAddr>,
    /// BEP 7 `ipv4=` (`a.b.c.d` or `a.b.c.d:port`; the port is dropped).
    pub ipv4: Option<Ipv4Addr>,
    /// BEP 7 `ipv6=` (plain, `[addr]` or `[addr]:port`; the port is dropped).
    pub ipv6: Option<Ipv6Addr>,
}

/// Decodes `value` into an `N`-byte array. Returns the array and the full decoded length, which
/// may exceed `N` (only the first `N` bytes are kept then).
fn decode_array<const N: usize>(value: &[u8]) -> Result<([u8; N], usize), QueryError> {
    let mut out = [0u8; N];
    let mut len = 0usize;
    for b in percent_decode(value) {
        if let Some(slot) = out.get_mut(len) {
            *slot = b?;
        } else {
            b?;
        }
        len += 1;
    }
    Ok((out, len))
}

fn decode_20(value: &[u8]) -> Result<Result<[u8; 20], usize>, QueryError> {
    let (bytes, len) = decode_array::<20>(value)?;
    Ok(if len == 20 { Ok(bytes) } else { Err(len) })
}

/// Decodes a bounded byte string (`key`, `trackerid`).
fn decode_bounded(value: &[u8], param: &'static str) -> Result<Vec<u8>, QueryError> {
    let (bytes, len) = decode_array::<64>(value)?;
    bytes.get(..len).map(<[u8]>::to_vec).ok_or(QueryError::ValueTooLong { param })
}

/// Plain ASCII decimal: no sign, no spaces, not empty, no overflow.
fn parse_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(d - b'0')) } else { None }
    })
}

fn parse_number(value: &[u8], param: &'static str) -> Result<u64, QueryError> {
    parse_u64(value).ok_or(QueryError::InvalidNumber { param })
}

/// `numwant`: decimal, saturated to `u32::MAX`. A minus sign and digits mean "no preference"
/// (`None`, the tracker's default), as BEP 15 defines -1 for UDP: clients that reuse their UDP
/// value send `numwant=-1` over HTTP too, and refusing the whole announce for it helps nobody.
fn parse_numwant(value: &[u8]) -> Result<Option<u32>, QueryError> {
    if let Some(digits) = value.strip_prefix(b"-")
        && !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
    {
        return Ok(None);
    }
    let n = parse_number(value, "numwant")?;
    Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// Decodes an address parameter to text, or `None` when it is not short ASCII.
fn decode_addr_text(value: &[u8]) -> Option<([u8; 64], usize)> {
    let (bytes, len) = decode_array::<64>(value).ok()?;
    (len <= 64).then_some((bytes, len))
}

fn with_addr_text<T>(value: &[u8], f: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    let (bytes, len) = decode_addr_text(value)?;
    let text = core::str::from_utf8(bytes.get(..len)?).ok()?;
    f(text)
}

fn strip_brackets(text: &str) -> &str {
    text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text)
}

fn parse_ip(value: &[u8]) -> Option<IpAddr> {
    with_addr_text(value, |t| strip_brackets(t).parse().ok())
}

fn parse_ipv4(value: &[u8]) -> Option<Ipv4Addr> {
    with_addr_text(value, |t| {
        t.parse().ok().or_else(|| t.rsplit_once(':').and_then(|(addr, _port)| addr.parse().ok()))
    })
}

fn parse_ipv6(value: &[u8]) -> Option<Ipv6Addr> {
    with_addr_text(value, |t| {
        if let Some(inner) = t.strip_prefix('[') {
            // `[addr]` or `[addr]:port`.
            let (addr, _after) = inner.split_once(']')?;
            addr.parse().ok()
        } else {
            t.parse().ok()
        }
    })
}

fn parse_event(value: &[u8]) -> Result<AnnounceEvent, QueryError> {
    Ok(match value {
        b"" => AnnounceEvent::None,
        b"started" => AnnounceEvent::Started,
        b"stopped" => AnnounceEvent::Stopped,
        b"completed" => AnnounceEvent::Completed,
        b"paused" => AnnounceEvent::Paused,
        _ => return Err(QueryError::InvalidEvent),
    })
}

/// Parses an announce query string (the part after `?`, raw).
///
/// # Errors
///
/// The first problem found, in query order; then, if nothing was wrong with the values
/// present, a missing `info_hash`, `peer_id` or `port` (checked in that order).
///
/// # Example
///
/// ```
/// use pbts_http::query::parse_announce;
///
/// let q = b"info_hash=%AA%BB%CC%DD%EE%FF%00%11%22%33%44%55%66%77%88%99!()*\
///           &peer_id=-qB4620-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=100\
///           &event=started&compact=1";
/// let req = parse_announce(q)?;
/// assert_eq!(req.port, 6881);
/// assert_eq!(&req.info_hash.0[16..], b"!()*");
/// assert_eq!(req.left, Some(100));
/// # Ok::<(), pbts_http::query::QueryError>(())
/// ```
pub fn parse_announce(query: &[u8]) -> Result<AnnounceRequest, QueryError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut uploaded = None;
    let mut downloaded = None;
    let mut left = None;
    let mut event = None;
    let mut compact = None;
    let mut no_peer_id = None;
    // `numwant` can be present and `None` (negative), so its first occurrence is tracked apart.
    let mut numwant: Option<Option<u32>> = None;
    let mut key = None;
    let mut tracker_id = None;
    let mut ip = None;
    let mut ipv4 = None;
    let mut ipv6 = None;

    for (k, v) in pairs(query) {
        match k {
            b"info_hash" if info_hash.is_none() => {
                let bytes = decode_20(v)?.map_err(|len| QueryError::InvalidInfoHash { len })?;
                info_hash = Some(InfoHash(bytes));
            }
            b"peer_id" if peer_id.is_none() => {
                let bytes = decode_20(v)?.map_err(|len| QueryError::InvalidPeerId { len })?;
                peer_id = Some(PeerId(bytes));
            }
            b"port" if port.is_none() => {
                let p = parse_u64(v)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or(QueryError::InvalidPort)?;
                port = Some(p);
            }
            b"uploaded" if uploaded.is_none() => uploaded = Some(parse_number(v, "uploaded")?),
            b"downloaded" if downloaded.is_none() => {
                downloaded = Some(parse_number(v, "downloaded")?);
            }
            b"left" if left.is_none() => left = Some(parse_number(v, "left")?),
            b"event" if event.is_none() => event = Some(parse_event(v)?),
            b"compact" if compact.is_none() => compact = Some(v != b"0"),
            b"no_peer_id" if no_peer_id.is_none() => no_peer_id = Some(v != b"0"),
            b"numwant" if numwant.is_none() => numwant = Some(parse_numwant(v)?),
            b"key" if key.is_none() => key = Some(decode_bounded(v, "key")?),
            b"trackerid" if tracker_id.is_none() => {
                tracker_id = Some(decode_bounded(v, "trackerid")?);
            }
            // Address hints are advisory: the first one that parses wins, the rest is ignored.
            b"ip" if ip.is_none() => ip = parse_ip(v),
            b"ipv4" if ipv4.is_none() => ipv4 = parse_ipv4(v),
            b"ipv6" if ipv6.is_none() => ipv6 = parse_ipv6(v),
            _ => {}
        }
    }

    Ok(AnnounceRequest {
        info_hash: info_hash.ok_or(QueryError::MissingInfoHash)?,
        peer_id: peer_id.ok_or(QueryError::MissingPeerId)?,
        port: port.ok_or(QueryError::MissingPort)?,
        uploaded: uploaded.unwrap_or(0),
        downloaded: downloaded.unwrap_or(0),
        left,
        event: event.unwrap_or_default(),
        compact: compact.unwrap_or(true),
        no_peer_id: no_peer_id.unwrap_or(false),
        numwant: numwant.flatten(),
        key,
        tracker_id,
        ip,
        ipv4,
        ipv6,
    })
}

/// Parses a scrape query: every `info_hash` value, in query order (BEP 48 multi-scrape). No
/// `info_hash` at all gives an empty list (a "full scrape" request, which trackers may refuse).
/// Duplicates are kept; [`crate::response::write_scrape_body`] writes each hash once.
///
/// # Errors
///
/// [`QueryError::InvalidInfoHash`] for a value that does not decode to 20 bytes,
/// [`QueryError::InvalidPercentEncoding`], and [`QueryError::TooManyInfoHashes`] for more than
/// `max_hashes` values.
pub fn parse_scrape(query: &[u8], max_hashes: usize) -> Result<Vec<InfoHash>, QueryError> {
    let mut hashes = Vec::new();
    for (k, v) in pairs(query) {
        if k != b"info_hash" {
            continue;
        }
        if hashes.len() >= max_hashes {
            return Err(QueryError::TooManyInfoHashes { limit: max_hashes });
        }
        let bytes = decode_20(v)?.map_err(|len| QueryError::InvalidInfoHash { len })?;
        hashes.push(InfoHash(bytes));
    }
    Ok(hashes)
}

fn push_param(out: &mut Vec<u8>, name: &[u8]) {
    if !matches!(out.last(), None | Some(b'?' | b'&')) {
        out.push(b'&');
    }
    out.extend_from_slice(name);
    out.push(b'=');
}

/// Appends the announce query for `req` (client side), in the order clients send it. Binary
/// values are percent-encoded as [`percent_encode_into`] does; `compact` is always written;
/// `left`, `event`, `no_peer_id`, `numwant`, `key`, `trackerid`, `ip`, `ipv4`, `ipv6` only when
/// set. `out` should be empty or end in `?` or `&`; otherwise a `&` is written first, so an
/// existing query (`/announce?passkey=..`) is extended.
///
/// [`parse_announce`] of the output returns `req`, provided `key` and `tracker_id` are within
/// their length limits.
pub fn write_announce_query(req: &AnnounceRequest, out: &mut Vec<u8>) {
    push_param(out, b"info_hash");
    percent_encode_into(&req.info_hash.0, out);
    push_param(out, b"peer_id");
    percent_encode_into(&req.peer_id.0, out);
    push_param(out, b"port");
    push_u64(out, u64::from(req.port));
    push_param(out, b"uploaded");
    push_u64(out, req.uploaded);
    push_param(out, b"downloaded");
    push_u64(out, req.downloaded);
    if let Some(left) = req.left {
        push_param(out, b"left");
        push_u64(out, left);
    }
    if req.event != AnnounceEvent::None {
        push_param(out, b"event");
        out.extend_from_slice(req.event.as_str().as_bytes());
    }
    push_param(out, b"compact");
    out.push(if req.compact { b'1' } else { b'0' });
    if req.no_peer_id {
        push_param(out, b"no_peer_id");
        out.push(b'1');
    }
    if let Some(n) = req.numwant {
        push_param(out, b"numwant");
        push_u64(out, u64::from(n));
    }
    if let Some(key) = &req.key {
        push_param(out, b"key");
        percent_encode_into(key, out);
    }
    if let Some(id) = &req.tracker_id {
        push_param(out, b"trackerid");
        percent_encode_into(id, out);
    }
    if let Some(ip) = req.ip {
        push_param(out, b"ip");
        percent_encode_into(ip_text(ip).as_bytes(), out);
    }
    if let Some(ip) = req.ipv4 {
        push_param(out, b"ipv4");
        percent_encode_into(ip_text(IpAddr::V4(ip)).as_bytes(), out);
    }
    if let Some(ip) = req.ipv6 {
        push_param(out, b"ipv6");
        percent_encode_into(ip_text(IpAddr::V6(ip)).as_bytes(), out);
    }
}

/// Appends a scrape query naming each of `hashes` (`info_hash=..&info_hash=..`), with the same
/// separator rule as [`write_announce_query`].
pub fn write_scrape_query(hashes: &[InfoHash], out: &mut Vec<u8>) {
    out.reserve(hashes.len() * 72);
    for hash in hashes {
        push_param(out, b"info_hash");
        percent_encode_into(&hash.0, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(s: &[u8]) -> InfoHash {
        InfoHash::from_slice(s).unwrap()
    }

    /// A minimal valid announce, with `extra` appended.
    fn q(extra: &str) -> Vec<u8> {
        format!("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1{extra}")
            .into_bytes()
    }

    macro_rules! case {
        ($name:ident, $query:expr, Ok(|$r:ident| $body:block)) => {
            #[test]
            fn $name() {
                let $r = parse_announce(AsRef::<[u8]>::as_ref(&$query)).unwrap();
                $body
            }
        };
        ($name:ident, $query:expr, Err($err:expr, $text:expr)) => {
            #[test]
            fn $name() {
                let err = parse_announce(AsRef::<[u8]>::as_ref(&$query)).unwrap_err();
                assert_eq!(err, $err);
                assert_eq!(err.to_string(), $text);
            }
        };
    }

    // qBittorrent 4.6 (libtorrent 1.2/2.0): binary info_hash with `!`, `(`, `*`, `~` left
    // unescaped, lowercase hex escapes in places, key as 8 hex digits, supportcrypto etc.
    case!(
        libtorrent_style,
        b"info_hash=%d8%ff%a5!(%14%9dL*~%c3%9a%02%1b%ec%aeF%e7%c7%85&peer_id=-qB4620-%29sA%2a3LK%21%7eWxy\
          &port=46215&uploaded=0&downloaded=0&left=1502576640&corrupt=0&key=6E5F7C2A&event=started\
          &numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0&ipv6=2001%3adb8%3a%3a5\
          &ipv4=192.0.2.7%3a46215",
        Ok(|r| {
            assert_eq!(
                r.info_hash,
                ih(b"\xd8\xff\xa5!(\x14\x9dL*~\xc3\x9a\x02\x1b\xec\xaeF\xe7\xc7\x85")
            );
            assert_eq!(r.peer_id, PeerId(*b"-qB4620-)sA*3LK!~Wxy"));
            assert_eq!(r.port, 46215);
            assert_eq!((r.uploaded, r.downloaded, r.left), (0, 0, Some(1_502_576_640)));
            assert_eq!(r.event, AnnounceEvent::Started);
            assert_eq!(r.numwant, Some(200));
            assert!(r.compact && r.no_peer_id);
            assert_eq!(r.key.as_deref(), Some(&b"6E5F7C2A"[..]));
            assert_eq!(r.ipv6, Some("2001:db8::5".parse().unwrap()));
            assert_eq!(r.ipv4, Some(Ipv4Addr::new(192, 0, 2, 7)));
            assert_eq!((r.ip, r.tracker_id.as_deref()), (None, None));
        })
    );

    // Transmission 4.0: uppercase escapes for everything outside unreserved, `key` as hex,
    // `event` absent on regular announces, `numwant=80`, `compact=1`, `supportcrypto=1`.
    case!(
        transmission_style,
        b"info_hash=%80%81%FE%FF%00%20%21%28%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D~&peer_id=-TR4040-h8mx2vgh90gh\
          &port=51413&uploaded=1048576&downloaded=524288&left=0&numwant=80&key=7f3a9c1e&compact=1\
          &supportcrypto=1&trackerid=abc%2Fdef",
        Ok(|r| {
            assert_eq!(
                r.info_hash,
                ih(b"\x80\x81\xfe\xff\x00 !(*+,/:;=?@[]~")
            );
            assert_eq!(r.peer_id, PeerId(*b"-TR4040-h8mx2vgh90gh"));
            assert_eq!((r.port, r.uploaded, r.downloaded, r.left), (51413, 1_048_576, 524_288, Some(0)));
            assert_eq!(r.event, AnnounceEvent::None);
            assert_eq!(r.numwant, Some(80));
            assert!(r.compact && !r.no_peer_id);
            assert_eq!(r.key.as_deref(), Some(&b"7f3a9c1e"[..]));
            assert_eq!(r.tracker_id.as_deref(), Some(&b"abc/def"[..]));
        })
    );

    case!(
        defaults,
        q(""),
        Ok(|r| {
            assert_eq!((r.uploaded, r.downloaded, r.left, r.numwant), (0, 0, None, None));
            assert_eq!(r.event, AnnounceEvent::None);
            assert!(r.compact && !r.no_peer_id);
            assert_eq!((r.key, r.tracker_id, r.ip, r.ipv4, r.ipv6), (None, None, None, None, None));
        })
    );
    case!(
        compact_zero,
        q("&compact=0&no_peer_id=0"),
        Ok(|r| {
            assert!(!r.compact && !r.no_peer_id);
        })
    );
    case!(
        first_occurrence_wins,
        q("&port=2&left=5&left=zz&event=paused&event=bogus"),
        Ok(|r| {
            assert_eq!((r.port, r.left, r.event), (1, Some(5), AnnounceEvent::Paused));
        })
    );
    case!(
        empty_event,
        q("&event="),
        Ok(|r| {
            assert_eq!(r.event, AnnounceEvent::None);
        })
    );
    case!(
        events,
        q("&event=stopped"),
        Ok(|r| {
            assert_eq!(r.event, AnnounceEvent::Stopped);
        })
    );
    case!(
        completed,
        q("&event=completed"),
        Ok(|r| {
            assert_eq!(r.event, AnnounceEvent::Completed);
        })
    );
    case!(
        numwant_saturates,
        q("&numwant=99999999999"),
        Ok(|r| {
            assert_eq!(r.numwant, Some(u32::MAX));
        })
    );
    case!(
        max_numbers,
        q("&uploaded=18446744073709551615&left=0"),
        Ok(|r| {
            assert_eq!((r.uploaded, r.left), (u64::MAX, Some(0)));
        })
    );
    case!(
        port_max,
        b"port=65535&info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb",
        Ok(|r| {
            assert_eq!(r.port, 65535);
        })
    );
    case!(
        ip_hostname_ignored,
        q("&ip=tracker.example&ipv4=nope&ipv6=1.2.3.4"),
        Ok(|r| {
            assert_eq!((r.ip, r.ipv4, r.ipv6), (None, None, None));
        })
    );
    case!(
        ip_literals,
        q("&ip=%5B%3A%3A1%5D&ipv6=%5B2001%3Adb8%3A%3A1%5D%3A6881"),
        Ok(|r| {
            assert_eq!(r.ip, Some("::1".parse().unwrap()));
            assert_eq!(r.ipv6, Some("2001:db8::1".parse().unwrap()));
        })
    );
    case!(
        ip_v4_literal,
        q("&ip=10.1.2.3&ipv6=%3A%3Affff%3A1.2.3.4"),
        Ok(|r| {
            assert_eq!(r.ip, Some("10.1.2.3".parse().unwrap()));
            assert_eq!(r.ipv6, Some("::ffff:1.2.3.4".parse().unwrap()));
        })
    );
    case!(
        key_at_limit,
        q(&format!("&key={}", "k".repeat(64))),
        Ok(|r| {
            assert_eq!(r.key.map(|k| k.len()), Some(64));
        })
    );
    case!(
        empty_segments_and_unknown_keys,
        q("&&=&foo&bar=baz&&supportcrypto=1&requirecrypto=1&"),
        Ok(|r| {
            assert_eq!(r.port, 1);
        })
    );
    case!(
        plus_in_binary_is_space,
        b"info_hash=a+aaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1",
        Ok(|r| {
            assert_eq!(r.info_hash.0[1], b' ');
        })
    );

    // Every QueryError variant, with the exact text a client sees.
    case!(
        missing_info_hash,
        b"peer_id=bbbbbbbbbbbbbbbbbbbb&port=1",
        Err(QueryError::MissingInfoHash, "missing info_hash")
    );
    case!(
        short_info_hash,
        b"info_hash=abc&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1",
        Err(QueryError::InvalidInfoHash { len: 3 }, "invalid info_hash: expected 20 bytes, got 3")
    );
    case!(
        long_info_hash,
        b"info_hash=aaaaaaaaaaaaaaaaaaaa%00&port=1",
        Err(
            QueryError::InvalidInfoHash { len: 21 },
            "invalid info_hash: expected 20 bytes, got 21"
        )
    );
    case!(
        missing_peer_id,
        b"info_hash=aaaaaaaaaaaaaaaaaaaa&port=1",
        Err(QueryError::MissingPeerId, "missing peer_id")
    );
    case!(
        bad_peer_id,
        b"peer_id=&info_hash=aaaaaaaaaaaaaaaaaaaa&port=1",
        Err(QueryError::InvalidPeerId { len: 0 }, "invalid peer_id: expected 20 bytes, got 0")
    );
    case!(
        missing_port,
        b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb",
        Err(QueryError::MissingPort, "missing port")
    );
    #[test]
    fn port_zero_is_a_peer_without_a_listening_port() {
        let q = b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=0";
        assert_eq!(parse_announce(q).map(|r| r.port), Ok(0));
    }
    case!(
        port_too_big,
        b"port=65536",
        Err(QueryError::InvalidPort, "invalid port: expected a number from 0 to 65535")
    );
    case!(
        port_negative,
        b"port=-1",
        Err(QueryError::InvalidPort, "invalid port: expected a number from 0 to 65535")
    );
    case!(
        uploaded_negative,
        q("&uploaded=-5"),
        Err(
            QueryError::InvalidNumber { param: "uploaded" },
            "invalid uploaded: expected a decimal number"
        )
    );
    case!(
        downloaded_plus,
        q("&downloaded=%2B5"),
        Err(
            QueryError::InvalidNumber { param: "downloaded" },
            "invalid downloaded: expected a decimal number"
        )
    );
    case!(
        left_overflow,
        q("&left=18446744073709551616"),
        Err(QueryError::InvalidNumber { param: "left" }, "invalid left: expected a decimal number")
    );
    // BEP 15's "default" over HTTP: the announce stands, with the tracker's default numwant.
    case!(
        numwant_negative_is_the_default,
        q("&numwant=-1&numwant=5"),
        Ok(|r| {
            assert_eq!(r.numwant, None);
        })
    );
    case!(
        numwant_large_negative_is_the_default,
        q("&numwant=-99999999999999999999"),
        Ok(|r| {
            assert_eq!(r.numwant, None);
        })
    );
    case!(
        numwant_minus_alone,
        q("&numwant=-"),
        Err(
            QueryError::InvalidNumber { param: "numwant" },
            "invalid numwant: expected a decimal number"
        )
    );
    case!(
        numwant_minus_letters,
        q("&numwant=-x"),
        Err(
            QueryError::InvalidNumber { param: "numwant" },
            "invalid numwant: expected a decimal number"
        )
    );
    case!(
        numwant_empty,
        q("&numwant="),
        Err(
            QueryError::InvalidNumber { param: "numwant" },
            "invalid numwant: expected a decimal number"
        )
    );
    case!(
        bad_event,
        q("&event=Started"),
        Err(
            QueryError::InvalidEvent,
            "invalid event: expected started, stopped, completed, paused or empty"
        )
    );
    case!(
        bad_escape,
        b"info_hash=%zzaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1",
        Err(QueryError::InvalidPercentEncoding, "invalid percent-encoding in query")
    );
    case!(
        truncated_escape,
        q("&key=ab%4"),
        Err(QueryError::InvalidPercentEncoding, "invalid percent-encoding in query")
    );
    case!(
        key_too_long,
        q(&format!("&key={}", "k".repeat(65))),
        Err(QueryError::ValueTooLong { param: "key" }, "key too long: at most 64 bytes")
    );
    case!(
        trackerid_too_long,
        q(&format!("&trackerid={}", "%41".repeat(65))),
        Err(
            QueryError::ValueTooLong { param: "trackerid" },
            "trackerid too long: at most 64 bytes"
        )
    );

    #[test]
    fn too_many_info_hashes() {
        let err = parse_scrape(b"info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=bbbbbbbbbbbbbbbbbbbb", 1)
            .unwrap_err();
        assert_eq!(err, QueryError::TooManyInfoHashes { limit: 1 });
        assert_eq!(err.as_str(), "too many info_hash values in scrape");
        assert_eq!(err.to_string(), "too many info_hash values in scrape (limit 1)");
    }

    #[test]
    fn scrape() {
        assert_eq!(parse_scrape(b"", 10), Ok(vec![]));
        assert_eq!(parse_scrape(b"passkey=x", 10), Ok(vec![]));
        assert_eq!(
            parse_scrape(b"info_hash=%00aaaaaaaaaaaaaaaaaaa&x=1&info_hash=bbbbbbbbbbbbbbbbbbbb", 2),
            Ok(vec![ih(b"\0aaaaaaaaaaaaaaaaaaa"), ih(b"bbbbbbbbbbbbbbbbbbbb")])
        );
        assert_eq!(
            parse_scrape(b"info_hash=aaaaaaaaaaaaaaaaaaaa&info_hash=short", 2),
            Err(QueryError::InvalidInfoHash { len: 5 })
        );
        assert_eq!(
            parse_scrape(b"info_hash=a", 0),
            Err(QueryError::TooManyInfoHashes { limit: 0 })
        );
        let hashes = [ih(&[0xff; 20]), ih(b"01234567890123456789")];
        let mut out = b"/scrape?".to_vec();
        write_scrape_query(&hashes, &mut out);
        assert_eq!(
            out,
            format!("/scrape?info_hash={}&info_hash=01234567890123456789", "%FF".repeat(20))
                .as_bytes()
        );
        assert_eq!(parse_scrape(&out[8..], 2), Ok(hashes.to_vec()));
    }

    #[test]
    fn pairs_splitting() {
        let got: Vec<_> = pairs(b"a=1&&b&=c&d==e&").collect();
        assert_eq!(got, [(&b"a"[..], &b"1"[..]), (b"b", b""), (b"", b"c"), (b"d", b"=e")]);
        assert_eq!(pairs(b"").count(), 0);
        assert_eq!(pairs(b"&&&").count(), 0);
        assert_eq!(pairs(b"a;b=1").collect::<Vec<_>>(), [(&b"a;b"[..], &b"1"[..])]);
    }

    #[test]
    fn percent_decoding() {
        type Case = (&'static [u8], Result<&'static [u8], QueryError>);
        let table: &[Case] = &[
            (b"", Ok(b"")),
            (b"abc", Ok(b"abc")),
            (b"%41%62%2b+", Ok(b"Ab+ ")),
            (b"%00%ff%FF", Ok(b"\0\xff\xff")),
            (b"!(*~", Ok(b"!(*~")),
            (b"%", Err(QueryError::InvalidPercentEncoding)),
            (b"%4", Err(QueryError::InvalidPercentEncoding)),
            (b"ab%zz", Err(QueryError::InvalidPercentEncoding)),
            (b"%+1", Err(QueryError::InvalidPercentEncoding)),
        ];
        for &(input, expected) in table {
            let mut out = b"keep".to_vec();
            let got = percent_decode_into(input, &mut out);
            match expected {
                Ok(bytes) => {
                    assert_eq!(got, Ok(()), "{input:?}");
                    assert_eq!(&out[4..], bytes, "{input:?}");
                }
                Err(e) => {
                    assert_eq!(got, Err(e), "{input:?}");
                    assert_eq!(out, b"keep", "output restored for {input:?}");
                }
            }
            let lazy: Result<Vec<u8>, _> = percent_decode(input).collect();
            assert_eq!(lazy.as_deref().map_err(|e| *e), expected, "{input:?}");
        }
    }

    #[test]
    fn percent_encoding() {
        let mut out = Vec::new();
        percent_encode_into(b"aZ09-._~ !(*\x00\xff/", &mut out);
        assert_eq!(out, b"aZ09-._~%20%21%28%2A%00%FF%2F");
    }

    #[test]
    fn write_announce_exact() {
        let req = AnnounceRequest {
            info_hash: InfoHash([0xab; 20]),
            peer_id: PeerId(*b"-PB0100-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: Some(3),
            event: AnnounceEvent::Completed,
            compact: false,
            no_peer_id: true,
            numwant: Some(50),
            key: Some(b"k y".to_vec()),
            tracker_id: Some(vec![0]),
            ip: Some("1.2.3.4".parse().unwrap()),
            ipv4: Some(Ipv4Addr::new(5, 6, 7, 8)),
            ipv6: Some("::1".parse().unwrap()),
        };
        let mut out = b"/announce?".to_vec();
        write_announce_query(&req, &mut out);
        let expected = format!(
            "/announce?info_hash={}&peer_id=-PB0100-abcdefghijkl&port=6881&uploaded=1\
             &downloaded=2&left=3&event=completed&compact=0&no_peer_id=1&numwant=50&key=k%20y\
             &trackerid=%00&ip=1.2.3.4&ipv4=5.6.7.8&ipv6=%3A%3A1",
            "%AB".repeat(20)
        );
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_eq!(parse_announce(&out[10..]), Ok(req));
    }
}
