//! # pbts-engine
//!
//! The pbts tracker server: a thread-per-core engine on glommio (io_uring) serving BitTorrent
//! announce and scrape over UDP (BEP 15, 41) and HTTP (BEP 3, 7, 23, 24, 48), private by
//! passkey, with durable accounts and per-user accounting.
//!
//! ## Threads
//!
//! ```text
//! main ── start() ──┬─ socket-NN  (one pinned glommio executor per core: UDP socket and TCP
//! │                 │              listener per listen address, SO_REUSEPORT)
//! │                 ├─ store-01   (owns the redb database and the double-spend ledger;
//! │                 │              batched commits)
//! │                 ├─ verifier-NN (BLS batch verification of receipts)
//! │                 ├─ attest-NN  (TDX quote verification and PCCS fetches, bounded)
//! │                 ├─ chain-01   (alloy on a current-thread tokio runtime; when configured)
//! │                 ├─ outbox-01  (verified credit to the Reputation contract, in batches)
//! │                 └─ cleaner-01 (peer expiry on a timer)
//! └─ Server::shutdown() / SIGTERM: cores stop accepting, flush accounting, store commits, exit
//! ```
//!
//! Serving cores never block: the database, expiry sweeps and signature verification run on
//! their own threads.
//!
//! ## A receipt report
//!
//! ```text
//! POST /report ─ socket-NN: decode JSON, authenticate (passkey → user → sender_pk),
//!   │            per receipt: signer registered? torrent registered? piece bytes?
//!   ├─▶ store-01: piece hash right? fresh? piece never credited for this downloader?
//!   │             not in flight?  → reserve the (downloader, torrent, piece) claims → verdicts
//!   ├─▶ verifier-NN: batched aggregate verification                          → verdicts
//!   └─▶ store-01: one transaction: piece sets + uploader's verified upload + signer's
//!                 verified download (zero-sum); then the ledger marks them credited
//!       reply with one verdict per receipt, only after the commit
//! ```
//!
//! ## Example
//!
//! ```no_run
//! let mut config = pbts_engine::config::Config::default();
//! config.network.listen = vec!["127.0.0.1:0".parse().unwrap()];
//! let server = pbts_engine::start(config).unwrap();
//! println!("serving on {:?}", server.addrs());
//! server.shutdown();
//! server.join().unwrap();
//! ```

#![deny(unsafe_code)]

pub mod addr;
mod api;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod encoding;
pub mod fuzzing;
pub mod metrics;
pub mod ratelimit;
pub mod report;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod swarm;
#[allow(unsafe_code)]
mod sys;
pub mod tracker;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use glommio::{LocalExecutorBuilder, Placement};
use pbts_verifier::credit::Freshness;

use crate::chain::ChainState;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::{Runtime, State};
use crate::store::{Accounts, Db, OutboxStats, Overrides, ReceiptStats, StoreCmd, StoreStats};
use crate::supervisor::{Event, ExitNotice, spawn_role};
use crate::swarm::SwarmTable;
use crate::tracker::connection_id::ConnectionValidator;
use crate::workers::verifier::VerifierPool;

/// io_uring memory beyond `io_memory` per executor (rings), for the memlock check.
const RING_OVERHEAD: u64 = 256 << 10;

/// A running server.
#[derive(Debug)]
pub struct Server {
    state: Arc<State>,
    addrs: Vec<SocketAddr>,
    cores: Vec<glommio::ExecutorJoinHandle<()>>,
    store: std::thread::JoinHandle<()>,
    cleaner: std::thread::JoinHandle<()>,
    outbox: Option<std::thread::JoinHandle<()>>,
    events: flume::Receiver<Event>,
    events_tx: flume::Sender<Event>,
}

