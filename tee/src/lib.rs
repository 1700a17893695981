//! # pbts-tee
//!
//! Trusted execution for the tracker: deterministic keys rooted in a TEE, TDX quotes that bind
//! a payload, and their verification.
//!
//! - [`derive`]: HKDF-SHA256 from provider root material to a BLS12-381 key and an Ethereum key
//!   (same root and path, same keys; pure).
//! - [`quote`]: TDX quote v4/v5 parsing with the report data at its correct offset (pure).
//! - [`verify`]: verification with `dcap-qvl` against given collateral or a PCCS, plus the
//!   report-data check.
//! - [`provider`]: the providers behind one trait: `none` (no TEE: keys from a local root
//!   secret, no quotes), `tdx` (quotes from Linux configfs-tsm), `dstack` (the dstack guest
//!   agent over its Unix socket: `GetKey`, `GetQuote`, `Info`).
//!
//! ## Why not `tdx-guest`
//!
//! The project card names the `tdx-guest` crate. It is a ring-0 library of TDCALL wrappers for
//! kernels and firmware: it does not build on stable Rust here and cannot run in a user-space
//! process, where the tracker lives. Linux exposes TDX quote generation to user space through
//! configfs-tsm (`/sys/kernel/config/tsm/report`, Linux 6.7+): create an entry, write 64 bytes
//! of report data to `inblob`, read the quote from `outblob`. That protocol is a few file
//! operations, implemented in [`provider::tdx`] without `unsafe`.
//!
//! Non-goals: sealing (TDX has no user-space sealing key; the `tdx` provider derives keys from a
//! root secret the operator provisions, dstack from its KMS), and SGX quotes.
//!
//! ## Example
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let tee = pbts_tee::Tee::open(&pbts_tee::TeeConfig::default(), dir.path()).unwrap();
//! let a = tee.bls_key("tracker").unwrap().public_key().to_bytes();
//! let b = tee.bls_key("tracker").unwrap().public_key().to_bytes();
//! assert_eq!(a, b); // deterministic
//! let payload = pbts_tee::quote::Binding::Client(b"payload");
//! assert!(tee.quote(payload).is_err()); // no TEE, no quotes
//! ```

#![deny(unsafe_code)]

pub mod derive;
mod error;
pub mod fuzzing;
pub mod provider;
pub mod quote;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pbts_verifier::keys::SecretKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use error::TeeError;
pub use provider::Provider;

/// Which TEE the tracker runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeMode {
    /// No TEE (the baseline): keys from a local root secret, no quotes.
    None,
    /// Intel TDX through configfs-tsm.
    Tdx,
    /// The dstack guest agent.
    Dstack,
}

impl TeeMode {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tdx => "tdx",
            Self::Dstack => "dstack",
        }
    }

    /// Parses `TEE_MODE`, in any case: `none`, `tdx`, `dstack`, and PBTS's `disabled` (none),
    /// `enabled` and `benchmark` (both dstack, PBTS's only TEE).
    ///
    /// # Errors
    /// The accepted values, for anything else (never a silent fallback to `none`; see
    /// docs/COMPATIBILITY.md).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "disabled" => Ok(Self::None),
            "tdx" => Ok(Self::Tdx),
            "dstack" | "enabled" | "benchmark" => Ok(Self::Dstack),
            other => Err(format!(
                "TEE mode {other:?}: expected none, tdx or dstack (or the original's disabled, enabled, benchmark)"
            )),
        }
    }
}

