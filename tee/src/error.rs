//! The TEE layer's one error type.

/// What went wrong in the TEE layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeeError {
    /// The provider is not there (no TDX device, no dstack agent).
    #[error("TEE unavailable: {0}")]
    Unavailable(String),
    /// The provider failed a request.
    #[error("TEE provider: {0}")]
    Provider(String),
    /// A quote did not parse.
    #[error("quote: {0}")]
    Quote(String),
    /// Collateral missing, malformed or not fetched.
    #[error("collateral: {0}")]
    Collateral(String),
    /// Key derivation input was unusable.
    #[error("key derivation: {0}")]
    Derivation(String),
}
