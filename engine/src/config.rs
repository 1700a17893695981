//! Configuration: one [`Config`] built from a TOML file, then environment overrides, then
//! validated before any thread starts.
//!
//! Every field's doc comment is the operator manual (units, default, what a wrong value does);
//! `pbts --print-config` prints the defaults as commented TOML that parses back to
//! [`Config::default()`] (tested below).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Sockets, cores and connection limits.
    pub network: NetworkConfig,
    /// Announce/scrape behaviour.
    pub tracker: TrackerConfig,
    /// Ratio enforcement for leechers.
    pub ratio: RatioConfig,
    /// Durable state on disk.
    pub storage: StorageConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Receipts: `/report`, verification, double-spend window, server-side key endpoints.
    pub receipts: ReceiptsConfig,
    /// Who may `POST /register`, and invites.
    pub registration: RegistrationConfig,
    /// Per-client limits on work and state.
    pub limits: LimitsConfig,
    /// On-chain reputation (disabled while `rpc_url` is empty).
    pub chain: pbts_chain::ChainConfig,
    /// Trusted execution: key derivation and quotes.
    pub tee: pbts_tee::TeeConfig,
}

/// Which client-supplied header, if any, carries the real client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// Use the TCP peer address; client headers are ignored (safe default).
    None,
    /// Use the last address of `X-Forwarded-For` (set by a trusted reverse proxy).
    XForwardedFor,
    /// Use `X-Real-IP` (set by a trusted reverse proxy).
    XRealIp,
}

/// Sockets, cores and connection limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Addresses to serve on; each gets a UDP socket and a TCP listener on the same port, on every
    /// serving core (SO_REUSEPORT). IPv6 sockets are IPv6-only so `0.0.0.0` and `[::]` can share
    /// a port. Default `["0.0.0.0:8000", "[::]:8000"]`.
    pub listen: Vec<SocketAddr>,
    /// Serving cores (one pinned glommio executor each). 0 means every available CPU.
    pub cores: usize,
    /// First CPU to pin serving cores to (cores are pinned to `first_cpu..first_cpu+cores`);
    /// -1 disables pinning. Default 0.
    pub first_cpu: i64,
    /// io_uring buffer memory per core, KiB. Must fit RLIMIT_MEMLOCK with the rings: the server
    /// checks at start-up and raises the soft limit when it can. Default 1024, at most
    /// [`MAX_IO_MEMORY_KIB`].
    pub io_memory_kib: usize,
    /// Requested UDP receive buffer, bytes (capped by net.core.rmem_max). Default 8 MiB.
    pub udp_recv_buffer_bytes: usize,
    /// Most datagrams received (`recvmmsg`) and answered (`sendmmsg`) per system call on each
    /// UDP socket and core. Default 64.
    pub udp_batch_size: usize,
    /// Microseconds an empty UDP socket is polled before its core parks on it. Under load the
    /// next datagram is that close, and polling for it costs less than parking and waking (on
    /// the project's VM, at half the maximum load, parking took the core's whole CPU for half
    /// its datagrams, and at 90 % it fell behind and dropped a fifth); an idle core still
    /// sleeps. 0 parks at once. Default 50, at most 1000.
    pub udp_poll_before_park_us: u64,
    /// Open HTTP connections allowed per core; beyond it new connections are closed at once.
    /// Each is a file descriptor: at start-up the soft RLIMIT_NOFILE is raised to fit every
    /// core's connections, and if the hard limit is lower the cap is lowered to fit it (with a
    /// warning; raise `LimitNOFILE=` or `ulimit -n` to restore it). Default 16384.
    pub max_connections_per_core: usize,
    /// Open HTTP connections allowed from one client address (over all cores); beyond it new
    /// connections from that address are closed at once. Not applied behind a proxy
    /// (`proxy_header` set), where every connection comes from the proxy. Default 256.
    pub max_connections_per_ip: usize,
    /// Seconds an idle keep-alive connection may stay open. When a core holds more than 7/8 of
    /// its connection cap, idle connections get at most 2 seconds. Default 60.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a complete request once it started one, and to take a
    /// response once the server started writing it. Default 10.
    pub request_timeout_secs: u64,
    /// Header carrying the real client IP when behind a trusted reverse proxy. Default `none`.
    pub proxy_header: ProxyHeader,
    /// Benchmarks only (`pbts serve --udp-ceiling`, never from a file): UDP answers with no
    /// swarm state, the harness's ceiling.
    #[serde(skip)]
    pub udp_ceiling: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "0.0.0.0:8000".parse().expect("literal address"),
                "[::]:8000".parse().expect("literal address"),
            ],
            cores: 0,
            first_cpu: 0,
            io_memory_kib: 1024,
            udp_recv_buffer_bytes: 8 << 20,
            udp_batch_size: 64,
            udp_poll_before_park_us: 50,
            max_connections_per_core: 16384,
            max_connections_per_ip: 256,
            idle_timeout_secs: 60,
            request_timeout_secs: 10,
            proxy_header: ProxyHeader::None,
            udp_ceiling: false,
        }
    }
}

