//! On-chain reputation inside the engine: the chain thread's handle, the Reputation contract in
//! use, and the outbox thread that writes verified credit to it in batches.
//!
//! ```text
//!  /report credit ──(same redb transaction)──▶ chain_pending: user → (Δdown, Δup)
//!                                                   │ every chain.flush_interval_secs
//!  outbox-01: TakeChainBatch ──▶ chain_batch: id = lastBatchId + 1 (durable before sending)
//!             creditUsers(id, ...) ──▶ chain-01 ──▶ node          (retried with backoff)
//!             ChainBatchDone(id)   ──▶ batch forgotten, lastBatchId = id
//! ```
//!
//! A crash anywhere loses nothing and applies nothing twice: credit enters `chain_pending` in the
//! transaction that grants it, a batch is durable before it is sent, and the contract applies
//! batch `id` only when its `lastBatchId` is `id - 1`; a batch resent after a crash or a lost
//! reply finds itself already applied and is simply forgotten.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pbts_chain::{Address, ChainError, ChainHandle};

use crate::clock::unix_now;
use crate::common::State;
use crate::store::{ChainBatch, OutboxStats, StoreCmd, StoreError};

/// The chain as the engine sees it.
#[derive(Debug)]
pub struct ChainState {
    /// The chain thread; `None` when `chain.rpc_url` is empty.
    pub handle: Option<ChainHandle>,
    /// `chain.factory_address`, parsed.
    pub factory: Option<Address>,
    reputation: RwLock<Option<Address>>,
    /// What `/contract/status` shows of the outbox.
    pub outbox: Arc<OutboxStats>,
}

impl ChainState {
    /// Starts the chain thread when an RPC URL is configured, signing with `tee_key` (derived in
    /// the TEE) or else the configured key. The contract in use is the one the database
    /// remembers (from `POST /contract/init`), else `chain.reputation_address`.
    ///
    /// # Errors
    /// An RPC URL without a signing key, or an unusable key or address.
    pub fn start(
        config: &pbts_chain::ChainConfig,
        remembered: Option<Address>,
        outbox: Arc<OutboxStats>,
        tee_key: Option<pbts_chain::SigningKey>,
    ) -> anyhow::Result<Self> {
        let parse = |s: &str| -> anyhow::Result<Option<Address>> {
            if s.trim().is_empty() {
                return Ok(None);
            }
            Ok(Some(pbts_chain::config::parse_address(s)?))
        };
        let factory = parse(&config.factory_address).context("chain.factory_address")?;
        let reputation = match remembered {
            Some(a) => Some(a),
            None => parse(&config.reputation_address).context("chain.reputation_address")?,
        };
        let handle = if config.is_enabled() {
            let key = match tee_key {
                Some(k) => k,
                None => config.load_key(|name| std::env::var(name).ok()).context("chain key")?,
            };
            Some(ChainHandle::start(config.clone(), key).context("start the chain thread")?)
        } else {
            None
        };
        Ok(Self { handle, factory, reputation: RwLock::new(reputation), outbox })
    }

