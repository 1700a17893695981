//! State shared by every thread, the per-core context, and the protocol-independent announce
//! and scrape logic that both the UDP and the HTTP workers call.
//!
//! ```text
//!            ┌──────────── Arc<State> (Send + Sync) ───────────────┐
//!  socket-01 │ SwarmStore (lock-sharded) · Accounts · Metrics      │  store-01 (redb)
//!  socket-02 │ registered torrents · connection-id key · config    │  cleaner-01 (expiry)
//!            └──────────────────────────────────────────────────────┘
//!  each socket-NN: Rc<Core> { rng, pending accounting } ──Flush every N ms──▶ store-01
//! ```

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::clock::Uptime;
use crate::config::{Config, TrackerMode};
use crate::metrics::{CoreMetrics, Counter, Metrics};
use crate::store::{
    Accounts, Overrides, Passkey, ReceiptStats, StatDelta, StoreCmd, TorrentInfo, User,
    saturating_add_to,
};
use crate::swarm::store::{
    AnnounceInput, AnnounceOutcome, Credit, Refusal, SelectedPeers, SwarmStore, UserId,
};
use crate::udp::connection::ConnectionValidator;
use crate::workers::verifier::VerifierPool;

/// State shared by every thread.
#[derive(Debug)]
pub struct State {
    /// The validated configuration.
    pub config: Config,
    /// Every swarm.
    pub swarms: SwarmStore,
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
    pub attestations: crate::attest::AttestationPool,
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
    last: std::sync::Mutex<Option<(Instant, crate::swarm::store::StoreTotals)>>,
    refreshing: AtomicBool,
}

/// How old cached totals may be.
pub const TOTALS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

