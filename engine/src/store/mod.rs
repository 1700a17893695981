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
use pbts_http::InfoHash;
use serde::{Deserialize, Serialize};

use pbts_verifier::receipt::PublicKeyBytes;

use crate::swarm::store::UserId;

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
        for (i, b) in raw.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        Self(out)
    }

    /// The passkey as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("passkeys are ASCII hex by construction")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
        }
    }

    /// uploaded / downloaded; `None` when nothing was downloaded (infinite or undefined).
    pub fn ratio(&self) -> Option<f64> {
        let down = self.downloaded.load(Ordering::Relaxed);
        (down > 0).then(|| self.uploaded.load(Ordering::Relaxed) as f64 / down as f64)
    }
}

/// Base64 (standard, padded) of a public key, as the original API spells keys.
pub fn encode_public_key(pk: &PublicKeyBytes) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(pk.0)
}

/// Decodes base64 of exactly 48 bytes (not yet checked to be a valid point).
pub fn decode_public_key(b64: &str) -> Option<PublicKeyBytes> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    Some(PublicKeyBytes(raw.try_into().ok()?))
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

impl TorrentRecord {
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
        /// A BLS public key already validated (with its proof of possession) by the caller;
        /// unique among users.
        public_key: Option<PublicKeyBytes>,
        /// Committed record, or `StoreError::UserExists` / `StoreError::KeyExists`.
        reply: Reply<UserRecord>,
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
    /// Register a torrent; replies once committed. Registering twice is not an error.
    RegisterTorrent {
        /// The record.
        record: TorrentRecord,
        /// Whether it was new.
        reply: Reply<bool>,
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
