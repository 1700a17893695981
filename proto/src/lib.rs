//! BitTorrent wire formats, shared by the tracker (`pbts-engine`), the HTTP layer
//! (`pbts-http`), the receipt codec (`pbts-verifier`) and the peer (`pbts-peer`).
//!
//! Pure: bytes in, typed values or typed errors out. No I/O, no runtime, no allocation on the
//! decoding hot paths, and no panic on any input (every decoder has a fuzz target in
//! `proto/fuzz`, whose seeds and regressions `cargo test` replays).
//!
//! | module | what |
//! |---|---|
//! | [`types`] | [`InfoHash`], [`PeerId`], [`AnnounceEvent`] |
//! | [`bencode`] | streaming encoder, strict borrowing decoder, raw value spans (BEP 3) |
//! | [`udp`] | the UDP tracker protocol (BEP 15) with URL data (BEP 41) |
//! | [`metainfo`] | `.torrent` files: v1, v2 and hybrid info-hashes, piece layout (BEP 3, 52) |
//! | [`peer_wire`] | handshake and messages between peers (BEP 3, 6, 10), bitfields |
//! | [`decimal`] | allocation-free decimal writers |

#![forbid(unsafe_code)]

pub mod bencode;
pub mod decimal;
pub mod fuzzing;
pub mod metainfo;
pub mod peer_wire;
pub mod types;
pub mod udp;

pub use types::{AnnounceEvent, InfoHash, PeerId};
