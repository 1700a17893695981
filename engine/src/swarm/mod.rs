//! Swarm state: peers per torrent, sharded by info-hash.
//!
//! [`table`] imports neither glommio nor sockets, so it tests as pure code.

pub mod table;

pub use table::snapshot::{SnapshotError, SnapshotStats};
pub use table::{AnnounceInput, AnnounceOutcome, Credit, PeerAnnounce, SelectedPeers, SwarmTable};
