//! HTTP announces (BEP 3, BEP 23 compact peers, BEP 7 `peers6`).
//!
//! One connection per announce: `GET <path>?<query> HTTP/1.1` with `Connection: close`, then
//! the response is read until its framing says it is complete (`Content-Length`, the last
//! chunk of a chunked body, or the end of the stream), never past
//! [`Config::max_response_bytes`] and never longer than [`Config::http_timeout`].
//!
//! The URL's own path and query are kept byte for byte: private trackers carry the passkey in
//! the path (`/<passkey>/announce`) or the query (`?passkey=..`), and our parameters are
//! appended after it.

use std::net::SocketAddr;
use std::time::Duration;

use pbts_http::query::{AnnounceRequest, write_announce_query};
use pbts_http::request::{ParseError, Status, parse_response_head};
use pbts_proto::bencode::{self, DecodeLimits, Value};
use pbts_proto::udp::{AddressFamily, MAX_ERROR_MESSAGE_BYTES, Peers};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::announce::{AnnounceParams, AnnounceResult, Config, TrackerError};
use super::url::TrackerUrl;

/// Bounds on the bencoded body: a response is a flat dictionary, with at most a list of peer
/// dictionaries inside.
const BODY_LIMITS: DecodeLimits = DecodeLimits { max_depth: 8, max_items: 1 << 17 };

/// Announces to the HTTP tracker at `url`, sending `tracker_id` back if an earlier answer
/// gave one.
pub(crate) async fn announce(
    url: &TrackerUrl,
    params: &AnnounceParams,
    tracker_id: Option<&[u8]>,
    config: &Config,
) -> Result<AnnounceResult, TrackerError> {
    let target = announce_target(url, params, tracker_id);
    let (status, body) = exchange(url, "GET", &target, None, config).await?;
    if status != 200 {
        return Err(TrackerError::HttpStatus { status });
    }
    parse_announce_body(&body)
}

/// One HTTP request to the tracker at `url` (`target` is the path and query; `json`, a body
/// sent as `application/json`), on its own connection, bounded by the config's timeout and
/// response size. Returns the status and the (de-chunked) body, whatever the status.
pub(crate) async fn exchange(
    url: &TrackerUrl,
    method: &str,
    target: &[u8],
    json: Option<&[u8]>,
    config: &Config,
) -> Result<(u16, Vec<u8>), TrackerError> {
    let request = write_request(url, method, target, json, &config.user_agent);
    let limit = config.http_timeout;
    tokio::time::timeout(limit, async {
        let addrs = url.resolve(limit).await?;
        let mut stream = connect(&addrs).await?;
        stream.write_all(&request).await?;
        read_response(&mut stream, config.max_response_bytes).await
    })
    .await
    .map_err(|_| TrackerError::Timeout(limit))?
}

/// Tries each address in turn; the error is the last address's.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, TrackerError> {
    let mut last = None;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(source) => last = Some(TrackerError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or(TrackerError::Malformed("no address to connect to")))
}

/// The request target: the URL's path and query, then ours (`?` or `&` as needed).
pub(crate) fn announce_target(
    url: &TrackerUrl,
    params: &AnnounceParams,
    tracker_id: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(url.path_and_query.len() + 256);
    out.extend_from_slice(url.path_and_query.as_bytes());
    if !out.contains(&b'?') {
        out.push(b'?');
    }
    let query = AnnounceRequest {
        info_hash: params.info_hash,
        peer_id: params.peer_id,
        port: params.port,
        uploaded: params.uploaded,
        downloaded: params.downloaded,
        left: Some(params.left),
        event: params.event,
        compact: true,
        no_peer_id: false,
        numwant: params.numwant,
        key: Some(format!("{:08X}", params.key).into_bytes()),
        tracker_id: tracker_id.map(<[u8]>::to_vec),
        ip: None,
        ipv4: None,
        ipv6: None,
    };
    write_announce_query(&query, &mut out);
    out
}

