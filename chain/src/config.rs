//! The chain section of the tracker's configuration, and the signing key.

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::types::ChainError;

/// How the tracker reaches the chain. The signing key is never a value here: it comes from
/// the file `key_file` or the environment variable `key_env` (or, later, the TEE).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC endpoint (HTTP). Empty disables the chain. Environment: `RPC` (PBTS's name).
    /// Default empty.
    pub rpc_url: String,
    /// Environment variable holding the tracker account's private key (hex, `0x` optional).
    /// Default `PK0` (PBTS's name).
    pub key_env: String,
    /// File holding the private key (hex); takes precedence over `key_env`. Default empty.
    pub key_file: String,
    /// The `ReputationFactory` (`pbts chain deploy-factory` writes it). Environment: `FACTORY`.
    pub factory_address: String,
    /// A `Reputation` to use before `POST /contract/init` makes one. Environment:
    /// `REPUTATION_ADDRESS`. Once an init succeeds its address is kept in the database and
    /// this value is ignored.
    pub reputation_address: String,
    /// Seconds between outbox flushes (verified credit written to the contract in one batch).
    /// Default 10.
    pub flush_interval_secs: u64,
    /// Most users per batch transaction (gas grows linearly: about 10-40k gas each).
    /// Default 100.
    pub max_batch_users: usize,
    /// Percent added to each gas estimate. Default 20.
    pub gas_margin_percent: u64,
    /// Seconds to wait for a transaction to be mined before the request fails (the outbox
    /// retries it). Default 60.
    pub tx_timeout_secs: u64,
    /// Seconds an RPC request may take. Default 10.
    pub rpc_timeout_secs: u64,
    /// Longest pause between retries after failures, seconds (the pause doubles from 1 s).
    /// Default 60.
    pub max_backoff_secs: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            rpc_url: String::new(),
            key_env: "PK0".to_owned(),
            key_file: String::new(),
            factory_address: String::new(),
            reputation_address: String::new(),
            flush_interval_secs: 10,
            max_batch_users: 100,
            gas_margin_percent: 20,
            tx_timeout_secs: 60,
            rpc_timeout_secs: 10,
            max_backoff_secs: 60,
        }
    }
}

impl ChainConfig {
    /// Whether an RPC endpoint is set.
    pub fn is_enabled(&self) -> bool {
        !self.rpc_url.trim().is_empty()
    }

    /// Every problem with the values, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_enabled()
            && self.rpc_url.parse::<alloy::transports::http::reqwest::Url>().is_err()
        {
            out.push(format!("chain.rpc_url: {:?} is not a URL", self.rpc_url));
        }
        for (name, value) in [
            ("factory_address", &self.factory_address),
            ("reputation_address", &self.reputation_address),
        ] {
            if !value.is_empty() && parse_address(value).is_err() {
                out.push(format!("chain.{name}: {value:?} is not a 20-byte hex address"));
            }
        }
        if self.flush_interval_secs == 0 {
            out.push("chain.flush_interval_secs: must be at least 1".to_owned());
        }
        if self.max_batch_users == 0 || self.max_batch_users > 1000 {
            out.push(format!("chain.max_batch_users: {} not in 1..=1000", self.max_batch_users));
        }
        if self.tx_timeout_secs == 0 || self.rpc_timeout_secs == 0 || self.max_backoff_secs == 0 {
            out.push("chain timeouts must be at least 1 second".to_owned());
        }
        out
    }

    /// Loads the signing key: `key_file` if set, else the variable `key_env` read by `env`.
    ///
    /// # Errors
    /// No key configured, an unreadable file, or a value that is not a valid key.
    pub fn load_key(&self, env: impl Fn(&str) -> Option<String>) -> Result<SigningKey, ChainError> {
        if !self.key_file.is_empty() {
            let text = std::fs::read_to_string(&self.key_file).map_err(|e| {
                ChainError::Config(format!("read chain.key_file {}: {e}", self.key_file))
            })?;
            return SigningKey::from_hex(text.trim());
        }
        match env(&self.key_env).filter(|v| !v.trim().is_empty()) {
            Some(v) => SigningKey::from_hex(v.trim()),
            None => Err(ChainError::Config(format!(
                "no signing key: set chain.key_file or the environment variable {}",
                self.key_env
            ))),
        }
    }
}

/// Parses a 20-byte hex address (`0x` optional, any case).
///
/// # Errors
/// [`ChainError::Config`] naming the value.
pub fn parse_address(s: &str) -> Result<Address, ChainError> {
    let s = s.trim();
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if hex.len() != 40 {
        return Err(ChainError::Config(format!("{s:?} is not a 20-byte hex address")));
    }
    format!("0x{hex}")
        .to_lowercase()
        .parse()
        .map_err(|_| ChainError::Config(format!("{s:?} is not a 20-byte hex address")))
}

/// The tracker account's private key. `Debug` prints only the address.
#[derive(Clone)]
pub struct SigningKey(pub(crate) PrivateKeySigner);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.address())
    }
}

impl SigningKey {
    /// From 32 bytes of hex (`0x` optional).
    ///
    /// # Errors
    /// [`ChainError::Config`] (the value itself is never echoed).
    pub fn from_hex(hex: &str) -> Result<Self, ChainError> {
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        hex.parse::<PrivateKeySigner>()
            .map(Self)
            .map_err(|_| ChainError::Config("the signing key is not 32 bytes of hex".to_owned()))
    }

    /// From 32 raw bytes (a TEE-derived key).
    ///
    /// # Errors
    /// [`ChainError::Config`] for a value that is not a valid secp256k1 scalar.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ChainError> {
        PrivateKeySigner::from_bytes(&(*bytes).into())
            .map(Self)
            .map_err(|_| ChainError::Config("the signing key is not a valid secp256k1 key".into()))
    }

    /// The account address.
    pub fn address(&self) -> Address {
        self.0.address()
    }
}
