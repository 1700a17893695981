//! The outbox worker (`outbox-01`): verified credit from the database to the Reputation
//! contract, in numbered batches, exactly once (see [`crate::chain`] for the protocol).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pbts_chain::{Address, ChainError, ChainHandle, ReputationError, RevertReason};

use crate::state::State;
use crate::store::{ChainBatch, StoreCmd, StoreError};

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
                    return Err(ChainError::Timeout { waited_secs: limit.as_secs() });
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
///
/// # Errors
/// None today: chain failures are logged, recorded for `/contract/status` and retried until
/// shutdown. The signature is the workers' common one.
pub fn run_outbox_worker(state: &Arc<State>) -> anyhow::Result<()> {
    let Some(chain) = state.chain.handle.clone() else { return Ok(()) };
    let cfg = &state.config.chain;
    let every = Duration::from_secs(cfg.flush_interval_secs);
    let max_backoff = Duration::from_secs(cfg.max_backoff_secs);
    let mut backoff = Duration::from_secs(1);
    let mut wait = every;
    loop {
        if state.shutdown.wait(wait) {
            return Ok(());
        }
        wait = match flush_once(state, &chain) {
            Ok(flush) => {
                backoff = Duration::from_secs(1);
                match flush {
                    Flush::More => Duration::ZERO,
                    Flush::Idle => every,
                }
            }
            Err(e) => {
                if state.is_shutting_down() {
                    return Ok(());
                }
                tracing::warn!("outbox: {e}; retrying in {}s", backoff.as_secs());
                state.chain.record_error(&e);
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
        Err(ChainError::Reverted(RevertReason::Reputation(ReputationError::BatchOutOfOrder(
            e,
        )))) => {
            // The contract applied fewer batches than we believe (a chain reset): renumber to
            // the id it expects (its lastBatchId + 1, carried by the error).
            ask_store(state, |reply| StoreCmd::RenumberChainBatch { to: e.expected, reply })
                .map_err(|source| OutboxError::Renumber { batch: batch.id, source })?;
            Err(OutboxError::OutOfOrder { batch: batch.id, renumbered_to: e.expected })
        }
        Err(source) => Err(OutboxError::Credit { batch: batch.id, contract, source }),
    }
}
