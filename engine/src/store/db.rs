//! The redb database and the store thread's command loop.

use std::path::Path;
use std::sync::Arc;

use pbts_http::InfoHash;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Accounts, Passkey, StoreCmd, UserRecord};
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
/// Small named values (`next_user_id`).
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Small named texts (`instance_id`).
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

/// The open database.
#[derive(Debug)]
pub struct Db {
    db: Database,
}

impl Db {
    /// Opens (creating if needed) `<dir>/pbts.redb` and its tables.
    ///
    /// # Errors
    /// I/O or database errors, or a database locked by another process.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        let db = Database::create(dir.join("pbts.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(USERS)?;
        tx.open_table(USER_NAMES)?;
        tx.open_table(USER_KEYS)?;
        tx.open_table(USER_TORRENT)?;
        tx.open_table(SNATCHES)?;
        tx.open_table(TORRENTS)?;
        tx.open_table(META)?;
        tx.open_table(META_TEXT)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// Loads users into `accounts`, snatch counts into `swarms`, and returns registered torrents.
    ///
    /// # Errors
    /// Database errors or corrupt records.
    pub fn load(
        &self,
        accounts: &Accounts,
        swarms: &SwarmStore,
    ) -> Result<Vec<InfoHash>, StoreError> {
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
            let (k, _) = row?;
            torrents
                .push(InfoHash::from_slice(k.value()).ok_or_else(|| corrupt("torrents", "key"))?);
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
    /// are committed in one transaction; replies go out after the commit.
    pub fn run(self, rx: flume::Receiver<StoreCmd>, accounts: Arc<Accounts>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.apply(batch, &accounts);
        }
    }

    fn apply(&self, batch: Vec<StoreCmd>, accounts: &Accounts) {
        let mut replies: Vec<ReplyFn> = Vec::new();
        let mut created = Vec::new();
        let mut attached = Vec::new();
        let result = (|| -> Result<(), StoreError> {
            let tx = self.db.begin_write()?;
            {
                let mut users = tx.open_table(USERS)?;
                let mut names = tx.open_table(USER_NAMES)?;
                let mut keys = tx.open_table(USER_KEYS)?;
                let mut user_torrent = tx.open_table(USER_TORRENT)?;
                let mut snatches = tx.open_table(SNATCHES)?;
                let mut torrents = tx.open_table(TORRENTS)?;
                let mut meta = tx.open_table(META)?;
                let mut user_sums = std::collections::HashMap::<u32, (u64, u64)>::new();
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
                            };
                            let json =
                                serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
                            users.insert(id, json.as_slice())?;
                            names.insert(name.as_str(), id)?;
                            if let Some(pk) = &public_key {
                                keys.insert(&pk.0[..], id)?;
                            }
                            created.push(record.clone());
                            replies.push(Box::new(move |err| {
                                let _ = reply.send(match err {
                                    None => Ok(record),
                                    Some(_) => Err(StoreError::Closed),
                                });
                            }));
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
                            replies.push(Box::new(move |err| {
                                let _ = reply.send(match err {
                                    None => Ok(record),
                                    Some(_) => Err(StoreError::Closed),
                                });
                            }));
                        }
                        StoreCmd::RegisterTorrent { record, reply } => {
                            // Stored under every hash clients announce it with (v1, truncated
                            // v2), so a hybrid torrent is one torrent either way.
                            let json =
                                serde_json::to_vec(&record).map_err(|e| corrupt("torrents", e))?;
                            let mut new = false;
                            for ih in record.announce_hashes() {
                                if torrents.get(&ih.0[..])?.is_none() {
                                    new = true;
                                    torrents.insert(&ih.0[..], json.as_slice())?;
                                }
                            }
                            replies.push(Box::new(move |err| {
                                let _ = reply.send(match err {
                                    None => Ok(new),
                                    Some(_) => Err(StoreError::Closed),
                                });
                            }));
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
                                let sum = user_sums.entry(d.user).or_default();
                                sum.0 = sum.0.saturating_add(d.uploaded);
                                sum.1 = sum.1.saturating_add(d.downloaded);
                            }
                            for (ih, n) in new_snatches {
                                let old = snatches.get(&ih.0[..])?.map(|v| v.value()).unwrap_or(0);
                                snatches.insert(&ih.0[..], old.saturating_add(n))?;
                            }
                        }
                        StoreCmd::Sync { reply } => {
                            replies.push(Box::new(move |err| {
                                let _ = reply.send(match err {
                                    None => Ok(()),
                                    Some(_) => Err(StoreError::Closed),
                                });
                            }));
                        }
                    }
                }
                // Persisted user totals are exactly the sum of flushed deltas; the in-memory
                // mirror runs ahead by what is still pending on the cores.
                for (id, (up, down)) in user_sums {
                    let Some(v) = users.get(id)? else { continue };
                    let mut record: UserRecord =
                        serde_json::from_slice(v.value()).map_err(|e| corrupt("users", e))?;
                    drop(v);
                    record.uploaded = record.uploaded.saturating_add(up);
                    record.downloaded = record.downloaded.saturating_add(down);
                    let json = serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
                    users.insert(id, json.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = &result {
            tracing::error!("store commit failed: {e:#}");
        }
        // Users created in this batch become visible to announces only once durable.
        if result.is_ok() {
            for record in &created {
                accounts.insert(record);
            }
            for (id, pk) in attached {
                if let Some(user) = accounts.by_id(id) {
                    accounts.attach_key(&user, pk);
                }
            }
        }
        for reply in replies {
            reply(result.as_ref().err());
        }
    }
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
