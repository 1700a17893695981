//! The plain data the client, the chain thread and their callers exchange: errors, outcomes and
//! records.

use alloy::primitives::{Address, B256, U256};

use crate::revert::RevertReason;

/// The marker published as the factory attestation when no TEE quote is available (PBTS's
/// marker, kept; see docs/COMPATIBILITY.md).
pub const NO_TEE_ATTESTATION: &[u8] = b"PBTS-Tracker-v1.0";

/// What can go wrong talking to the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached or answered with an error (retry later).
    #[error("rpc: {0}")]
    Rpc(String),
    /// The contract refused the call; nothing was written.
    #[error("reverted: {0}")]
    Reverted(RevertReason),
    /// A mined transaction failed, or its receipt lacks what it must contain.
    #[error("transaction {tx_hash} failed: {reason}")]
    Failed {
        /// The transaction.
        tx_hash: B256,
        /// What was wrong.
        reason: TxFailure,
    },
    /// No reply within the caller's time limit; the request may still complete (retry later).
    #[error("no answer within {waited_secs}s")]
    Timeout {
        /// How long the caller waited, seconds.
        waited_secs: u64,
    },
    /// A configuration or key problem.
    #[error("configuration: {0}")]
    Config(String),
    /// The chain thread is gone.
    #[error("chain thread stopped")]
    Stopped,
}

impl ChainError {
    /// Whether retrying the same request later may succeed (the node was unreachable), as
    /// opposed to the contract refusing it.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Rpc(_) | Self::Timeout { .. } | Self::Stopped)
    }
}

/// What was wrong with a mined transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxFailure {
    /// Its receipt reports failure although the estimate passed: the state changed in between.
    #[error("the transaction reverted when mined (state changed after the estimate?)")]
    RevertedWhenMined,
    /// A deployment whose receipt names no contract.
    #[error("no contract address in the deployment receipt")]
    NoContractAddress,
    /// A `createReputation` whose receipt lacks the factory's `ReputationCreated` event.
    #[error("no ReputationCreated event from the factory")]
    NoReputationCreated,
}

/// A mined transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOutcome {
    /// Its hash.
    pub tx_hash: B256,
    /// Gas it used.
    pub gas_used: u64,
    /// The block it was mined in.
    pub block_number: u64,
}

/// A deployed contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployed {
    /// Its address.
    pub address: Address,
    /// The deploying transaction.
    pub tx: TxOutcome,
}

/// A user's on-chain record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The name (the key of `allUsers`).
    pub username: String,
    /// Free-form salt (empty for users the tracker creates).
    pub salt: String,
    /// Non-zero for an existing user; the tracker stores sha256 of the user's BLS public key.
    pub password_hash: B256,
    /// Bytes downloaded.
    pub download_size: U256,
    /// Bytes uploaded.
    pub upload_size: U256,
}

impl UserRecord {
    /// upload / download; `None` when nothing was downloaded (JSON has no Infinity).
    pub fn ratio(&self) -> Option<f64> {
        let down: f64 = self.download_size.into();
        let up: f64 = self.upload_size.into();
        (down > 0.0).then(|| up / down)
    }
}

/// Where [`ChainClient::find_user`] found a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUser {
    /// The contract holding the record: the one asked, or one up its referrer chain.
    pub source: Address,
    /// The record.
    pub user: UserRecord,
}

/// One user's verified credit in a batch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CreditEntry {
    /// The tracker's user name.
    pub username: String,
    /// sha256 of the user's BLS public key: the on-chain identity a successor instance checks
    /// before carrying reputation over.
    pub key_hash: [u8; 32],
    /// Verified bytes downloaded since the last batch.
    pub download_delta: u64,
    /// Verified bytes uploaded since the last batch.
    pub upload_delta: u64,
}

/// The result of submitting a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Applied by this transaction.
    Applied(TxOutcome),
    /// Already applied earlier (its id is at or below the contract's `lastBatchId`): nothing
    /// was sent.
    AlreadyApplied,
}

/// What a migration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The contract the user was copied from; `None` when no referrer had the user.
    pub source: Option<Address>,
    /// The transaction.
    pub tx: TxOutcome,
}

/// The chain's state as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The node's chain id.
    pub chain_id: u64,
    /// The latest block.
    pub block_number: u64,
    /// The tracker's account.
    pub account: Address,
    /// Its balance, wei.
    pub balance: U256,
}

/// sha256 of a BLS public key: what the tracker stores as `passwordHash`.
pub fn key_hash(public_key: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(public_key).into()
}
