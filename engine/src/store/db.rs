//! The redb database and the store thread's command loop.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pbts_proto::InfoHash;
use pbts_verifier::credit::{Freshness, Ledger, PieceClaim, PieceSet, SetKey};
use pbts_verifier::receipt::PublicKeyBytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use super::{
    Accounts, ChainBatch, OutboxStats, Overrides, Passkey, ReceiptCredit, ReceiptStats, Reply,
    ReserveError, StatDelta, StoreCmd, StoreStats, TorrentInfo, TorrentRecord, UserRecord,
    saturating_add_to,
};
use crate::clock::unix_now;
use crate::swarm::SwarmTable;
use crate::swarm::table::UserId;

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
    /// The command's batch did not commit (a database error in it, or a failed commit), so
    /// nothing of the command happened; it may be sent again.
    #[error("not saved: the database failed ({0}); nothing was changed, try again")]
    NotCommitted(String),
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
        swarms: &SwarmTable,
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

    /// The store's health counters (commit failures, accounting waiting for a retry).
    pub fn health(&self) -> &StoreStats {
        &self.health
    }

    /// Applies `batch` in one transaction; returns its announce accounting if the commit failed
    /// (to be retried).
    ///
    /// Each command runs against the batch's [`Tables`] ([`Db::write`]); the replies that wait
    /// for the commit and the in-memory changes it allows are collected in an [`AfterCommit`]
    /// and carried out here once the outcome is known.
    pub fn apply(&mut self, batch: Vec<StoreCmd>, accounts: &Accounts) -> Vec<StoreCmd> {
        let flushes: Vec<StoreCmd> = batch
            .iter()
            .filter_map(|cmd| match cmd {
                StoreCmd::Flush { deltas, snatches } => {
                    Some(StoreCmd::Flush { deltas: deltas.clone(), snatches: snatches.clone() })
                }
                _ => None,
            })
            .collect();
        let mut after = AfterCommit::default();
        let result = self.write(batch, accounts, &mut after);
        if let Err(e) = &result {
            self.health.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("store commit failed: {e:#}");
        }
        // Users created in this batch become visible to announces only once durable; credited
        // pieces leave the reserved state only once durable (until then a concurrent receipt
        // for the same piece is told "in flight"), and a failed commit releases them.
        if result.is_ok() {
            self.publish(&after, accounts);
        }
        for claim in after.credited.iter().map(|c| &c.claim).chain(&after.released) {
            self.ledger.finish(claim);
        }
        if after.chain_changed
            && let Err(e) = self.restore_outbox_stats()
        {
            tracing::error!("outbox stats: {e:#}");
        }
        for reply in after.replies {
            reply(result.as_ref().err());
        }
        if result.is_err() { flushes } else { Vec::new() }
    }

    /// Runs every command of `batch` in one write transaction, then commits it (or refuses to,
    /// under `PBTS_FAULT_COMMIT`, when the batch carries announce accounting).
    ///
    /// # Errors
    /// The first database error of a command, which aborts the transaction: every command of the
    /// batch is answered through `after` ([`StoreError::NotCommitted`] for those that waited for
    /// the commit) and the receipts of every credit in it are released. Otherwise a failed or
    /// refused commit.
    fn write(
        &mut self,
        batch: Vec<StoreCmd>,
        accounts: &Accounts,
        after: &mut AfterCommit,
    ) -> Result<(), StoreError> {
        let has_flushes = batch.iter().any(|cmd| matches!(cmd, StoreCmd::Flush { .. }));
        let mut commands = batch.into_iter();
        let tx = match self.db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                // Nothing ran: every command is answered with the failure.
                commands.for_each(|cmd| after.abandon(cmd));
                return Err(e.into());
            }
        };
        let mut tables = match Tables::open(&tx) {
            Ok(t) => t,
            Err(e) => {
                commands.for_each(|cmd| after.abandon(cmd));
                return Err(e);
            }
        };
        let mut written = Ok(());
        for cmd in commands.by_ref() {
            written = self.dispatch(&mut tables, cmd, accounts, after);
            if written.is_err() {
                break;
            }
        }
        // The transaction is aborted: the commands after the failing one never run, but are
        // answered, and the receipts they hold are released.
        commands.for_each(|cmd| after.abandon(cmd));
        let written = written.and_then(|()| tables.write_sums());
        // Set even when a command failed half way: the stats are then re-read unchanged.
        after.chain_changed = tables.chain_changed;
        written?;
        drop(tables);
        if has_flushes && self.commit_faults > 0 {
            self.commit_faults -= 1;
            return Err(StoreError::InjectedFault(self.commit_faults));
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs one command against the batch's tables, leaving in `after` its reply (unless it was
    /// answered at once) and what it changes in memory once the batch commits.
    fn dispatch(
        &mut self,
        t: &mut Tables<'_>,
        cmd: StoreCmd,
        accounts: &Accounts,
        after: &mut AfterCommit,
    ) -> Result<(), StoreError> {
        match cmd {
            StoreCmd::CreateUser { name, invite, public_key, reply } => {
                let answer = t.create_user(&name, invite.as_deref(), public_key.as_ref());
                if let Ok(Answer::OnCommit(record)) = &answer {
                    after.created.push(record.clone());
                }
                after.answer_with(reply, answer)?;
            }
            StoreCmd::CreateInvite { by, reply } => {
                after.answer_with(reply, t.create_invite(by))?
            }
            StoreCmd::AttachKey { name, public_key, reply } => {
                let answer = t.attach_key(&name, &public_key);
                if let Ok(Answer::OnCommit(record)) = &answer {
                    after.attached.push((record.id, public_key));
                }
                after.answer_with(reply, answer)?;
            }
            StoreCmd::RegisterTorrent { record, pieces, reply } => {
                after.answer_with(reply, t.register_torrent(record, pieces))?;
            }
            StoreCmd::ReserveReceipts { items, now, reply } => {
                // Answered now, before the batch commits: reservations are in memory and the
                // reads see every credit of this batch so far. A read error refuses this
                // report, not the whole batch.
                let _ = reply.send(t.reserve_receipts(&mut self.ledger, &items, now));
            }
            StoreCmd::CreditReceipts { credits, release, reply } => {
                after.released.extend(release);
                if let Err(e) = t.credit_receipts(&credits) {
                    // Not credited: the claims are free again (for a later report).
                    after.released.extend(credits.into_iter().map(|c| c.claim));
                    return after.answer_with(reply, Err(e));
                }
                after.credited.extend(credits);
                after.answer(reply, Answer::OnCommit(()));
            }
            StoreCmd::TakeChainBatch { contract, max_users, reply } => {
                after.answer_with(reply, t.take_chain_batch(contract, max_users, accounts))?;
            }
            StoreCmd::ChainBatchDone { id, reply } => {
                let done = t.chain_batch_done(id).map(Answer::OnCommit);
                after.answer_with(reply, done)?;
            }
            StoreCmd::RenumberChainBatch { to, reply } => {
                let done = t.renumber_chain_batch(to).map(Answer::OnCommit);
                after.answer_with(reply, done)?;
            }
            StoreCmd::SetReputation { contract, last_batch_id, reply } => {
                after.answer_with(reply, t.set_reputation(contract, last_batch_id))?;
            }
            StoreCmd::SetOverrides { overrides: change, reply } => {
                // Several changes in one batch add up.
                let merged = after.overrides.unwrap_or(self.overrides).merge(change);
                after.answer_with(
                    reply,
                    t.set_overrides(&merged).map(|()| Answer::OnCommit(merged)),
                )?;
                after.overrides = Some(merged);
            }
            StoreCmd::Flush { deltas, snatches } => t.flush(&deltas, &snatches)?,
            StoreCmd::Sync { reply } => after.answer(reply, Answer::OnCommit(())),
        }
        Ok(())
    }

    /// Makes a committed batch visible in memory: new users and keys to announces, credited
    /// bytes in the users' verified totals, changed settings in force.
    fn publish(&mut self, after: &AfterCommit, accounts: &Accounts) {
        for record in &after.created {
            accounts.insert(record);
        }
        for &(id, pk) in &after.attached {
            if let Some(user) = accounts.by_id(id) {
                accounts.attach_key(&user, pk);
            }
        }
        for c in &after.credited {
            if let Some(u) = accounts.by_id(c.uploader) {
                saturating_add_to(&u.verified_uploaded, c.bytes);
            }
            if let Some(u) = accounts.by_id(c.signer) {
                saturating_add_to(&u.verified_downloaded, c.bytes);
            }
        }
        self.stats.credited_pieces.fetch_add(after.credited.len() as u64, Ordering::Relaxed);
        if let Some(o) = after.overrides {
            if let Some(w) = o.receipt_window_secs {
                let freshness = Freshness { window_secs: w, ..self.ledger.freshness() };
                self.ledger.set_freshness(freshness);
            }
            self.overrides = o;
        }
    }
}

