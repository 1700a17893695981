//! HTTP response heads and the tracker's bencoded bodies (announce, scrape, failure).
//!
//! Everything appends to a caller-owned `Vec<u8>`, so a connection can reuse one buffer for
//! every response. Bodies are written with dictionary keys in sorted byte order, as strict
//! bencode decoders (and [`pbts_proto::bencode::decode`]) require.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The client-side response-head parser lives with the request parser (they share the line
/// scanner); re-exported here for clients looking next to the writers.
pub use crate::request::{ResponseHead, parse_response_head};
use crate::util::{ip_text, push_u64};
use pbts_proto::bencode::Encoder;
use pbts_proto::{InfoHash, PeerId};

/// The `Content-Type` of bencoded tracker responses. Clients ignore it; this is the one PBTS
/// sends (see docs/COMPATIBILITY.md).
pub const BENCODE_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The reason phrase for the statuses the server sends; empty for others (the phrase is
/// optional, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a response head:
///
/// ```text
/// HTTP/1.1 200 OK\r\nContent-Type: <ct>\r\nContent-Length: <n>\r\nConnection: keep-alive\r\n\r\n
/// ```
///
/// A `status` outside 100..=999 is written as 500, and CR/LF bytes in `content_type` are
/// dropped, so the head is always well framed.
pub fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
) {
    write_head_with_headers(out, status, content_type, &[], content_length, keep_alive);
}

/// [`write_head`] with extra header lines (`Retry-After`, ...) after `Content-Type`. CR/LF
/// bytes in names and values are dropped, like in `content_type`.
pub fn write_head_with_headers(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    headers: &[(&str, &[u8])],
    content_length: usize,
    keep_alive: bool,
) {
    let no_crlf = |b: &u8| *b != b'\r' && *b != b'\n';
    let status = if (100..=999).contains(&status) { status } else { 500 };
    out.reserve(96 + content_type.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend(content_type.as_bytes().iter().filter(|b| no_crlf(b)));
    for (name, value) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend(name.as_bytes().iter().filter(|b| no_crlf(b)));
        out.extend_from_slice(b": ");
        out.extend(value.iter().filter(|b| no_crlf(b)));
    }
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_u64(out, content_length as u64);
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
}

/// Appends a whole response: [`write_head`] for `body`, then `body`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) {
    write_head(out, status, content_type, body.len(), keep_alive);
    out.extend_from_slice(body);
}

/// [`write_response`] with extra header lines (see [`write_head_with_headers`]).
pub fn write_response_with_headers(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
) {
    write_head_with_headers(out, status, content_type, headers, body.len(), keep_alive);
    out.extend_from_slice(body);
}

/// The peers of an announce response.
#[derive(Clone, Copy, Debug)]
pub enum PeerList<'a> {
    /// BEP 23 / BEP 7 compact form: `peers` holds 6 bytes per IPv4 peer (address, big-endian
    /// port) and is always written; `peers6` holds 18 bytes per IPv6 peer and is written only
    /// when `v6` is non-empty.
    Compact {
        /// IPv4 peers.
        v4: &'a [(Ipv4Addr, u16)],
        /// IPv6 peers.
        v6: &'a [(Ipv6Addr, u16)],
    },
    /// BEP 3 dictionary form: `peers` is a list of `{ip, peer id, port}` dictionaries, `ip`
    /// in text form, `peer id` left out when `None` (for `no_peer_id=1`).
    Dict {
        /// Peers of either family.
        peers: &'a [(IpAddr, u16, Option<PeerId>)],
    },
}

/// An announce response body.
#[derive(Clone, Copy, Debug)]
pub struct AnnounceResponse<'a> {
    /// `interval`, seconds.
    pub interval: u32,
    /// `min interval`, seconds.
    pub min_interval: u32,
    /// `complete`: seeders.
    pub complete: u32,
    /// `incomplete`: leechers.
    pub incomplete: u32,
    /// `downloaded`: completed downloads (snatches).
    pub downloaded: u32,
    /// `tracker id`, written when set.
    pub tracker_id: Option<&'a [u8]>,
    /// `warning message`, written when set.
    pub warning: Option<&'a str>,
    /// BEP 24 `external ip` (4 or 16 raw bytes): the address the tracker saw.
    pub external_ip: Option<IpAddr>,
    /// The peers.
    pub peers: PeerList<'a>,
}

