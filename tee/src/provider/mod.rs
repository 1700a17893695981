//! The providers: where root key material and quotes come from.

pub mod dstack;
pub mod none;
pub mod tdx;

use zeroize::Zeroizing;

use crate::error::TeeError;

/// A source of root key material and quotes. Blocking: the engine calls it from a blocking
/// thread, never from a serving core.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Root key material for `path` and `purpose`, deterministic for this provider instance
    /// (at least [`crate::derive::MIN_ROOT_LEN`] bytes).
    ///
    /// # Errors
    /// Provider failures.
    fn root_key(&self, path: &str, purpose: &str) -> Result<Zeroizing<Vec<u8>>, TeeError>;

    /// A quote carrying exactly `report_data`.
    ///
    /// # Errors
    /// [`TeeError::Unavailable`] when the provider cannot make quotes.
    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError>;

    /// A description for `/tee/status` (no secrets).
    fn info(&self) -> serde_json::Value;
}

/// Reads (or creates, mode 0600, from OS randomness) a root secret file: hex of 32+ bytes.
///
/// # Errors
/// An unreadable, unwritable or malformed file.
pub fn root_secret(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, TeeError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        TeeError::Unavailable(format!("{what} root secret {}: {e}", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let raw =
                Zeroizing::new(crate::quote::unhex(text.trim()).map_err(|e| fail("parse", &e))?);
            if raw.len() < crate::derive::MIN_ROOT_LEN {
                return Err(fail("short", &format!("{} bytes", raw.len())));
            }
            Ok(raw)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let raw: Zeroizing<Vec<u8>> =
                Zeroizing::new((0..32).map(|_| rand::random::<u8>()).collect());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| fail("create", &e))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail("create", &e))?;
            let text = Zeroizing::new(crate::quote::hex(&raw));
            f.write_all(text.as_bytes()).map_err(|e| fail("write", &e))?;
            f.sync_all().map_err(|e| fail("sync", &e))?;
            Ok(raw)
        }
        Err(e) => Err(fail("read", &e)),
    }
}
