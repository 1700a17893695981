//! # pbts-peer
//!
//! A BitTorrent peer that downloads and seeds with any client (BEP 3), speaks the extension
//! protocol (BEP 10) and the fast extension (BEP 6), respects private torrents (BEP 27: only the
//! torrent's trackers) and announces over HTTP and UDP trackers (BEP 15, with BEP 41 URL data so
//! passkeys work over UDP). It is the client side of pbts: the tracker credits upload only for
//! receipts that downloaders sign, and this peer is what moves the pieces they sign for.
//!
//! Runtime: tokio (the tracker keeps glommio for its io_uring hot path; a client runs on laptops
//! and non-Linux systems too). The wire formats are `pbts_proto`'s.
//!
//! | module | what |
//! |---|---|
//! | [`session`] | one torrent: listening, connecting, announcing, the protocol's decisions |
//! | [`receipts`] | pbts receipts over BEP 10: signing, the durable store, reporting to the tracker |
//! | [`identity`] | our BLS key and account with a pbts tracker (`pbts-peer register`) |
//! | [`picker`] | which blocks to request from which peer: whole pieces per peer, rarest first, endgame |
//! | [`choker`] | whom we upload to: tit-for-tat and an optimistic unchoke |
//! | [`tracker`] | announces over HTTP and UDP (BEP 3, 15, 23, 41), tiers of trackers (BEP 12) |
//! | [`wire`] | one peer connection: handshake, bounded message frames |
//! | [`rate`] | rate meters and the shared rate limiters |
//! | [`storage`] | the torrent's files: layout, symlink-safe creation, block I/O, SHA-1 checks, the disk thread |
//! | [`units`] | sizes, rates and durations as people type and read them |

pub mod choker;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod picker;
pub mod rate;
pub mod receipts;
pub mod session;
pub mod storage;
pub mod tracker;
pub mod units;
pub mod wire;
