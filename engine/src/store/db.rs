//! The redb database and the store thread's command loop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pbts_http::InfoHash;
use pbts_verifier::nullifier::{Freshness, Ledger, Nullifier};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{
    Accounts, ChainBatch, OutboxStats, Overrides, Passkey, ReceiptCredit, ReceiptStats, StoreCmd,
    TorrentInfo, TorrentRecord, UserRecord,
};
use crate::common::unix_now;
use crate::swarm::SwarmStore;

/// user id → JSON [`UserRecord`].
const USERS: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("users");
/// user name → user id (uniqueness).
const USER_NAMES: TableDefinition<'_, &str, u32> = TableDefinition::new("user_names");
/// user id (4 bytes BE) ‖ info-hash (20) → uploaded (8 BE) ‖ downloaded (8 BE).
const USER_TORRENT: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("user_torrent");
/// public key (48 bytes) → user id (a key belongs to one user).
const USER_KEYS: TableDefinition<'_, &[u8], u32> = TableDefinition::new("user_keys");
/// info-hash → snatch count.
const SNATCHES: TableDefinition<'_, &[u8], u32> = TableDefinition::new("snatches");
/// info-hash → JSON [`TorrentRecord`].
const TORRENTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("torrents");
/// nullifier (32 bytes) → receipt timestamp: every credited receipt still inside the window.
const NULLIFIERS: TableDefinition<'_, &[u8], u64> = TableDefinition::new("nullifiers");
/// user id → verified (download, upload) bytes not yet in a chain batch (8 BE each).
const CHAIN_PENDING: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("chain_pending");
/// batch id → JSON [`ChainBatch`]: the one batch in flight to the chain.
const CHAIN_BATCH: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("chain_batch");
/// Small named values (`next_user_id`, `nullifier_floor`, `chain_last_batch`).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Small named texts (`instance_id`, `config_overrides`, `chain_contract`).
const META_TEXT: TableDefinition<'_, &str, &str> = TableDefinition::new("meta_text");

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed (I/O, corruption, ...).
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A stored record does not decode.
    #[error("corrupt record in table {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A user with that name exists.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// Another user registered that public key.
    #[error("public key already registered")]
    KeyExists,
    /// No user has that name.
    #[error("user not found")]
    UserNotFound,
    /// The user already has a key (keys are never replaced).
    #[error("user already has a public key")]
    UserHasKey,
    /// A torrent registered again with a different piece length or size.
    #[error("torrent already registered with {field} {existing}, not {given}")]
    TorrentConflict {
        /// `piece_length` or `total_size`.
        field: &'static str,
        /// The stored value.
        existing: u64,
        /// The value given now.
        given: u64,
    },
    /// A chain batch for another contract is still in flight.
    #[error("a batch of credit is still in flight to contract {0}; retry once it is confirmed")]
    ChainBusy(String),
    /// The outbox asked for a batch for a contract it has not switched to.
    #[error("the outbox is pointed at {current}, not {asked}")]
    ChainContract {
        /// The contract the database has.
        current: String,
        /// The contract asked for.
        asked: String,
    },
    /// The store thread is gone (shutting down).
    #[error("store is shutting down")]
    Closed,
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn corrupt(table: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, message: e.to_string() }
}

/// Sends a command's reply once the batch's commit outcome is known.
type ReplyFn = Box<dyn FnOnce(Option<&StoreError>)>;

/// A reply that sends `value` if the batch commits, and `StoreError::Closed` if it does not.
fn after_commit<T: 'static>(reply: super::Reply<T>, value: T) -> ReplyFn {
    Box::new(move |err| {
        let _ = reply.send(match err {
            None => Ok(value),
            Some(_) => Err(StoreError::Closed),
        });
    })
}

/// The open database, and the double-spend ledger whose nullifiers it persists (one owner, the
/// store thread, so reserving, crediting and persisting a receipt never race).
#[derive(Debug)]
pub struct Db {
    db: Database,
    ledger: Ledger,
    overrides: Overrides,
    stats: Arc<ReceiptStats>,
    outbox: Arc<OutboxStats>,
}