/// Sends a command's reply once the batch's commit outcome is known.
type ReplyFn = Box<dyn FnOnce(Option<&StoreError>)>;

/// A command's answer, and when it may be sent.
#[derive(Debug)]
enum Answer<T> {
    /// Sent at once: it does not depend on this batch's commit (a refusal that wrote nothing,
    /// or something already durable).
    Now(Result<T, StoreError>),
    /// Sent once the batch commits; the caller gets [`StoreError::Closed`] if it does not.
    OnCommit(T),
}

impl<T> Answer<T> {
    /// A refusal, sent at once.
    fn refused(e: StoreError) -> Self {
        Self::Now(Err(e))
    }
}

/// What a batch leaves for after its commit: the replies that wait for it, and the in-memory
/// changes made only if it succeeds.
#[derive(Default)]
struct AfterCommit {
    /// Replies to send with the outcome.
    replies: Vec<ReplyFn>,
    /// Users created, to add to [`Accounts`].
    created: Vec<UserRecord>,
    /// Keys given to existing users.
    attached: Vec<(UserId, PublicKeyBytes)>,
    /// Receipts credited: added to both users' verified totals, and their reservations ended
    /// whatever the outcome.
    credited: Vec<ReceiptCredit>,
    /// Reservations to end whatever the outcome (their signatures failed).
    released: Vec<PieceClaim>,
    /// The overrides in force after the batch, if it changed them.
    overrides: Option<Overrides>,
    /// The chain tables changed: re-read the outbox stats.
    chain_changed: bool,
}

