//! Swarm state: peers per torrent, sharded by info-hash.
//!
//! [`store`] imports neither glommio nor sockets, so it tests as pure code.

pub mod store;

pub use store::{AnnounceInput, AnnounceOutcome, Credit, PeerAnnounce, SelectedPeers, SwarmStore};
