//! The redb database and the store thread's command loop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pbts_proto::InfoHash;
use pbts_verifier::credit::{Freshness, Ledger, PieceClaim, PieceSet, SetKey};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{
    Accounts, ChainBatch, OutboxStats, Overrides, Passkey, ReceiptCredit, ReceiptStats,
    ReserveError, StoreCmd, StoreStats, TorrentInfo, TorrentRecord, UserRecord, saturating_add_to,
};
use crate::clock::unix_now;
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
/// downloader public key (48) ‖ canonical info-hash (20) → roaring bitmap of the piece indices
/// credited for that downloader ([`PieceSet`]), kept for good: the credit invariant.
const CREDITED: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("credited_pieces");
/// canonical info-hash → the torrent's v1 piece hashes (20 bytes each, in order), from its
/// `.torrent`: a receipt's piece hash must be the torrent's own.
const PIECE_HASHES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("piece_hashes");
/// The receipt ledger of earlier versions (nullifiers of signed messages, pruned by time): it
/// could not enforce one credit per piece, and is dropped at start-up.
const OLD_NULLIFIERS: TableDefinition<'_, &[u8], u64> = TableDefinition::new("nullifiers");
/// user id → verified (download, upload) bytes not yet in a chain batch (8 BE each).
const CHAIN_PENDING: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("chain_pending");
/// batch id → JSON [`ChainBatch`]: the one batch in flight to the chain.
const CHAIN_BATCH: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("chain_batch");
/// invite code (32 hex) → JSON [`Invite`]: codes not used yet.
const INVITES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("invites");
/// user id → invites the user has created (their budget is `registration.user_invites`).
const USER_INVITES: TableDefinition<'_, u32, u32> = TableDefinition::new("user_invites");
/// user id → the user whose invite they registered with (0: an admin's).
const INVITED_BY: TableDefinition<'_, u32, u32> = TableDefinition::new("invited_by");
/// Small named values (`next_user_id`, `credited_pieces`, `chain_last_batch`).
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
    /// The invite code does not exist or was used.
    #[error("invalid or already used invite code")]
    InvalidInvite,
    /// The user created every invite their budget allows.
    #[error("no invites left ({used} of {budget} used)")]
    NoInvitesLeft {
        /// Invites created.
        used: u32,
        /// `registration.user_invites`.
        budget: u32,
    },
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
    /// A commit refused by fault injection (`PBTS_FAULT_COMMIT`).
    #[error("commit refused by fault injection ({0} more to refuse)")]
    InjectedFault(u32),
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

/// The open database, and the double-spend ledger whose piece sets it persists (one owner, the
/// store thread, so reserving, crediting and persisting a receipt never race).
#[derive(Debug)]
pub struct Db {
    db: Database,
    ledger: Ledger,
    overrides: Overrides,
    stats: Arc<ReceiptStats>,
    outbox: Arc<OutboxStats>,
    health: Arc<StoreStats>,
    /// Accounting commits still to fail (`PBTS_FAULT_COMMIT`; 0 in production).
    commit_faults: u32,
}

impl Db {
    /// Opens (creating if needed) `<dir>/pbts.redb` and its tables, and restores the run-time
    /// settings and the receipt counters.
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
        health: Arc<StoreStats>,
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
        tx.open_table(CREDITED)?;
        tx.open_table(PIECE_HASHES)?;
        if tx.delete_table(OLD_NULLIFIERS)? {
            tracing::warn!(
                "dropped the old nullifier table: receipts are now credited once per \
                 (downloader, torrent, piece), recorded in credited_pieces from here on"
            );
        }
        tx.open_table(META)?.remove("nullifier_floor")?;
        tx.open_table(CHAIN_PENDING)?;
        tx.open_table(CHAIN_BATCH)?;
        tx.open_table(META)?;
        tx.open_table(META_TEXT)?;
        tx.open_table(INVITES)?;
        tx.open_table(USER_INVITES)?;
        tx.open_table(INVITED_BY)?;
        tx.commit()?;
        let mut this = Self {
            db,
            ledger: Ledger::new(freshness),
            overrides: Overrides::default(),
            stats,
            outbox,
            health,
            commit_faults: crate::supervisor::commit_faults(),
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
        let tx = self.db.begin_read()?;
        if let Some(v) = tx.open_table(META_TEXT)?.get("config_overrides")? {
            self.overrides =
                serde_json::from_str(v.value()).map_err(|e| corrupt("meta_text", e))?;
        }
        if let Some(w) = self.overrides.receipt_window_secs {
            freshness.window_secs = w;
        }
        self.ledger.set_freshness(freshness);
        let credited = tx.open_table(META)?.get("credited_pieces")?.map_or(0, |v| v.value());
        self.stats.credited_pieces.store(credited, Ordering::Relaxed);
        Ok(())
    }

