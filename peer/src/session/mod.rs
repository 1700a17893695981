//! One torrent being downloaded or seeded: its files checked and opened, a listening socket,
//! the trackers announced to, connections made to the peers they name, and the timers of the
//! protocol (choking rounds, snubbed peers).
//!
//! ```text
//!  trackers ──peers──▶ connector ──TCP──▶ conn::run ──▶ Torrent (picker, peers, counters)
//!  listener ─────────────TCP───────────▶ conn::run ──▶        │
//!  ticker (1 s): choking rounds, snubs                       disk thread (storage)
//! ```

pub mod conn;
pub mod messages;
pub mod torrent;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbts_proto::metainfo::Metainfo;
use pbts_proto::peer_wire::Handshake;
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::identity::{self, Identity};
use crate::picker::Geometry;
use crate::receipts::report::{self, ReportStats};
use crate::receipts::signer::Signer;
pub use crate::receipts::state::{Pbts, ReceiptStats};
use crate::receipts::store::Store;
use crate::receipts::{self, Mode};
use crate::storage::{Allocation, Disk, Layout, LayoutError, Storage, StorageError};
use crate::tracker::{self, AnnounceParams, TrackerList};
use crate::wire::{self, Limits};
use torrent::Torrent;
pub use torrent::{Stats, TorrentConfig};

