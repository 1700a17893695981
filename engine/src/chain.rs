//! On-chain reputation inside the engine: the chain thread's handle and the Reputation contract
//! in use. The outbox worker that writes verified credit to it in batches is
//! [`crate::workers::outbox`].
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

use anyhow::Context as _;
use pbts_chain::{Address, ChainHandle};

use crate::clock::unix_now;
use crate::store::OutboxStats;

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

    /// Counts an outbox failure and keeps its text for `/contract/status`.
    pub(crate) fn record_error(&self, error: &dyn std::error::Error) {
        self.outbox.failures.fetch_add(1, Ordering::Relaxed);
        *self.outbox.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(error.to_string());
    }

    pub(crate) fn record_success(&self) {
        self.outbox.failures.store(0, Ordering::Relaxed);
        self.outbox.last_success_unix.store(unix_now(), Ordering::Relaxed);
        *self.outbox.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}