impl Server {
    /// The bound addresses (UDP and TCP share each), with real ports when 0 was asked.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Shared state (for embedding and tests).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Asks every worker to stop. Returns at once; [`Server::join`] waits.
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown();
    }

    /// A handle that can stop the server from another thread (a signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { state: Arc::downgrade(&self.state), events: self.events_tx.clone() }
    }

    /// Serves until shutdown is requested or a worker ends on its own, then stops every worker
    /// within `grace`. This is what the `pbts` binary runs.
    ///
    /// # Errors
    /// A worker that ended on its own (by name: the process must exit non-zero so that its
    /// supervisor restarts it), a worker that failed while stopping, or workers still running
    /// after `grace` (named; the caller should exit at once, the database is crash-safe).
    pub fn supervise(self, grace: Duration) -> anyhow::Result<()> {
        let mut running = self.roles();
        let mut died = None;
        while died.is_none() {
            match self.events.recv() {
                Ok(Event::Exit { role, ending }) => {
                    running.retain(|r| *r != role);
                    if !self.state.is_shutting_down() {
                        let what = supervisor::describe(&role, &ending);
                        tracing::error!("{what}: stopping the server");
                        died = Some(what);
                        self.shutdown();
                    }
                }
                Ok(Event::ShutdownRequested) | Err(_) => break,
            }
        }
        let events = self.events.clone();
        let (done_tx, done_rx) = flume::bounded(1);
        std::thread::Builder::new()
            .name("shutdown".to_owned())
            .spawn(move || {
                let _ = done_tx.send(self.join());
            })
            .context("spawn shutdown thread")?;
        let deadline = Instant::now() + grace;
        let joined = loop {
            for event in events.try_iter() {
                if let Event::Exit { role, .. } = event {
                    running.retain(|r| *r != role);
                }
            }
            match done_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(result) => break Some(result),
                Err(_) if Instant::now() >= deadline => break None,
                Err(_) => {}
            }
        };
        match (died, joined) {
            (_, None) => bail!(
                "shutdown did not finish within {} s; still running: {}",
                grace.as_secs_f64(),
                running.join(", ")
            ),
            (Some(what), Some(result)) => {
                if let Err(e) = result {
                    tracing::error!("while stopping: {e:#}");
                }
                bail!("{what}")
            }
            (None, Some(result)) => result,
        }
    }

    /// The names of every supervised worker thread.
    fn roles(&self) -> Vec<String> {
        let mut roles: Vec<String> =
            (1..=self.cores.len()).map(|i| format!("socket-{i:02}")).collect();
        roles.push("store-01".to_owned());
        roles.push("cleaner-01".to_owned());
        if self.outbox.is_some() {
            roles.push("outbox-01".to_owned());
        }
        roles.extend((1..=self.state.verifier.threads()).map(|i| format!("verifier-{i:02}")));
        roles.extend((1..=self.state.attestations.threads()).map(|i| format!("attest-{i:02}")));
        roles
    }

    /// Waits for the cores to stop, their accounting to be committed, and the helper threads to
    /// exit.
    ///
    /// # Errors
    /// A worker that panicked or failed, by role.
    pub fn join(self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for (i, h) in self.cores.into_iter().enumerate() {
            if h.join().is_err() {
                failures.push(format!("socket-{:02} panicked", i + 1));
            }
        }
        let (tx, rx) = flume::bounded(1);
        if self.state.store_tx.send(StoreCmd::Sync { reply: tx }).is_ok() {
            let _ = rx.recv();
        }
        self.state.shutdown.trigger();
        if self.cleaner.join().is_err() {
            failures.push("cleaner-01 panicked".to_owned());
        }
        // Nothing changes the swarms any more: the cores and the cleaner have stopped.
        if self.state.config.storage.swarm_snapshot {
            save_swarms(&self.state);
        }
        if let Some(outbox) = self.outbox
            && outbox.join().is_err()
        {
            failures.push("outbox-01 panicked".to_owned());
        }
        // Dropping the last state (and its sender) ends the store thread's loop.
        drop(self.state);
        if self.store.join().is_err() {
            failures.push("store-01 panicked".to_owned());
        }
        if failures.is_empty() { Ok(()) } else { bail!(failures.join("; ")) }
    }
}

/// Stops a [`Server`] from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    // Weak: a handle kept by a signal thread must not keep the state (and so the store and
    // verifier threads, which end when it drops) alive after the server stopped.
    state: std::sync::Weak<State>,
    events: flume::Sender<Event>,
}

impl ShutdownHandle {
    /// Asks every worker to stop.
    pub fn shutdown(&self) {
        if let Some(state) = self.state.upgrade() {
            state.shutdown.trigger();
        }
        let _ = self.events.send(Event::ShutdownRequested);
    }
}

/// Raises the soft RLIMIT_MEMLOCK when io_uring needs more than it allows, or explains why the
/// server cannot start.
fn ensure_memlock(config: &Config, cores: usize) -> anyhow::Result<()> {
    let per_core = (config.network.io_memory_kib as u64) * 1024 + RING_OVERHEAD;
    let need = per_core * cores as u64;
    let (soft, hard) = sys::memlock_limit().context("read RLIMIT_MEMLOCK")?;
    if soft >= need {
        return Ok(());
    }
    if hard >= need {
        sys::set_memlock_limit(need, hard).context("raise RLIMIT_MEMLOCK soft limit")?;
        return Ok(());
    }
    if sys::set_memlock_limit(need, need).is_ok() {
        return Ok(());
    }
    bail!(
        "RLIMIT_MEMLOCK is {soft} bytes (hard {hard}) but {cores} cores with io_memory_kib = {} \
         need {need}: lower network.io_memory_kib or network.cores, or raise the limit \
         (ulimit -l, LimitMEMLOCK= in systemd)",
        config.network.io_memory_kib
    )
}