/// Whether a passkey is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackerMode {
    /// Passkey required on every announce (`/<passkey>/announce`, `/announce/<passkey>`, BEP 41).
    Private,
    /// Anyone may announce; no accounting.
    Open,
}

/// Announce/scrape behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// `private` (default) or `open`.
    pub mode: TrackerMode,
    /// Announce interval sent to clients, seconds. Default 1800.
    pub announce_interval_secs: u32,
    /// Random extra seconds (0..=jitter) added to each interval so clients spread out. Default 180.
    pub interval_jitter_secs: u32,
    /// `min interval` sent to clients, seconds. Default 900.
    pub min_interval_secs: u32,
    /// A peer that has not announced for this long is removed, seconds. Default 3600.
    pub peer_timeout_secs: u32,
    /// Most peers returned by one announce (`numwant` is capped to it). Default 50.
    /// Environment: `MAX_PEERS`.
    pub max_peers: usize,
    /// Peers returned when a client sends no `numwant`. Default 50.
    pub default_numwant: usize,
    /// Most info-hashes in one scrape. Default 74 (what fits one UDP scrape).
    pub max_scrape_hashes: usize,
    /// Refuse announces for torrents not registered through `POST /admin/torrents`. Default false.
    pub require_registered_torrents: bool,
    /// Seconds between expiry sweeps. Default 60.
    pub cleanup_interval_secs: u32,
    /// Public base URL used in announce URLs returned by the admin API. Default
    /// `http://127.0.0.1:8000`.
    pub public_url: String,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            mode: TrackerMode::Private,
            announce_interval_secs: 1800,
            interval_jitter_secs: 180,
            min_interval_secs: 900,
            peer_timeout_secs: 3600,
            max_peers: 50,
            default_numwant: 50,
            max_scrape_hashes: 74,
            require_registered_torrents: false,
            cleanup_interval_secs: 60,
            public_url: "http://127.0.0.1:8000".to_owned(),
        }
    }
}

/// Which statistics the ratio gate (and the `ratio` field of the API) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RatioSource {
    /// Upload and download as clients claim them in announces (classic private trackers).
    Claimed,
    /// Upload proven by receipts that downloaders signed (`POST /report`), over the larger of
    /// the claimed download and the download others proved the user received. A client can
    /// neither inflate its upload nor hide download that peers signed for.
    Verified,
}

/// Ratio enforcement for leechers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RatioConfig {
    /// Enforce the ratio on leechers' announces. Default true.
    pub enabled: bool,
    /// `claimed` (default: announce deltas) or `verified` (receipt-proven upload).
    pub source: RatioSource,
    /// Smallest uploaded/downloaded ratio a leecher may have. Environment: `MIN_RATIO`.
    /// Default 0.5.
    pub min_ratio: f64,
    /// Bytes a user may download before the ratio applies (the grace allowance for new users).
    /// Default 1 GiB.
    pub grace_bytes: u64,
}

impl Default for RatioConfig {
    fn default() -> Self {
        Self { enabled: true, source: RatioSource::Claimed, min_ratio: 0.5, grace_bytes: 1 << 30 }
    }
}

/// Durable state on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory holding the database (`pbts.redb`). Created if missing. Default `./data`.
    pub data_dir: PathBuf,
    /// Milliseconds between batched writes of announce statistics. A crash loses at most this
    /// much accounting; admin writes are always durable before they are acknowledged.
    /// Default 2000.
    pub flush_interval_ms: u64,
    /// On a graceful stop (SIGTERM), write every swarm to `swarms.snapshot` in the data
    /// directory, and load it at the next start if it is younger than the peer timeout, so
    /// a restart keeps the swarms and their accounting baselines. Default true.
    pub swarm_snapshot: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("./data"), flush_interval_ms: 2000, swarm_snapshot: true }
    }
}

/// The admin API (`/admin/*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Accept admin requests from loopback addresses without a token. Default true.
    pub allow_loopback: bool,
    /// Environment variable holding the admin bearer token (`Authorization: Bearer <token>`).
    /// The token itself never goes in this file. Unset or empty: token auth disabled.
    /// Default `PBTS_ADMIN_TOKEN`.
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { allow_loopback: true, token_env: "PBTS_ADMIN_TOKEN".to_owned() }
    }
}