    /// The Reputation contract in use.
    pub fn reputation(&self) -> Option<Address> {
        *self.reputation.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Switches to `address` (after the store committed it).
    pub fn set_reputation(&self, address: Address) {
        *self.reputation.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(address);
    }

    /// The last outbox failure, if any since the last success.
    pub fn last_error(&self) -> Option<String> {
        self.outbox.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn record_error(&self, message: String) {
        self.outbox.failures.fetch_add(1, Ordering::Relaxed);
        *self.outbox.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(message);
    }

    fn record_success(&self) {
        self.outbox.failures.store(0, Ordering::Relaxed);
        self.outbox.last_success_unix.store(unix_now(), Ordering::Relaxed);
        *self.outbox.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Asks the store thread and waits (plain threads only).
fn ask_store<T>(
    state: &State,
    make: impl FnOnce(crate::store::Reply<T>) -> StoreCmd,
) -> Result<T, StoreError> {
    let (tx, rx) = flume::bounded(1);
    state.store_tx.send(make(tx)).map_err(|_| StoreError::Closed)?;
    rx.recv().map_err(|_| StoreError::Closed)?
}

/// Waits for a chain reply, giving up after `limit` or at shutdown (the request itself may
/// still complete; the outbox then finds its batch already applied).
fn wait_chain<T>(
    state: &State,
    reply: &pbts_chain::worker::Reply<T>,
    limit: Duration,
) -> Result<T, ChainError> {
    let deadline = Instant::now() + limit;
    loop {
        match reply.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => return r,
            Err(flume::RecvTimeoutError::Disconnected) => return Err(ChainError::Stopped),
            Err(flume::RecvTimeoutError::Timeout) => {
                if state.is_shutting_down() {
                    return Err(ChainError::Stopped);
                }
                if Instant::now() > deadline {
                    return Err(ChainError::Rpc(format!("no answer within {}s", limit.as_secs())));
                }
            }
        }
    }
}

/// What one flush did.
enum Flush {
    /// Nothing pending.
    Idle,
    /// Progress; look again at once.
    More,
}

/// Why one outbox round failed; the outbox retries with backoff, and `/contract/status`
/// shows the text.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The contract's `lastBatchId` could not be read.
    #[error("read lastBatchId of {contract}: {source}")]
    ReadLastBatch {
        /// The contract.
        contract: Address,
        /// What the chain said.
        source: ChainError,
    },
    /// The database did not switch to the contract.
    #[error("adopt {contract}: {source}")]
    Adopt {
        /// The contract.
        contract: Address,
        /// What the store said.
        source: StoreError,
    },
    /// The next batch could not be taken from the database.
    #[error("take a batch: {0}")]
    TakeBatch(StoreError),
    /// A batch the contract applied could not be forgotten.
    #[error("forget batch {batch}: {source}")]
    Forget {
        /// The batch id.
        batch: u64,
        /// What the store said.
        source: StoreError,
    },
    /// The contract has applied fewer batches than the database believes (a chain reset):
    /// the batch was renumbered and goes again next round.
    #[error("batch {batch} out of order; renumbered to {renumbered_to}")]
    OutOfOrder {
        /// The batch id sent.
        batch: u64,
        /// Its new id.
        renumbered_to: u64,
    },
    /// Renumbering the batch failed.
    #[error("renumber batch {batch}: {source}")]
    Renumber {
        /// The batch id.
        batch: u64,
        /// What the store said.
        source: StoreError,
    },
    /// `creditUsers` failed.
    #[error("batch {batch} to {contract}: {source}")]
    Credit {
        /// The batch id.
        batch: u64,
        /// The contract.
        contract: Address,
        /// What the chain said.
        source: ChainError,
    },
}

/// The outbox thread (`outbox-01`): flushes pending credit every `chain.flush_interval_secs`,
/// at once while more is pending, and with exponential backoff while the chain fails.
pub fn run_outbox_worker(state: Arc<State>) {
    let Some(chain) = state.chain.handle.clone() else { return };
    let cfg = &state.config.chain;
    let every = Duration::from_secs(cfg.flush_interval_secs);
    let max_backoff = Duration::from_secs(cfg.max_backoff_secs);
    let mut backoff = Duration::from_secs(1);
    let mut wait = every;
    loop {
        if state.shutdown.wait(wait) {
            return;
        }
        wait = match flush_once(&state, &chain) {
            Ok(flush) => {
                backoff = Duration::from_secs(1);
                match flush {
                    Flush::More => Duration::ZERO,
                    Flush::Idle => every,
                }
            }
            Err(e) => {
                if state.is_shutting_down() {
                    return;
                }
                tracing::warn!("outbox: {e}; retrying in {}s", backoff.as_secs());
                state.chain.record_error(e.to_string());
                let this = backoff;
                backoff = (backoff * 2).min(max_backoff);
                this
            }
        };
    }
}

fn flush_once(state: &State, chain: &ChainHandle) -> Result<Flush, OutboxError> {
    let Some(contract) = state.chain.reputation() else { return Ok(Flush::Idle) };
    let cfg = &state.config.chain;
    let limit = Duration::from_secs(cfg.tx_timeout_secs + 2 * cfg.rpc_timeout_secs + 5);
    let max_users = cfg.max_batch_users;
    let batch: ChainBatch =
        match ask_store(state, |reply| StoreCmd::TakeChainBatch { contract, max_users, reply }) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Flush::Idle),
            Err(StoreError::ChainContract { .. }) => {
                // A contract from the configuration, or one the database has not switched to:
                // continue its batch numbering from what the contract itself says.
                let last = wait_chain(state, &chain.last_batch_id(contract), limit)
                    .map_err(|source| OutboxError::ReadLastBatch { contract, source })?;
                ask_store(state, |reply| StoreCmd::SetReputation {
                    contract,
                    last_batch_id: last,
                    reply,
                })
                .map_err(|source| OutboxError::Adopt { contract, source })?;
                tracing::info!("outbox writes to {contract} (lastBatchId {last})");
                return Ok(Flush::More);
            }
            Err(e) => return Err(OutboxError::TakeBatch(e)),
        };
    let reply = chain.credit_users(contract, batch.id, batch.entries.clone());
    match wait_chain(state, &reply, limit) {
        Ok(outcome) => {
            ask_store(state, |reply| StoreCmd::ChainBatchDone { id: batch.id, reply })
                .map_err(|source| OutboxError::Forget { batch: batch.id, source })?;
            tracing::debug!("batch {} of {} users: {outcome:?}", batch.id, batch.entries.len());
            state.chain.record_success();
            Ok(Flush::More)
        }
        Err(ChainError::Reverted { reason }) if reason == "Batch out of order" => {
            // The contract applied fewer batches than we believe (a chain reset): renumber.
            let last = wait_chain(state, &chain.last_batch_id(contract), limit)
                .map_err(|source| OutboxError::ReadLastBatch { contract, source })?;
            ask_store(state, |reply| StoreCmd::RenumberChainBatch { to: last + 1, reply })
                .map_err(|source| OutboxError::Renumber { batch: batch.id, source })?;
            Err(OutboxError::OutOfOrder { batch: batch.id, renumbered_to: last + 1 })
        }
        Err(source) => Err(OutboxError::Credit { batch: batch.id, contract, source }),
    }
}
