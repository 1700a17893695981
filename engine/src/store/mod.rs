//! Durable state: users, passkeys, per-user per-torrent statistics, snatch counts and registered
//! torrents, in one crash-safe redb database (`<data_dir>/pbts.redb`).
//!
//! One `store-01` thread owns the database. Serving cores never touch it: they send
//! [`StoreCmd`]s over a channel. Announce statistics arrive in batches (every
//! `flush_interval_ms` per core) and are written in one transaction; admin writes commit before
//! their reply is sent, so what the API acknowledges is durable.
//!
//! The in-memory [`Accounts`] mirror is what the hot path reads (passkey lookup, ratio); it is
//! loaded from the database at start-up and updated in place by announces.

mod db;

pub use db::{Db, StoreError};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use pbts_proto::InfoHash;
use serde::{Deserialize, Serialize};

use pbts_verifier::receipt::PublicKeyBytes;

use crate::config::RatioSource;
use crate::swarm::table::UserId;
use pbts_verifier::credit::{PieceClaim, Rejection};
use pbts_verifier::receipt::Receipt;

/// Length of a passkey in bytes (32 lowercase hex characters on the wire).
pub const PASSKEY_LEN: usize = 32;

/// A user's secret announce key: 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Passkey(pub [u8; PASSKEY_LEN]);

impl std::fmt::Debug for Passkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A passkey is a credential: never print it whole.
        write!(f, "Passkey({}…)", String::from_utf8_lossy(&self.0[..4]))
    }
}

impl Passkey {
    /// Accepts exactly 32 lowercase hex characters.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; PASSKEY_LEN] = bytes.try_into().ok()?;
        arr.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')).then_some(Self(arr))
    }

    /// A fresh random passkey (128 bits from the OS generator).
    pub fn random() -> Self {
        let raw: [u8; 16] = rand::random();
        let mut out = [0u8; PASSKEY_LEN];
        const_hex::encode_to_slice(raw, &mut out).expect("32 hex digits for 16 bytes");
        Self(out)
    }

    /// The passkey as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("passkeys are ASCII hex by construction")
    }
}

/// A user as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Internal id.
    pub id: UserId,
    /// Unique name.
    pub name: String,
    /// Announce passkey (32 hex chars).
    pub passkey: String,
    /// Unix seconds at creation.
    pub created_at: u64,
    /// Claimed bytes uploaded (sum of announce deltas).
    pub uploaded: u64,
    /// Claimed bytes downloaded (sum of announce deltas).
    pub downloaded: u64,
    /// The user's BLS12-381 public key (base64 of the 48-byte compressed point), once registered
    /// through `POST /register`.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Bytes uploaded as proven by receipts other users signed (`POST /report`).
    #[serde(default)]
    pub verified_uploaded: u64,
    /// Bytes downloaded as proven by receipts this user signed.
    #[serde(default)]
    pub verified_downloaded: u64,
}

/// A user in memory.
#[derive(Debug)]
pub struct User {
    /// Internal id.
    pub id: UserId,
    /// Unique name.
    pub name: String,
    /// Announce passkey.
    pub passkey: Passkey,
    /// Unix seconds at creation.
    pub created_at: u64,
    /// Claimed bytes uploaded.
    pub uploaded: AtomicU64,
    /// Claimed bytes downloaded.
    pub downloaded: AtomicU64,
    /// The registered BLS public key, once registered (set at most once: a user created by an
    /// admin gains one through `POST /register` with their passkey).
    pub public_key: std::sync::OnceLock<PublicKeyBytes>,
    /// Receipt-proven bytes uploaded (updated after each credit is committed).
    pub verified_uploaded: AtomicU64,
    /// Receipt-proven bytes downloaded.
    pub verified_downloaded: AtomicU64,
    /// Peer entries of this user in the swarms now (in memory only): what
    /// `limits.max_torrents_per_user` caps.
    pub active_peers: std::sync::atomic::AtomicU32,
}

