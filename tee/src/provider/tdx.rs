//! Intel TDX through Linux configfs-tsm (Linux 6.7+): user-space quote generation without
//! ioctls or `unsafe`.
//!
//! ```text
//! mkdir  <tsm>/report/<entry>        the kernel creates inblob, outblob, provider, generation
//! write  <entry>/inblob              64 bytes of report data
//! read   <entry>/outblob             the quote (the TDX quoting service signs it)
//! read   <entry>/generation          unchanged since the write, or another writer raced us
//! rmdir  <entry>
//! ```
//!
//! TDX gives user space no sealing key, so keys derive from a root secret file the operator
//! provisions (from a KMS, or created on first start); the quote is what proves where they run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

use super::Provider;
use crate::error::TeeError;

/// The configfs-tsm report directory.
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// TDX quotes from configfs-tsm; keys from a root secret file.
pub struct Tdx {
    dir: PathBuf,
    root: Zeroizing<Vec<u8>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Tdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tdx").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Tdx {
    /// Checks that `dir` is a configfs-tsm report directory and loads the root secret.
    ///
    /// # Errors
    /// [`TeeError::Unavailable`] when the directory is missing (not a TDX guest, an old kernel,
    /// or configfs not mounted).
    pub fn open(dir: &Path, root_file: &Path) -> Result<Self, TeeError> {
        if !dir.is_dir() {
            return Err(TeeError::Unavailable(format!(
                "tee.mode = tdx but {} does not exist: not a TDX guest, a kernel without \
                 configfs-tsm (Linux 6.7+), or configfs not mounted",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_owned(),
            root: super::root_secret(root_file)?,
            next: AtomicU64::new(0),
        })
    }
}

impl Provider for Tdx {
    fn root_key(&self, _path: &str, _purpose: &str) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        Ok(self.root.clone())
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = self.dir.join(format!("pbts-{}-{n}", std::process::id()));
        let io = |what: &str, e: std::io::Error| {
            TeeError::Provider(format!("configfs-tsm {what} {}: {e}", entry.display()))
        };
        std::fs::create_dir(&entry).map_err(|e| io("mkdir", e))?;
        let result = (|| {
            let provider = std::fs::read_to_string(entry.join("provider"))
                .map_err(|e| io("read provider", e))?;
            if provider.trim() != "tdx_guest" {
                return Err(TeeError::Unavailable(format!(
                    "configfs-tsm provider is {:?}, not tdx_guest",
                    provider.trim()
                )));
            }
            let before = std::fs::read_to_string(entry.join("generation"))
                .map_err(|e| io("read generation", e))?;
            std::fs::write(entry.join("inblob"), report_data).map_err(|e| io("write inblob", e))?;
            let quote = std::fs::read(entry.join("outblob")).map_err(|e| io("read outblob", e))?;
            let after = std::fs::read_to_string(entry.join("generation"))
                .map_err(|e| io("read generation", e))?;
            let (b, a): (u64, u64) =
                (before.trim().parse().unwrap_or(0), after.trim().parse().unwrap_or(0));
            if a != b + 1 {
                return Err(TeeError::Provider(format!(
                    "configfs-tsm entry changed under us (generation {b} -> {a})"
                )));
            }
            Ok(quote)
        })();
        let _ = std::fs::remove_dir(&entry);
        result
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({ "provider": "tdx", "tsm_report_dir": self.dir.display().to_string() })
    }
}