/// Appends the bencoded announce body. Keys, in the sorted order they are written:
/// `complete`, `downloaded`, `external ip`, `incomplete`, `interval`, `min interval`, `peers`,
/// `peers6`, `tracker id`, `warning message`.
pub fn write_announce_body(resp: &AnnounceResponse<'_>, out: &mut Vec<u8>) {
    let peer_bytes = match resp.peers {
        PeerList::Compact { v4, v6 } => v4.len() * 6 + v6.len() * 18,
        PeerList::Dict { peers } => peers.len() * 80,
    };
    let extras = resp.tracker_id.map_or(0, <[u8]>::len) + resp.warning.map_or(0, str::len);
    // 256 covers every fixed key and the longest numbers and length prefixes.
    out.reserve(256 + peer_bytes + extras);
    let mut enc = Encoder::new(out);
    enc.begin_dict();
    enc.str("complete");
    enc.int(i64::from(resp.complete));
    enc.str("downloaded");
    enc.int(i64::from(resp.downloaded));
    if let Some(ip) = resp.external_ip {
        enc.str("external ip");
        match ip {
            IpAddr::V4(ip) => enc.bytes(&ip.octets()),
            IpAddr::V6(ip) => enc.bytes(&ip.octets()),
        }
    }
    enc.str("incomplete");
    enc.int(i64::from(resp.incomplete));
    enc.str("interval");
    enc.int(i64::from(resp.interval));
    enc.str("min interval");
    enc.int(i64::from(resp.min_interval));

    match resp.peers {
        PeerList::Compact { v4, v6 } => {
            out.extend_from_slice(b"5:peers");
            push_u64(out, (v4.len() as u64).saturating_mul(6));
            out.push(b':');
            for (ip, port) in v4 {
                out.extend_from_slice(&ip.octets());
                out.extend_from_slice(&port.to_be_bytes());
            }
            if !v6.is_empty() {
                out.extend_from_slice(b"6:peers6");
                push_u64(out, (v6.len() as u64).saturating_mul(18));
                out.push(b':');
                for (ip, port) in v6 {
                    out.extend_from_slice(&ip.octets());
                    out.extend_from_slice(&port.to_be_bytes());
                }
            }
        }
        PeerList::Dict { peers } => {
            let mut enc = Encoder::new(out);
            enc.str("peers");
            enc.begin_list();
            for (ip, port, peer_id) in peers {
                enc.begin_dict();
                enc.str("ip");
                enc.bytes(ip_text(*ip).as_bytes());
                if let Some(id) = peer_id {
                    enc.str("peer id");
                    enc.bytes(&id.0);
                }
                enc.str("port");
                enc.int(i64::from(*port));
                enc.end();
            }
            enc.end();
        }
    }

    let mut enc = Encoder::new(out);
    if let Some(id) = resp.tracker_id {
        enc.str("tracker id");
        enc.bytes(id);
    }
    if let Some(warning) = resp.warning {
        enc.str("warning message");
        enc.str(warning);
    }
    enc.end();
}

/// One torrent's counts in a scrape response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrapeEntry {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Seeders.
    pub complete: u32,
    /// Completed downloads (snatches).
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

fn write_scrape_entry(entry: &ScrapeEntry, enc: &mut Encoder<'_>) {
    enc.bytes(&entry.info_hash.0);
    enc.begin_dict();
    enc.str("complete");
    enc.int(i64::from(entry.complete));
    enc.str("downloaded");
    enc.int(i64::from(entry.downloaded));
    enc.str("incomplete");
    enc.int(i64::from(entry.incomplete));
    enc.end();
}

/// Appends the bencoded scrape body, `d5:filesd<20-byte hash>d8:complete..e..ee`.
///
/// Entries may come in any order: the `files` dictionary is written sorted by info-hash, each
/// hash once (the first entry for a repeated hash wins). Sorted input is written directly;
/// otherwise one vector of references is allocated and sorted.
pub fn write_scrape_body(entries: &[ScrapeEntry], out: &mut Vec<u8>) {
    out.reserve(12 + entries.len() * 85);
    let mut enc = Encoder::new(out);
    enc.begin_dict();
    enc.str("files");
    enc.begin_dict();
    if entries.is_sorted_by(|a, b| a.info_hash < b.info_hash) {
        for entry in entries {
            write_scrape_entry(entry, &mut enc);
        }
    } else {
        let mut sorted: Vec<&ScrapeEntry> = entries.iter().collect();
        // Stable, so the first of equal hashes stays first and `dedup` keeps it.
        sorted.sort_by_key(|e| e.info_hash);
        sorted.dedup_by_key(|e| e.info_hash);
        for entry in sorted {
            write_scrape_entry(entry, &mut enc);
        }
    }
    enc.end();
    enc.end();
}

/// Appends `d14:failure reason<len>:<reason>e`.
pub fn write_failure_body(reason: &str, out: &mut Vec<u8>) {
    write_failure_body_retry(reason, None, out);
}

