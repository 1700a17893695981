//! The bodies of the fuzz targets in `proto/fuzz/`: one function per target, each taking the
//! fuzzer's bytes. They assert more than "no panic": whatever decodes re-encodes to the bytes
//! it came from (or to bytes that decode to the same value), and every error has a message.
//!
//! The nightly fuzzer calls them from `fuzz/fuzz_targets/<target>.rs`; on stable,
//! `tests/fuzz_corpus.rs` replays every seed (`fuzz/seeds/<target>/`) and every crash input
//! (`fuzz/regressions/<target>/`) through them, so CI keeps what the fuzzer found.
//! `scripts/fuzz.sh` runs them all.
//!
//! Not an API: for the fuzzer and the replay test only.

use crate::InfoHash;
use crate::bencode::{self, DecodeError, DecodeLimits, decode, decode_prefix, dict_value_span};
use crate::peer_wire::{self, Bitfield, Handshake, Message};
use crate::udp::{self, AddressFamily, Request, RequestError, Response};

/// A fuzz target: the name of its `[[bin]]` in `fuzz/Cargo.toml`, and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("bencode", bencode),
    ("udp_request", udp_request),
    ("udp_response", udp_response),
    ("metainfo", metainfo),
    ("peer_wire", peer_wire),
];

/// Bencode decoding: never over-consumes, and (being canonical-only) re-encodes anything it
/// accepts to exactly the input bytes; `dict_value_span` agrees with `decode`.
pub fn bencode(data: &[u8]) {
    let limits = DecodeLimits { max_depth: 32, max_items: 4096 };
    match decode_prefix(data, &limits) {
        Ok((value, used)) => {
            assert!(used <= data.len());
            let mut again = Vec::new();
            value.encode(&mut again);
            assert_eq!(&again[..], &data[..used]);
            if used == data.len() {
                assert_eq!(decode(data, &limits), Ok(value.clone()));
            } else {
                assert_eq!(decode(data, &limits), Err(DecodeError::TrailingBytes { offset: used }));
            }
            if let Some(entries) = value.as_dict() {
                for (key, v) in entries {
                    let span = dict_value_span(data, key, &limits)
                        .expect("valid input")
                        .expect("present key");
                    assert_eq!(decode(&data[span], &limits).as_ref(), Ok(v));
                }
            }
        }
        Err(e) => {
            assert!(e.offset().is_none_or(|o| o <= data.len()));
            assert_eq!(decode(data, &limits), Err(e));
            assert!(dict_value_span(data, b"info", &limits).is_err());
        }
    }
}

/// BEP 15 request decoding: every announce it accepts re-encodes to a request that decodes to
/// the same value; scrapes and connects have the lengths their kind says.
pub fn udp_request(data: &[u8]) {
    match udp::parse_request(data) {
        Ok(Request::Announce(a)) => {
            let mut again = Vec::new();
            udp::write_announce_request(&mut again, &a);
            assert_eq!(udp::parse_request(&again), Ok(Request::Announce(a)));
            assert!(a.url_data.len() <= data.len());
        }
        Ok(Request::Scrape { info_hashes, .. }) => {
            assert!(!info_hashes.is_empty() && info_hashes.len() % 20 == 0);
            assert_eq!(info_hashes.len(), data.len() - 16);
        }
        Ok(Request::Connect { .. }) => assert!(data.len() >= 16),
        Err(RequestError::Drop) => {}
        Err(RequestError::Sendable { message, .. }) => assert!(!message.is_empty()),
    }
}