impl Db {
    /// Opens (creating if needed) `<dir>/pbts.redb` and its tables, restores the ledger's
    /// nullifiers and prune floor, and forgets those already out of the window.
    ///
    /// `freshness` is the configured receipt window; a window set through `POST /config` and
    /// persisted in [`Overrides`] takes its place.
    ///
    /// # Errors
    /// I/O or database errors, corrupt records, or a database locked by another process.
    pub fn open(
        dir: &Path,
        freshness: Freshness,
        stats: Arc<ReceiptStats>,
        outbox: Arc<OutboxStats>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        let db = Database::create(dir.join("pbts.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(USERS)?;
        tx.open_table(USER_NAMES)?;
        tx.open_table(USER_KEYS)?;
        tx.open_table(USER_TORRENT)?;
        tx.open_table(SNATCHES)?;
        tx.open_table(TORRENTS)?;
        tx.open_table(NULLIFIERS)?;
        tx.open_table(CHAIN_PENDING)?;
        tx.open_table(CHAIN_BATCH)?;
        tx.open_table(META)?;
        tx.open_table(META_TEXT)?;
        tx.commit()?;
        let mut this = Self {
            db,
            ledger: Ledger::new(freshness),
            overrides: Overrides::default(),
            stats,
            outbox,
        };
        this.restore_ledger(freshness)?;
        this.restore_outbox_stats()?;
        Ok(this)
    }

    fn restore_outbox_stats(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let o = &self.outbox;
        o.pending_users.store(tx.open_table(CHAIN_PENDING)?.len()?, Ordering::Relaxed);
        let (id, users) = match tx.open_table(CHAIN_BATCH)?.first()? {
            Some(row) => {
                let batch: ChainBatch =
                    serde_json::from_slice(row.1.value()).map_err(|e| corrupt("chain_batch", e))?;
                (batch.id, batch.entries.len() as u64)
            }
            None => (0, 0),
        };
        o.batch_id.store(id, Ordering::Relaxed);
        o.batch_users.store(users, Ordering::Relaxed);
        let last = tx.open_table(META)?.get("chain_last_batch")?.map_or(0, |v| v.value());
        o.last_batch_id.store(last, Ordering::Relaxed);
        Ok(())
    }

    /// The Reputation contract the outbox writes to, once set by `POST /contract/init` or
    /// adopted from the configuration.
    ///
    /// # Errors
    /// Database errors or a corrupt address.
    pub fn chain_contract(&self) -> Result<Option<pbts_chain::Address>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(v) = tx.open_table(META_TEXT)?.get("chain_contract")? else { return Ok(None) };
        pbts_chain::config::parse_address(v.value()).map(Some).map_err(|e| corrupt("meta_text", e))
    }

    fn restore_ledger(&mut self, mut freshness: Freshness) -> Result<(), StoreError> {
        {
            let tx = self.db.begin_read()?;
            if let Some(v) = tx.open_table(META_TEXT)?.get("config_overrides")? {
                self.overrides =
                    serde_json::from_str(v.value()).map_err(|e| corrupt("meta_text", e))?;
            }
            if let Some(w) = self.overrides.receipt_window_secs {
                freshness.window_secs = w;
            }
            self.ledger.set_freshness(freshness);
            if let Some(floor) = tx.open_table(META)?.get("nullifier_floor")? {
                self.ledger.restore_prune_floor(floor.value());
            }
            for row in tx.open_table(NULLIFIERS)?.iter()? {
                let (k, v) = row?;
                let n: [u8; 32] =
                    k.value().try_into().map_err(|_| corrupt("nullifiers", "key length"))?;
                self.ledger.load(Nullifier(n), v.value());
            }
        }
        self.prune()
    }

    /// Run-time settings persisted by `POST /config`.
    pub fn overrides(&self) -> Overrides {
        self.overrides
    }

    /// Forgets nullifiers of receipts that can no longer be accepted, on disk too, and persists
    /// the raised prune floor in the same transaction.
    fn prune(&mut self) -> Result<(), StoreError> {
        let floor_before = self.ledger.prune_floor();
        let pruned = self.ledger.prune(unix_now());
        if !pruned.is_empty() || self.ledger.prune_floor() != floor_before {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(NULLIFIERS)?;
                for n in &pruned {
                    table.remove(&n.0[..])?;
                }
                tx.open_table(META)?.insert("nullifier_floor", self.ledger.prune_floor())?;
            }
            tx.commit()?;
        }
        self.stats.nullifiers.store(self.ledger.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Loads users into `accounts`, snatch counts into `swarms`, and returns registered torrents
    /// (each hash a client may announce with).
    ///
    /// # Errors
    /// Database errors or corrupt records.
    pub fn load(
        &self,
        accounts: &Accounts,
        swarms: &SwarmStore,
    ) -> Result<Vec<(InfoHash, TorrentInfo)>, StoreError> {
        let tx = self.db.begin_read()?;
        for row in tx.open_table(USERS)?.iter()? {
            let (_, v) = row?;
            let record: UserRecord =
                serde_json::from_slice(v.value()).map_err(|e| corrupt("users", e))?;
            accounts.insert(&record).ok_or_else(|| corrupt("users", "bad passkey"))?;
        }
        for row in tx.open_table(SNATCHES)?.iter()? {
            let (k, v) = row?;
            let ih = InfoHash::from_slice(k.value()).ok_or_else(|| corrupt("snatches", "key"))?;
            swarms.load_snatches(ih, v.value());
        }
        let mut torrents = Vec::new();
        for row in tx.open_table(TORRENTS)?.iter()? {
            let (k, v) = row?;
            let ih = InfoHash::from_slice(k.value()).ok_or_else(|| corrupt("torrents", "key"))?;
            let record: TorrentRecord =
                serde_json::from_slice(v.value()).map_err(|e| corrupt("torrents", e))?;
            torrents.push((ih, record.info()));
        }
        Ok(torrents)
    }

    /// This tracker's instance id (32 hex characters), created on first start and kept for
    /// good: registration signatures cover it, so it must not change across restarts.
    ///
    /// # Errors
    /// Database errors.
    pub fn instance_id(&self) -> Result<String, StoreError> {
        {
            let tx = self.db.begin_read()?;
            if let Some(v) = tx.open_table(META_TEXT)?.get("instance_id")? {
                return Ok(v.value().to_owned());
            }
        }
        let raw: [u8; 16] = rand::random();
        let id = crate::common::hex(&raw);
        let tx = self.db.begin_write()?;
        tx.open_table(META_TEXT)?.insert("instance_id", id.as_str())?;
        tx.commit()?;
        Ok(id)
    }

    /// Per-torrent claimed stats of a user: (info-hash, uploaded, downloaded).
    ///
    /// # Errors
    /// Database errors.
    pub fn user_torrents(&self, user: u32) -> Result<Vec<(InfoHash, u64, u64)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(USER_TORRENT)?;
        let lo = user.to_be_bytes();
        let hi = (u64::from(user) + 1).to_be_bytes();
        let hi = &hi[4..];
        let mut out = Vec::new();
        for row in table.range::<&[u8]>(&lo[..]..hi)? {
            let (k, v) = row?;
            let (k, v) = (k.value(), v.value());
            let ih = InfoHash::from_slice(&k[4..]).ok_or_else(|| corrupt("user_torrent", "key"))?;
            let (up, down) = decode_pair(v).ok_or_else(|| corrupt("user_torrent", "value"))?;
            out.push((ih, up, down));
        }
        Ok(out)
    }

    /// Runs the store thread's loop until every sender is gone. Commands that arrive together
    /// are committed in one transaction; replies go out after the commit. Every
    /// `prune_every` the ledger forgets nullifiers that left the receipt window.
    pub fn run(
        mut self,
        rx: flume::Receiver<StoreCmd>,
        accounts: Arc<Accounts>,
        prune_every: Duration,
    ) {
        let mut next_prune = Instant::now() + prune_every;
        loop {
            match rx.recv_deadline(next_prune) {
                Ok(first) => {
                    let mut batch = vec![first];
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(cmd) => batch.push(cmd),
                            Err(_) => break,
                        }
                    }
                    self.apply(batch, &accounts);
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_prune {
                if let Err(e) = self.prune() {
                    tracing::error!("nullifier prune failed: {e:#}");
                }
                next_prune = Instant::now() + prune_every;
            }
        }
    }

    fn apply(&mut self, batch: Vec<StoreCmd>, accounts: &Accounts) {
        let mut replies: Vec<ReplyFn> = Vec::new();
        let mut created = Vec::new();
        let mut attached = Vec::new();
        let mut credited: Vec<ReceiptCredit> = Vec::new();
        let mut released: Vec<Nullifier> = Vec::new();
        let mut new_overrides: Option<Overrides> = None;
        let mut chain_changed = false;
        let ledger = &mut self.ledger;
        let overrides = self.overrides;
        let result = (|| -> Result<(), StoreError> {
            let tx = self.db.begin_write()?;
            {
                let mut users = tx.open_table(USERS)?;
                let mut names = tx.open_table(USER_NAMES)?;
                let mut keys = tx.open_table(USER_KEYS)?;
                let mut user_torrent = tx.open_table(USER_TORRENT)?;
                let mut snatches = tx.open_table(SNATCHES)?;
                let mut torrents = tx.open_table(TORRENTS)?;
                let mut nullifiers = tx.open_table(NULLIFIERS)?;
                let mut chain_pending = tx.open_table(CHAIN_PENDING)?;
                let mut chain_batch = tx.open_table(CHAIN_BATCH)?;
                let mut meta = tx.open_table(META)?;
                let mut meta_text = tx.open_table(META_TEXT)?;
                let mut sums = HashMap::<u32, Sums>::new();
                for cmd in batch {
                    match cmd {
                        StoreCmd::CreateUser { name, public_key, reply } => {
                            if names.get(name.as_str())?.is_some() {
                                let _ = reply.send(Err(StoreError::UserExists(name)));
                                continue;
                            }
                            if let Some(pk) = &public_key
                                && keys.get(&pk.0[..])?.is_some()
                            {
                                let _ = reply.send(Err(StoreError::KeyExists));
                                continue;
                            }
                            let id = meta.get("next_user_id")?.map(|v| v.value()).unwrap_or(1);
                            meta.insert("next_user_id", id + 1)?;
                            let id = u32::try_from(id).map_err(|e| corrupt("meta", e))?;
                            let record = UserRecord {
                                id,
                                name: name.clone(),
                                passkey: Passkey::random().as_str().to_owned(),
                                created_at: unix_now(),
                                uploaded: 0,
                                downloaded: 0,
                                public_key: public_key.as_ref().map(super::encode_public_key),
                                verified_uploaded: 0,
                                verified_downloaded: 0,
                            };
                            let json =
                                serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
                            users.insert(id, json.as_slice())?;
                            names.insert(name.as_str(), id)?;
                            if let Some(pk) = &public_key {
                                keys.insert(&pk.0[..], id)?;
                            }
                            created.push(record.clone());
                            replies.push(after_commit(reply, record));
                        }
                        StoreCmd::AttachKey { name, public_key, reply } => {
                            let Some(id) = names.get(name.as_str())?.map(|v| v.value()) else {
                                let _ = reply.send(Err(StoreError::UserNotFound));
                                continue;
                            };
                            let Some(raw) = users.get(id)?.map(|v| v.value().to_vec()) else {
                                return Err(corrupt("users", "name without user"));
                            };
                            let mut record: UserRecord =
                                serde_json::from_slice(&raw).map_err(|e| corrupt("users", e))?;
                            if record.public_key.is_some() {
                                let _ = reply.send(Err(StoreError::UserHasKey));
                                continue;
                            }
                            if keys.get(&public_key.0[..])?.is_some() {
                                let _ = reply.send(Err(StoreError::KeyExists));
                                continue;
                            }
                            record.public_key = Some(super::encode_public_key(&public_key));
                            let json =
                                serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
                            users.insert(id, json.as_slice())?;
                            keys.insert(&public_key.0[..], id)?;
                            attached.push((id, public_key));
                            replies.push(after_commit(reply, record));
                        }
                        StoreCmd::RegisterTorrent { record, reply } => {
                            // Stored under every hash clients announce it with (v1, truncated
                            // v2), so a hybrid torrent is one torrent either way.
                            let hashes = record.announce_hashes();
                            let mut existing = None;
                            for ih in &hashes {
                                if let Some(v) = torrents.get(&ih.0[..])? {
                                    let r: TorrentRecord = serde_json::from_slice(v.value())
                                        .map_err(|e| corrupt("torrents", e))?;
                                    existing = Some(r);
                                    break;
                                }
                            }
                            let new = existing.is_none();
                            let stored = match existing {
                                None => record,
                                Some(old) => match merge_torrent(old, record) {
                                    Ok(merged) => merged,
                                    Err(e) => {
                                        let _ = reply.send(Err(e));
                                        continue;
                                    }
                                },
                            };
                            let json =
                                serde_json::to_vec(&stored).map_err(|e| corrupt("torrents", e))?;
                            for ih in stored.announce_hashes() {
                                torrents.insert(&ih.0[..], json.as_slice())?;
                            }
                            replies.push(after_commit(reply, (new, stored)));
                        }
                        StoreCmd::ReserveReceipts { receipts, now, reply } => {
                            // In memory only: answered now, before the batch commits.
                            let _ = reply.send(ledger.reserve(&receipts, now));
                        }
                        StoreCmd::CreditReceipts { credits, release, reply } => {
                            for c in &credits {
                                if nullifiers.insert(&c.nullifier.0[..], c.timestamp)?.is_some() {
                                    // The ledger reserved it, so it cannot be on disk: a bug.
                                    return Err(corrupt(
                                        "nullifiers",
                                        "reserved nullifier on disk",
                                    ));
                                }
                                sums.entry(c.uploader).or_default().verified_up += c.bytes;
                                sums.entry(c.signer).or_default().verified_down += c.bytes;
                            }
                            credited.extend_from_slice(&credits);
                            released.extend_from_slice(&release);
                            replies.push(after_commit(reply, ()));
                        }
                        StoreCmd::TakeChainBatch { contract, max_users, reply } => {
                            let current =
                                meta_text.get("chain_contract")?.map(|v| v.value().to_owned());
                            let asked = contract.to_string();
                            if current.as_deref().is_none_or(|c| !c.eq_ignore_ascii_case(&asked)) {
                                let current = current.unwrap_or_else(|| "nothing".to_owned());
                                let _ =
                                    reply.send(Err(StoreError::ChainContract { current, asked }));
                                continue;
                            }
                            if let Some((_, batch)) = first_batch(&chain_batch)? {
                                let _ = reply.send(Ok(Some(batch)));
                                continue;
                            }
                            let mut rows = Vec::new();
                            for row in chain_pending.iter()?.take(max_users) {
                                let (k, v) = row?;
                                let (down, up) = decode_pair(v.value())
                                    .ok_or_else(|| corrupt("chain_pending", "value"))?;
                                rows.push((k.value(), down, up));
                            }
                            let mut entries = Vec::with_capacity(rows.len());
                            for &(id, down, up) in &rows {
                                chain_pending.remove(id)?;
                                chain_changed = true;
                                let Some(user) = accounts.by_id(id) else {
                                    tracing::warn!("chain credit of unknown user {id} dropped");
                                    continue;
                                };
                                let Some(pk) = user.public_key.get() else {
                                    tracing::warn!(
                                        "chain credit of user {id} without a key dropped"
                                    );
                                    continue;
                                };
                                entries.push(pbts_chain::CreditEntry {
                                    username: user.name.clone(),
                                    key_hash: pbts_chain::key_hash(&pk.0),
                                    download_delta: down,
                                    upload_delta: up,
                                });
                            }
                            if entries.is_empty() {
                                replies.push(after_commit(reply, None));
                                continue;
                            }
                            let last = meta.get("chain_last_batch")?.map_or(0, |v| v.value());
                            let batch = ChainBatch { id: last + 1, contract, entries };
                            let json = serde_json::to_vec(&batch)
                                .map_err(|e| corrupt("chain_batch", e))?;
                            chain_batch.insert(batch.id, json.as_slice())?;
                            replies.push(after_commit(reply, Some(batch)));
                        }
                        StoreCmd::ChainBatchDone { id, reply } => {
                            chain_batch.remove(id)?;
                            meta.insert("chain_last_batch", id)?;
                            chain_changed = true;
                            replies.push(after_commit(reply, ()));
                        }
                        StoreCmd::RenumberChainBatch { to, reply } => {
                            let Some((old, mut batch)) = first_batch(&chain_batch)? else {
                                replies.push(after_commit(reply, ()));
                                continue;
                            };
                            chain_batch.remove(old)?;
                            batch.id = to;
                            let json = serde_json::to_vec(&batch)
                                .map_err(|e| corrupt("chain_batch", e))?;
                            chain_batch.insert(to, json.as_slice())?;
                            meta.insert("chain_last_batch", to.saturating_sub(1))?;
                            chain_changed = true;
                            replies.push(after_commit(reply, ()));
                        }
                        StoreCmd::SetReputation { contract, last_batch_id, reply } => {
                            if let Some((_, batch)) = first_batch(&chain_batch)?
                                && batch.contract != contract
                            {
                                let busy = StoreError::ChainBusy(batch.contract.to_string());
                                let _ = reply.send(Err(busy));
                                continue;
                            }
                            meta_text.insert("chain_contract", contract.to_string().as_str())?;
                            meta.insert("chain_last_batch", last_batch_id)?;
                            chain_changed = true;
                            replies.push(after_commit(reply, ()));
                        }
                        StoreCmd::SetOverrides { overrides: change, reply } => {
                            let merged = new_overrides.unwrap_or(overrides).merge(change);
                            let json = serde_json::to_string(&merged)
                                .map_err(|e| corrupt("meta_text", e))?;
                            meta_text.insert("config_overrides", json.as_str())?;
                            new_overrides = Some(merged);
                            replies.push(after_commit(reply, merged));
                        }
                        StoreCmd::Flush { deltas, snatches: new_snatches } => {
                            for d in deltas {
                                let mut key = [0u8; 24];
                                key[..4].copy_from_slice(&d.user.to_be_bytes());
                                key[4..].copy_from_slice(&d.info_hash.0);
                                let (up, down) = match user_torrent.get(&key[..])? {
                                    Some(v) => decode_pair(v.value())
                                        .ok_or_else(|| corrupt("user_torrent", "value"))?,
                                    None => (0, 0),
                                };
                                let value = encode_pair(
                                    up.saturating_add(d.uploaded),
                                    down.saturating_add(d.downloaded),
                                );
                                user_torrent.insert(&key[..], &value[..])?;
                                let sum = sums.entry(d.user).or_default();
                                sum.up = sum.up.saturating_add(d.uploaded);
                                sum.down = sum.down.saturating_add(d.downloaded);
                            }
                            for (ih, n) in new_snatches {
                                let old = snatches.get(&ih.0[..])?.map(|v| v.value()).unwrap_or(0);
                                snatches.insert(&ih.0[..], old.saturating_add(n))?;
                            }
                        }
                        StoreCmd::Sync { reply } => {
                            replies.push(after_commit(reply, ()));
                        }
                    }
                }
                // Persisted claimed totals are exactly the sum of flushed deltas (the in-memory
                // mirror runs ahead by what is still pending on the cores); verified totals
                // are the sum of credited receipts.
                for (id, sum) in sums {
                    let Some(v) = users.get(id)? else { continue };
                    let mut record: UserRecord =
                        serde_json::from_slice(v.value()).map_err(|e| corrupt("users", e))?;
                    drop(v);
                    record.uploaded = record.uploaded.saturating_add(sum.up);
                    record.downloaded = record.downloaded.saturating_add(sum.down);
                    record.verified_uploaded =
                        record.verified_uploaded.saturating_add(sum.verified_up);
                    record.verified_downloaded =
                        record.verified_downloaded.saturating_add(sum.verified_down);
                    let json = serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
                    users.insert(id, json.as_slice())?;
                    // Verified credit also waits for the chain, in the same transaction: the
                    // outbox can never miss or repeat it.
                    if sum.verified_up > 0 || sum.verified_down > 0 {
                        let (down, up) = match chain_pending.get(id)? {
                            Some(v) => decode_pair(v.value())
                                .ok_or_else(|| corrupt("chain_pending", "value"))?,
                            None => (0, 0),
                        };
                        let value = encode_pair(
                            down.saturating_add(sum.verified_down),
                            up.saturating_add(sum.verified_up),
                        );
                        chain_pending.insert(id, &value[..])?;
                        chain_changed = true;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = &result {
            tracing::error!("store commit failed: {e:#}");
        }
        // Users created in this batch become visible to announces only once durable; credited
        // nullifiers leave the reserved state only once durable (until then a concurrent copy
        // is told "in flight").
        if result.is_ok() {
            for record in &created {
                accounts.insert(record);
            }
            for (id, pk) in attached {
                if let Some(user) = accounts.by_id(id) {
                    accounts.attach_key(&user, pk);
                }
            }
            for c in &credited {
                ledger.commit(&c.nullifier, c.timestamp);
                if let Some(u) = accounts.by_id(c.uploader) {
                    u.verified_uploaded.fetch_add(c.bytes, Ordering::Relaxed);
                }
                if let Some(u) = accounts.by_id(c.signer) {
                    u.verified_downloaded.fetch_add(c.bytes, Ordering::Relaxed);
                }
            }
            if let Some(o) = new_overrides {
                if let Some(w) = o.receipt_window_secs {
                    ledger.set_freshness(Freshness { window_secs: w, ..ledger.freshness() });
                }
                self.overrides = o;
            }
        } else {
            for c in &credited {
                ledger.release(&c.nullifier);
            }
        }
        for n in &released {
            ledger.release(n);
        }
        self.stats.nullifiers.store(ledger.len() as u64, Ordering::Relaxed);
        if chain_changed && let Err(e) = self.restore_outbox_stats() {
            tracing::error!("outbox stats: {e:#}");
        }
        for reply in replies {
            reply(result.as_ref().err());
        }
    }
}

/// The batch in flight, if any.
fn first_batch(
    table: &redb::Table<'_, u64, &[u8]>,
) -> Result<Option<(u64, ChainBatch)>, StoreError> {
    let Some(row) = table.first()? else { return Ok(None) };
    let batch: ChainBatch =
        serde_json::from_slice(row.1.value()).map_err(|e| corrupt("chain_batch", e))?;
    Ok(Some((row.0.value(), batch)))
}

/// Per-user totals added by one batch.
#[derive(Default)]
struct Sums {
    up: u64,
    down: u64,
    verified_up: u64,
    verified_down: u64,
}

/// A torrent registered again: fills in what the stored record lacks (piece length, size,
/// name, v2 hash); a different piece length or size is a conflict, since credit already given
/// was computed from the stored one.
fn merge_torrent(old: TorrentRecord, new: TorrentRecord) -> Result<TorrentRecord, StoreError> {
    let check = |field, a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(existing), Some(given)) if existing != given => {
            Err(StoreError::TorrentConflict { field, existing, given })
        }
        _ => Ok(a.or(b)),
    };
    Ok(TorrentRecord {
        piece_length: check("piece_length", old.piece_length, new.piece_length)?,
        total_size: check("total_size", old.total_size, new.total_size)?,
        name: old.name.or(new.name),
        v2_info_hash: old.v2_info_hash.or(new.v2_info_hash),
        info_hash: old.info_hash,
        registered_at: old.registered_at,
    })
}

fn encode_pair(a: u64, b: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

fn decode_pair(v: &[u8]) -> Option<(u64, u64)> {
    let v: &[u8; 16] = v.try_into().ok()?;
    let (a, b) = v.split_at(8);
    Some((u64::from_be_bytes(a.try_into().ok()?), u64::from_be_bytes(b.try_into().ok()?)))
}