/// Who may use the server-side key endpoints (`POST /keygen`, `POST /attest`), which handle
/// private keys and exist only for compatibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerSideKeys {
    /// Loopback clients only (a private key should never cross a network).
    Loopback,
    /// Any client (only behind TLS, for legacy clients that cannot make keys).
    Anyone,
    /// Nobody: both endpoints answer 403.
    Disabled,
}

/// Who may create an account through `POST /register`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationPolicy {
    /// Anyone may register (every account is a receipt signer: see the sybil note in the
    /// receipts docs).
    Open,
    /// Registration needs an invite code from an admin (`POST /admin/invites`) or, when
    /// `user_invites` allows, from a user (`POST /invites`); each code works once.
    Invite,
    /// Only admins create accounts (`POST /admin/users`); `/register` may still attach a key
    /// to such an account with its passkey.
    Closed,
}

impl RegistrationPolicy {
    /// The name used in the configuration and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Invite => "invite",
            Self::Closed => "closed",
        }
    }
}

/// Who may `POST /register`, and invites.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// `open`, `invite` or `closed`. Unset (the default): `invite` in private mode, `open` in
    /// open mode.
    pub policy: Option<RegistrationPolicy>,
    /// Invites each user may create with `POST /invites` (its passkey authenticates it).
    /// Default 0: only admins invite.
    pub user_invites: u32,
}

impl Config {
    /// The registration policy in force.
    pub fn registration_policy(&self) -> RegistrationPolicy {
        self.registration.policy.unwrap_or(match self.tracker.mode {
            TrackerMode::Private => RegistrationPolicy::Invite,
            TrackerMode::Open => RegistrationPolicy::Open,
        })
    }
}

/// Per-client limits on work and state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests a client address may burst to `/register`, `/verify-receipt` and
    /// `/verify-attestation`, which do BLS or quote work for unauthenticated clients (a token
    /// bucket per IPv4 address or IPv6 /64). Beyond it: 429 with `Retry-After`. Default 10.
    pub expensive_burst: u32,
    /// Tokens the bucket regains per minute. Default 30.
    pub expensive_per_minute: u32,
    /// Torrents one user may be active in at once (live peer entries over all swarms); an
    /// announce that would add one more is refused. Bounds the memory one passkey can make the
    /// tracker hold. Default 10000.
    pub max_torrents_per_user: u32,
    /// Peers one address may have in one swarm (several clients behind one NAT); more are
    /// refused. 0: no limit. Default 16.
    pub max_peers_per_ip_per_swarm: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            expensive_burst: 10,
            expensive_per_minute: 30,
            max_torrents_per_user: 10_000,
            max_peers_per_ip_per_swarm: 16,
        }
    }
}

/// Receipts: `POST /report`, signature verification and the double-spend ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// A receipt older than this many seconds is refused as stale (`receipt_window` in
    /// `/config`): uploaders must report within it. It does not decide what was
    /// already credited (each downloader's pieces are credited once, ever, whatever the
    /// window). Changeable at run time through `POST /config`. Default 3600.
    pub window_secs: u64,
    /// How far ahead of the tracker's clock a receipt's timestamp may be (clock skew), seconds.
    /// Default 300.
    pub max_future_secs: u64,
    /// Most receipts in one `POST /report`; the request body may then be up to 1 KiB per
    /// receipt. Default 1024.
    pub max_receipts_per_report: usize,
    /// Most receipts being verified at once across all reports; a report beyond it is answered
    /// 503 with `Retry-After` rather than queued without bound. Default 16384 (about 6 s of
    /// one verifier thread).
    pub max_pending_receipts: usize,
    /// Verifier threads (BLS pairings never run on a serving core). 0 means one per CPU.
    /// Default 0.
    pub verifier_threads: usize,
    /// Who may call `POST /keygen` and `POST /attest` (they handle private keys):
    /// `loopback` (default), `anyone` or `disabled`.
    pub server_side_keys: ServerSideKeys,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            max_future_secs: 300,
            max_receipts_per_report: 1024,
            max_pending_receipts: 16384,
            verifier_threads: 0,
            server_side_keys: ServerSideKeys::Loopback,
        }
    }
}

impl ReceiptsConfig {
    /// Largest `POST /report` body accepted, bytes (1 KiB per receipt, at least 64 KiB).
    pub fn max_report_bytes(&self) -> usize {
        (self.max_receipts_per_report * 1024).max(64 << 10)
    }

