//! The experiments, and what they share: settings, a keep-alive HTTP client, and a tracker
//! started in this process on 127.0.0.1 (so the harness measures the real engine, and
//! `--flamegraph` can sample it).

pub mod announce;
pub mod download;
pub mod gas;
pub mod overhead;
pub mod receipts;
pub mod scalability;
pub mod tee;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pbts_engine::config::{Config, TrackerMode};

/// Options every experiment reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Repetitions of each measured operation.
    pub iterations: usize,
    /// Seconds of load per point of the throughput experiments.
    pub duration: Duration,
    /// CI-sized runs: fewer points, fewer repetitions.
    pub quick: bool,
    /// Seed of every random choice the harness makes.
    pub seed: u64,
    /// Where to write a flamegraph of the tracker under load (announce experiment).
    pub flamegraph: Option<std::path::PathBuf>,
}

/// Milliseconds since `t`.
pub fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Milliseconds of each of `n` calls of `f`.
pub fn timed(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            ms(t)
        })
        .collect()
}

/// A tracker running in this process.
pub struct Tracker {
    /// The server.
    pub server: Option<pbts_engine::Server>,
    /// Its HTTP and UDP address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Tracker {
    /// Starts a tracker on 127.0.0.1:0 with `cores` serving cores (unpinned: the load
    /// generator shares the machine), its database in a fresh directory.
    ///
    /// # Errors
    /// Start-up failures.
    pub fn start(
        mode: TrackerMode,
        cores: usize,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut c = Config::default();
        c.network.listen = vec!["127.0.0.1:0".parse().expect("literal")];
        c.network.cores = cores;
        c.network.first_cpu = -1;
        c.network.io_memory_kib = 256;
        c.tracker.mode = mode;
        c.tracker.interval_jitter_secs = 0;
        c.storage.data_dir = dir.path().to_owned();
        c.storage.flush_interval_ms = 200;
        // The harness registers its users itself, all from 127.0.0.1.
        c.registration.policy = Some(pbts_engine::config::RegistrationPolicy::Open);
        c.limits.expensive_burst = 1_000_000;
        c.limits.expensive_per_minute = 1_000_000;
        // Load generators announce every peer from 127.0.0.1.
        c.limits.max_peers_per_ip_per_swarm = 0;
        c.limits.max_torrents_per_user = u32::MAX;
        tweak(&mut c);
        let server = pbts_engine::start(c)?;
        let addr = server.addrs()[0];
        Ok(Self { server: Some(server), addr, _dir: dir })
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            let _ = s.join();
        }
    }
}

pub use pbts_testkit::http::Http;

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    pbts_engine::encoding::b64(bytes)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// Percent-encodes every byte.
pub fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

pub use pbts_engine::clock::unix_now;

/// A user registered with a client-made key.
pub struct User {
    /// The key.
    pub sk: pbts_verifier::keys::SecretKey,
    /// The passkey.
    pub passkey: String,
}

/// Registers `name` with a key from `seed`.
///
/// # Errors
/// Registration refused.
pub fn register(http: &mut Http, name: &str, seed: u64) -> anyhow::Result<User> {
    let mut ikm = [0x42u8; 32];
    ikm[..8].copy_from_slice(&seed.to_be_bytes());
    let sk = pbts_verifier::keys::SecretKey::from_ikm(&ikm)?;
    let v = http.json_ok(
        "POST",
        "/register",
        &serde_json::json!({"user_id": name, "public_key": b64(&sk.public_key().to_bytes().0),
                            "proof_of_possession": b64(&sk.prove_possession().0)}),
    )?;
    let passkey = v["passkey"].as_str().context("passkey in /register answer")?.to_owned();
    Ok(User { sk, passkey })
}

/// The torrent the experiments trade: 2^20 pieces of 16 KiB.
pub const INFO_HASH: [u8; 20] = [0xab; 20];
/// Its piece length.
pub const PIECE: u64 = 16 * 1024;

/// Registers [`INFO_HASH`].
///
/// # Errors
/// Registration refused.
pub fn register_torrent(http: &mut Http) -> anyhow::Result<()> {
    http.json_ok(
        "POST",
        "/admin/torrents",
        &serde_json::json!({"info_hash": hex(&INFO_HASH), "piece_length": PIECE, "total_size": PIECE << 20}),
    )?;
    Ok(())
}

/// A report body of receipts that `downloader` signs for pieces `first..first + k` received from
/// `uploader`, fresh (timestamp now) and never reported before when `first` is unique.
pub fn report_body(uploader: &User, downloader: &User, first: u32, k: u32) -> Vec<u8> {
    let ts = unix_now();
    let sender = uploader.sk.public_key().to_bytes();
    let receipts: Vec<_> = (first..first + k)
        .map(|i| {
            let piece = [(i % 251) as u8; 20];
            pbts_testkit::receipts::sign(INFO_HASH, sender, &downloader.sk, i, piece, ts)
        })
        .collect();
    pbts_testkit::receipts::report_body(&uploader.passkey, &receipts).to_string().into_bytes()
}

/// Checks a `/report` answer credited all `k` receipts.
///
/// # Errors
/// Any other answer.
pub fn check_report(status: u16, body: &[u8], k: u32) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    if status != 200 || v["verified_receipts"].as_u64() != Some(u64::from(k)) {
        bail!("report of {k} receipts: {status} {v}");
    }
    Ok(())
}