impl User {
    fn from_record(r: &UserRecord) -> Option<Self> {
        let public_key = std::sync::OnceLock::new();
        if let Some(b64) = &r.public_key {
            let _ = public_key.set(decode_public_key(b64)?);
        }
        Some(Self {
            public_key,
            id: r.id,
            name: r.name.clone(),
            passkey: Passkey::parse(r.passkey.as_bytes())?,
            created_at: r.created_at,
            uploaded: AtomicU64::new(r.uploaded),
            downloaded: AtomicU64::new(r.downloaded),
            verified_uploaded: AtomicU64::new(r.verified_uploaded),
            verified_downloaded: AtomicU64::new(r.verified_downloaded),
            active_peers: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A snapshot as a record.
    pub fn to_record(&self) -> UserRecord {
        UserRecord {
            id: self.id,
            name: self.name.clone(),
            passkey: self.passkey.as_str().to_owned(),
            created_at: self.created_at,
            uploaded: self.uploaded.load(Ordering::Relaxed),
            downloaded: self.downloaded.load(Ordering::Relaxed),
            public_key: self.public_key.get().map(encode_public_key),
            verified_uploaded: self.verified_uploaded.load(Ordering::Relaxed),
            verified_downloaded: self.verified_downloaded.load(Ordering::Relaxed),
        }
    }

    /// (uploaded, downloaded) as the ratio gate counts them from `source`.
    ///
    /// `Verified` counts only proven upload, and the larger of the claimed and the proven
    /// download: a client cannot hide download that it signed receipts for.
    pub fn ratio_counts(&self, source: RatioSource) -> (u64, u64) {
        let claimed_down = self.downloaded.load(Ordering::Relaxed);
        match source {
            RatioSource::Claimed => (self.uploaded.load(Ordering::Relaxed), claimed_down),
            RatioSource::Verified => (
                self.verified_uploaded.load(Ordering::Relaxed),
                claimed_down.max(self.verified_downloaded.load(Ordering::Relaxed)),
            ),
        }
    }

    /// uploaded / downloaded from `source`; `None` when nothing was downloaded (infinite or
    /// undefined: JSON has no Infinity).
    pub fn ratio(&self, source: RatioSource) -> Option<f64> {
        let (up, down) = self.ratio_counts(source);
        (down > 0).then(|| up as f64 / down as f64)
    }
}

/// Base64 (standard, padded) of a public key, as the JSON API spells keys.
pub fn encode_public_key(pk: &PublicKeyBytes) -> String {
    crate::encoding::b64(&pk.0)
}

/// Decodes base64 of exactly 48 bytes (not yet checked to be a valid point).
pub fn decode_public_key(b64: &str) -> Option<PublicKeyBytes> {
    Some(PublicKeyBytes(crate::encoding::unb64(b64)?.try_into().ok()?))
}

/// The in-memory account index the hot path reads.
#[derive(Debug, Default)]
pub struct Accounts {
    by_passkey: DashMap<Passkey, Arc<User>>,
    by_name: DashMap<String, Arc<User>>,
    by_id: DashMap<UserId, Arc<User>>,
    by_key: DashMap<PublicKeyBytes, Arc<User>>,
}

impl Accounts {
    /// Adds a loaded or newly created user.
    pub fn insert(&self, record: &UserRecord) -> Option<Arc<User>> {
        let user = Arc::new(User::from_record(record)?);
        self.by_passkey.insert(user.passkey, user.clone());
        self.by_name.insert(user.name.clone(), user.clone());
        self.by_id.insert(user.id, user.clone());
        if let Some(pk) = user.public_key.get() {
            self.by_key.insert(*pk, user.clone());
        }
        Some(user)
    }

    /// The user owning a passkey.
    pub fn by_passkey(&self, passkey: &Passkey) -> Option<Arc<User>> {
        self.by_passkey.get(passkey).map(|u| u.clone())
    }

    /// The user with a name.
    pub fn by_name(&self, name: &str) -> Option<Arc<User>> {
        self.by_name.get(name).map(|u| u.clone())
    }

    /// The user with an id.
    pub fn by_id(&self, id: UserId) -> Option<Arc<User>> {
        self.by_id.get(&id).map(|u| u.clone())
    }

    /// Records that `user` now owns `pk` (after the store committed it).
    pub fn attach_key(&self, user: &Arc<User>, pk: PublicKeyBytes) {
        if user.public_key.set(pk).is_ok() {
            self.by_key.insert(pk, user.clone());
        }
    }

    /// The user who registered a public key.
    pub fn by_key(&self, pk: &PublicKeyBytes) -> Option<Arc<User>> {
        self.by_key.get(pk).map(|u| u.clone())
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No users.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Accounting of one (user, torrent) pair accumulated between flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatDelta {
    /// The user.
    pub user: UserId,
    /// The torrent.
    pub info_hash: InfoHash,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
}

/// A registered torrent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorrentRecord {
    /// Hex info-hash (v1, or the truncated v2 hash of a v2-only torrent).
    pub info_hash: String,
    /// Optional display name.
    pub name: Option<String>,
    /// Unix seconds at registration.
    pub registered_at: u64,
    /// Hex SHA-256 info-hash of v2 and hybrid torrents (its first 20 bytes also identify the
    /// torrent in announces).
    #[serde(default)]
    pub v2_info_hash: Option<String>,
    /// Bytes per piece: the credit of one receipt.
    #[serde(default)]
    pub piece_length: Option<u64>,
    /// Bytes of all files (the last piece is shorter).
    #[serde(default)]
    pub total_size: Option<u64>,
}

/// What announces and `/report` need to know of a registered torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TorrentInfo {
    /// The hash the registry keeps the torrent under (v1, or truncated v2 for v2-only
    /// torrents): credit is recorded against it, so a hybrid torrent's two hashes are one
    /// torrent for the credit invariant.
    pub canonical: InfoHash,
    /// Bytes per piece, if registered.
    pub piece_length: Option<u64>,
    /// Bytes of all files, if registered.
    pub total_size: Option<u64>,
}

impl TorrentInfo {
    /// The bytes one receipt for `piece_index` credits: the piece length, or the remainder
    /// for the last piece.
    ///
    /// # Errors
    /// No piece length registered, or an index past the last piece (when the size is known).
    pub fn piece_bytes(&self, piece_index: u32) -> Result<u64, PieceError> {
        let len = self.piece_length.filter(|&l| l > 0).ok_or(PieceError::NoPieceLength)?;
        let Some(total) = self.total_size else { return Ok(len) };
        let pieces = total.div_ceil(len);
        let index = u64::from(piece_index);
        if index >= pieces {
            return Err(PieceError::OutOfRange { index: piece_index, pieces });
        }
        Ok(if index + 1 == pieces { total - index * len } else { len })
    }
}

/// Why a piece cannot be credited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    /// The torrent was registered by info-hash alone.
    #[error("torrent has no registered piece length")]
    NoPieceLength,
    /// The index is past the last piece.
    #[error("piece_index {index} out of range (the torrent has {pieces} pieces)")]
    OutOfRange {
        /// The receipt's index.
        index: u32,
        /// Pieces in the torrent.
        pieces: u64,
    },
}

impl TorrentRecord {
    /// The parts announces and `/report` read.
    pub fn info(&self) -> TorrentInfo {
        TorrentInfo {
            canonical: self.canonical_hash(),
            piece_length: self.piece_length,
            total_size: self.total_size,
        }
    }

    /// The hash credit and piece hashes are recorded under: the first of
    /// [`TorrentRecord::announce_hashes`] (all zero for a record whose hash does not parse,
    /// which registration never stores).
    pub fn canonical_hash(&self) -> InfoHash {
        self.announce_hashes().first().copied().unwrap_or_default()
    }

    /// Every 20-byte hash clients may announce this torrent with.
    pub fn announce_hashes(&self) -> Vec<InfoHash> {
        let mut out: Vec<InfoHash> = InfoHash::from_hex(&self.info_hash).into_iter().collect();
        if let Some(v2) = self.v2_info_hash.as_deref().and_then(|h| h.get(..40)) {
            out.extend(InfoHash::from_hex(v2).filter(|h| !out.contains(h)));
        }
        out
    }
}

/// A reply channel for a command.
pub type Reply<T> = flume::Sender<Result<T, StoreError>>;

/// Work for the store thread.
#[derive(Debug)]
pub enum StoreCmd {
    /// Create a user with a fresh passkey; replies once committed.
    CreateUser {
        /// Unique name.
        name: String,
        /// An invite code to consume in the same transaction (`StoreError::InvalidInvite` if it
        /// does not exist or was used).
        invite: Option<String>,
        /// A BLS public key already validated (with its proof of possession) by the caller;
        /// unique among users.
        public_key: Option<PublicKeyBytes>,
        /// Committed record, or `StoreError::UserExists` / `StoreError::KeyExists`.
        reply: Reply<UserRecord>,
    },
    /// Create an invite code (32 hex characters, one use). `by` is the inviting user (`None`:
    /// an admin), who may have created at most `budget` invites before this one
    /// (`StoreError::NoInvitesLeft`).
    CreateInvite {
        /// The inviting user, with their budget.
        by: Option<(UserId, u32)>,
        /// The code, once committed.
        reply: Reply<String>,
    },
    /// Give an existing user (created by an admin, so without a key) a BLS public key already
    /// validated by the caller; replies once committed.
    AttachKey {
        /// The user's name.
        name: String,
        /// The key (unique among users).
        public_key: PublicKeyBytes,
        /// The updated record, or `UserNotFound` / `KeyExists` / `UserHasKey`.
        reply: Reply<UserRecord>,
    },
    /// Register a torrent; replies once committed. Registering twice is not an error, and a
    /// second registration may fill in what the first left out (piece length, size), but never
    /// change it (`StoreError::TorrentConflict`).
    RegisterTorrent {
        /// The record.
        record: TorrentRecord,
        /// The v1 piece hashes (20 bytes each) from its `.torrent`, if known.
        pieces: Option<Vec<u8>>,
        /// Whether it was new, and the record as stored.
        reply: Reply<(bool, TorrentRecord)>,
    },
    /// Checks receipts against the torrent's piece hashes and the double-spend ledger, and
    /// reserves the piece claims of those that may be credited. Answered at once (nothing is
    /// written).
    ReserveReceipts {
        /// The receipts, in report order, each with its torrent's canonical hash.
        items: Vec<ReserveItem>,
        /// Unix seconds now.
        now: u64,
        /// One verdict per receipt (a database error refuses the whole report).
        reply: Reply<Vec<Result<PieceClaim, ReserveError>>>,
    },
    /// Credits verified receipts (their pieces and both users' verified totals in one
    /// transaction) and drops the reservations of the ones that failed verification. On a
    /// failed commit every reservation is dropped and nothing is credited.
    CreditReceipts {
        /// Receipts whose signatures verified.
        credits: Vec<ReceiptCredit>,
        /// Reservations to drop (signature failed).
        release: Vec<PieceClaim>,
        /// Signalled after the commit.
        reply: Reply<()>,
    },
    /// The outbox's next batch of verified credit for `contract`: the batch already in flight
    /// if there is one (it must be resent until the chain confirms it), else a new one made of
    /// up to `max_users` users' pending deltas, numbered after the contract's last applied
    /// batch and durable before the reply. `None` when nothing is pending.
    TakeChainBatch {
        /// The Reputation contract the batch is for.
        contract: pbts_chain::Address,
        /// Most users in a new batch.
        max_users: usize,
        /// The batch.
        reply: Reply<Option<ChainBatch>>,
    },
    /// The chain confirmed batch `id` (applied now or before): forget it and remember `id` as
    /// the contract's last applied batch.
    ChainBatchDone {
        /// The batch.
        id: u64,
        /// Signalled after the commit.
        reply: Reply<()>,
    },
    /// The contract has applied fewer batches than the database believes (a chain reset from
    /// an old snapshot): renumber the batch in flight to `to`.
    RenumberChainBatch {
        /// The new id (the contract's `lastBatchId + 1`).
        to: u64,
        /// Signalled after the commit.
        reply: Reply<()>,
    },
    /// Points the outbox at a Reputation contract (after `POST /contract/init`, or when the
    /// configured one is adopted); refused with `StoreError::ChainBusy` while a batch for
    /// another contract is in flight.
    SetReputation {
        /// The contract.
        contract: pbts_chain::Address,
        /// Its `lastBatchId` (0 for a new contract; read from the chain when adopting one).
        last_batch_id: u64,
        /// Signalled after the commit.
        reply: Reply<()>,
    },
    /// Persists run-time settings from `POST /config` and applies the receipt window to the
    /// ledger.
    SetOverrides {
        /// The settings to change (unset fields keep their value).
        overrides: Overrides,
        /// All overrides in force after the change.
        reply: Reply<Overrides>,
    },
    /// A batch of announce accounting and new snatches.
    Flush {
        /// Per (user, torrent) deltas.
        deltas: Vec<StatDelta>,
        /// New snatches per torrent.
        snatches: Vec<(InfoHash, u32)>,
    },
    /// Replies once every command sent before it is committed.
    Sync {
        /// Signalled after the commit.
        reply: Reply<()>,
    },
}

/// A receipt to reserve, with the canonical hash of its torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveItem {
    /// The receipt (its `info_hash` may be a hybrid torrent's other hash).
    pub receipt: Receipt,
    /// [`TorrentInfo::canonical`] of its torrent.
    pub torrent: InfoHash,
}

/// Why the store refused to reserve a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// The registry holds the torrent's piece hashes and the receipt's differs.
    WrongPieceHash,
    /// The ledger refused it (stale, future, credited, duplicate, in flight).
    Ledger(Rejection),
}