/// Everything a session can be told.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on for peers (port 0: any free port).
    pub listen: SocketAddr,
    /// The torrent's settings.
    pub torrent: TorrentConfig,
    /// How files are created.
    pub allocation: Allocation,
    /// Tracker timeouts and bounds.
    pub tracker: tracker::Config,
    /// Peers asked of the tracker per announce.
    pub numwant: u32,
    /// Receipts (used when there is an identity for one of the torrent's trackers).
    pub receipts: receipts::Config,
    /// Where each verified piece is logged, one JSON line each.
    pub transfer_log: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            torrent: TorrentConfig {
                max_peers: 50,
                upload_slots: 4,
                queue_depth: 250,
                max_up: None,
                max_down: None,
                stall_timeout: conn::STALL_TIMEOUT,
            },
            allocation: Allocation::Full,
            tracker: tracker::Config::default(),
            numwant: 50,
            receipts: receipts::Config::default(),
            transfer_log: None,
        }
    }
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The torrent has no v1 pieces (a v2-only torrent) or no trackers.
    #[error("{0}")]
    Torrent(&'static str),
    /// Its files cannot be laid out safely (paths that escape or collide, sizes that do not
    /// add up).
    #[error("the torrent's files: {0}")]
    Layout(#[from] LayoutError),
    /// Its files could not be created, opened or checked.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The disk thread could not be started.
    #[error("cannot start the disk thread: {0}")]
    Thread(std::io::Error),
    /// The receipt store (or the signer thread) could not be opened.
    #[error("receipts: {0}")]
    Receipts(String),
    /// The transfer log could not be opened.
    #[error("the transfer log {path}: {source}")]
    TransferLog {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Disk commands queued at most (blocks of 16 KiB: 8 MiB of received data waiting for the
/// disk before the connections stop reading).
const DISK_QUEUE: usize = 512;

/// A running torrent.
#[derive(Debug)]
pub struct Session {
    torrent: Arc<Torrent>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    announcer: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    had_at_start: u64,
    /// The reporter and what stops it (after the connections, so late receipts are reported).
    reporter: Option<(JoinHandle<()>, watch::Sender<bool>, Arc<ReportStats>)>,
}

/// A new peer id: `-PB0100-` and twelve random characters (the Azureus convention, so
/// trackers and clients can tell what we are).
pub fn new_peer_id() -> PeerId {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(b"-PB0100-");
    let mut rng = rand::rng();
    for b in &mut id[8..] {
        *b = ALPHABET[rng.random_range(0..ALPHABET.len())];
    }
    PeerId(id)
}

impl Session {
    /// Checks the data already in `dir` (calling `checked(done, total)` as pieces are hashed),
    /// starts listening and announcing. Downloads what is missing, then seeds.
    ///
    /// # Errors
    /// A torrent we cannot serve, a storage failure, a port we cannot listen on.
    pub async fn start(
        meta: &Metainfo,
        dir: &Path,
        options: Options,
        identity: Option<Arc<Identity>>,
        checked: impl FnMut(u32, u32) + Send + 'static,
    ) -> Result<Self, SessionError> {
        let info_hash = meta.v1.ok_or(SessionError::Torrent(
            "the torrent has no v1 info-hash (v2-only torrents are not supported)",
        ))?;
        if meta.trackers.iter().all(Vec::is_empty) {
            return Err(SessionError::Torrent("the torrent names no tracker"));
        }
        let layout = Layout::from_metainfo(meta)?;
        let geometry = Geometry::new(layout.piece_length(), layout.total_size())
            .map_err(|_| SessionError::Torrent("the torrent is empty"))?;
        let dir = dir.to_owned();
        let allocation = options.allocation;
        let (storage, have) = tokio::task::spawn_blocking(move || {
            let mut checked = checked;
            let mut storage = Storage::open(layout, &dir, allocation)?;
            let have = storage.check_existing(&mut checked)?;
            Ok::<_, StorageError>((storage, have))
        })
        .await
        .expect("opening and checking the files does not panic")?;
        let disk = Disk::spawn(storage, DISK_QUEUE).map_err(SessionError::Thread)?;

        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| SessionError::Listen { addr: options.listen, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| SessionError::Listen { addr: options.listen, source })?;
        let peer_id = new_peer_id();
        let transfer_log =
            match &options.transfer_log {
                Some(path) => {
                    Some(std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(
                        |source| SessionError::TransferLog { path: path.clone(), source },
                    )?)
                }
                None => None,
            };
        let identity = identity.filter(|_| options.receipts.mode != Mode::Off);
        let (signed_tx, mut signed_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(tokio::sync::Notify::new());
        let (pbts, store) = match &identity {
            Some(id) => {
                let store = open_store(id, info_hash).await?;
                let key = pbts_verifier::keys::SecretKey::from_bytes(&id.secret_key.to_bytes())
                    .map_err(|e| SessionError::Receipts(e.to_string()))?;
                let signer = Signer::spawn(Arc::new(key), signed_tx)
                    .map_err(|e| SessionError::Receipts(format!("the signer thread: {e}")))?;
                let piece_hashes = meta
                    .pieces
                    .as_deref()
                    .unwrap_or_default()
                    .chunks_exact(20)
                    .map(|c| c.try_into().expect("chunks of 20"))
                    .collect();
                let pbts = Pbts {
                    config: options.receipts.clone(),
                    public_key: id.public_key,
                    piece_hashes,
                    signer,
                    store: store.clone(),
                    wake: wake.clone(),
                    verify_queue: std::sync::Mutex::default(),
                };
                (Some(pbts), Some(store))
            }
            None => (None, None),
        };
        let torrent = Arc::new(
            Torrent::new(
                info_hash,
                peer_id,
                geometry,
                have,
                disk,
                options.torrent.clone(),
                local_addr.port(),
            )
            .with_receipts(pbts, transfer_log),
        );
        let reporter = match (&identity, store) {
            (Some(id), Some(store)) => {
                let target = report::Target {
                    tracker: id.tracker.clone(),
                    path: id.report_target(),
                    config: options.tracker.clone(),
                };
                let stats = Arc::new(ReportStats::default());
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = tokio::spawn(report::run(store, target, wake, stats.clone(), stop_rx));
                Some((task, stop_tx, stats))
            }
            _ => None,
        };
        let (stop, _) = watch::channel(false);
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        let router = torrent.clone();
        let tasks = vec![
            // Signed receipts, from the signer thread to their peers' outboxes.
            tokio::spawn(async move {
                while let Some(job) = signed_rx.recv().await {
                    router.receipt_signed(job);
                }
            }),
            tokio::spawn(listen(torrent.clone(), listener, stop.subscribe())),
            tokio::spawn(connect(torrent.clone(), found_rx, stop.subscribe(), local_addr)),
            tokio::spawn(tick(torrent.clone(), stop.subscribe())),
        ];
        let trackers = TrackerList::new(&meta.trackers, options.tracker.clone());
        let announcer = tokio::spawn(announce(
            torrent.clone(),
            trackers,
            options.numwant,
            local_addr.port(),
            found_tx,
            stop.subscribe(),
        ));
        // What the picker does not count as left was verified on disk at start.
        let had_at_start = geometry.total_len() - torrent.stats().left;
        Ok(Self { torrent, local_addr, stop, announcer, tasks, had_at_start, reporter })
    }

    /// Where we listen for peers.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The torrent's info-hash.
    pub fn info_hash(&self) -> InfoHash {
        self.torrent.info_hash()
    }

    /// Counters and rates now.
    pub fn stats(&self) -> Stats {
        self.torrent.stats()
    }

    /// Bytes that were already verified on disk at start.
    pub fn had_at_start(&self) -> u64 {
        self.had_at_start
    }

    /// Becomes `true` when every piece is verified.
    pub fn completion(&self) -> watch::Receiver<bool> {
        self.torrent.completion()
    }

    /// Stops: tells the trackers (`stopped`, within the tracker timeouts), closes every
    /// connection and waits for the disk. Returns the final counters.
    pub async fn stop(self) -> Stats {
        // Receipts still being signed, and those waiting in outboxes, go out now; receipts
        // peers owe us get a moment to arrive.
        let deadline = Instant::now() + RECEIPT_GRACE;
        loop {
            self.torrent.flush_all_receipts();
            if !self.torrent.receipts_pending() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.send_replace(true);
        // The announcer sends `stopped` with the final counters, then ends.
        let _ = self.announcer.await;
        self.torrent.close_all();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        // Connections end as their writers see `Close`; give them a moment to flush.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.torrent.peer_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = self.torrent.disk().sync().await {
            tracing::error!("syncing the files: {e}");
        }
        if let Some((task, stop, _)) = self.reporter {
            stop.send_replace(true);
            let _ = task.await;
        }
        self.torrent.stats()
    }

    /// What the reporter has had credited and refused (`None` without receipts).
    pub fn report_stats(&self) -> Option<Arc<ReportStats>> {
        self.reporter.as_ref().map(|(_, _, s)| s.clone())
    }
}

/// Longest a stopping session waits for receipts peers owe it.
const RECEIPT_GRACE: Duration = Duration::from_secs(3);

/// The receipt store of `identity` for the torrent `info_hash`:
/// `<state dir>/<tracker>/<info-hash>.redb`.
async fn open_store(identity: &Identity, info_hash: InfoHash) -> Result<Arc<Store>, SessionError> {
    let dir = identity::state_dir().map_err(|e| SessionError::Receipts(e.to_string()))?;
    let tracker = Identity::path_for(Path::new(""), &identity.tracker);
    let stem = tracker.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let path = dir.join(stem).join(format!("{}.redb", const_hex::encode(info_hash.0)));
    tokio::task::spawn_blocking(move || Store::open(&path).map(Arc::new))
        .await
        .map_err(|e| SessionError::Receipts(e.to_string()))?
        .map_err(|e| SessionError::Receipts(e.to_string()))
}

/// Accepts peers' connections.
async fn listen(torrent: Arc<Torrent>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, usually: wait rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if torrent.peer_count() >= torrent.config().max_peers || !torrent.may_connect(addr) {
            continue;
        }
        let torrent = torrent.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let ours = wire::our_handshake(torrent.info_hash(), torrent.peer_id());
            let limits = Limits::default();
            let ih = torrent.info_hash();
            let shook =
                wire::handshake_incoming(&mut stream, |h| (h == ih).then_some(ours), &limits).await;
            match shook {
                Ok((_, theirs)) => {
                    conn::run(torrent, stream, addr, theirs).await;
                }
                Err(e) => tracing::debug!(peer = %addr, "incoming handshake: {e}"),
            }
        });
    }
}

/// What we know of a peer address the trackers gave us.
#[derive(Debug, Default)]
struct Known {
    /// Failed attempts in a row.
    fails: u32,
    /// Not before.
    next_try: Option<Instant>,
    /// A connection attempt or connection is running.
    busy: bool,
    /// It had every piece when we last talked: a seed does not dial it.
    seed: bool,
}

/// How a dial ended.
#[derive(Clone, Copy, Debug)]
enum Dialed {
    /// No connection or no handshake.
    Failed,
    /// A connection that ended; whether the peer was a seed.
    Closed { seed: bool },
}

/// Time to wait before reconnecting to a peer after `fails` failures in a row (0: the peer
/// closed a working connection).
fn backoff(fails: u32) -> Duration {
    Duration::from_secs(30u64.saturating_mul(1 << fails.min(6)))
}

/// Connects to the peers the trackers name, up to the connection limit.
async fn connect(
    torrent: Arc<Torrent>,
    mut found: mpsc::UnboundedReceiver<Vec<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
    ourselves: SocketAddr,
) {
    let mut known: HashMap<SocketAddr, Known> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(SocketAddr, Dialed)>();
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            peers = found.recv() => {
                let Some(peers) = peers else { return };
                for addr in peers {
                    if addr != ourselves {
                        known.entry(addr).or_default();
                    }
                }
            }
            Some((addr, dialed)) = done_rx.recv() => {
                if let Some(k) = known.get_mut(&addr) {
                    k.busy = false;
                    match dialed {
                        Dialed::Failed => k.fails += 1,
                        Dialed::Closed { seed } => {
                            k.fails = 0;
                            k.seed = seed;
                        }
                    }
                    k.next_try = Some(Instant::now() + backoff(k.fails));
                }
            }
            _ = retry.tick() => {}
            _ = stop.changed() => return,
        }
        // A seed dials leechers too: one that started before it learns of it only at its next
        // announce, and one behind a NAT cannot be reached any other way.
        let seeding = torrent.is_complete();
        let now = Instant::now();
        let mut room = torrent.config().max_peers.saturating_sub(torrent.peer_count());
        let busy = known.values().filter(|k| k.busy).count();
        room = room.saturating_sub(busy);
        for (&addr, k) in &mut known {
            if room == 0 {
                break;
            }
            if k.busy
                || (seeding && k.seed)
                || k.next_try.is_some_and(|t| t > now)
                || !torrent.may_connect(addr)
            {
                continue;
            }
            k.busy = true;
            room -= 1;
            let torrent = torrent.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let dialed = connect_one(torrent, addr).await;
                let _ = done.send((addr, dialed));
            });
        }
    }
}

