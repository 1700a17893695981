//! State shared by every thread, and the per-core context of a serving core.
//!
//! ```text
//!            ┌──────────── Arc<State> (Send + Sync) ───────────────┐
//!  socket-01 │ SwarmTable (lock-sharded) · Accounts · Metrics      │  store-01 (redb)
//!  socket-02 │ registered torrents · connection-id key · config    │  cleaner-01 (expiry)
//!            └──────────────────────────────────────────────────────┘
//!  each socket-NN: Rc<Core> { rng, pending accounting } ──Flush every N ms──▶ store-01
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use pbts_proto::InfoHash;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::clock::Uptime;
use crate::config::Config;
use crate::metrics::{CoreMetrics, Metrics};
use crate::store::{
    Accounts, Overrides, ReceiptStats, StatDelta, StoreCmd, StoreError, TorrentInfo,
};
use crate::swarm::table::{Credit, SelectedPeers, SwarmTable, SwarmTotals, UserId};
use crate::tracker::connection_id::ConnectionValidator;
use crate::workers::verifier::VerifierPool;

/// State shared by every thread.
#[derive(Debug)]
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// Every swarm.
    pub swarms: SwarmTable,
    /// Users and passkeys.
    pub accounts: Arc<Accounts>,
    /// Torrents registered by the operator, under every hash clients announce them with.
    pub registered: DashMap<InfoHash, TorrentInfo, ahash::RandomState>,
    /// UDP connection ids.
    pub validator: ConnectionValidator,
    /// Server start (the zero of [`State::now`]).
    pub start: Instant,
    /// Commands for the store thread.
    pub store_tx: flume::Sender<StoreCmd>,
    /// Per-core counters.
    pub metrics: Metrics,
    /// Set once to stop every worker.
    pub shutdown: crate::workers::Shutdown,
    /// Random id of this instance (hex), sent as `tracker id`.
    pub instance_id: String,
    /// Admin bearer token, if configured.
    pub admin_token: Option<String>,
    /// Verifier threads for receipt signatures.
    pub verifier: VerifierPool,
    /// Receipt counters (shared with the store thread).
    pub receipt_stats: Arc<ReceiptStats>,
    /// The store thread's commit failures and pending retries.
    pub store_stats: Arc<crate::store::StoreStats>,
    /// Settings changeable at run time (`POST /config`).
    pub runtime: Runtime,
    /// On-chain reputation: the chain thread, the contract in use, the outbox.
    pub chain: crate::chain::ChainState,
    /// The TEE provider (`none` without one). Its calls block: run them off the serving cores.
    pub tee: Arc<pbts_tee::Tee>,
    /// Threads for quote verification (`POST /verify-attestation`), bounded.
    pub attestations: crate::workers::attest::AttestationPool,
    /// `PBTS_FAULT_PANIC=request`: the fault-injection request handlers panic (tests of the
    /// per-request panic guard; see [`crate::supervisor`]).
    pub fault_requests: bool,
    /// Per-client token buckets of the expensive unauthenticated endpoints.
    pub limiter: crate::ratelimit::RateLimiter,
    /// Open HTTP connections per client address (over all cores).
    pub connections_per_ip: DashMap<IpAddr, u32, ahash::RandomState>,
    /// Swarm totals for `/stats` and `/metrics`, recomputed at most once a second off the
    /// serving cores (a full scan takes milliseconds at 100k torrents, and those endpoints are
    /// unauthenticated and pipelinable).
    pub totals: TotalsCache,
}

/// The last swarm totals and when they were computed.
#[derive(Debug, Default)]
pub struct TotalsCache {
    last: std::sync::Mutex<Option<(Instant, SwarmTotals)>>,
    refreshing: AtomicBool,
}

/// How old cached totals may be.
pub const TOTALS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

impl TotalsCache {
    /// The totals if computed less than [`TOTALS_MAX_AGE`] ago, else `Err(stale)` with the
    /// last ones (default before the first computation). Holds the lock only to copy.
    pub fn get(&self, now: Instant) -> Result<SwarmTotals, SwarmTotals> {
        let last = *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match last {
            Some((at, t)) if now.saturating_duration_since(at) < TOTALS_MAX_AGE => Ok(t),
            Some((_, t)) => Err(t),
            None => Err(Default::default()),
        }
    }

    /// Claims the next recomputation; `false` if another is running.
    pub fn begin_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Stores fresh totals (`None`: the recomputation was abandoned) and ends the
    /// recomputation.
    pub fn finish_refresh(&self, totals: Option<SwarmTotals>) {
        if let Some(totals) = totals {
            *self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), totals));
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

/// Who sent an HTTP request, as far as authorization goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address: from the trusted proxy header when `network.proxy_header` is set
    /// (the TCP peer's if the header is missing), else the TCP peer's.
    pub ip: IpAddr,
    /// Whether the request gets loopback privileges (admin without a token, the server-side key
    /// endpoints). Behind a proxy, the TCP peer is the proxy itself, so only a forwarded client
    /// address that is loopback counts; a request without the header gets none.
    pub loopback: bool,
}