impl AfterCommit {
    /// Like [`AfterCommit::answer`] for a command that may have failed: its failure aborts the
    /// batch, so its caller is told the batch did not commit, and the error is returned.
    fn answer_with<T: 'static>(
        &mut self,
        reply: Reply<T>,
        answer: Result<Answer<T>, StoreError>,
    ) -> Result<(), StoreError> {
        match answer {
            Ok(answer) => {
                self.answer(reply, answer);
                Ok(())
            }
            Err(e) => {
                self.fail_on_commit(reply);
                Err(e)
            }
        }
    }

    /// Answers `reply` with the batch's failure once it is known.
    fn fail_on_commit<T: 'static>(&mut self, reply: Reply<T>) {
        self.replies.push(Box::new(move |err| {
            let why = err.map_or_else(|| "aborted".to_owned(), ToString::to_string);
            let _ = reply.send(Err(StoreError::NotCommitted(why)));
        }));
    }

    /// A command of an aborted batch that never ran: its caller is told the batch did not
    /// commit, and the receipts a credit held are released.
    fn abandon(&mut self, cmd: StoreCmd) {
        match cmd {
            StoreCmd::CreateUser { reply, .. } | StoreCmd::AttachKey { reply, .. } => {
                self.fail_on_commit(reply);
            }
            StoreCmd::CreateInvite { reply, .. } => self.fail_on_commit(reply),
            StoreCmd::RegisterTorrent { reply, .. } => self.fail_on_commit(reply),
            StoreCmd::ReserveReceipts { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted("aborted".to_owned())));
            }
            StoreCmd::CreditReceipts { credits, release, reply } => {
                self.released.extend(credits.into_iter().map(|c| c.claim).chain(release));
                self.fail_on_commit(reply);
            }
            StoreCmd::TakeChainBatch { reply, .. } => self.fail_on_commit(reply),
            StoreCmd::ChainBatchDone { reply, .. }
            | StoreCmd::RenumberChainBatch { reply, .. }
            | StoreCmd::Sync { reply } => self.fail_on_commit(reply),
            StoreCmd::SetReputation { reply, .. } => self.fail_on_commit(reply),
            StoreCmd::SetOverrides { reply, .. } => self.fail_on_commit(reply),
            // Kept by the caller for retry.
            StoreCmd::Flush { .. } => {}
        }
    }

    /// Sends `answer` now, or keeps it until the outcome is known.
    fn answer<T: 'static>(&mut self, reply: Reply<T>, answer: Answer<T>) {
        match answer {
            Answer::Now(result) => {
                let _ = reply.send(result);
            }
            Answer::OnCommit(value) => self.replies.push(Box::new(move |err| {
                let _ = reply.send(match err {
                    None => Ok(value),
                    Some(e) => Err(StoreError::NotCommitted(e.to_string())),
                });
            })),
        }
    }
}