/// Descriptors kept for everything but HTTP connections (sockets, the database, threads,
/// chain and TEE clients).
const FD_RESERVE: u64 = 512;

/// Raises the soft RLIMIT_NOFILE to fit every core's connections (the stock soft limit of 1024
/// would otherwise let 1,100 idle connections starve everything else), or lowers the
/// per-core connection cap to what the hard limit allows.
fn ensure_nofile(config: &mut Config, cores: usize) -> anyhow::Result<()> {
    let per_core = config.network.max_connections_per_core as u64;
    let need = per_core * cores as u64 + FD_RESERVE;
    let (soft, hard) = sys::nofile_limit().context("read RLIMIT_NOFILE")?;
    if soft >= need {
        return Ok(());
    }
    // Root may raise the hard limit too; anyone may raise the soft one up to the hard one.
    if sys::set_nofile_limit(need, need.max(hard)).is_ok() {
        return Ok(());
    }
    let have = hard.max(soft);
    if have > soft {
        sys::set_nofile_limit(have, hard).context("raise RLIMIT_NOFILE soft limit")?;
    }
    let fit = have.saturating_sub(FD_RESERVE) / cores as u64;
    if fit < 64 {
        bail!(
            "RLIMIT_NOFILE is {soft} (hard {hard}): {cores} cores need at least {} descriptors \
             to serve 64 connections each; raise the limit (ulimit -n, LimitNOFILE= in systemd)",
            64 * cores as u64 + FD_RESERVE
        );
    }
    tracing::warn!(
        "RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors that \
         network.max_connections_per_core = {per_core} needs on {cores} cores: serving at most \
         {fit} connections per core (raise ulimit -n or LimitNOFILE= to restore it)"
    );
    config.network.max_connections_per_core = fit as usize;
    Ok(())
}