/// The whole request.
fn write_request(
    url: &TrackerUrl,
    method: &str,
    target: &[u8],
    json: Option<&[u8]>,
    user_agent: &str,
) -> Vec<u8> {
    let mut out = method.as_bytes().to_vec();
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(url.host_header().as_bytes());
    out.extend_from_slice(b"\r\nUser-Agent: ");
    // A configured agent with a line break would inject headers.
    out.extend(user_agent.bytes().filter(|b| !b.is_ascii_control()));
    if let Some(body) = json {
        out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    if let Some(body) = json {
        out.extend_from_slice(body);
    }
    out
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends with the connection.
    ToEof,
}

/// A response's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    status: u16,
    len: usize,
    framing: Framing,
}

/// Reads one response and returns its status and (de-chunked) body.
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> Result<(u16, Vec<u8>), TrackerError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 << 10];
    let mut head = None;
    let mut eof = false;
    loop {
        if let Some(body) = complete_body(&buf, &mut head, eof, limit)? {
            let status = head.map_or(0, |h| h.status);
            return Ok((status, body));
        }
        if eof {
            return Err(TrackerError::Malformed("the tracker closed the connection mid-response"));
        }
        if buf.len() > limit {
            return Err(TrackerError::TooLarge { limit });
        }
        // Never hold more than one byte past the limit.
        let room = (limit + 1 - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        buf.extend_from_slice(&chunk[..n]);
        eof = n == 0;
    }
}

/// The (de-chunked) body once `buf` holds a whole response, `None` while more is needed;
/// `head` caches the parsed head between calls, `eof` says the tracker closed the connection.
pub(crate) fn complete_body(
    buf: &[u8],
    head: &mut Option<Head>,
    eof: bool,
    limit: usize,
) -> Result<Option<Vec<u8>>, TrackerError> {
    if head.is_none() {
        *head = parse_head(buf)?;
    }
    let Some(Head { len, framing, .. }) = *head else { return Ok(None) };
    let body = buf.get(len..).unwrap_or_default();
    match framing {
        Framing::Length(n) if len.saturating_add(n) > limit => {
            Err(TrackerError::TooLarge { limit })
        }
        Framing::Length(n) if body.len() >= n => {
            Ok(Some(body.get(..n).unwrap_or_default().to_vec()))
        }
        Framing::Chunked => decode_chunked(body),
        Framing::ToEof if eof => Ok(Some(body.to_vec())),
        Framing::Length(_) | Framing::ToEof => Ok(None),
    }
}

/// The head, once complete.
///
/// `parse_response_head` refuses `Transfer-Encoding` (the tracker's own parser never accepts
/// chunked requests, so it has no chunked framing); a tracker behind a proxy may well answer
/// chunked, so that header is recognised here and the rest of the head checked without it.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, TrackerError> {
    let (head, len, framing) = match parse_response_head(buf) {
        Ok(Status::Partial) => return Ok(None),
        Ok(Status::Complete(head, _)) => {
            (head, head.head_len, head.content_length.map_or(Framing::ToEof, Framing::Length))
        }
        Err(ParseError::TransferEncodingUnsupported) => {
            let Some(len) = head_end(buf) else { return Ok(None) };
            let mut without = Vec::with_capacity(len);
            for line in buf[..len].split_inclusive(|&b| b == b'\n') {
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let (name, value) = line.split_at(colon);
                    if name.eq_ignore_ascii_case(b"transfer-encoding") {
                        if !value[1..].trim_ascii().eq_ignore_ascii_case(b"chunked") {
                            return Err(TrackerError::Malformed(
                                "unsupported Transfer-Encoding (only chunked is)",
                            ));
                        }
                        continue;
                    }
                }
                without.extend_from_slice(line);
            }
            match parse_response_head(&without)? {
                // Chunked framing wins over any Content-Length (RFC 9112 §6.3).
                Status::Complete(head, _) => (head, len, Framing::Chunked),
                Status::Partial => return Err(TrackerError::Malformed("incomplete response head")),
            }
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Some(Head { status: head.status, len, framing }))
}