    /// Run-time settings persisted by `POST /config`.
    pub fn overrides(&self) -> Overrides {
        self.overrides
    }

    /// Bytes of the stored piece sets and their number (`credited_pieces` table), for the
    /// memory/disk bound the docs state.
    ///
    /// # Errors
    /// Database errors.
    pub fn piece_set_footprint(&self) -> Result<(u64, u64), StoreError> {
        let tx = self.db.begin_read()?;
        let (mut bytes, mut sets) = (0u64, 0u64);
        for row in tx.open_table(CREDITED)?.iter()? {
            let (k, v) = row?;
            bytes += (k.value().len() + v.value().len()) as u64;
            sets += 1;
        }
        Ok((bytes, sets))
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
        let id = crate::encoding::hex(&raw);
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
    /// are committed in one transaction; replies go out after the commit.
    ///
    /// Announce accounting (`Flush`) has no one to tell when a commit fails, so it is kept and
    /// retried with the next batch, or after [`FLUSH_RETRY`] when nothing else arrives: claimed
    /// totals already counted in memory are never silently dropped from disk. What a crash
    /// can still lose is bounded: the deltas of the last `storage.flush_interval_ms` on each
    /// core, plus a failed batch waiting for its retry.
    pub fn run(mut self, rx: flume::Receiver<StoreCmd>, accounts: Arc<Accounts>) {
        let mut retry: Vec<StoreCmd> = Vec::new();
        loop {
            let first = if retry.is_empty() {
                rx.recv().ok()
            } else {
                match rx.recv_timeout(FLUSH_RETRY) {
                    Ok(cmd) => Some(cmd),
                    Err(flume::RecvTimeoutError::Timeout) => None,
                    Err(flume::RecvTimeoutError::Disconnected) => {
                        // Last chance before the thread ends.
                        self.apply(std::mem::take(&mut retry), &accounts);
                        break;
                    }
                }
            };
            if first.is_none() && retry.is_empty() {
                break;
            }
            let mut batch = std::mem::take(&mut retry);
            batch.extend(first);
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            retry = self.apply(batch, &accounts);
            if retry.len() > MAX_RETRY_FLUSHES {
                let dropped = retry.len() - MAX_RETRY_FLUSHES;
                retry.drain(..dropped);
                tracing::error!("database unwritable: dropped {dropped} batches of accounting");
            }
            self.health.accounting_retrying.store(retry.len() as u64, Ordering::Relaxed);
        }
    }

    /// Applies `batch` in one transaction; returns its announce accounting if the commit failed
    /// (to be retried).
    fn apply(&mut self, batch: Vec<StoreCmd>, accounts: &Accounts) -> Vec<StoreCmd> {
        let flushes: Vec<StoreCmd> = batch
            .iter()
            .filter_map(|cmd| match cmd {
                StoreCmd::Flush { deltas, snatches } => {
                    Some(StoreCmd::Flush { deltas: deltas.clone(), snatches: snatches.clone() })
                }
                _ => None,
            })
            .collect();
        let mut replies: Vec<ReplyFn> = Vec::new();
        let mut created = Vec::new();
        let mut attached = Vec::new();
        let mut credited: Vec<ReceiptCredit> = Vec::new();
        let mut released: Vec<PieceClaim> = Vec::new();
        let mut new_overrides: Option<Overrides> = None;
        let mut chain_changed = false;
        let ledger = &mut self.ledger;
        let overrides = self.overrides;
        let commit_faults = &mut self.commit_faults;
        let has_flushes = !flushes.is_empty();
        let result = (|| -> Result<(), StoreError> {
            let tx = self.db.begin_write()?;
            {
                let mut users = tx.open_table(USERS)?;
                let mut names = tx.open_table(USER_NAMES)?;
                let mut keys = tx.open_table(USER_KEYS)?;
                let mut user_torrent = tx.open_table(USER_TORRENT)?;
                let mut snatches = tx.open_table(SNATCHES)?;
                let mut torrents = tx.open_table(TORRENTS)?;
                let mut credited_sets = tx.open_table(CREDITED)?;
                let mut piece_hashes = tx.open_table(PIECE_HASHES)?;
                let mut chain_pending = tx.open_table(CHAIN_PENDING)?;
                let mut chain_batch = tx.open_table(CHAIN_BATCH)?;
                let mut meta = tx.open_table(META)?;
                let mut meta_text = tx.open_table(META_TEXT)?;
                let mut invites = tx.open_table(INVITES)?;
                let mut user_invites = tx.open_table(USER_INVITES)?;
                let mut invited_by = tx.open_table(INVITED_BY)?;
                let mut sums = HashMap::<u32, Sums>::new();
                for cmd in batch {
                    match cmd {
                        StoreCmd::CreateUser { name, invite, public_key, reply } => {
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
                            let inviter = match &invite {
                                None => None,
                                Some(code) => match invites.remove(code.as_str())? {
                                    None => {
                                        let _ = reply.send(Err(StoreError::InvalidInvite));
                                        continue;
                                    }
                                    Some(v) => {
                                        let i: Invite = serde_json::from_slice(v.value())
                                            .map_err(|e| corrupt("invites", e))?;
                                        Some(i.created_by.unwrap_or(0))
                                    }
                                },
                            };
                            let id = meta.get("next_user_id")?.map(|v| v.value()).unwrap_or(1);
                            meta.insert("next_user_id", id + 1)?;
                            let id = u32::try_from(id).map_err(|e| corrupt("meta", e))?;
                            if let Some(by) = inviter {
                                invited_by.insert(id, by)?;
                            }
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
                        StoreCmd::CreateInvite { by, reply } => {
                            if let Some((user, budget)) = by {
                                let used = user_invites.get(user)?.map_or(0, |v| v.value());
                                if used >= budget {
                                    let _ =
                                        reply.send(Err(StoreError::NoInvitesLeft { used, budget }));
                                    continue;
                                }
                                user_invites.insert(user, used + 1)?;
                            }
                            let code = Passkey::random().as_str().to_owned();
                            let invite =
                                Invite { created_by: by.map(|(u, _)| u), created_at: unix_now() };
                            let json =
                                serde_json::to_vec(&invite).map_err(|e| corrupt("invites", e))?;
                            invites.insert(code.as_str(), json.as_slice())?;
                            replies.push(after_commit(reply, code));
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
                        StoreCmd::RegisterTorrent { record, pieces, reply } => {
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
                            // The piece hashes, kept under the canonical hash only. A torrent first
                            // registered without them (by JSON) gets them from its .torrent later;
                            // different ones are a conflict.
                            if let Some(pieces) = pieces {
                                let key = stored.canonical_hash();
                                let old = piece_hashes.get(&key.0[..])?.map(|v| v.value().to_vec());
                                match old {
                                    Some(old) if old != pieces => {
                                        let _ = reply.send(Err(StoreError::TorrentConflict {
                                            field: "pieces",
                                            existing: old.len() as u64 / 20,
                                            given: pieces.len() as u64 / 20,
                                        }));
                                        continue;
                                    }
                                    Some(_) => {}
                                    None => {
                                        piece_hashes.insert(&key.0[..], pieces.as_slice())?;
                                    }
                                }
                            }
                            let json =
                                serde_json::to_vec(&stored).map_err(|e| corrupt("torrents", e))?;
                            for ih in stored.announce_hashes() {
                                torrents.insert(&ih.0[..], json.as_slice())?;
                            }
                            replies.push(after_commit(reply, (new, stored)));
                        }
                        StoreCmd::ReserveReceipts { items, now, reply } => {
                            // Answered now, before the batch commits: reservations are in memory
                            // and the reads see every credit of this batch so far.
                            // A read error refuses this report, not the whole batch.
                            let _ = reply.send(reserve(
                                ledger,
                                &items,
                                now,
                                &credited_sets,
                                &piece_hashes,
                            ));
                        }
                        StoreCmd::CreditReceipts { credits, release, reply } => {
                            let mut sets: HashMap<SetKey, PieceSet> = HashMap::new();
                            for c in &credits {
                                let key = c.claim.set_key();
                                let set = match sets.entry(key) {
                                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                                    std::collections::hash_map::Entry::Vacant(e) => {
                                        e.insert(read_set(&credited_sets, &key)?)
                                    }
                                };
                                if !set.insert(c.claim.piece_index) {
                                    // The ledger reserved it, so it cannot be credited: a bug.
                                    return Err(corrupt(
                                        "credited_pieces",
                                        "a reserved piece was already credited",
                                    ));
                                }
                                let s = sums.entry(c.uploader).or_default();
                                s.verified_up = s.verified_up.saturating_add(c.bytes);
                                let s = sums.entry(c.signer).or_default();
                                s.verified_down = s.verified_down.saturating_add(c.bytes);
                            }
                            for (key, set) in &sets {
                                credited_sets.insert(&key.0[..], set.to_bytes().as_slice())?;
                            }
                            if !credits.is_empty() {
                                let n = meta.get("credited_pieces")?.map_or(0, |v| v.value());
                                meta.insert("credited_pieces", n + credits.len() as u64)?;
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
            if has_flushes && *commit_faults > 0 {
                *commit_faults -= 1;
                return Err(StoreError::InjectedFault(*commit_faults));
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = &result {
            self.health.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("store commit failed: {e:#}");
        }
        // Users created in this batch become visible to announces only once durable; credited
        // pieces leave the reserved state only once durable (until then a concurrent receipt
        // for the same piece is told "in flight"), and a failed commit releases them.
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
                if let Some(u) = accounts.by_id(c.uploader) {
                    saturating_add_to(&u.verified_uploaded, c.bytes);
                }
                if let Some(u) = accounts.by_id(c.signer) {
                    saturating_add_to(&u.verified_downloaded, c.bytes);
                }
            }
            self.stats.credited_pieces.fetch_add(credited.len() as u64, Ordering::Relaxed);
            if let Some(o) = new_overrides {
                if let Some(w) = o.receipt_window_secs {
                    ledger.set_freshness(Freshness { window_secs: w, ..ledger.freshness() });
                }
                self.overrides = o;
            }
        }
        {
            for c in &credited {
                ledger.finish(&c.claim);
            }
        }
        for claim in &released {
            ledger.finish(claim);
        }
        if chain_changed && let Err(e) = self.restore_outbox_stats() {
            tracing::error!("outbox stats: {e:#}");
        }
        let failed = result.is_err();
        for reply in replies {
            reply(result.as_ref().err());
        }
        if failed { flushes } else { Vec::new() }
    }
}

/// How soon announce accounting from a failed commit is retried when nothing else arrives.
const FLUSH_RETRY: Duration = Duration::from_secs(1);

/// Failed accounting batches kept for retry (about 8 minutes of flushes from 16 cores at the
/// default interval) before the oldest are dropped, so a broken disk cannot exhaust memory.
const MAX_RETRY_FLUSHES: usize = 4096;

/// An invite code not used yet.
#[derive(serde::Serialize, serde::Deserialize)]
struct Invite {
    /// The inviting user (`None`: an admin).
    created_by: Option<u32>,
    /// Unix seconds.
    created_at: u64,
}

/// The piece set stored under `key` (empty if none).
fn read_set(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &SetKey,
) -> Result<PieceSet, StoreError> {
    match table.get(&key.0[..])? {
        Some(v) => PieceSet::from_bytes(v.value()).map_err(|e| corrupt("credited_pieces", e)),
        None => Ok(PieceSet::default()),
    }
}

/// The store's half of a report: each receipt's piece hash against the torrent's own, then the
/// ledger's freshness, duplicate, in-flight and already-credited checks, reserving what passes.
fn reserve(
    ledger: &mut Ledger,
    items: &[super::ReserveItem],
    now: u64,
    credited_sets: &impl ReadableTable<&'static [u8], &'static [u8]>,
    piece_hashes: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<Vec<Result<PieceClaim, ReserveError>>, StoreError> {
    let mut hashes: HashMap<InfoHash, Option<Vec<u8>>> = HashMap::new();
    let mut verdicts: Vec<Option<Result<PieceClaim, ReserveError>>> = vec![None; items.len()];
    let mut claims = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let known = match hashes.entry(item.torrent) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(piece_hashes.get(&item.torrent.0[..])?.map(|v| v.value().to_vec()))
            }
        };
        if let Some(all) = known {
            let at = item.receipt.piece_index as usize * 20;
            if all.get(at..at + 20) != Some(item.receipt.piece_hash.as_bytes()) {
                verdicts[i] = Some(Err(ReserveError::WrongPieceHash));
                continue;
            }
        }
        claims.push((PieceClaim::of(&item.receipt, item.torrent), item.receipt.timestamp));
        positions.push(i);
    }
    let mut sets: HashMap<SetKey, PieceSet> = HashMap::new();
    let checked = ledger.reserve(&claims, now, |claim| {
        let key = claim.set_key();
        let set = match sets.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(read_set(credited_sets, &key)?)
            }
        };
        Ok::<_, StoreError>(set.contains(claim.piece_index))
    })?;
    for ((i, (claim, _)), verdict) in positions.into_iter().zip(&claims).zip(checked) {
        verdicts[i] = Some(verdict.map(|()| *claim).map_err(ReserveError::Ledger));
    }
    Ok(verdicts
        .into_iter()
        .map(|v| v.expect("every item is refused for its hash or passed to the ledger"))
        .collect())
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