/// An invite code not used yet.
#[derive(serde::Serialize, serde::Deserialize)]
struct Invite {
    /// The inviting user (`None`: an admin).
    created_by: Option<u32>,
    /// Unix seconds.
    created_at: u64,
}

/// Per-user totals added by one batch.
#[derive(Default)]
struct Sums {
    up: u64,
    down: u64,
    verified_up: u64,
    verified_down: u64,
}

/// The tables of one write transaction, each opened once per batch, and what the batch's
/// commands have added up so far. One method per [`StoreCmd`] (but `Sync`, which writes
/// nothing): each reads and writes only through these tables and returns its answer; nothing
/// in memory changes until the commit ([`Db::publish`]).
struct Tables<'txn> {
    users: Table<'txn, u32, &'static [u8]>,
    names: Table<'txn, &'static str, u32>,
    keys: Table<'txn, &'static [u8], u32>,
    user_torrent: Table<'txn, &'static [u8], &'static [u8]>,
    snatches: Table<'txn, &'static [u8], u32>,
    torrents: Table<'txn, &'static [u8], &'static [u8]>,
    credited_sets: Table<'txn, &'static [u8], &'static [u8]>,
    piece_hashes: Table<'txn, &'static [u8], &'static [u8]>,
    chain_pending: Table<'txn, u32, &'static [u8]>,
    chain_batch: Table<'txn, u64, &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
    meta_text: Table<'txn, &'static str, &'static str>,
    invites: Table<'txn, &'static str, &'static [u8]>,
    user_invites: Table<'txn, u32, u32>,
    invited_by: Table<'txn, u32, u32>,
    /// Claimed and verified bytes per user from this batch's flushes and credits, written to
    /// `users` (and `chain_pending`) once per user by [`Tables::write_sums`].
    sums: HashMap<UserId, Sums>,
    /// A command changed `chain_pending`, `chain_batch` or the chain's meta values.
    chain_changed: bool,
}

