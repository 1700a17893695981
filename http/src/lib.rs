//! Pure HTTP/1.1 and the HTTP tracker protocol (BEP 3, 7, 23, 48) for pbts; the shared
//! BitTorrent types and bencode live in `pbts-proto`.
//!
//! This crate turns bytes into requests and responses into bytes. It does no I/O, owns no
//! threads or runtime, and never panics on input: every parser returns a typed error or
//! [`request::Status::Partial`]. The engine drives it from its connection tasks; load generators
//! and tests use the same code as a client (query writers, response-head parser).
//!
//! | module | what |
//! |---|---|
//! | [`request`] | zero-copy HTTP/1.1 request parser (memchr scans), response-head parser |
//! | [`query`] | percent-decoding, announce/scrape queries (parse and write) |
//! | [`path`] | percent-decoding of path segments (route parameters such as `/user/<name>`) |
//! | [`response`] | response heads, announce/scrape/failure bodies |
//!
//! # Non-goals
//!
//! Chunked request bodies (rejected with 501), HTTP/2, compression, and anything a tracker
//! does not route on. Headers other than the few in [`request::Request`] are validated and
//! skipped.
//!
//! # Invariants
//!
//! * `Complete(_, n)` always has `n <= buf.len()`, and a request's head never exceeds
//!   [`request::Limits::max_header_bytes`].
//! * `info_hash` and `peer_id` are bytes, never text; `parse_announce(write_announce_query(x))
//!   == x`.
//!
//! # Example
//!
//! ```
//! use pbts_http::query::parse_announce;
//! use pbts_http::request::{parse_request, Limits, Status};
//! use pbts_http::response::{
//!     write_announce_body, write_failure_body, write_response, AnnounceResponse, PeerList,
//!     BENCODE_CONTENT_TYPE,
//! };
//!
//! // 1. Parse the request head from what the socket delivered so far.
//! let buf = b"GET /announce?info_hash=%01%02%03%04%05%06%07%08%09%0A\
//!             %0B%0C%0D%0E%0F%10%11%12%13%14&peer_id=-TR4040-abcdefghijkl&port=51413&left=0&compact=1 HTTP/1.1\r\n\
//!             Host: tracker.example\r\n\r\n";
//! let Status::Complete(req, _used) = parse_request(buf, &Limits::default())? else {
//!     unreachable!("the whole request is in the buffer");
//! };
//!
//! // 2. Decode the announce query; a bad query becomes a bencoded failure for the client.
//! let mut body = Vec::new();
//! match parse_announce(req.query) {
//!     Ok(announce) => {
//!         assert_eq!(announce.port, 51413);
//!         // 3. Write the announce body: here one IPv4 peer in compact form.
//!         let peers = [("192.0.2.1".parse()?, 6881)];
//!         let resp = AnnounceResponse {
//!             interval: 1800,
//!             min_interval: 900,
//!             complete: 1,
//!             incomplete: 0,
//!             downloaded: 0,
//!             tracker_id: None,
//!             warning: None,
//!             external_ip: None,
//!             peers: PeerList::Compact { v4: &peers, v6: &[] },
//!         };
//!         write_announce_body(&resp, &mut body);
//!     }
//!     Err(e) => write_failure_body(e.as_str(), &mut body),
//! }
//!
//! // 4. Frame it; failures also use status 200, which is what clients expect.
//! let mut out = Vec::new();
//! write_response(&mut out, 200, BENCODE_CONTENT_TYPE, &body, req.keep_alive);
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fuzzing;
pub mod path;
pub mod query;
pub mod request;
pub mod response;
mod util;