/// The `[tee]` configuration section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeeConfig {
    /// `none` (default), `tdx` or `dstack`; environment `TEE_MODE`. Asking for a provider that
    /// is not there is a start-up error, never a silent fallback.
    pub mode: TeeMode,
    /// File holding the root secret of the `none` and `tdx` providers (32+ random bytes, hex),
    /// created with mode 0600 on first start when missing. Empty: `<data_dir>/tee-root.key`.
    /// Losing it changes every derived key.
    pub root_key_file: String,
    /// The dstack agent: a Unix socket path or an `http://` URL. Empty: the environment variable
    /// `DSTACK_SIMULATOR_ENDPOINT`, else `/var/run/dstack.sock` and its usual alternatives.
    pub dstack_endpoint: String,
    /// configfs-tsm report directory of the `tdx` provider. Default
    /// `/sys/kernel/config/tsm/report`.
    pub tsm_report_dir: String,
    /// The PCCS (or Intel PCS) `POST /verify-attestation` fetches collateral from when a
    /// request brings none. Requests cannot name a PCCS of their own: the tracker would fetch
    /// any URL a client chose (SSRF). Empty: requests must bring their collateral.
    pub pccs_url: String,
    /// Derive the tracker's Ethereum account in the TEE (path `ethereum/pbts`) instead of
    /// reading `chain.key_env`/`chain.key_file`. Default false.
    pub chain_key: bool,
    /// Seconds a provider request (dstack agent, PCCS) may take. Default 10.
    pub timeout_secs: u64,
    /// Threads that verify quotes for `POST /verify-attestation` (PCCS fetch and dcap-qvl
    /// verification), apart from the serving cores and their blocking threads, so a slow PCCS
    /// stalls nothing else. Default 2. Each PCCS fetch may hold a thread `timeout_secs`.
    pub verify_threads: usize,
    /// Most verifications running or queued at once; beyond it `POST /verify-attestation` is
    /// answered 503 with `Retry-After` at once instead of waiting. Default 8. Too low turns
    /// bursts away; too high lets a slow PCCS keep many requests waiting.
    pub max_pending_verifications: usize,
}

impl Default for TeeConfig {
    fn default() -> Self {
        Self {
            mode: TeeMode::None,
            root_key_file: String::new(),
            dstack_endpoint: String::new(),
            tsm_report_dir: provider::tdx::TSM_REPORT_DIR.to_owned(),
            pccs_url: String::new(),
            chain_key: false,
            timeout_secs: 10,
            verify_threads: 2,
            max_pending_verifications: 8,
        }
    }
}

/// Counters for `/tee/status` (PBTS's fields, plus verification).
#[derive(Debug, Default)]
pub struct Stats {
    key_generations: AtomicU64,
    key_gen_ns: AtomicU64,
    attestations: AtomicU64,
    attestation_ns: AtomicU64,
    verifications: AtomicU64,
    verification_ns: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Keys derived.
    pub key_generations: u64,
    /// Milliseconds spent deriving them.
    pub total_key_gen_time_ms: f64,
    /// Quotes generated.
    pub attestations_generated: u64,
    /// Milliseconds spent generating them.
    pub total_attestation_time_ms: f64,
    /// Quotes verified.
    pub attestations_verified: u64,
    /// Milliseconds spent verifying them.
    pub total_verification_time_ms: f64,
    /// Mean derivation time (0 when none).
    pub avg_key_gen_time_ms: f64,
    /// Mean generation time (0 when none).
    pub avg_attestation_time_ms: f64,
    /// Mean verification time (0 when none).
    pub avg_verification_time_ms: f64,
}