impl<'txn> Tables<'txn> {
    fn open(tx: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            users: tx.open_table(USERS)?,
            names: tx.open_table(USER_NAMES)?,
            keys: tx.open_table(USER_KEYS)?,
            user_torrent: tx.open_table(USER_TORRENT)?,
            snatches: tx.open_table(SNATCHES)?,
            torrents: tx.open_table(TORRENTS)?,
            credited_sets: tx.open_table(CREDITED)?,
            piece_hashes: tx.open_table(PIECE_HASHES)?,
            chain_pending: tx.open_table(CHAIN_PENDING)?,
            chain_batch: tx.open_table(CHAIN_BATCH)?,
            meta: tx.open_table(META)?,
            meta_text: tx.open_table(META_TEXT)?,
            invites: tx.open_table(INVITES)?,
            user_invites: tx.open_table(USER_INVITES)?,
            invited_by: tx.open_table(INVITED_BY)?,
            sums: HashMap::new(),
            chain_changed: false,
        })
    }

    /// [`StoreCmd::CreateUser`]: a user with the next id and a fresh passkey, consuming
    /// `invite` (and recording who invited them: 0 for an admin's invite).
    ///
    /// Refused, with nothing written, with `UserExists`, `KeyExists` or `InvalidInvite`.
    fn create_user(
        &mut self,
        name: &str,
        invite: Option<&str>,
        public_key: Option<&PublicKeyBytes>,
    ) -> Result<Answer<UserRecord>, StoreError> {
        if self.names.get(name)?.is_some() {
            return Ok(Answer::refused(StoreError::UserExists(name.to_owned())));
        }
        if let Some(pk) = public_key
            && self.keys.get(&pk.0[..])?.is_some()
        {
            return Ok(Answer::refused(StoreError::KeyExists));
        }
        let inviter = match invite {
            None => None,
            Some(code) => {
                let Some(v) = self.invites.remove(code)? else {
                    return Ok(Answer::refused(StoreError::InvalidInvite));
                };
                let i: Invite =
                    serde_json::from_slice(v.value()).map_err(|e| corrupt("invites", e))?;
                Some(i.created_by.unwrap_or(0))
            }
        };
        let id = self.meta.get("next_user_id")?.map(|v| v.value()).unwrap_or(1);
        self.meta.insert("next_user_id", id + 1)?;
        let id = u32::try_from(id).map_err(|e| corrupt("meta", e))?;
        if let Some(by) = inviter {
            self.invited_by.insert(id, by)?;
        }
        let record = UserRecord {
            id,
            name: name.to_owned(),
            passkey: Passkey::random().as_str().to_owned(),
            created_at: unix_now(),
            uploaded: 0,
            downloaded: 0,
            public_key: public_key.map(super::encode_public_key),
            verified_uploaded: 0,
            verified_downloaded: 0,
        };
        let json = serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
        self.users.insert(id, json.as_slice())?;
        self.names.insert(name, id)?;
        if let Some(pk) = public_key {
            self.keys.insert(&pk.0[..], id)?;
        }
        Ok(Answer::OnCommit(record))
    }

    /// [`StoreCmd::CreateInvite`]: a one-use code, counted against the inviting user's budget
    /// (an admin's, `by: None`, is not counted). Refused with `NoInvitesLeft`.
    fn create_invite(&mut self, by: Option<(UserId, u32)>) -> Result<Answer<String>, StoreError> {
        if let Some((user, budget)) = by {
            let used = self.user_invites.get(user)?.map_or(0, |v| v.value());
            if used >= budget {
                return Ok(Answer::refused(StoreError::NoInvitesLeft { used, budget }));
            }
            self.user_invites.insert(user, used + 1)?;
        }
        let code = Passkey::random().as_str().to_owned();
        let invite = Invite { created_by: by.map(|(u, _)| u), created_at: unix_now() };
        let json = serde_json::to_vec(&invite).map_err(|e| corrupt("invites", e))?;
        self.invites.insert(code.as_str(), json.as_slice())?;
        Ok(Answer::OnCommit(code))
    }

    /// [`StoreCmd::AttachKey`]: gives the user named `name` the key `public_key`. Refused with
    /// `UserNotFound`, `UserHasKey` or `KeyExists`.
    fn attach_key(
        &mut self,
        name: &str,
        public_key: &PublicKeyBytes,
    ) -> Result<Answer<UserRecord>, StoreError> {
        let Some(id) = self.names.get(name)?.map(|v| v.value()) else {
            return Ok(Answer::refused(StoreError::UserNotFound));
        };
        let Some(raw) = self.users.get(id)?.map(|v| v.value().to_vec()) else {
            return Err(corrupt("users", "name without user"));
        };
        let mut record: UserRecord =
            serde_json::from_slice(&raw).map_err(|e| corrupt("users", e))?;
        if record.public_key.is_some() {
            return Ok(Answer::refused(StoreError::UserHasKey));
        }
        if self.keys.get(&public_key.0[..])?.is_some() {
            return Ok(Answer::refused(StoreError::KeyExists));
        }
        record.public_key = Some(super::encode_public_key(public_key));
        let json = serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
        self.users.insert(id, json.as_slice())?;
        self.keys.insert(&public_key.0[..], id)?;
        Ok(Answer::OnCommit(record))
    }

    /// [`StoreCmd::RegisterTorrent`]: stores `record` (merged into an earlier registration)
    /// and its piece hashes; answers whether it was new, and the record as stored. Refused with
    /// `TorrentConflict`.
    fn register_torrent(
        &mut self,
        record: TorrentRecord,
        pieces: Option<Vec<u8>>,
    ) -> Result<Answer<(bool, TorrentRecord)>, StoreError> {
        // Stored under every hash clients announce it with (v1, truncated v2), so a hybrid
        // torrent is one torrent either way.
        let mut existing = None;
        for ih in &record.announce_hashes() {
            if let Some(v) = self.torrents.get(&ih.0[..])? {
                let r: TorrentRecord =
                    serde_json::from_slice(v.value()).map_err(|e| corrupt("torrents", e))?;
                existing = Some(r);
                break;
            }
        }
        let new = existing.is_none();
        let stored = match existing {
            None => record,
            Some(old) => match merge_torrent(old, record) {
                Ok(merged) => merged,
                Err(e) => return Ok(Answer::refused(e)),
            },
        };
        // The piece hashes, kept under the canonical hash only. A torrent first registered
        // without them (by JSON) gets them from its .torrent later; different ones are a
        // conflict.
        if let Some(pieces) = pieces {
            let key = stored.canonical_hash();
            let old = self.piece_hashes.get(&key.0[..])?.map(|v| v.value().to_vec());
            match old {
                Some(old) if old != pieces => {
                    return Ok(Answer::refused(StoreError::TorrentConflict {
                        field: "pieces",
                        existing: old.len() as u64 / 20,
                        given: pieces.len() as u64 / 20,
                    }));
                }
                Some(_) => {}
                None => {
                    self.piece_hashes.insert(&key.0[..], pieces.as_slice())?;
                }
            }
        }
        let json = serde_json::to_vec(&stored).map_err(|e| corrupt("torrents", e))?;
        for ih in stored.announce_hashes() {
            self.torrents.insert(&ih.0[..], json.as_slice())?;
        }
        Ok(Answer::OnCommit((new, stored)))
    }

    /// [`StoreCmd::ReserveReceipts`], the store's half of a report: each receipt's piece hash
    /// against the torrent's own, then the ledger's freshness, duplicate, in-flight and
    /// already-credited checks, reserving what passes. Writes nothing.
    fn reserve_receipts(
        &self,
        ledger: &mut Ledger,
        items: &[super::ReserveItem],
        now: u64,
    ) -> Result<Vec<Result<PieceClaim, ReserveError>>, StoreError> {
        let mut hashes: HashMap<InfoHash, Option<Vec<u8>>> = HashMap::new();
        let mut verdicts: Vec<Option<Result<PieceClaim, ReserveError>>> = vec![None; items.len()];
        let mut claims = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let known = match hashes.entry(item.torrent) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(
                    self.piece_hashes.get(&item.torrent.0[..])?.map(|v| v.value().to_vec()),
                ),
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
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(read_set(&self.credited_sets, &key)?),
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

    /// [`StoreCmd::CreditReceipts`]: adds each credited piece to its downloader's piece set
    /// and to the `credited_pieces` count, and the bytes to both users' verified sums.
    ///
    /// # Errors
    /// A piece already in its set: the ledger reserved it, so this is a bug, and the batch is
    /// refused rather than crediting twice.
    fn credit_receipts(&mut self, credits: &[ReceiptCredit]) -> Result<(), StoreError> {
        let mut sets: HashMap<SetKey, PieceSet> = HashMap::new();
        for c in credits {
            let key = c.claim.set_key();
            let set = match sets.entry(key) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(read_set(&self.credited_sets, &key)?),
            };
            if !set.insert(c.claim.piece_index) {
                return Err(corrupt("credited_pieces", "a reserved piece was already credited"));
            }
            let s = self.sums.entry(c.uploader).or_default();
            s.verified_up = s.verified_up.saturating_add(c.bytes);
            let s = self.sums.entry(c.signer).or_default();
            s.verified_down = s.verified_down.saturating_add(c.bytes);
        }
        for (key, set) in &sets {
            self.credited_sets.insert(&key.0[..], set.to_bytes().as_slice())?;
        }
        if !credits.is_empty() {
            let n = self.meta.get("credited_pieces")?.map_or(0, |v| v.value());
            self.meta.insert("credited_pieces", n + credits.len() as u64)?;
        }
        Ok(())
    }

    /// [`StoreCmd::TakeChainBatch`]: the batch in flight (answered at once: it is durable), or
    /// a new one from up to `max_users` users' pending credit. Pending credit of a user who is
    /// unknown or has no key is dropped. Refused with `ChainContract` unless the outbox is
    /// pointed at `contract`.
    fn take_chain_batch(
        &mut self,
        contract: pbts_chain::Address,
        max_users: usize,
        accounts: &Accounts,
    ) -> Result<Answer<Option<ChainBatch>>, StoreError> {
        let current = self.meta_text.get("chain_contract")?.map(|v| v.value().to_owned());
        let asked = contract.to_string();
        if current.as_deref().is_none_or(|c| !c.eq_ignore_ascii_case(&asked)) {
            let current = current.unwrap_or_else(|| "nothing".to_owned());
            return Ok(Answer::refused(StoreError::ChainContract { current, asked }));
        }
        if let Some((_, batch)) = first_batch(&self.chain_batch)? {
            return Ok(Answer::Now(Ok(Some(batch))));
        }
        let mut rows = Vec::new();
        for row in self.chain_pending.iter()?.take(max_users) {
            let (k, v) = row?;
            let (down, up) =
                decode_pair(v.value()).ok_or_else(|| corrupt("chain_pending", "value"))?;
            rows.push((k.value(), down, up));
        }
        let mut entries = Vec::with_capacity(rows.len());
        for &(id, down, up) in &rows {
            self.chain_pending.remove(id)?;
            self.chain_changed = true;
            let Some(user) = accounts.by_id(id) else {
                tracing::warn!("chain credit of unknown user {id} dropped");
                continue;
            };
            let Some(pk) = user.public_key.get() else {
                tracing::warn!("chain credit of user {id} without a key dropped");
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
            return Ok(Answer::OnCommit(None));
        }
        let last = self.meta.get("chain_last_batch")?.map_or(0, |v| v.value());
        let batch = ChainBatch { id: last + 1, contract, entries };
        let json = serde_json::to_vec(&batch).map_err(|e| corrupt("chain_batch", e))?;
        self.chain_batch.insert(batch.id, json.as_slice())?;
        Ok(Answer::OnCommit(Some(batch)))
    }

    /// [`StoreCmd::ChainBatchDone`]: forgets batch `id` and records it as the contract's last.
    fn chain_batch_done(&mut self, id: u64) -> Result<(), StoreError> {
        self.chain_batch.remove(id)?;
        self.meta.insert("chain_last_batch", id)?;
        self.chain_changed = true;
        Ok(())
    }

    /// [`StoreCmd::RenumberChainBatch`]: the batch in flight becomes batch `to`, and `to - 1`
    /// the contract's last. Nothing to do without a batch in flight.
    fn renumber_chain_batch(&mut self, to: u64) -> Result<(), StoreError> {
        let Some((old, mut batch)) = first_batch(&self.chain_batch)? else { return Ok(()) };
        self.chain_batch.remove(old)?;
        batch.id = to;
        let json = serde_json::to_vec(&batch).map_err(|e| corrupt("chain_batch", e))?;
        self.chain_batch.insert(to, json.as_slice())?;
        self.meta.insert("chain_last_batch", to.saturating_sub(1))?;
        self.chain_changed = true;
        Ok(())
    }

    /// [`StoreCmd::SetReputation`]: points the outbox at `contract`, whose last applied batch
    /// is `last_batch_id`. Refused with `ChainBusy` while a batch for another contract is in
    /// flight.
    fn set_reputation(
        &mut self,
        contract: pbts_chain::Address,
        last_batch_id: u64,
    ) -> Result<Answer<()>, StoreError> {
        if let Some((_, batch)) = first_batch(&self.chain_batch)?
            && batch.contract != contract
        {
            return Ok(Answer::refused(StoreError::ChainBusy(batch.contract.to_string())));
        }
        self.meta_text.insert("chain_contract", contract.to_string().as_str())?;
        self.meta.insert("chain_last_batch", last_batch_id)?;
        self.chain_changed = true;
        Ok(Answer::OnCommit(()))
    }

    /// [`StoreCmd::SetOverrides`]: persists `overrides`, every run-time setting in force.
    fn set_overrides(&mut self, overrides: &Overrides) -> Result<(), StoreError> {
        let json = serde_json::to_string(overrides).map_err(|e| corrupt("meta_text", e))?;
        self.meta_text.insert("config_overrides", json.as_str())?;
        Ok(())
    }

    /// [`StoreCmd::Flush`]: adds announce deltas to the (user, torrent) totals and the users'
    /// claimed sums, and new snatches to the torrents' counts.
    fn flush(
        &mut self,
        deltas: &[StatDelta],
        snatches: &[(InfoHash, u32)],
    ) -> Result<(), StoreError> {
        for d in deltas {
            let mut key = [0u8; 24];
            key[..4].copy_from_slice(&d.user.to_be_bytes());
            key[4..].copy_from_slice(&d.info_hash.0);
            add_to_pair(
                &mut self.user_torrent,
                "user_torrent",
                &key[..],
                (d.uploaded, d.downloaded),
            )?;
            let sum = self.sums.entry(d.user).or_default();
            sum.up = sum.up.saturating_add(d.uploaded);
            sum.down = sum.down.saturating_add(d.downloaded);
        }
        for &(ih, n) in snatches {
            let old = self.snatches.get(&ih.0[..])?.map(|v| v.value()).unwrap_or(0);
            self.snatches.insert(&ih.0[..], old.saturating_add(n))?;
        }
        Ok(())
    }

    /// Ends the batch: adds its sums to each user's record once, and its verified credit to
    /// the user's pending chain credit too.
    ///
    /// Persisted claimed totals are exactly the sum of flushed deltas (the in-memory mirror runs
    /// ahead by what is still pending on the cores); verified totals are the sum of credited
    /// receipts. Users not in the table are skipped.
    fn write_sums(&mut self) -> Result<(), StoreError> {
        for (id, sum) in std::mem::take(&mut self.sums) {
            let Some(v) = self.users.get(id)? else { continue };
            let mut record: UserRecord =
                serde_json::from_slice(v.value()).map_err(|e| corrupt("users", e))?;
            drop(v);
            record.uploaded = record.uploaded.saturating_add(sum.up);
            record.downloaded = record.downloaded.saturating_add(sum.down);
            record.verified_uploaded = record.verified_uploaded.saturating_add(sum.verified_up);
            record.verified_downloaded =
                record.verified_downloaded.saturating_add(sum.verified_down);
            let json = serde_json::to_vec(&record).map_err(|e| corrupt("users", e))?;
            self.users.insert(id, json.as_slice())?;
            // Verified credit also waits for the chain, in the same transaction: the outbox can
            // never miss or repeat it.
            if sum.verified_up > 0 || sum.verified_down > 0 {
                let pending = (sum.verified_down, sum.verified_up);
                add_to_pair(&mut self.chain_pending, "chain_pending", id, pending)?;
                self.chain_changed = true;
            }
        }
        Ok(())
    }
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

/// The batch in flight, if any.
fn first_batch(table: &Table<'_, u64, &[u8]>) -> Result<Option<(u64, ChainBatch)>, StoreError> {
    let Some(row) = table.first()? else { return Ok(None) };
    let batch: ChainBatch =
        serde_json::from_slice(row.1.value()).map_err(|e| corrupt("chain_batch", e))?;
    Ok(Some((row.0.value(), batch)))
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

/// Adds `(a, b)` to the two counters stored under `key` in `table` (both 0 if absent),
/// saturating at `u64::MAX`, and returns the new pair.
///
/// # Errors
/// Database errors, or a stored value that is not two counters (`Corrupt`, naming `name`).
fn add_to_pair<'k, K: redb::Key + 'static>(
    table: &mut Table<'_, K, &'static [u8]>,
    name: &'static str,
    key: K::SelfType<'k>,
    (a, b): (u64, u64),
) -> Result<(u64, u64), StoreError> {
    let (old_a, old_b) = match table.get(&key)? {
        Some(v) => decode_pair(v.value()).ok_or_else(|| corrupt(name, "value"))?,
        None => (0, 0),
    };
    let sum = (old_a.saturating_add(a), old_b.saturating_add(b));
    table.insert(&key, &encode_pair(sum.0, sum.1)[..])?;
    Ok(sum)
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

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
