//! No TEE: the baseline. Keys are derived from a root secret file, deterministically, with no
//! hardware protection; quotes are unavailable.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::Provider;
use crate::error::TeeError;

/// Root material from a local file.
pub struct LocalRoot {
    file: PathBuf,
    root: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for LocalRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRoot").field("file", &self.file).finish_non_exhaustive()
    }
}

impl LocalRoot {
    /// Reads or creates `file`.
    ///
    /// # Errors
    /// See [`super::root_secret`].
    pub fn open(file: &Path) -> Result<Self, TeeError> {
        Ok(Self { file: file.to_owned(), root: super::root_secret(file)? })
    }
}

impl Provider for LocalRoot {
    fn root_key(&self, _path: &str, _purpose: &str) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        Ok(self.root.clone())
    }

    fn quote(&self, _report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        Err(TeeError::Unavailable("no TEE (tee.mode = none): quotes need tdx or dstack".to_owned()))
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({ "provider": "none", "root_key_file": self.file.display().to_string() })
    }
}