impl TotalsCache {
    /// The totals if computed less than [`TOTALS_MAX_AGE`] ago, else `Err(stale)` with the
    /// last ones (default before the first computation). Holds the lock only to copy.
    pub fn get(
        &self,
        now: Instant,
    ) -> Result<crate::swarm::store::StoreTotals, crate::swarm::store::StoreTotals> {
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
    pub fn finish_refresh(&self, totals: Option<crate::swarm::store::StoreTotals>) {
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

/// An announce from either protocol, after decoding.
#[derive(Clone, Copy, Debug)]
pub struct Announce<'a> {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The client's peer id.
    pub peer_id: PeerId,
    /// The peer's address, canonical.
    pub ip: IpAddr,
    /// Listening port.
    pub port: u16,
    /// Event.
    pub event: AnnounceEvent,
    /// Bytes left (`None`: not sent).
    pub left: Option<u64>,
    /// Session upload counter.
    pub uploaded: u64,
    /// Session download counter.
    pub downloaded: u64,
    /// Peers wanted (`None`: default).
    pub numwant: Option<u32>,
    /// Hand out peers of both families (HTTP).
    pub both_families: bool,
    /// Return peer ids too (HTTP dictionary responses).
    pub peer_ids: bool,
    /// Passkey bytes from the URL, if any.
    pub passkey: Option<&'a [u8]>,
    /// Seconds since start-up ([`State::now`]), read once per request or batch.
    pub now: Uptime,
}

/// Why an announce or scrape was refused: the text goes to the client.
pub type Rejection = Cow<'static, str>;

/// Resolves the passkey according to the tracker mode.
pub fn authenticate(core: &Core, passkey: Option<&[u8]>) -> Result<Option<Arc<User>>, Rejection> {
    let state = &core.state;
    if state.config.tracker.mode == TrackerMode::Open {
        return Ok(None);
    }
    let reject = |text: &'static str| {
        core.metrics().inc(Counter::AuthRejected);
        Err(Cow::Borrowed(text))
    };
    let Some(raw) = passkey else {
        return reject("passkey required: announce to /<passkey>/announce");
    };
    let Some(pk) = Passkey::parse(raw) else {
        return reject("invalid passkey: expected 32 lowercase hex characters");
    };
    match state.accounts.by_passkey(&pk) {
        Some(user) => Ok(Some(user)),
        None => reject("unknown passkey"),
    }
}

/// Handles an announce: authentication, torrent registry, ratio gate, swarm update,
/// accounting. Chosen peers are left in `core.selected`.
///
/// # Errors
/// The failure text for the client.
pub fn announce(core: &Core, a: &Announce<'_>) -> Result<AnnounceOutcome, Rejection> {
    let state = &core.state;
    let user = authenticate(core, a.passkey)?;
    let registered = !state.registered.is_empty() && state.registered.contains_key(&a.info_hash);
    if state.config.tracker.require_registered_torrents && !registered {
        return Err(Cow::Borrowed("unregistered torrent"));
    }
    let now = a.now;
    let t = &state.config.tracker;
    let mut input = AnnounceInput {
        info_hash: a.info_hash,
        peer_id: a.peer_id,
        ip: a.ip,
        port: a.port,
        event: a.event,
        left: a.left,
        uploaded: a.uploaded,
        downloaded: a.downloaded,
        numwant: a.numwant.map_or(t.default_numwant, |n| n as usize).min(t.max_peers),
        both_families: a.both_families,
        peer_ids: a.peer_ids,
        now,
        valid_until: now.after(t.peer_timeout_secs),
        user: user.as_ref().map(|u| u.id),
        // Only registered torrents get durable snatch counts: anyone (in open mode) or any
        // passkey holder (in private mode) can invent info-hashes, and each must not grow the
        // database for good.
        durable_snatches: registered,
        admit_new: user.as_ref().is_none_or(|u| {
            u.active_peers.load(Ordering::Relaxed) < state.config.limits.max_torrents_per_user
        }),
        max_peers_per_ip: state.config.limits.max_peers_per_ip_per_swarm,
    };
    let rejection = user.as_deref().and_then(|u| ratio_rejection(core, u, a));
    if rejection.is_some() {
        // Take the peer out of the swarm (crediting what it reported) and hand out nothing.
        input.event = AnnounceEvent::Stopped;
    }
    let mut selected = core.selected.borrow_mut();
    selected.clear();
    let outcome = state.swarms.announce(&input, &mut *core.rng.borrow_mut(), &mut selected);
    track_ownership(state, user.as_deref(), &outcome);
    if let Some(user) = &user {
        // Unregistered torrents share one row per user (the all-zero hash), so invented
        // info-hashes cannot each add a durable row.
        let key = if registered { a.info_hash } else { InfoHash::default() };
        credit(core, user, key, &outcome);
    }
    if outcome.new_snatch && input.durable_snatches {
        *core.pending.borrow_mut().snatches.entry(a.info_hash).or_default() += 1;
    }
    if let Some(refusal) = outcome.refused {
        selected.clear();
        return Err(Cow::Owned(match refusal {
            Refusal::UserFull => format!(
                "too many active torrents for this account (limit {}): stop some first",
                state.config.limits.max_torrents_per_user
            ),
            Refusal::AddressFull => format!(
                "too many peers from this address in this swarm (limit {})",
                state.config.limits.max_peers_per_ip_per_swarm
            ),
        }));
    }
    match rejection {
        Some(text) => {
            selected.clear();
            core.metrics().inc(Counter::RatioRejected);
            Err(Cow::Owned(text))
        }
        None => Ok(outcome),
    }
}

/// Keeps each user's count of live peer entries (`limits.max_torrents_per_user`).
fn track_ownership(state: &State, user: Option<&User>, outcome: &AnnounceOutcome) {
    let adjust = |id: UserId, up: bool| {
        let apply = |u: &User| {
            let _ = u.active_peers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(if up { n.saturating_add(1) } else { n.saturating_sub(1) })
            });
        };
        match user {
            Some(u) if u.id == id => apply(u),
            _ => {
                if let Some(u) = state.accounts.by_id(id) {
                    apply(&u);
                }
            }
        }
    };
    if let Some(id) = outcome.left {
        adjust(id, false);
    }
    if let Some(id) = outcome.joined {
        adjust(id, true);
    }
}