    /// Verifier threads after resolving 0 to the CPU count.
    pub fn verifier_threads(&self) -> usize {
        match self.verifier_threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

/// Largest io_uring buffer memory per core, KiB (1 GiB): `io_memory_kib * 1024` and its product
/// with the cores must stay far from overflow, and no tracker needs more.
pub const MAX_IO_MEMORY_KIB: usize = 1 << 20;

/// Longest receipt window accepted, seconds (30 days): the ledger holds every receipt credited
/// within it.
pub const MAX_RECEIPT_WINDOW_SECS: u64 = 30 * 86_400;

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parse config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// An environment variable has a value that does not parse.
    #[error("environment variable {name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// One or more fields are out of range.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads `path` (if given), applies environment overrides and validates.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, variable or fields at fault.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                Self::from_toml(&text)
                    .map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// The parser's message.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies environment overrides read through `get`:
    /// `PBTS_MODE`, `PBTS_CORES`, `PBTS_DATA_DIR`, `PBTS_LISTEN` (comma-separated addresses),
    /// `PORT` (replaces the port of every listen address), `MIN_RATIO`, `MAX_PEERS`, `RPC`,
    /// `FACTORY`, `REPUTATION_ADDRESS`, `TEE_MODE` (PBTS's names), `PBTS_PUBLIC_URL`. The chain
    /// key's variable (`PK0` by default) is read at start-up, never stored here.
    ///
    /// # Errors
    /// [`ConfigError::Env`] for a value that does not parse.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(
            name: &'static str,
            value: String,
            reason: &'static str,
        ) -> Result<T, ConfigError> {
            value.trim().parse().map_err(|_| ConfigError::Env { name, value, reason })
        }
        if let Some(v) = get("PBTS_MODE") {
            self.tracker.mode = match v.trim() {
                "private" => TrackerMode::Private,
                "open" => TrackerMode::Open,
                _ => {
                    return Err(ConfigError::Env {
                        name: "PBTS_MODE",
                        value: v,
                        reason: "expected `private` or `open`",
                    });
                }
            };
        }
        if let Some(v) = get("PBTS_CORES") {
            self.network.cores = parse("PBTS_CORES", v, "expected a whole number")?;
        }
        if let Some(v) = get("PBTS_DATA_DIR") {
            self.storage.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("PBTS_LISTEN") {
            let mut listen = Vec::new();
            for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                listen.push(parse("PBTS_LISTEN", part.to_owned(), "expected ip:port list")?);
            }
            self.network.listen = listen;
        }
        if let Some(v) = get("PORT") {
            let port: u16 = parse("PORT", v, "expected a port number")?;
            for addr in &mut self.network.listen {
                addr.set_port(port);
            }
        }
        if let Some(v) = get("MIN_RATIO") {
            self.ratio.min_ratio = parse("MIN_RATIO", v, "expected a number")?;
        }
        if let Some(v) = get("MAX_PEERS") {
            self.tracker.max_peers = parse("MAX_PEERS", v, "expected a whole number")?;
        }
        if let Some(v) = get("PBTS_PUBLIC_URL") {
            self.tracker.public_url = v;
        }
        if let Some(v) = get("RPC") {
            self.chain.rpc_url = v;
        }
        if let Some(v) = get("FACTORY") {
            self.chain.factory_address = v;
        }
        if let Some(v) = get("REPUTATION_ADDRESS") {
            self.chain.reputation_address = v;
        }
        if let Some(v) = get("TEE_MODE") {
            self.tee.mode = pbts_tee::TeeMode::parse(&v).map_err(|_| ConfigError::Env {
                name: "TEE_MODE",
                value: v,
                reason: "expected none, tdx or dstack (or disabled, enabled, benchmark)",
            })?;
        }
        Ok(())
    }

    /// Checks every field and lists every problem at once.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with one line per problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let n = &self.network;
        if n.listen.is_empty() {
            problems.push("network.listen: at least one address is required".to_owned());
        }
        if !(64..=MAX_IO_MEMORY_KIB).contains(&n.io_memory_kib) {
            problems.push(format!(
                "network.io_memory_kib: {} not in 64..={MAX_IO_MEMORY_KIB} (64 KiB to 1 GiB per core)",
                n.io_memory_kib
            ));
        }
        if n.udp_batch_size == 0 || n.udp_batch_size > 1024 {
            problems.push(format!("network.udp_batch_size: {} not in 1..=1024", n.udp_batch_size));
        }
        if n.udp_poll_before_park_us > 1000 {
            problems.push(format!(
                "network.udp_poll_before_park_us: {} is more than 1000",
                n.udp_poll_before_park_us
            ));
        }
        if n.max_connections_per_core == 0 || n.max_connections_per_ip == 0 {
            problems.push(
                "network.max_connections_per_core and max_connections_per_ip: must be at least 1"
                    .to_owned(),
            );
        }
        if n.idle_timeout_secs == 0 || n.request_timeout_secs == 0 {
            problems.push("network timeouts must be at least 1 second".to_owned());
        }
        let t = &self.tracker;
        if t.announce_interval_secs == 0 {
            problems.push("tracker.announce_interval_secs: must be at least 1".to_owned());
        }
        if t.min_interval_secs > t.announce_interval_secs {
            problems.push(format!(
                "tracker.min_interval_secs ({}) exceeds announce_interval_secs ({})",
                t.min_interval_secs, t.announce_interval_secs
            ));
        }
        // In u64: the u32 sum overflowed. Passing this check bounds the sum `Core::interval`
        // computes below u32::MAX.
        let longest_interval =
            u64::from(t.announce_interval_secs) + u64::from(t.interval_jitter_secs);
        if u64::from(t.peer_timeout_secs) <= longest_interval {
            problems.push(format!(
                "tracker.peer_timeout_secs ({}) must exceed announce interval plus jitter ({}), \
                 or live peers expire between announces",
                t.peer_timeout_secs, longest_interval
            ));
        }
        if t.max_peers == 0 || t.max_peers > 1000 {
            problems.push(format!("tracker.max_peers: {} not in 1..=1000", t.max_peers));
        }
        if t.max_scrape_hashes == 0 || t.max_scrape_hashes > 1000 {
            problems.push(format!(
                "tracker.max_scrape_hashes: {} not in 1..=1000",
                t.max_scrape_hashes
            ));
        }
        if t.cleanup_interval_secs == 0 {
            problems.push("tracker.cleanup_interval_secs: must be at least 1".to_owned());
        }
        if !self.ratio.min_ratio.is_finite() || self.ratio.min_ratio < 0.0 {
            problems.push(format!(
                "ratio.min_ratio: {} must be a finite number >= 0",
                self.ratio.min_ratio
            ));
        }
        let r = &self.receipts;
        if r.window_secs == 0 || r.window_secs > MAX_RECEIPT_WINDOW_SECS {
            problems.push(format!(
                "receipts.window_secs: {} not in 1..={MAX_RECEIPT_WINDOW_SECS}",
                r.window_secs
            ));
        }
        if r.max_future_secs > 86_400 {
            problems.push(format!("receipts.max_future_secs: {} exceeds 86400", r.max_future_secs));
        }
        if r.max_receipts_per_report == 0 || r.max_receipts_per_report > 16384 {
            problems.push(format!(
                "receipts.max_receipts_per_report: {} not in 1..=16384",
                r.max_receipts_per_report
            ));
        }
        if r.max_pending_receipts < r.max_receipts_per_report {
            problems.push(format!(
                "receipts.max_pending_receipts ({}) is below max_receipts_per_report ({}): no \
                 full report could ever be verified",
                r.max_pending_receipts, r.max_receipts_per_report
            ));
        }
        if r.verifier_threads > 256 {
            problems.push(format!("receipts.verifier_threads: {} exceeds 256", r.verifier_threads));
        }
        problems.extend(self.chain.problems());
        if self.tee.chain_key && self.tee.mode == pbts_tee::TeeMode::None {
            problems.push(
                "tee.chain_key = true needs tee.mode = tdx or dstack (the key would not be in a TEE)"
                    .to_owned(),
            );
        }
        if self.tee.timeout_secs == 0 {
            problems.push("tee.timeout_secs: must be at least 1".to_owned());
        }
        if !(1..=64).contains(&self.tee.verify_threads) {
            problems.push(format!("tee.verify_threads: {} not in 1..=64", self.tee.verify_threads));
        }
        if self.tee.max_pending_verifications == 0 {
            problems.push("tee.max_pending_verifications: must be at least 1".to_owned());
        }
        let l = &self.limits;
        if l.expensive_burst == 0 || l.expensive_per_minute == 0 {
            problems.push(
                "limits.expensive_burst and limits.expensive_per_minute must be at least 1"
                    .to_owned(),
            );
        }
        if self.storage.flush_interval_ms == 0 {
            problems.push("storage.flush_interval_ms: must be at least 1".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// The defaults as commented TOML (what `pbts --print-config` prints).
    pub fn default_toml() -> String {
        let d = Self::default();
        let listen: Vec<String> = d.network.listen.iter().map(|a| format!("\"{a}\"")).collect();
        let listen = listen.join(", ");
        format!(
            r#"# pbts configuration. Every value below is the default.
# Environment overrides: PBTS_MODE, PBTS_CORES, PBTS_DATA_DIR, PBTS_LISTEN, PORT, MIN_RATIO,
# MAX_PEERS, PBTS_PUBLIC_URL, RPC, FACTORY, REPUTATION_ADDRESS, TEE_MODE.

[network]
# UDP socket + TCP listener per address and core (SO_REUSEPORT); IPv6 sockets are IPv6-only.
listen = [{listen}]
# Serving cores; 0 = every available CPU.
cores = {cores}
# First CPU to pin to; -1 disables pinning.
first_cpu = {first_cpu}
# io_uring buffer memory per core, KiB (must fit RLIMIT_MEMLOCK with the rings).
io_memory_kib = {io}
# Requested UDP receive buffer, bytes (capped by net.core.rmem_max).
udp_recv_buffer_bytes = {rcvbuf}
# Datagrams received and answered per system call (recvmmsg/sendmmsg), per socket and core.
udp_batch_size = {inflight}
# Microseconds an empty UDP socket is polled before the core sleeps on it (0: sleep at once).
udp_poll_before_park_us = {poll_us}
# Open HTTP connections per core; more are closed at once.
max_connections_per_core = {maxconn}
# Open HTTP connections per client address (not applied behind a proxy).
max_connections_per_ip = {maxconn_ip}
# Idle keep-alive connections are closed after this many seconds (2 when a core is near its cap).
idle_timeout_secs = {idle}
# A started request must complete, and a started response be taken, within this many seconds.
request_timeout_secs = {reqto}
# Client IP header from a trusted reverse proxy: "none", "x-forwarded-for" or "x-real-ip".
proxy_header = "none"

[tracker]
# "private" (passkey required) or "open".
mode = "private"
# Announce interval sent to clients, seconds, plus 0..=jitter random seconds.
announce_interval_secs = {interval}
interval_jitter_secs = {jitter}
# "min interval" sent to clients, seconds.
min_interval_secs = {min_interval}
# Peers silent for this long are removed, seconds.
peer_timeout_secs = {peer_timeout}
# numwant is capped to this (the original's MAX_PEERS).
max_peers = {max_peers}
# Peers returned when the client sends no numwant.
default_numwant = {numwant}
# Most info-hashes per scrape.
max_scrape_hashes = {scrape}
# Refuse torrents not registered with POST /admin/torrents.
require_registered_torrents = {registered}
# Seconds between expiry sweeps.
cleanup_interval_secs = {cleanup}
# Base URL used in the announce URLs the admin API returns.
public_url = "{public_url}"

[ratio]
# Enforce uploaded/downloaded >= min_ratio on leechers (the original's MIN_RATIO).
enabled = {ratio_enabled}
# "claimed" (announce deltas) or "verified" (upload proven by receipts; download is the larger
# of claimed and proven).
source = "claimed"
min_ratio = {min_ratio:?}
# Bytes a user may download before the ratio applies.
grace_bytes = {grace}

[storage]
# Database directory (created if missing).
data_dir = "{data_dir}"
# Milliseconds between batched writes of announce statistics.
flush_interval_ms = {flush}
# Keep the swarms across a graceful restart (swarms.snapshot in data_dir).
swarm_snapshot = {swarm_snapshot}

[admin]
# Loopback clients may use /admin/* without a token.
allow_loopback = {loopback}
# Environment variable holding the admin bearer token.
token_env = "{token_env}"

[receipts]
# Receipts older than this are stale, seconds (the original's receipt_window; POST /config
# changes it at run time).
window_secs = {window}
# Allowed clock skew for receipt timestamps ahead of the tracker, seconds.
max_future_secs = {future}
# Most receipts per POST /report (the body may be 1 KiB per receipt).
max_receipts_per_report = {per_report}
# Most receipts under verification at once; beyond it /report answers 503 + Retry-After.
max_pending_receipts = {pending}
# BLS verifier threads; 0 = one per CPU.
verifier_threads = {verifiers}
# Who may call POST /keygen and POST /attest (private keys!): "loopback", "anyone", "disabled".
server_side_keys = "loopback"

[chain]
# JSON-RPC endpoint of an Ethereum node; empty disables on-chain reputation (env RPC).
rpc_url = ""
# Environment variable holding the tracker account's private key (hex), or a file with it.
key_env = "{key_env}"
key_file = ""
# ReputationFactory address (pbts chain deploy-factory writes it; env FACTORY).
factory_address = ""
# Reputation contract to use before POST /contract/init makes one (env REPUTATION_ADDRESS).
reputation_address = ""
# Seconds between outbox flushes of verified credit to the contract, and users per batch.
flush_interval_secs = {chain_flush}
max_batch_users = {chain_batch}
# Percent added to gas estimates; seconds to wait for a receipt and for one RPC request.
gas_margin_percent = {chain_gas}
tx_timeout_secs = {chain_tx}
rpc_timeout_secs = {chain_rpc}
# Longest pause between retries while the RPC fails, seconds.
max_backoff_secs = {chain_backoff}

[registration]
# Who may POST /register: "open", "invite" (an invite code is needed) or "closed" (admins create
# accounts). Unset: "invite" in private mode, "open" in open mode.
# policy = "invite"
# Invites each user may create with POST /invites (0: only admins invite).
user_invites = {user_invites}

[limits]
# Per client address (IPv4, or IPv6 /64): requests to /register, /verify-receipt and
# /verify-attestation (BLS or quote work for unauthenticated clients) as a token bucket:
# a burst, refilled per minute. Beyond it: 429 with Retry-After.
expensive_burst = {expensive_burst}
expensive_per_minute = {expensive_per_minute}
# Torrents one user may be active in at once (live peers over all swarms).
max_torrents_per_user = {max_torrents}
# Peers one address may have in one swarm; 0 = no limit.
max_peers_per_ip_per_swarm = {max_per_ip_swarm}

[tee]
# "none", "tdx" (configfs-tsm quotes) or "dstack" (the dstack guest agent); env TEE_MODE.
# A provider that is not there is a start-up error.
mode = "none"
# Root secret of the none and tdx providers (created 0600 when missing); empty:
# <data_dir>/tee-root.key.
root_key_file = ""
# dstack agent socket or http:// URL; empty: DSTACK_SIMULATOR_ENDPOINT or /var/run/dstack.sock.
dstack_endpoint = ""
# configfs-tsm report directory (tdx).
tsm_report_dir = "{tsm}"
# PCCS that POST /verify-attestation fetches collateral from when a request brings none
# (requests cannot name their own); empty: requests must bring collateral.
pccs_url = ""
# Derive the tracker's Ethereum account in the TEE instead of reading chain.key_*.
chain_key = false
# Seconds a provider or PCCS request may take.
timeout_secs = {tee_timeout}
# Threads verifying quotes (PCCS fetch + dcap-qvl), apart from the serving cores.
verify_threads = {tee_verify_threads}
# Verifications running or queued at once; beyond it: 503 with Retry-After.
max_pending_verifications = {tee_pending}
"#,
            cores = d.network.cores,
            first_cpu = d.network.first_cpu,
            io = d.network.io_memory_kib,
            rcvbuf = d.network.udp_recv_buffer_bytes,
            inflight = d.network.udp_batch_size,
            poll_us = d.network.udp_poll_before_park_us,
            maxconn = d.network.max_connections_per_core,
            maxconn_ip = d.network.max_connections_per_ip,
            idle = d.network.idle_timeout_secs,
            reqto = d.network.request_timeout_secs,
            interval = d.tracker.announce_interval_secs,
            jitter = d.tracker.interval_jitter_secs,
            min_interval = d.tracker.min_interval_secs,
            peer_timeout = d.tracker.peer_timeout_secs,
            max_peers = d.tracker.max_peers,
            numwant = d.tracker.default_numwant,
            scrape = d.tracker.max_scrape_hashes,
            registered = d.tracker.require_registered_torrents,
            cleanup = d.tracker.cleanup_interval_secs,
            public_url = d.tracker.public_url,
            ratio_enabled = d.ratio.enabled,
            min_ratio = d.ratio.min_ratio,
            grace = d.ratio.grace_bytes,
            data_dir = d.storage.data_dir.display(),
            flush = d.storage.flush_interval_ms,
            swarm_snapshot = d.storage.swarm_snapshot,
            loopback = d.admin.allow_loopback,
            token_env = d.admin.token_env,
            window = d.receipts.window_secs,
            future = d.receipts.max_future_secs,
            per_report = d.receipts.max_receipts_per_report,
            pending = d.receipts.max_pending_receipts,
            verifiers = d.receipts.verifier_threads,
            user_invites = d.registration.user_invites,
            expensive_burst = d.limits.expensive_burst,
            expensive_per_minute = d.limits.expensive_per_minute,
            max_torrents = d.limits.max_torrents_per_user,
            max_per_ip_swarm = d.limits.max_peers_per_ip_per_swarm,
            key_env = d.chain.key_env,
            chain_flush = d.chain.flush_interval_secs,
            chain_batch = d.chain.max_batch_users,
            chain_gas = d.chain.gas_margin_percent,
            chain_tx = d.chain.tx_timeout_secs,
            chain_rpc = d.chain.rpc_timeout_secs,
            chain_backoff = d.chain.max_backoff_secs,
            tsm = d.tee.tsm_report_dir,
            tee_timeout = d.tee.timeout_secs,
            tee_verify_threads = d.tee.verify_threads,
            tee_pending = d.tee.max_pending_verifications,
        )
    }

    /// Serving cores after resolving `cores = 0` to the CPU count.
    pub fn serving_cores(&self) -> usize {
        if self.network.cores == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.network.cores
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_parse_back_to_default() {
        let parsed = Config::from_toml(&Config::default_toml()).unwrap();
        assert_eq!(parsed, Config::default());
        Config::default().validate().unwrap();
    }

    /// Every `section.key` of the config structs (from their JSON form, where unset options
    /// are `null` rather than missing).
    fn struct_keys() -> std::collections::BTreeSet<String> {
        let v = serde_json::to_value(Config::default()).unwrap();
        let mut keys = std::collections::BTreeSet::new();
        for (section, table) in v.as_object().unwrap() {
            for key in table.as_object().unwrap().keys() {
                keys.insert(format!("{section}.{key}"));
            }
        }
        keys
    }

    /// Every `section.key` the template documents, set (`key = ...`) or shown commented out
    /// (`# key = ...`, for options without a default).
    fn template_keys() -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        let mut section = String::new();
        for line in Config::default_toml().lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let line = line.strip_prefix("# ").unwrap_or(line);
            if let Some((key, _)) = line.split_once(" = ")
                && !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                keys.insert(format!("{section}.{key}"));
            }
        }
        keys
    }

    /// The template printed by `--print-config` documents every field, and nothing else: a
    /// field added to a struct without a line in the template (which the round trip cannot
    /// see, every field having a default) fails here.
    #[test]
    fn template_documents_exactly_the_struct_fields() {
        let (fields, documented) = (struct_keys(), template_keys());
        let missing: Vec<_> = fields.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&fields).collect();
        assert!(missing.is_empty(), "fields without a line in the template: {missing:?}");
        assert!(unknown.is_empty(), "template lines for no field: {unknown:?}");
        assert!(fields.len() > 60, "{}", fields.len());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::from_toml("[tracker]\nmax_peer = 3\n").unwrap_err();
        assert!(err.contains("unknown field `max_peer`"), "{err}");
    }

    #[test]
    fn env_overrides_use_the_originals_names() {
        let mut c = Config::default();
        c.apply_env(|name| match name {
            "MIN_RATIO" => Some("0.75".into()),
            "MAX_PEERS" => Some("30".into()),
            "PORT" => Some("9000".into()),
            "PBTS_MODE" => Some("open".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.ratio.min_ratio, 0.75);
        assert_eq!(c.tracker.max_peers, 30);
        assert_eq!(c.tracker.mode, TrackerMode::Open);
        assert!(c.network.listen.iter().all(|a| a.port() == 9000));
        let err = c.apply_env(|n| (n == "MAX_PEERS").then(|| "lots".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable MAX_PEERS=\"lots\": expected a whole number"
        );
    }

    #[test]
    fn validate_lists_every_problem() {
        let mut c = Config::default();
        c.tracker.max_peers = 0;
        c.ratio.min_ratio = f64::NAN;
        c.tracker.peer_timeout_secs = 10;
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else { panic!() };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    /// The buffer size is multiplied by 1024 (and by the cores) at start-up: a huge value must be
    /// refused here, not overflow there.
    #[test]
    fn validate_bounds_io_memory() {
        let c = Config::from_toml("[network]\nio_memory_kib = 9223372036854775807\n").unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else { panic!() };
        assert_eq!(
            problems,
            [
                "network.io_memory_kib: 9223372036854775807 not in 64..=1048576 (64 KiB to 1 GiB per core)"
            ]
        );
    }

    /// A core that polls its UDP socket for longer than a millisecond before sleeping starves
    /// nothing but wastes its CPU: refused with the bound.
    #[test]
    fn validate_bounds_udp_polling() {
        let c = Config::from_toml("[network]\nudp_poll_before_park_us = 1001\n").unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else { panic!() };
        assert_eq!(problems, ["network.udp_poll_before_park_us: 1001 is more than 1000"]);
        let c = Config::from_toml("[network]\nudp_poll_before_park_us = 0\n").unwrap();
        assert!(c.validate().is_ok());
    }

    /// `fuzz/regressions/config_toml/interval_plus_jitter_overflow`: the interval and its jitter
    /// were added as u32, which overflowed (a panic in debug builds; in release the wrapped sum
    /// passed the check and `Core::interval` overflowed while serving).
    #[test]
    fn validate_interval_plus_jitter_does_not_overflow() {
        let c = Config::from_toml(
            "[tracker]\nannounce_interval_secs = 4294967295\ninterval_jitter_secs = 1\n",
        )
        .unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else { panic!() };
        assert!(problems.iter().any(|p| p.contains("plus jitter (4294967296)")), "{problems:?}");
    }
}