/// The length of the head (through its blank line), lines ending in CRLF or LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.iter().enumerate().find_map(|(i, &b)| match (b, buf.get(i + 1..)) {
        (b'\n', Some([b'\n', ..])) => Some(i + 2),
        (b'\n', Some([b'\r', b'\n', ..])) => Some(i + 3),
        _ => None,
    })
}

/// Decodes a chunked body; `None` until the last chunk and the trailer's end are in `body`.
/// The decoded body is never longer than `body`, which the caller bounds.
fn decode_chunked(mut body: &[u8]) -> Result<Option<Vec<u8>>, TrackerError> {
    let mut out = Vec::new();
    loop {
        let Some((line, rest)) = split_line(body) else { return Ok(None) };
        let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let size = parse_hex(digits).ok_or(TrackerError::Malformed("invalid chunk size"))?;
        body = rest;
        if size == 0 {
            // Trailer lines, then a blank line.
            loop {
                let Some((line, rest)) = split_line(body) else { return Ok(None) };
                if line.is_empty() {
                    return Ok(Some(out));
                }
                body = rest;
            }
        }
        let Ok(size) = usize::try_from(size) else {
            return Err(TrackerError::Malformed("invalid chunk size"));
        };
        let Some(data) = body.get(..size) else { return Ok(None) };
        let after = &body[size..];
        let rest = match after {
            [] | [b'\r'] => return Ok(None),
            [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] => rest,
            _ => return Err(TrackerError::Malformed("chunk data not followed by a line end")),
        };
        out.extend_from_slice(data);
        body = rest;
    }
}

/// The first line of `buf` without its line end, and what follows; `None` without a `\n`.
fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..nl];
    Some((line.strip_suffix(b"\r").unwrap_or(line), &buf[nl + 1..]))
}

/// 1 to 15 hex digits (so no overflow).
fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| Some(n << 4 | u64::from(char::from(b).to_digit(16)?)))
}

/// Text from the tracker, cut to [`MAX_ERROR_MESSAGE_BYTES`] and decoded as lossy UTF-8.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_MESSAGE_BYTES)]).into_owned()
}

fn seconds(v: Option<&Value<'_>>, what: &'static str) -> Result<Option<Duration>, TrackerError> {
    v.map(|v| {
        v.as_int()
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .ok_or(TrackerError::Malformed(what))
    })
    .transpose()
}

/// Decodes the bencoded body of an announce response.
///
/// # Errors
/// [`TrackerError::Failure`] with the tracker's `failure reason`; [`TrackerError::Bencode`] or
/// [`TrackerError::Malformed`] for a body that is not a usable response.
pub(crate) fn parse_announce_body(body: &[u8]) -> Result<AnnounceResult, TrackerError> {
    let value = bencode::decode(body, &BODY_LIMITS)?;
    if value.as_dict().is_none() {
        return Err(TrackerError::Malformed("the response is not a bencoded dictionary"));
    }
    if let Some(reason) = value.get(b"failure reason") {
        return Err(TrackerError::Failure(text(reason.as_bytes().unwrap_or_default())));
    }
    let interval = seconds(value.get(b"interval"), "interval is not a non-negative integer")?
        .ok_or(TrackerError::Malformed("the response has no interval"))?;
    let min_interval =
        seconds(value.get(b"min interval"), "min interval is not a non-negative integer")?;
    let count =
        |key: &[u8]| value.get(key).and_then(Value::as_int).and_then(|n| u32::try_from(n).ok());

    let mut peers = Vec::new();
    match value.get(b"peers") {
        None => {}
        Some(Value::Bytes(raw)) => {
            let compact = Peers::new(raw, AddressFamily::V4).map_err(|_| {
                TrackerError::Malformed("compact peers are not a whole number of 6-byte entries")
            })?;
            peers.extend(compact.iter().filter(|p| p.port() != 0));
        }
        Some(Value::List(items)) => {
            // Dictionary peers (BEP 3): entries whose `ip` is a host name or whose port is
            // not a port are skipped, not fatal; resolving names per peer is not worth it.
            peers.extend(items.iter().filter_map(|item| {
                let ip = item.get(b"ip")?.as_str()?.parse().ok()?;
                let port = u16::try_from(item.get(b"port")?.as_int()?).ok()?;
                (port != 0).then_some(SocketAddr::new(ip, port))
            }));
        }
        Some(_) => return Err(TrackerError::Malformed("peers is neither a string nor a list")),
    }
    match value.get(b"peers6") {
        None => {}
        Some(Value::Bytes(raw)) => {
            let compact = Peers::new(raw, AddressFamily::V6).map_err(|_| {
                TrackerError::Malformed("compact peers6 are not a whole number of 18-byte entries")
            })?;
            peers.extend(compact.iter().filter(|p| p.port() != 0));
        }
        Some(_) => return Err(TrackerError::Malformed("peers6 is not a string")),
    }
    Ok(AnnounceResult {
        interval,
        min_interval,
        peers,
        seeders: count(b"complete"),
        leechers: count(b"incomplete"),
        warning: value.get(b"warning message").and_then(Value::as_bytes).map(text),
        tracker_id: value.get(b"tracker id").and_then(Value::as_bytes).map(<[u8]>::to_vec),
    })
}