/// Starts the server: opens the database, binds every socket, spawns the threads. Returns once
/// every socket is bound (so clients may connect at once).
///
/// # Errors
/// Invalid configuration, memlock limits, a database that cannot be opened, an address that
/// cannot be bound, or a thread that cannot be spawned — each with context.
pub fn start(mut config: Config) -> anyhow::Result<Server> {
    config.validate()?;
    let cores = config.serving_cores();
    ensure_memlock(&config, cores)?;
    ensure_nofile(&mut config, cores)?;
    ensure_io_uring()?;
    let (events_tx, events) = flume::unbounded();

    let receipt_stats = Arc::new(ReceiptStats::default());
    let freshness = Freshness {
        window_secs: config.receipts.window_secs,
        max_future_secs: config.receipts.max_future_secs,
    };
    let outbox_stats = Arc::new(OutboxStats::default());
    let store_stats = Arc::new(StoreStats::default());
    let db = Db::open(
        &config.storage.data_dir,
        freshness,
        receipt_stats.clone(),
        outbox_stats.clone(),
        store_stats.clone(),
    )
    .with_context(|| format!("open database in {}", config.storage.data_dir.display()))?;
    let tee = pbts_tee::Tee::open(&config.tee, &config.storage.data_dir).with_context(|| {
        format!("open the TEE provider (tee.mode = {})", config.tee.mode.as_str())
    })?;
    let tee_key = if config.tee.chain_key && config.chain.is_enabled() {
        let secret =
            tee.ethereum_key(pbts_tee::derive::ETHEREUM_PATH).context("derive the chain key")?;
        Some(pbts_chain::SigningKey::from_bytes(&secret)?)
    } else {
        None
    };
    let chain = ChainState::start(&config.chain, db.chain_contract()?, outbox_stats, tee_key)?;
    let accounts = Arc::new(Accounts::default());
    let swarms = SwarmTable::new();
    let registered = dashmap::DashMap::with_hasher(ahash::RandomState::new());
    for (ih, info) in db.load(&accounts, &swarms).context("load database")? {
        registered.insert(ih, info);
    }
    let instance_id = db.instance_id().context("read instance id")?;
    if config.storage.swarm_snapshot {
        restore_swarms(&config, &swarms, &accounts, &instance_id);
    }
    let overrides = db.overrides();
    if overrides != Overrides::default() {
        tracing::info!("settings changed through POST /config are in force: {overrides:?}");
    }
    let runtime = Runtime::new(&config, overrides);
    let (addrs, sockets) = workers::socket::bind_all(&config, cores)?;

    let (store_tx, store_rx) = flume::unbounded();
    let store_accounts = accounts.clone();
    let store = spawn_role("store-01", &events_tx, move || {
        workers::store::run_store_worker(db, store_rx, store_accounts)
    })
    .context("spawn store thread")?;
    let verifier = VerifierPool::with_spawner(config.receipts.verifier_threads(), |name, work| {
        spawn_role(&name, &events_tx, work)
    })
    .context("spawn verifier threads")?;
    let attestations = workers::attest::AttestationPool::with_spawner(
        config.tee.verify_threads,
        config.tee.max_pending_verifications,
        |name, work| spawn_role(&name, &events_tx, work),
    )
    .context("spawn attestation threads")?;

    let admin_token = std::env::var(&config.admin.token_env).ok().filter(|t| !t.is_empty());
    let state = Arc::new(State {
        swarms,
        accounts,
        registered,
        validator: ConnectionValidator::new(rand::random()),
        start: Instant::now(),
        store_tx,
        metrics: Metrics::new(cores),
        shutdown: Default::default(),
        instance_id,
        admin_token,
        verifier,
        receipt_stats,
        store_stats,
        runtime,
        chain,
        tee: Arc::new(tee),
        attestations,
        fault_requests: supervisor::fault_injected("request"),
        connections_per_ip: dashmap::DashMap::with_hasher(ahash::RandomState::new()),
        totals: Default::default(),
        limiter: ratelimit::RateLimiter::new(
            config.limits.expensive_burst,
            config.limits.expensive_per_minute,
        ),
        config,
    });
    let outbox = match state.chain.handle {
        Some(_) => {
            let outbox_state = state.clone();
            Some(
                spawn_role("outbox-01", &events_tx, move || {
                    workers::outbox::run_outbox_worker(&outbox_state)
                })
                .context("spawn outbox thread")?,
            )
        }
        None => None,
    };

    let cleaner_state = state.clone();
    let cleaner = spawn_role("cleaner-01", &events_tx, move || {
        workers::cleaner::run_cleaner_worker(&cleaner_state)
    })
    .context("spawn cleaner thread")?;

    let mut handles = Vec::new();
    for (i, core_sockets) in sockets.into_iter().enumerate() {
        let placement = match state.config.network.first_cpu {
            n if n < 0 => Placement::Unbound,
            n => Placement::Fixed(n as usize + i),
        };
        let state = state.clone();
        let role = format!("socket-{:02}", i + 1);
        // Owned by the core's future: dropped when it returns, or while the executor thread
        // unwinds from a panic anywhere (also before the future ever ran).
        let mut notice = ExitNotice::new(role.clone(), events_tx.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&role)
            .io_memory(state.config.network.io_memory_kib * 1024)
            // Blocking work (signature checks) must not share the serving core.
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(1))
            .spawn(move || async move {
                if supervisor::fault_injected(&role) {
                    glommio::timer::sleep(supervisor::FAULT_DELAY).await;
                    panic!("injected fault: {}={role}", supervisor::FAULT_ENV);
                }
                if let Err(e) = workers::socket::run_socket_worker(state, i, core_sockets).await {
                    notice.failed(format!("{e:#}"));
                }
            })
            .map_err(|e| anyhow::anyhow!("spawn executor socket-{:02}: {e}", i + 1))?;
        handles.push(handle);
    }
    Ok(Server { state, addrs, cores: handles, store, cleaner, outbox, events, events_tx })
}