/// Settings `POST /config` changes while serving: the configuration file's values, replaced by
/// persisted [`Overrides`].
#[derive(Debug)]
pub struct Runtime {
    min_ratio_bits: AtomicU64,
    receipt_window_secs: AtomicU64,
}

impl Runtime {
    /// The file's values with `overrides` applied.
    pub fn new(config: &Config, overrides: Overrides) -> Self {
        let this = Self {
            min_ratio_bits: AtomicU64::new(config.ratio.min_ratio.to_bits()),
            receipt_window_secs: AtomicU64::new(config.receipts.window_secs),
        };
        this.apply(overrides);
        this
    }

    /// Applies the fields `o` sets.
    pub fn apply(&self, o: Overrides) {
        if let Some(r) = o.min_ratio {
            self.min_ratio_bits.store(r.to_bits(), Ordering::Relaxed);
        }
        if let Some(w) = o.receipt_window_secs {
            self.receipt_window_secs.store(w, Ordering::Relaxed);
        }
    }

    /// The ratio leechers need.
    pub fn min_ratio(&self) -> f64 {
        f64::from_bits(self.min_ratio_bits.load(Ordering::Relaxed))
    }

    /// Receipts older than this are stale, seconds.
    pub fn receipt_window_secs(&self) -> u64 {
        self.receipt_window_secs.load(Ordering::Relaxed)
    }
}

impl State {
    /// Sends a command to the store thread and awaits its reply, which comes after the commit.
    ///
    /// # Errors
    /// The command's failure, or [`StoreError::Closed`] when the store thread is gone.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(crate::store::Reply<T>) -> StoreCmd,
    ) -> Result<T, StoreError> {
        let (tx, rx) = flume::bounded(1);
        self.store_tx.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.recv_async().await.map_err(|_| StoreError::Closed)?
    }

    /// Seconds since start-up.
    pub fn now(&self) -> Uptime {
        Uptime::since(self.start)
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_triggered()
    }
}

/// Accounting accumulated on one core between flushes.
#[derive(Debug, Default)]
pub struct Pending {
    deltas: HashMap<(u32, InfoHash), (u64, u64), ahash::RandomState>,
    snatches: HashMap<InfoHash, u32, ahash::RandomState>,
}

impl Pending {
    /// Adds an announce's accounting for `user` on the torrent row `key`.
    pub fn add_credit(&mut self, user: UserId, key: InfoHash, c: Credit) {
        let e = self.deltas.entry((user, key)).or_default();
        e.0 = e.0.saturating_add(c.uploaded);
        e.1 = e.1.saturating_add(c.downloaded);
    }

    /// Counts a completed download of a registered torrent.
    pub fn add_snatch(&mut self, info_hash: InfoHash) {
        *self.snatches.entry(info_hash).or_default() += 1;
    }

    /// Turns the pending accounting into a store command (None if there is nothing).
    pub fn take(&mut self) -> Option<StoreCmd> {
        if self.deltas.is_empty() && self.snatches.is_empty() {
            return None;
        }
        let deltas = self
            .deltas
            .drain()
            .map(|((user, info_hash), (uploaded, downloaded))| StatDelta {
                user,
                info_hash,
                uploaded,
                downloaded,
            })
            .collect();
        Some(StoreCmd::Flush { deltas, snatches: self.snatches.drain().collect() })
    }
}

/// One serving core's context (not `Send`: lives on its executor).
#[derive(Debug)]
pub struct Core {
    /// Shared state.
    pub state: Arc<State>,
    /// This core's index.
    pub index: usize,
    /// Random source for peer selection and jitter.
    pub rng: RefCell<SmallRng>,
    /// Accounting waiting for the next flush.
    pub pending: RefCell<Pending>,
    /// Reused peer-selection buffer.
    pub selected: RefCell<SelectedPeers>,
}

impl Core {
    /// A context for core `index`.
    pub fn new(state: Arc<State>, index: usize) -> Self {
        Self {
            state,
            index,
            rng: RefCell::new(SmallRng::from_os_rng()),
            pending: RefCell::new(Pending::default()),
            selected: RefCell::new(SelectedPeers::default()),
        }
    }

    /// This core's counters.
    pub fn metrics(&self) -> &CoreMetrics {
        self.state.metrics.core(self.index)
    }

    /// The announce interval with jitter.
    pub fn interval(&self) -> u32 {
        let t = &self.state.config.tracker;
        t.announce_interval_secs + self.rng.borrow_mut().random_range(0..=t.interval_jitter_secs)
    }

    /// Sends pending accounting to the store thread.
    pub fn flush(&self) {
        if let Some(cmd) = self.pending.borrow_mut().take() {
            // The store thread outlives the cores; a failed send means it crashed, which the
            // supervisor reports.
            let _ = self.state.store_tx.send(cmd);
        }
    }
}
