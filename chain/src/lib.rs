//! # pbts-chain
//!
//! Portable reputation on Ethereum: the `Reputation` and `ReputationFactory` contracts
//! (`chain/contracts/`, compiled artifacts in `chain/artifacts/`), typed bindings generated from
//! those artifacts, and an alloy client that runs on its own thread.
//!
//! ```text
//!  engine (glommio cores, outbox thread) ── ChainHandle (flume, plain data) ──▶ chain-01
//!                                         ◀── reply channels ───────────────   current-thread
//!                                                                              tokio + alloy
//! ```
//!
//! Serving cores never wait on the chain: they send a request and await its reply channel, the
//! way they await the store thread. Writes are serialised inside the client (one transaction at
//! a time, nonce taken from the node's pending count each time), so concurrent requests never
//! collide on a nonce; reads run concurrently.
//!
//! Every write is simulated first (`eth_estimateGas`): a revert comes back as
//! [`ChainError::Reverted`] with the contract's custom error decoded into a typed
//! [`RevertReason`] (see [`revert`]), before any gas is spent. The gas limit
//! is the estimate plus a margin, and a mined transaction whose receipt reports failure is an
//! error too, never a success (see docs/COMPATIBILITY.md).
//!
//! Non-goals: key custody beyond a local signer (the TEE crate derives the key), and event
//! indexing (the contracts emit an event for every write; indexers read those).
//!
//! ## Example
//!
//! ```no_run
//! # fn main() -> Result<(), pbts_chain::ChainError> {
//! let config = pbts_chain::ChainConfig {
//!     rpc_url: "http://127.0.0.1:8545".into(),
//!     ..Default::default()
//! };
//! let key = pbts_chain::SigningKey::from_hex(
//!     "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
//! )?;
//! let chain = pbts_chain::ChainHandle::start(config, key)?;
//! let factory = chain.deploy_factory().recv().expect("chain thread alive")?;
//! println!("factory at {}", factory.address);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod bindings;
pub mod client;
pub mod config;
pub mod revert;
pub mod types;
pub mod worker;

pub use client::ChainClient;
pub use config::{ChainConfig, SigningKey};
pub use revert::{ReputationError, RevertReason};
pub use types::{
    BatchOutcome, ChainError, CreditEntry, Deployed, FoundUser, Migration, NO_TEE_ATTESTATION,
    Status, TxFailure, TxOutcome, UserRecord, key_hash,
};
pub use worker::ChainHandle;

pub use alloy::primitives::{Address, B256, U256};