/// Adds to a counter, stopping at `u64::MAX` instead of wrapping.
pub fn saturating_add_to(counter: &AtomicU64, n: u64) {
    let _ =
        counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_add(n)));
}

/// One verified receipt to credit: zero-sum, `bytes` to the uploader's verified upload and the
/// signer's verified download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptCredit {
    /// The piece (reserved).
    pub claim: PieceClaim,
    /// Who sent the piece (the reporter).
    pub uploader: UserId,
    /// Who received it and signed.
    pub signer: UserId,
    /// Credited bytes (the registered piece length; shorter for the last piece).
    pub bytes: u64,
}

/// Run-time settings changed through `POST /config`, kept in the database so a restart does not
/// silently undo an acknowledged change. Unset fields follow the configuration file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    /// `ratio.min_ratio`.
    pub min_ratio: Option<f64>,
    /// `receipts.window_secs`.
    pub receipt_window_secs: Option<u64>,
}

impl Overrides {
    /// `self` with the fields `newer` sets replaced.
    pub fn merge(self, newer: Self) -> Self {
        Self {
            min_ratio: newer.min_ratio.or(self.min_ratio),
            receipt_window_secs: newer.receipt_window_secs.or(self.receipt_window_secs),
        }
    }
}

/// Receipt counters shared by the serving cores (reports) and the store thread (credits,
/// ledger size), for `/stats`, `/config` and `/metrics`.
#[derive(Debug, Default)]
pub struct ReceiptStats {
    /// `POST /report` requests that reached verification or were answered with verdicts.
    pub reports: AtomicU64,
    /// Receipts credited.
    pub accepted: AtomicU64,
    /// Receipts rejected (any reason).
    pub rejected: AtomicU64,
    /// Bytes credited (each to one uploader and one downloader).
    pub credited_bytes: AtomicU64,
    /// Pieces credited, ever (one per downloader, torrent and piece).
    pub credited_pieces: AtomicU64,
    /// Receipts being verified right now (bounded by `receipts.max_pending_receipts`).
    pub in_flight: AtomicU64,
}