/// Peers expired by the cleaner no longer count against their owners.
pub fn release_expired(state: &State, owners: &[UserId]) {
    for &id in owners {
        if let Some(u) = state.accounts.by_id(id) {
            let _ = u
                .active_peers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }
}

fn credit(core: &Core, user: &User, key: InfoHash, outcome: &AnnounceOutcome) {
    let c = outcome.credit;
    if c.uploaded > 0 || c.downloaded > 0 {
        add_claimed(user, c);
        let mut pending = core.pending.borrow_mut();
        let e = pending.deltas.entry((user.id, key)).or_default();
        e.0 = e.0.saturating_add(c.uploaded);
        e.1 = e.1.saturating_add(c.downloaded);
    }
}

/// Adds an announce's credit to the user's claimed totals. Saturating, as the database is:
/// the counters are whatever a client reports (up to `u64::MAX` per announce), and a wrapped
/// total would turn a huge claimed upload into a tiny one, or a tiny download into a huge one.
fn add_claimed(user: &User, c: Credit) {
    saturating_add_to(&user.uploaded, c.uploaded);
    saturating_add_to(&user.downloaded, c.downloaded);
}

/// The ratio gate: leechers past the grace allowance need uploaded/downloaded >= min_ratio,
/// counted from the configured source. Seeders and `stopped` announces always pass.
fn ratio_rejection(core: &Core, user: &User, a: &Announce<'_>) -> Option<String> {
    let r = &core.state.config.ratio;
    let leeching = a.left.is_some_and(|l| l > 0);
    if !r.enabled || !leeching || a.event == AnnounceEvent::Stopped {
        return None;
    }
    let (up, down) = user.ratio_counts(r.source);
    if down <= r.grace_bytes {
        return None;
    }
    let ratio = up as f64 / down as f64;
    let min_ratio = core.state.runtime.min_ratio();
    let kind = match r.source {
        crate::config::RatioSource::Claimed => "",
        crate::config::RatioSource::Verified => "verified ",
    };
    (ratio < min_ratio).then(|| {
        format!(
            "insufficient ratio: {ratio:.2} < {min_ratio:.2} ({kind}uploaded {up} bytes, \
             downloaded {down} bytes)"
        )
    })
}

/// Scrape counts for one torrent, all zero when unknown.
pub fn scrape(core: &Core, info_hash: &InfoHash) -> (u32, u32, u32) {
    core.state
        .swarms
        .scrape(info_hash)
        .map_or((0, 0, 0), |s| (s.complete, s.downloaded, s.incomplete))
}

/// Lowercase hex of arbitrary bytes. Every hex and base64 text of the engine goes through
/// these four functions (one well-kept codec each, decoding from bytes, never by slicing a
/// `str`).
pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// Decodes hex (either case, surrounding whitespace and a `0x` prefix allowed); `None` for an
/// odd length or any non-hex byte, including every byte of a multi-byte UTF-8 character.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    const_hex::decode(text.trim().as_bytes()).ok()
}

/// Standard base64 (with padding) of arbitrary bytes.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64 (surrounding whitespace allowed); `None` if it is not.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text.trim().as_bytes()).ok()
}

/// Unmaps IPv4-mapped IPv6 addresses (dual-stack sockets report IPv4 clients that way).
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Extracts the passkey from `/<passkey>/<action>` or `/<action>/<passkey>` (a trailing
/// query, if any, already removed). Returns (action, passkey).
pub fn split_passkey_path(path: &[u8]) -> (&[u8], Option<&[u8]>) {
    let trimmed = path.strip_prefix(b"/").unwrap_or(path);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    let mut parts = trimmed.splitn(3, |&b| b == b'/');
    let first = parts.next().unwrap_or(b"");
    match (parts.next(), parts.next()) {
        (None, _) => (first, None),
        (Some(second), None) => {
            if matches!(first, b"announce" | b"scrape") {
                (first, Some(second))
            } else {
                (second, Some(first))
            }
        }
        (Some(_), Some(_)) => (b"", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkey_paths() {
        let pk: &[u8] = b"0123456789abcdef0123456789abcdef";
        assert_eq!(split_passkey_path(b"/announce"), (&b"announce"[..], None));
        assert_eq!(
            split_passkey_path(b"/0123456789abcdef0123456789abcdef/announce"),
            (&b"announce"[..], Some(pk))
        );
        assert_eq!(
            split_passkey_path(b"/announce/0123456789abcdef0123456789abcdef"),
            (&b"announce"[..], Some(pk))
        );
        assert_eq!(split_passkey_path(b"/scrape/x"), (&b"scrape"[..], Some(&b"x"[..])));
        assert_eq!(split_passkey_path(b"/a/b/c"), (&b""[..], None));
    }

    #[test]
    fn claimed_totals_saturate_instead_of_wrapping() {
        let accounts = Accounts::default();
        let record = crate::store::UserRecord {
            id: 1,
            name: "big".to_owned(),
            passkey: "0123456789abcdef0123456789abcdef".to_owned(),
            created_at: 0,
            uploaded: u64::MAX - 5,
            downloaded: 7,
            public_key: None,
            verified_uploaded: 0,
            verified_downloaded: 0,
        };
        let user = accounts.insert(&record).unwrap();
        add_claimed(&user, Credit { uploaded: 10, downloaded: u64::MAX });
        assert_eq!(user.uploaded.load(Ordering::Relaxed), u64::MAX);
        assert_eq!(user.downloaded.load(Ordering::Relaxed), u64::MAX);
        add_claimed(&user, Credit { uploaded: u64::MAX, downloaded: 1 });
        assert_eq!(user.uploaded.load(Ordering::Relaxed), u64::MAX);
        assert_eq!(user.downloaded.load(Ordering::Relaxed), u64::MAX);
    }

    #[test]
    fn canonical_ip_unmaps() {
        assert_eq!(
            canonical_ip("::ffff:1.2.3.4".parse().unwrap()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(canonical_ip("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }
}