/// Appends a failure body with BEP 31's `retry in` when `retry_in_secs` is set.
///
/// BEP 31 counts `retry in` in **minutes**; the seconds given here are rounded up to whole
/// minutes (at least 1), so a client never retries earlier than asked.
pub fn write_failure_body_retry(reason: &str, retry_in_secs: Option<u32>, out: &mut Vec<u8>) {
    let mut enc = Encoder::new(out);
    enc.begin_dict();
    enc.str("failure reason");
    enc.str(reason);
    if let Some(secs) = retry_in_secs {
        enc.str("retry in");
        enc.int(i64::from(secs.div_ceil(60).max(1)));
    }
    enc.end();
}

/// Appends a failure body with BEP 31 `retry in: never`, telling the client to stop
/// announcing (for example, a torrent that will never be allowed).
pub fn write_failure_body_never_retry(reason: &str, out: &mut Vec<u8>) {
    let mut enc = Encoder::new(out);
    enc.begin_dict();
    enc.str("failure reason");
    enc.str(reason);
    enc.str("retry in");
    enc.str("never");
    enc.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbts_proto::bencode::{DecodeLimits, Value, decode};

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn base(peers: PeerList<'_>) -> AnnounceResponse<'_> {
        AnnounceResponse {
            interval: 1800,
            min_interval: 900,
            complete: 3,
            incomplete: 2,
            downloaded: 7,
            tracker_id: None,
            warning: None,
            external_ip: None,
            peers,
        }
    }

    fn body(resp: &AnnounceResponse<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write_announce_body(resp, &mut out);
        decode(&out, &DecodeLimits::default()).expect("announce body is canonical bencode");
        out
    }

    #[test]
    fn heads() {
        let table: &[(u16, &str, usize, bool, &[u8])] = &[
            (200, BENCODE_CONTENT_TYPE, 12, true, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"),
            (404, "application/json", 0, false, b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            (431, "text/plain", 5, false, b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"),
            (299, "a\r\nb", 1, true, b"HTTP/1.1 299 \r\nContent-Type: ab\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"),
            (0, "x", 1, true, b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: x\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"),
        ];
        for &(status, ct, len, keep_alive, expected) in table {
            let mut out = Vec::new();
            write_head(&mut out, status, ct, len, keep_alive);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(expected));
        }
        let mut out = Vec::new();
        write_head_with_headers(
            &mut out,
            503,
            "x",
            &[("Retry-After", b"1"), ("A\r\n", b"b\nc")],
            2,
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: x\r\nRetry-After: 1\r\nA: bc\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        for status in [200, 400, 401, 403, 404, 405, 409, 413, 415, 429, 431, 500, 501, 503, 505] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
    }

    #[test]
    fn response_round_trips_through_client_parser() {
        use crate::request::Status;
        let mut out = Vec::new();
        write_response(&mut out, 200, BENCODE_CONTENT_TYPE, b"d8:intervali1ee", false);
        let Ok(Status::Complete(head, n)) = parse_response_head(&out) else { panic!() };
        assert_eq!(
            head,
            ResponseHead { status: 200, content_length: Some(15), keep_alive: false, head_len: n }
        );
        assert_eq!(&out[n..], b"d8:intervali1ee");
    }

    #[test]
    fn announce_compact_v4_and_v6() {
        let peers4 = [(v4("1.2.3.4"), 6881), (v4("10.0.0.255"), 0xABCD)];
        let peers6 = [(v6("2001:db8::1"), 51413)];
        let mut resp = base(PeerList::Compact { v4: &peers4, v6: &peers6 });
        resp.external_ip = Some(IpAddr::V4(v4("192.0.2.9")));
        resp.tracker_id = Some(b"t1");
        resp.warning = Some("slow down");
        let mut expected = b"d8:completei3e10:downloadedi7e11:external ip4:\xc0\x00\x02\x09\
            10:incompletei2e8:intervali1800e12:min intervali900e\
            5:peers12:\x01\x02\x03\x04\x1a\xe1\x0a\x00\x00\xff\xab\xcd\
            6:peers618:"
            .to_vec();
        expected.extend_from_slice(&v6("2001:db8::1").octets());
        expected.extend_from_slice(b"\xc8\xd5");
        expected.extend_from_slice(b"10:tracker id2:t115:warning message9:slow downe");
        assert_eq!(body(&resp), expected);
    }

    #[test]
    fn announce_compact_empty_and_v6_external_ip() {
        let mut resp = base(PeerList::Compact { v4: &[], v6: &[] });
        resp.external_ip = Some(IpAddr::V6(v6("::1")));
        let mut expected = b"d8:completei3e10:downloadedi7e11:external ip16:".to_vec();
        expected.extend_from_slice(&v6("::1").octets());
        expected
            .extend_from_slice(b"10:incompletei2e8:intervali1800e12:min intervali900e5:peers0:e");
        assert_eq!(body(&resp), expected);
    }

    #[test]
    fn announce_dict_with_and_without_peer_id() {
        let peers = [
            (IpAddr::V4(v4("1.2.3.4")), 6881, Some(PeerId(*b"-qB4620-abcdefghijkl"))),
            (IpAddr::V6(v6("2001:db8::1")), 443, None),
        ];
        let resp = base(PeerList::Dict { peers: &peers });
        assert_eq!(
            String::from_utf8(body(&resp)).unwrap(),
            "d8:completei3e10:downloadedi7e10:incompletei2e8:intervali1800e12:min intervali900e\
             5:peersld2:ip7:1.2.3.47:peer id20:-qB4620-abcdefghijkl4:porti6881ee\
             d2:ip11:2001:db8::14:porti443eeee"
        );
        let empty = base(PeerList::Dict { peers: &[] });
        assert!(body(&empty).ends_with(b"5:peerslee"));
    }

    #[test]
    fn scrape_two_hashes_any_order() {
        let a = ScrapeEntry {
            info_hash: InfoHash([0x11; 20]),
            complete: 1,
            downloaded: 20,
            incomplete: 3,
        };
        let b = ScrapeEntry {
            info_hash: InfoHash([0xee; 20]),
            complete: 0,
            downloaded: 0,
            incomplete: 0,
        };
        let mut expected = b"d5:filesd20:".to_vec();
        expected.extend_from_slice(&[0x11; 20]);
        expected.extend_from_slice(b"d8:completei1e10:downloadedi20e10:incompletei3ee20:");
        expected.extend_from_slice(&[0xee; 20]);
        expected.extend_from_slice(b"d8:completei0e10:downloadedi0e10:incompletei0eeee");
        for entries in [[a, b], [b, a]] {
            let mut out = Vec::new();
            write_scrape_body(&entries, &mut out);
            assert_eq!(out, expected);
        }
        // Duplicates are written once, the first entry winning.
        let mut out = Vec::new();
        write_scrape_body(&[b, a, ScrapeEntry { complete: 9, ..a }, b], &mut out);
        assert_eq!(out, expected);
        let mut out = Vec::new();
        write_scrape_body(&[], &mut out);
        assert_eq!(out, b"d5:filesdee");
    }

    #[test]
    fn failure_bodies() {
        let mut out = Vec::new();
        write_failure_body("invalid info_hash: expected 20 bytes", &mut out);
        assert_eq!(out, b"d14:failure reason36:invalid info_hash: expected 20 bytese");
        let table = [(Some(0), "i1e"), (Some(1), "i1e"), (Some(60), "i1e"), (Some(61), "i2e")];
        for (secs, int) in table {
            let mut out = Vec::new();
            write_failure_body_retry("busy", secs, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("d14:failure reason4:busy8:retry in{int}e")
            );
        }
        let mut out = Vec::new();
        write_failure_body_retry("x", None, &mut out);
        assert_eq!(out, b"d14:failure reason1:xe");
        let mut out = Vec::new();
        write_failure_body_never_retry("unregistered torrent", &mut out);
        assert_eq!(out, b"d14:failure reason20:unregistered torrent8:retry in5:nevere");
        let v = decode(&out, &DecodeLimits::default()).unwrap();
        assert_eq!(v.get(b"retry in").and_then(Value::as_str), Some("never"));
    }

    #[test]
    fn largest_announce_fits_reserve_estimate() {
        // 200 v4 and 200 v6 peers, every optional key and the longest numbers: the estimate
        // passed to `reserve` covers the whole body, so writing does not reallocate.
        let peers4 = vec![(v4("255.255.255.255"), 65535); 200];
        let peers6 = vec![(v6("ffff::ffff"), 65535); 200];
        let mut resp = base(PeerList::Compact { v4: &peers4, v6: &peers6 });
        resp.external_ip = Some(IpAddr::V6(v6("::1")));
        resp.tracker_id = Some(&[0; 20]);
        resp.warning = Some("w");
        resp.interval = u32::MAX;
        resp.min_interval = u32::MAX;
        resp.complete = u32::MAX;
        resp.incomplete = u32::MAX;
        resp.downloaded = u32::MAX;
        let mut out = Vec::new();
        write_announce_body(&resp, &mut out);
        assert!(out.len() <= 256 + 200 * 24 + 21, "{}", out.len());
    }
}