/// The store thread's health, for `/metrics`: a disk that refuses commits shows here before
/// anything is lost.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Commits that failed (every command in them was answered with the error, announce
    /// accounting was kept for retry).
    pub commit_failures: AtomicU64,
    /// Batches of announce accounting waiting for a retry (0 when the disk keeps up).
    pub accounting_retrying: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_bytes_use_the_registered_length_and_a_short_last_piece() {
        let t = TorrentInfo {
            canonical: InfoHash::default(),
            piece_length: Some(16384),
            total_size: Some(40000),
        };
        assert_eq!(t.piece_bytes(0), Ok(16384));
        assert_eq!(t.piece_bytes(1), Ok(16384));
        assert_eq!(t.piece_bytes(2), Ok(40000 - 2 * 16384));
        assert_eq!(t.piece_bytes(3), Err(PieceError::OutOfRange { index: 3, pieces: 3 }));
        let exact = TorrentInfo { piece_length: Some(100), total_size: Some(300), ..t };
        assert_eq!(exact.piece_bytes(2), Ok(100));
        let unsized_ = TorrentInfo { piece_length: Some(100), total_size: None, ..t };
        assert_eq!(unsized_.piece_bytes(u32::MAX), Ok(100));
        assert_eq!(TorrentInfo::default().piece_bytes(0), Err(PieceError::NoPieceLength));
        let zero = TorrentInfo { piece_length: Some(0), total_size: Some(10), ..t };
        assert_eq!(zero.piece_bytes(0), Err(PieceError::NoPieceLength));
    }

    #[test]
    fn ratio_sources() {
        let r = UserRecord {
            id: 1,
            name: "a".into(),
            passkey: "0123456789abcdef0123456789abcdef".into(),
            created_at: 0,
            uploaded: 1000,
            downloaded: 100,
            public_key: None,
            verified_uploaded: 50,
            verified_downloaded: 200,
        };
        let u = User::from_record(&r).unwrap();
        assert_eq!(u.ratio_counts(RatioSource::Claimed), (1000, 100));
        // Verified: proven upload over the larger of claimed and proven download.
        assert_eq!(u.ratio_counts(RatioSource::Verified), (50, 200));
        assert_eq!(u.ratio(RatioSource::Verified), Some(0.25));
        let fresh =
            User::from_record(&UserRecord { downloaded: 0, verified_downloaded: 0, ..r }).unwrap();
        assert_eq!(fresh.ratio(RatioSource::Claimed), None);
        assert_eq!(u.to_record().verified_uploaded, 50);
    }
}

/// A batch of verified credit on its way to the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBatch {
    /// Its number (`creditUsers` applies batch `lastBatchId + 1` only).
    pub id: u64,
    /// The contract it is for.
    pub contract: pbts_chain::Address,
    /// Per-user deltas.
    pub entries: Vec<pbts_chain::CreditEntry>,
}

/// The outbox as `/contract/status` shows it (written by the store and outbox threads).
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Users with credit not yet in a batch.
    pub pending_users: AtomicU64,
    /// The batch in flight (0: none).
    pub batch_id: AtomicU64,
    /// Users in the batch in flight.
    pub batch_users: AtomicU64,
    /// The contract's last applied batch, as far as the database knows.
    pub last_batch_id: AtomicU64,
    /// Unix seconds of the last confirmed batch (0: never).
    pub last_success_unix: AtomicU64,
    /// Failed attempts since the last success.
    pub failures: AtomicU64,
    /// The last failure's message. A plain mutex: written by the outbox thread, read by
    /// `/contract/status`, each holding it only to copy a short string.
    pub last_error: std::sync::Mutex<Option<String>>,
}