#[cfg(test)]
mod tests {
    use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

    use super::*;

    pub(crate) fn params() -> AnnounceParams {
        AnnounceParams {
            info_hash: InfoHash(*b"\x01\x02 abcdefghij~.-_%&+"),
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

    const QUERY: &str = "info_hash=%01%02%20abcdefghij~.-_%25%26%2B&peer_id=-PB0100-0123456789ab\
        &port=6881&uploaded=1&downloaded=2&left=3&event=started&compact=1&numwant=50&key=00ABCDEF";

    fn target(url: &str, tracker_id: Option<&[u8]>) -> String {
        let url = TrackerUrl::parse(url).unwrap();
        String::from_utf8(announce_target(&url, &params(), tracker_id)).unwrap()
    }

    #[test]
    fn targets_keep_the_passkey() {
        assert_eq!(target("http://t/pk123/announce", None), format!("/pk123/announce?{QUERY}"));
        assert_eq!(
            target("http://t/announce.php?passkey=pk123", None),
            format!("/announce.php?passkey=pk123&{QUERY}")
        );
        assert_eq!(target("http://t/a?", None), format!("/a?{QUERY}"));
        assert_eq!(target("http://t/a?x=1&", None), format!("/a?x=1&{QUERY}"));
        assert_eq!(target("http://t", Some(b"id 7")), format!("/?{QUERY}&trackerid=id%207"));
        let mut periodic = params();
        periodic.event = AnnounceEvent::None;
        periodic.numwant = None;
        let url = TrackerUrl::parse("http://t/a").unwrap();
        let t = announce_target(&url, &periodic, None);
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "/a?info_hash=%01%02%20abcdefghij~.-_%25%26%2B&peer_id=-PB0100-0123456789ab\
             &port=6881&uploaded=1&downloaded=2&left=3&compact=1&key=00ABCDEF"
        );
    }

    #[test]
    fn request_bytes() {
        let url = TrackerUrl::parse("http://[::1]:8080/pk/announce").unwrap();
        let target = announce_target(&url, &params(), None);
        let req = write_request(&url, "GET", &target, None, "pbts\r\nX: 1");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            format!(
                "GET /pk/announce?{QUERY} HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: pbtsX: 1\r\n\
                 Connection: close\r\n\r\n"
            )
        );
        let req = write_request(&url, "POST", b"/pk/report", Some(b"{}"), "pbts");
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /pk/report HTTP/1.1\r\nHost: [::1]:8080\r\nUser-Agent: pbts\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn compact_body() {
        let body = b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e\
            5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x00\
            6:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\xc8\xd5\
            10:tracker id3:t-115:warning message4:slowe";
        let r = parse_announce_body(body).unwrap();
        assert_eq!(
            r,
            AnnounceResult {
                interval: Duration::from_secs(1800),
                min_interval: Some(Duration::from_secs(60)),
                peers: vec![
                    "127.0.0.1:6881".parse().unwrap(),
                    "[2001:db8::1]:51413".parse().unwrap()
                ],
                seeders: Some(5),
                leechers: Some(7),
                warning: Some("slow".to_owned()),
                tracker_id: Some(b"t-1".to_vec()),
            }
        );
    }

    #[test]
    fn dictionary_peers() {
        let body = b"d8:intervali900e5:peersl\
            d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
            d2:ip3:::14:porti51413ee\
            d2:ip13:peer.example.4:porti1ee\
            d2:ip8:10.0.0.94:porti0ee\
            d2:ip8:10.0.0.94:porti70000ee\
            ee";
        let r = parse_announce_body(body).unwrap();
        assert_eq!(r.peers, ["127.0.0.1:6881".parse().unwrap(), "[::1]:51413".parse().unwrap()]);
        assert_eq!((r.seeders, r.leechers, r.min_interval, r.warning), (None, None, None, None));
    }

    #[test]
    fn refused_bodies() {
        let cases: &[(&[u8], &str)] = &[
            (b"d14:failure reason17:passkey not founde", "tracker failure: passkey not found"),
            (b"d14:failure reason3:\xffx\xfe8:intervali5ee", "tracker failure: \u{fffd}x\u{fffd}"),
            (b"d5:peers0:e", "malformed tracker response: the response has no interval"),
            (
                b"d8:intervali-1ee",
                "malformed tracker response: interval is not a non-negative integer",
            ),
            (b"le", "malformed tracker response: the response is not a bencoded dictionary"),
            (
                b"d8:intervali1e5:peers5:abcdee",
                "malformed tracker response: compact peers are not a whole number of 6-byte entries",
            ),
            (
                b"d8:intervali1e6:peers66:abcdefe",
                "malformed tracker response: compact peers6 are not a whole number of 18-byte entries",
            ),
            (
                b"d8:intervali1e5:peersi1ee",
                "malformed tracker response: peers is neither a string nor a list",
            ),
            (b"<html>", "malformed tracker response: bencode: unexpected byte 0x3c at offset 0"),
        ];
        for (body, text) in cases {
            assert_eq!(parse_announce_body(body).unwrap_err().to_string(), *text);
        }
    }

    #[test]
    fn chunked_bodies() {
        let full = b"4\r\nd8:i\r\nA;ext=1\r\nntervali1e\r\n1\r\ne\r\n0\r\nX-Trailer: 1\r\n\r\n";
        assert_eq!(decode_chunked(full).unwrap().unwrap(), b"d8:intervali1ee");
        for cut in 0..full.len() {
            assert_eq!(decode_chunked(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(decode_chunked(b"3\nabc\n0\n\n").unwrap().unwrap(), b"abc");
        for (bad, text) in [
            (&b"x\r\n"[..], "malformed tracker response: invalid chunk size"),
            (b"\r\n", "malformed tracker response: invalid chunk size"),
            (b"1000000000000000\r\n", "malformed tracker response: invalid chunk size"),
            (b"1\r\nab\r\n", "malformed tracker response: chunk data not followed by a line end"),
        ] {
            assert_eq!(decode_chunked(bad).unwrap_err().to_string(), text);
        }
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(h, Some(Head { status: 200, len: 38, framing: Framing::Length(5) }));
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding:  Chunked \r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            parse_head(chunked).unwrap(),
            Some(Head { status: 200, len: chunked.len(), framing: Framing::Chunked })
        );
        assert_eq!(parse_head(&chunked[..40]).unwrap(), None);
        assert_eq!(
            parse_head(b"HTTP/1.0 200 OK\n\n").unwrap(),
            Some(Head { status: 200, len: 17, framing: Framing::ToEof })
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert_eq!(
            parse_head(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap(),
            Some(Head { status: 404, len: 26, framing: Framing::ToEof })
        );
        for (head, text) in [
            (
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
                "malformed tracker response: unsupported Transfer-Encoding (only chunked is)",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed tracker response: invalid status line"),
        ] {
            assert_eq!(parse_head(head).unwrap_err().to_string(), text);
        }
    }
}
