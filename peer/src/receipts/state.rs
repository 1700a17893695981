//! The receipt state a torrent keeps (what `session::torrent::pbts` acts on): the session's
//! receipt context, each peer's side of the exchange, the torrent-wide signed receipts and
//! counters, the verification queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pbts_verifier::bep10::ExtensionIds;
use pbts_verifier::receipt::{PublicKeyBytes, Receipt};
use tokio::sync::Notify;

use super::Config;
use super::ledger::Ledger;
use super::signer::Signer;
use super::store::Store;
use crate::picker::PeerKey;

/// What a torrent needs to exchange receipts.
#[derive(Debug)]
pub struct Pbts {
    /// Settings.
    pub config: Config,
    /// Our key: receipts we earn name it as `sender_pk`, those we sign as `receiver_pk`.
    pub public_key: PublicKeyBytes,
    /// The torrent's v1 piece hashes (what receipts sign).
    pub piece_hashes: Vec<[u8; 20]>,
    /// Signs our receipts.
    pub signer: Signer,
    /// Keeps the receipts we earn.
    pub store: Arc<Store>,
    /// Wakes the reporter.
    pub wake: Arc<Notify>,
    /// Received receipts waiting for verification.
    pub verify_queue: std::sync::Mutex<VerifyQueue>,
}

/// Receipts waiting for the verification task, and whether it runs.
#[derive(Debug, Default)]
pub struct VerifyQueue {
    pub(crate) items: Vec<(PeerKey, Receipt)>,
    pub(crate) running: bool,
    /// When the oldest waiting receipt arrived.
    pub(crate) since: Option<Instant>,
    /// Verify what waits now (shutdown).
    pub(crate) flush: bool,
}

/// A peer that speaks the extension.
#[derive(Debug, Clone, Copy)]
pub struct PbtsPeer {
    /// The ids it receives our messages under.
    pub(crate) ids: ExtensionIds,
    /// Its key.
    pub(crate) pk: PublicKeyBytes,
}

/// Per-peer receipt state.
#[derive(Debug, Default)]
pub struct PeerReceipts {
    pub(crate) pbts: Option<PbtsPeer>,
    /// As uploader: what it owes us.
    pub(crate) ledger: Ledger,
    /// As downloader: signed receipts for it, not yet sent.
    pub(crate) outbox: Vec<Receipt>,
    /// A timer will send the outbox.
    pub(crate) outbox_armed: bool,
    /// Receipts for it on the signer thread.
    pub(crate) signing: u32,
    /// Its receipts waiting for verification.
    pub(crate) unverified: usize,
    /// Both of us are seeds: close once no receipt is pending either way, or at this time.
    pub(crate) close_by: Option<Instant>,
}

/// Receipt counters of a torrent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptStats {
    /// Receipts we signed.
    pub signed: u64,
    /// Receipts we sent (re-sends included).
    pub sent: u64,
    /// Receipts we earned and stored (new ones).
    pub stored: u64,
    /// Receipts peers sent us that were not valid.
    pub bad: u64,
    /// Receipts whose signatures we verified.
    pub verified: u64,
    /// CPU time spent verifying them (BLS batch verification; wall time where the thread's
    /// CPU time is not available), microseconds.
    pub verify_micros: u64,
}

/// Torrent-wide receipt state.
#[derive(Debug, Default)]
pub struct Receipts {
    /// Every receipt we signed, by piece (to send again to a peer that comes back or asks).
    pub(crate) signed: HashMap<u32, Receipt>,
    /// Keys of peers that left.
    pub(crate) departed: HashMap<PeerKey, PublicKeyBytes>,
    pub(crate) stats: ReceiptStats,
}