/// One outgoing connection, from dial to close.
async fn connect_one(torrent: Arc<Torrent>, addr: SocketAddr) -> Dialed {
    let limits = Limits::default();
    let dialed = tokio::time::timeout(limits.handshake_timeout, TcpStream::connect(addr)).await;
    let mut stream = match dialed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, "connect: {e}");
            return Dialed::Failed;
        }
        Err(_) => return Dialed::Failed,
    };
    let _ = stream.set_nodelay(true);
    let ours: Handshake = wire::our_handshake(torrent.info_hash(), torrent.peer_id());
    match wire::handshake_outgoing(&mut stream, &ours, &limits).await {
        Ok(theirs) => Dialed::Closed { seed: conn::run(torrent, stream, addr, theirs).await },
        Err(e) => {
            tracing::debug!(peer = %addr, "outgoing handshake: {e}");
            Dialed::Failed
        }
    }
}

/// The protocol's timers.
async fn tick(torrent: Arc<Torrent>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => torrent.tick(Instant::now()),
            _ = stop.changed() => return,
        }
    }
}

/// Longest wait for the trackers to take our `stopped`.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest wait between announces, whatever a tracker says.
const MIN_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);

/// Announces `started`, then at the trackers' interval, `completed` when the download
/// completes, and `stopped` when the session stops.
async fn announce(
    torrent: Arc<Torrent>,
    mut trackers: TrackerList,
    numwant: u32,
    port: u16,
    found: mpsc::UnboundedSender<Vec<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
) {
    let key: u32 = rand::rng().random();
    let mut completion = torrent.completion();
    let mut event = AnnounceEvent::Started;
    // A torrent complete at start never announces `completed` (it did not complete here).
    let mut completed_sent = *completion.borrow();
    let mut failures = 0u32;
    loop {
        let stats = torrent.stats();
        let params = AnnounceParams {
            info_hash: torrent.info_hash(),
            peer_id: torrent.peer_id(),
            port,
            uploaded: stats.uploaded,
            downloaded: stats.downloaded,
            left: stats.left,
            event,
            numwant: Some(numwant),
            key,
        };
        let wait = match trackers.announce_all(&params).await {
            Ok(r) => {
                failures = 0;
                if event == AnnounceEvent::Completed {
                    completed_sent = true;
                }
                event = AnnounceEvent::None;
                if let Some(w) = &r.warning {
                    tracing::warn!("tracker warning: {w}");
                }
                tracing::debug!(peers = r.peers.len(), interval = ?r.interval, "announced");
                let _ = found.send(r.peers);
                r.interval.max(r.min_interval.unwrap_or_default()).max(MIN_ANNOUNCE_INTERVAL)
            }
            Err(e) => {
                failures += 1;
                tracing::warn!("announce: {e}");
                Duration::from_secs(15u64 << failures.min(5))
            }
        };
        let next = tokio::time::sleep(wait);
        tokio::pin!(next);
        loop {
            tokio::select! {
                () = &mut next => break,
                changed = completion.changed(), if !completed_sent => match changed {
                    Ok(()) if *completion.borrow() => {
                        event = AnnounceEvent::Completed;
                        break;
                    }
                    Ok(()) => {}
                    // The torrent is gone: nothing will complete any more.
                    Err(_) => completed_sent = true,
                },
                _ = stop.changed() => {
                    let stats = torrent.stats();
                    let params = AnnounceParams {
                        uploaded: stats.uploaded,
                        downloaded: stats.downloaded,
                        left: stats.left,
                        event: AnnounceEvent::Stopped,
                        ..params
                    };
                    // Bounded: a dead tracker must not hold up the exit.
                    let sent = tokio::time::timeout(STOPPED_TIMEOUT, trackers.announce_all(&params));
                    match sent.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!("announcing stopped: {e}"),
                        Err(_) => tracing::warn!("announcing stopped: no answer in {STOPPED_TIMEOUT:?}"),
                    }
                    return;
                }
            }
        }
    }
}