/// Loads the swarm snapshot a graceful stop left, if any (see [`swarm::table::snapshot`]). A
/// loaded or stale file is removed: a later crash must not bring back baselines that have
/// moved on. A bad one is renamed `*.refused` and the tracker starts with empty swarms.
fn restore_swarms(config: &Config, swarms: &SwarmTable, accounts: &Accounts, instance_id: &str) {
    use swarm::table::snapshot;
    let path = snapshot::path_in(&config.storage.data_dir);
    let started = Instant::now();
    let at = snapshot::Restore {
        instance_id,
        now: clock::Uptime(0),
        unix_now: clock::unix_now(),
        peer_timeout: config.tracker.peer_timeout_secs,
    };
    let loaded = swarms.load_snapshot(&path, &at, |id| {
        accounts.by_id(id).is_some_and(|u| {
            u.active_peers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        })
    });
    let remove = |path: &std::path::Path| {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("cannot remove {}: {e}; remove it by hand", path.display());
        }
    };
    match loaded {
        Ok(None) => {}
        Ok(Some(s)) => {
            tracing::info!(
                "restored {} peers in {} swarms from {} (written {} s ago, {} peers expired or \
                 skipped) in {} ms",
                s.peers,
                s.torrents,
                path.display(),
                s.age_secs,
                s.skipped,
                started.elapsed().as_millis()
            );
            remove(&path);
        }
        Err(e) if e.is_refusal() => {
            let mut aside = path.clone().into_os_string();
            aside.push(".refused");
            tracing::warn!(
                "refusing the swarm snapshot {}: {e}; starting with empty swarms (the file is \
                 kept as {})",
                path.display(),
                std::path::Path::new(&aside).display()
            );
            if let Err(e) = std::fs::rename(&path, &aside) {
                tracing::warn!("cannot rename {}: {e}", path.display());
            }
        }
        Err(e @ swarm::SnapshotError::Stale { .. }) => {
            tracing::info!("ignoring the swarm snapshot {}: {e}", path.display());
            remove(&path);
        }
        Err(e) => {
            tracing::warn!(
                "cannot read the swarm snapshot {}: {e}; starting with empty swarms",
                path.display()
            );
        }
    }
}

/// Writes every swarm to the snapshot file (at the end of a graceful stop).
fn save_swarms(state: &State) {
    let path = swarm::table::snapshot::path_in(&state.config.storage.data_dir);
    let started = Instant::now();
    let now = clock::Uptime::since(state.start);
    match state.swarms.write_snapshot(&path, &state.instance_id, now, clock::unix_now()) {
        Ok(s) => tracing::info!(
            "wrote {} peers in {} swarms to {} ({} bytes) in {} ms",
            s.peers,
            s.torrents,
            path.display(),
            s.bytes,
            started.elapsed().as_millis()
        ),
        Err(e) => tracing::error!(
            "cannot write the swarm snapshot {}: {e}; the swarms start empty next time",
            path.display()
        ),
    }
}

/// Checks that this process may use io_uring, which every serving core needs, before any
/// executor starts: without it glommio's threads panic after start-up and nothing is served.
fn ensure_io_uring() -> anyhow::Result<()> {
    // On a thread of its own: closing a ring queues task work on the thread that made it, which
    // interrupts that thread's next blocking call with EINTR (a caller's socket read, say).
    let probed = std::thread::Builder::new()
        .name("io-uring-probe".to_owned())
        .spawn(sys::probe_io_uring)
        .context("spawn the io_uring probe")?
        .join()
        .map_err(|_| anyhow::anyhow!("the io_uring probe panicked"))?;
    let Err(e) = probed else { return Ok(()) };
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|v| v.trim().parse::<u8>().ok())
        .filter(|&v| v > 0);
    // "Seccomp: 2" in /proc/self/status: a filter is installed (Docker, systemd, a sandbox).
    let filtered = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
    });
    let cause = match (e.raw_os_error(), disabled) {
        (_, Some(v)) => format!(
            "the kernel disables it (kernel.io_uring_disabled = {v}): set it to 0 \
             (sysctl -w kernel.io_uring_disabled=0)"
        ),
        (Some(libc::EPERM | libc::EACCES | libc::ENOSYS), None) if filtered => {
            "a seccomp filter blocks it: Docker 25 and later block io_uring in their default \
             profile, so run the container with pbts's profile (`security_opt: \
             [seccomp=deploy/docker/seccomp.json]`, as compose.yaml does) or another that allows \
             io_uring_setup, io_uring_enter and io_uring_register; under systemd, \
             SystemCallFilter= must allow those three"
                .to_owned()
        }
        (Some(libc::ENOSYS), None) => "this kernel has no io_uring (Linux 5.8 or later built \
             with CONFIG_IO_URING is needed; gVisor does not provide it)"
            .to_owned(),
        (Some(libc::ENOMEM), None) => "the kernel refused the ring's memory (RLIMIT_MEMLOCK on \
             kernels before 5.12: raise ulimit -l, LimitMEMLOCK= or the container's memlock)"
            .to_owned(),
        _ => "the kernel refused the ring (a security module or a container runtime may block \
             io_uring)"
            .to_owned(),
    };
    bail!("io_uring is unavailable (io_uring_setup: {e}); pbts serves through io_uring: {cause}")
}
