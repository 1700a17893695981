//! # pbts-benches
//!
//! criterion benches of pbts hot paths (`cargo bench -p pbts-benches`). Every bench asserts what
//! it computed, so a broken fast path cannot pass as a fast one. Realistic inputs live here.

#![forbid(unsafe_code)]

/// A qBittorrent 4.6 (libtorrent 2.0) announce as seen on the wire: binary info-hash with bytes
/// >= 0x80, unescaped `!`/`(`/`*` left by libtorrent, lower-case escapes.
pub const QBITTORRENT_ANNOUNCE: &[u8] = b"GET /0123456789abcdef0123456789abcdef/announce?info_hash=%b4%9d%e1%c6%ab!%fe%0f(%a1%9a%ea*%e4%3c%d8%b5%ac%a8%e3&peer_id=-qB4630-k8hj0wgej6ch&port=6881&uploaded=0&downloaded=0&left=1073741824&corrupt=0&key=7F1A3C2B&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0 HTTP/1.1\r\nHost: tracker.example:8000\r\nUser-Agent: qBittorrent/4.6.3\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n";

/// A Transmission 3.00 announce: upper-case escapes, `key` and `numwant` after `event`.
pub const TRANSMISSION_ANNOUNCE: &[u8] = b"GET /announce/0123456789abcdef0123456789abcdef?info_hash=%B4%9D%E1%C6%AB%21%FE%0F%28%A1%9A%EA%2A%E4%3C%D8%B5%AC%A8%E3&peer_id=-TR3000-6qjffm4ztn6n&port=51413&uploaded=0&downloaded=0&left=1073741824&numwant=80&key=5e4a1b2c&compact=1&supportcrypto=1&event=started HTTP/1.1\r\nHost: tracker.example:8000\r\nUser-Agent: Transmission/3.00\r\nAccept: */*\r\nAccept-Encoding: deflate, gzip\r\n\r\n";