impl Stats {
    fn add(count: &AtomicU64, total: &AtomicU64, since: Instant) {
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Records one verification that started at `since`.
    pub fn verified(&self, since: Instant) {
        Self::add(&self.verifications, &self.verification_ns, since);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ms = |ns: &AtomicU64| ns.load(Ordering::Relaxed) as f64 / 1e6;
        let avg = |total: f64, n: u64| if n == 0 { 0.0 } else { total / n as f64 };
        let (k, a, v) = (
            self.key_generations.load(Ordering::Relaxed),
            self.attestations.load(Ordering::Relaxed),
            self.verifications.load(Ordering::Relaxed),
        );
        let (kt, at, vt) =
            (ms(&self.key_gen_ns), ms(&self.attestation_ns), ms(&self.verification_ns));
        StatsSnapshot {
            key_generations: k,
            total_key_gen_time_ms: kt,
            attestations_generated: a,
            total_attestation_time_ms: at,
            attestations_verified: v,
            total_verification_time_ms: vt,
            avg_key_gen_time_ms: avg(kt, k),
            avg_attestation_time_ms: avg(at, a),
            avg_verification_time_ms: avg(vt, v),
        }
    }
}

/// The TEE as the tracker uses it: one provider, deterministic keys, quotes, statistics.
#[derive(Debug)]
pub struct Tee {
    provider: Box<dyn Provider>,
    mode: TeeMode,
    /// Counters.
    pub stats: Stats,
}

impl Tee {
    /// Opens the configured provider and checks that it answers.
    ///
    /// # Errors
    /// [`TeeError::Unavailable`] naming what is missing, or an unreadable root secret.
    pub fn open(config: &TeeConfig, data_dir: &Path) -> Result<Self, TeeError> {
        let root_file = if config.root_key_file.is_empty() {
            data_dir.join("tee-root.key")
        } else {
            PathBuf::from(&config.root_key_file)
        };
        let provider: Box<dyn Provider> = match config.mode {
            TeeMode::None => Box::new(provider::none::LocalRoot::open(&root_file)?),
            TeeMode::Tdx => {
                Box::new(provider::tdx::Tdx::open(Path::new(&config.tsm_report_dir), &root_file)?)
            }
            TeeMode::Dstack => Box::new(provider::dstack::Dstack::open(
                &config.dstack_endpoint,
                config.timeout_secs,
            )?),
        };
        Ok(Self { provider, mode: config.mode, stats: Stats::default() })
    }

    /// A TEE over any provider (tests, embedding).
    pub fn with_provider(provider: Box<dyn Provider>, mode: TeeMode) -> Self {
        Self { provider, mode, stats: Stats::default() }
    }

    /// The mode.
    pub fn mode(&self) -> TeeMode {
        self.mode
    }

    /// Whether quotes can be generated.
    pub fn can_quote(&self) -> bool {
        self.mode != TeeMode::None
    }

    /// The BLS key for `path`: the same every time for the same provider root.
    ///
    /// # Errors
    /// Provider failures.
    pub fn bls_key(&self, path: &str) -> Result<SecretKey, TeeError> {
        let t = Instant::now();
        let root = self.provider.root_key(&format!("pbts/bls/{path}"), "signature")?;
        let key = derive::bls_key(&root, path)?;
        Stats::add(&self.stats.key_generations, &self.stats.key_gen_ns, t);
        Ok(key)
    }

    /// The Ethereum secret key for `path` (the tracker's chain account lives here when
    /// `tee.chain_key` is set).
    ///
    /// # Errors
    /// Provider failures.
    pub fn ethereum_key(&self, path: &str) -> Result<Zeroizing<[u8; 32]>, TeeError> {
        let t = Instant::now();
        let root = self.provider.root_key(path, "tracker")?;
        let key = derive::ethereum_key(&root, path)?;
        Stats::add(&self.stats.key_generations, &self.stats.key_gen_ns, t);
        Ok(key)
    }

    /// A quote whose report data binds `binding` under its scheme ([`quote::Binding`]: a
    /// client payload and a tracker statement never share report data). Returns the raw quote
    /// and its report data.
    ///
    /// # Errors
    /// [`TeeError::Unavailable`] without a TEE; provider failures.
    pub fn quote(&self, binding: quote::Binding<'_>) -> Result<(Vec<u8>, [u8; 64]), TeeError> {
        let t = Instant::now();
        let report_data = binding.report_data();
        let raw = self.provider.quote(&report_data)?;
        Stats::add(&self.stats.attestations, &self.stats.attestation_ns, t);
        Ok((raw, report_data))
    }

    /// What the provider says about itself.
    pub fn info(&self) -> serde_json::Value {
        self.provider.info()
    }
}