/// BEP 15 response decoding (client side). The first byte picks the address family (odd: IPv6),
/// the rest is the datagram. Announces and scrapes re-encode with the server-side writers to
/// exactly the datagram, connects to its first 16 bytes, errors to their (bounded) message when
/// it was valid UTF-8; refusals have a message.
pub fn udp_response(data: &[u8]) {
    let Some((&pick, data)) = data.split_first() else { return };
    let family = if pick & 1 == 1 { AddressFamily::V6 } else { AddressFamily::V4 };
    let mut again = Vec::new();
    match udp::parse_response(data, family) {
        Ok(Response::Connect { transaction_id, connection_id }) => {
            udp::write_connect(&mut again, transaction_id, connection_id);
            assert_eq!(&again[..], &data[..16]);
        }
        Ok(Response::Announce(a)) => {
            udp::write_announce_head(
                &mut again,
                a.transaction_id,
                a.interval,
                a.leechers,
                a.seeders,
            );
            for peer in a.peers {
                match (peer, family) {
                    (std::net::SocketAddr::V4(p), AddressFamily::V4) => {
                        udp::write_peer_v4(&mut again, *p.ip(), p.port());
                    }
                    (std::net::SocketAddr::V6(p), AddressFamily::V6) => {
                        udp::write_peer_v6(&mut again, *p.ip(), p.port());
                    }
                    _ => panic!("peer {peer} is not of family {family:?}"),
                }
            }
            assert_eq!(again, data);
            assert_eq!(a.peers.len() * family.peer_len(), data.len() - 20);
        }
        Ok(Response::Scrape { transaction_id, entries }) => {
            udp::write_scrape_head(&mut again, transaction_id);
            for e in entries.iter() {
                udp::write_scrape_entry(&mut again, e.seeders, e.completed, e.leechers);
            }
            assert_eq!(again, data);
        }
        Ok(Response::Error { transaction_id, message }) => {
            assert!(message.len() <= udp::MAX_ERROR_MESSAGE_BYTES * 3);
            if let std::borrow::Cow::Borrowed(text) = message {
                udp::write_error(&mut again, transaction_id, text);
                assert_eq!(&again[..], &data[..again.len()]);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// `.torrent` metainfo: what parses has the info-hashes of its `info` dictionary's exact bytes,
/// a positive piece length, and one or two announce hashes; refusals have a message.
pub fn metainfo(data: &[u8]) {
    use sha1::Digest as _;
    match crate::metainfo::parse_torrent(data) {
        Ok(m) => {
            let limits = DecodeLimits::default();
            let span = bencode::dict_value_span(data, b"info", &limits)
                .expect("a parsed torrent is bencode")
                .expect("a parsed torrent has info");
            let raw = &data[span];
            assert!(m.v1.is_some() || m.v2.is_some());
            if let Some(v1) = m.v1 {
                assert_eq!(v1, InfoHash(sha1::Sha1::digest(raw).into()));
            }
            if let Some(v2) = m.v2 {
                assert_eq!(v2, <[u8; 32]>::from(sha2::Sha256::digest(raw)));
            }
            assert!(m.piece_length > 0);
            let hashes = m.announce_hashes();
            assert_eq!(hashes.len(), usize::from(m.v1.is_some()) + usize::from(m.v2.is_some()));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The peer wire as a connection reads it: a handshake, then frames back to back. The first
/// byte picks the frame bound (so small bounds are explored too). Every frame decoded
/// re-encodes to exactly the bytes it used, every proper prefix of it is incomplete, and a
/// bitfield either fits a torrent of the matching piece count or says why not.
pub fn peer_wire(data: &[u8]) {
    let Some((&bound, mut rest)) = data.split_first() else { return };
    let max_frame = u32::from(bound) * 64;
    match Handshake::decode(rest) {
        Ok(Some(h)) => {
            assert_eq!(&h.encode()[..], &rest[..peer_wire::HANDSHAKE_LEN]);
            rest = &rest[peer_wire::HANDSHAKE_LEN..];
        }
        Ok(None) => return,
        // Not a handshake: read the bytes as frames anyway (after the handshake is where a
        // connection spends its life).
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    loop {
        match peer_wire::decode(rest, max_frame) {
            Ok(Some((message, used))) => {
                assert!(used >= 4 && used <= rest.len());
                assert_eq!(message.encoded_len(), used);
                let mut again = Vec::new();
                message.encode(&mut again);
                assert_eq!(&again[..], &rest[..used]);
                assert_eq!(peer_wire::decode(&rest[..used - 1], max_frame), Ok(None));
                if let Message::Bitfield(bits) = message {
                    let pieces = u32::try_from(bits.len() * 8).unwrap_or(u32::MAX);
                    match Bitfield::from_wire(bits, pieces) {
                        Ok(b) => assert_eq!(b.as_bytes(), bits),
                        Err(e) => assert!(!e.to_string().is_empty()),
                    }
                    if let Ok(b) = Bitfield::from_wire(bits, pieces.saturating_sub(3)) {
                        assert!(b.count() <= b.pieces());
                    }
                }
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
}
