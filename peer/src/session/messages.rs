//! What the torrent and its connections tell each other: the writer's commands, why a
//! connection ended, and the bounds both sides enforce.

use std::time::Duration;

use bytes::Bytes;
use pbts_proto::peer_wire::BlockRef;

use crate::storage::StorageError;
use crate::wire::ConnError;

/// Requests of one peer queued for serving; more are refused (BEP 6) or ignored.
pub const MAX_SERVE_QUEUE: usize = 500;

/// Largest block a peer may request: libtorrent, Transmission and aria2 all ask 16 KiB; some
/// old clients ask up to 128 KiB.
pub const MAX_REQUEST_LEN: u32 = 128 * 1024;

/// What the torrent asks a connection's writer to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// 0.
    Choke,
    /// 1.
    Unchoke,
    /// 2.
    Interested,
    /// 3.
    NotInterested,
    /// 4.
    Have(u32),
    /// 6.
    Request(BlockRef),
    /// 8.
    Cancel(BlockRef),
    /// 0x10 (BEP 6): a request of the peer we will not serve.
    Reject(BlockRef),
    /// A request of the peer to serve from disk.
    Serve(BlockRef),
    /// The peer withdrew a request (8): drop it if not yet sent.
    Unserve(BlockRef),
    /// Whole frames to send as they are (our BEP 10 messages).
    Raw(Bytes),
    /// Close the connection.
    Close,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The connection's protocol or socket failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The peer broke the protocol in a way the codec cannot see.
    #[error("protocol: {0}")]
    Protocol(&'static str),
    /// The peer was silent for [`IDLE_TIMEOUT`].
    #[error("silent for {0:?}")]
    Idle(Duration),
    /// The peer read nothing of what we sent for this long.
    #[error("took nothing we sent for {0:?}")]
    Stalled(Duration),
    /// The torrent dropped the peer (banned, both seeds, shutting down).
    #[error("closed by us")]
    Closed,
    /// Our disk failed while serving.
    #[error("disk: {0}")]
    Disk(#[from] StorageError),
}
