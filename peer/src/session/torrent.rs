//! The shared state of one torrent: the picker, every connected peer as the protocol sees it
//! (who chokes whom, who wants what), the transfer counters the tracker is told, and the
//! decisions that follow each message. Connection tasks call in here under one short lock;
//! disk writes and piece verification run outside it. Receipts (the pbts extension) are in
//! [`pbts`].

mod pbts;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pbts_proto::peer_wire::{Bitfield, BlockRef, Handshake};
use pbts_proto::{InfoHash, PeerId};
use pbts_verifier::bep10;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, watch};

use super::messages::{MAX_REQUEST_LEN, MAX_SERVE_QUEUE, Out, PeerError};
use crate::choker::{Candidate, Choker, OPTIMISTIC_ROUNDS, ROUND};
pub use crate::picker::PeerKey;
use crate::picker::{BlockOutcome, Geometry, Picker, Policy};
use crate::rate::{RateLimiter, RateMeter};
use crate::receipts::state::{Pbts, PeerReceipts, ReceiptStats, Receipts};
use crate::storage::{Disk, StorageError};

/// A peer with requests outstanding that delivers no block for this long is snubbed: its
/// requests go back to the pool for other peers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Failed pieces a peer may have contributed to before it is banned.
const MAX_STRIKES: u32 = 3;

/// What the torrent needs to know of its settings.
#[derive(Clone, Debug)]
pub struct TorrentConfig {
    /// Most connected peers.
    pub max_peers: usize,
    /// Upload slots of the unchoker.
    pub upload_slots: usize,
    /// Most requests outstanding per peer (further capped by the peer's `reqq`).
    pub queue_depth: usize,
    /// Upload limit, bytes per second.
    pub max_up: Option<u64>,
    /// Download limit, bytes per second.
    pub max_down: Option<u64>,
    /// A peer that reads nothing we send for this long is dropped.
    pub stall_timeout: Duration,
}

/// A snapshot of the torrent for progress lines and summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pieces verified.
    pub have: u32,
    /// Pieces in the torrent.
    pub pieces: u32,
    /// Bytes not yet verified (the tracker's `left`).
    pub left: u64,
    /// Payload bytes received in blocks (what the tracker is told as `downloaded`).
    pub downloaded: u64,
    /// Payload bytes sent in blocks (`uploaded`).
    pub uploaded: u64,
    /// Received bytes that were not used: duplicates, unrequested blocks, failed pieces.
    pub wasted: u64,
    /// Pieces that failed their hash check.
    pub failed_pieces: u32,
    /// Download rate, bytes per second.
    pub down_rate: u64,
    /// Upload rate, bytes per second.
    pub up_rate: u64,
    /// Connected peers.
    pub peers: usize,
    /// Connected peers that have every piece.
    pub seeds: usize,
    /// Receipts signed, sent, earned.
    pub receipts: ReceiptStats,
}

/// One torrent's state, shared by its connections and the session's timers.
#[derive(Debug)]
pub struct Torrent {
    info_hash: InfoHash,
    peer_id: PeerId,
    geometry: Geometry,
    config: TorrentConfig,
    listen_port: u16,
    disk: Disk,
    up: RateLimiter,
    down: RateLimiter,
    complete: watch::Sender<bool>,
    /// Receipts, when we have an identity and they are on.
    pbts: Option<Pbts>,
    /// One JSON line per verified piece: who delivered it, whom its receipt credits.
    transfer_log: Option<Mutex<std::fs::File>>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    picker: Picker,
    peers: HashMap<PeerKey, Peer>,
    next_key: u32,
    choker: Choker<PeerKey>,
    rng: SmallRng,
    uploaded: u64,
    downloaded: u64,
    wasted: u64,
    failed_pieces: u32,
    up_meter: RateMeter,
    down_meter: RateMeter,
    banned_ids: HashSet<PeerId>,
    banned_addrs: HashSet<SocketAddr>,
    /// Blocks of each piece received but not yet on disk.
    writes_pending: HashMap<u32, u32>,
    /// Pieces whose last block arrived, waiting for their writes before verification.
    awaiting_verify: HashSet<u32>,
    last_round: Instant,
    pbts: Receipts,
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    id: PeerId,
    tx: mpsc::UnboundedSender<Out>,
    /// The peer's requests queued for its writer and not yet sent or dropped (the writer
    /// counts them down): what bounds the memory a peer that asks but never reads can take.
    serving: Arc<AtomicUsize>,
    bitfield: Bitfield,
    /// Pieces set in `bitfield`.
    have_count: u32,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    /// The most requests the peer queues (`reqq` of its extended handshake).
    reqq: usize,
    down: RateMeter,
    up: RateMeter,
    connected: Instant,
    last_block: Instant,
    snubbed: bool,
    strikes: u32,
    client: Option<String>,
    receipts: PeerReceipts,
}

impl Peer {
    fn send(&self, out: Out) {
        // A closed channel means the connection is ending; it unregisters itself.
        let _ = self.tx.send(out);
    }
}

/// The default `reqq` of a peer that does not say (libtorrent's assumption as well).
const DEFAULT_REQQ: usize = 250;

impl Torrent {
    /// A torrent with the pieces in `have` already verified on `disk`.
    pub fn new(
        info_hash: InfoHash,
        peer_id: PeerId,
        geometry: Geometry,
        have: Bitfield,
        disk: Disk,
        config: TorrentConfig,
        listen_port: u16,
    ) -> Self {
        let now = Instant::now();
        let picker = Picker::new(geometry, have, Policy::default())
            .expect("the bitfield of the pieces on disk has the torrent's piece count");
        let done = picker.is_complete();
        Self {
            info_hash,
            peer_id,
            geometry,
            up: RateLimiter::new(config.max_up),
            down: RateLimiter::new(config.max_down),
            complete: watch::Sender::new(done),
            state: Mutex::new(State {
                picker,
                peers: HashMap::new(),
                next_key: 0,
                choker: Choker::new(config.upload_slots),
                rng: SmallRng::from_os_rng(),
                uploaded: 0,
                downloaded: 0,
                wasted: 0,
                failed_pieces: 0,
                up_meter: RateMeter::new(now),
                down_meter: RateMeter::new(now),
                banned_ids: HashSet::new(),
                banned_addrs: HashSet::new(),
                writes_pending: HashMap::new(),
                awaiting_verify: HashSet::new(),
                last_round: now,
                pbts: Receipts::default(),
            }),
            pbts: None,
            transfer_log: None,
            config,
            listen_port,
            disk,
        }
    }

    /// Exchanges receipts with `pbts`, and logs each verified piece to `transfer_log`.
    #[must_use]
    pub fn with_receipts(
        mut self,
        pbts: Option<Pbts>,
        transfer_log: Option<std::fs::File>,
    ) -> Self {
        self.pbts = pbts;
        self.transfer_log = transfer_log.map(Mutex::new);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock is a bug; the state it left is still the best we have.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The torrent's info-hash.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Pieces in the torrent.
    pub fn pieces(&self) -> u32 {
        self.geometry.pieces()
    }

    /// The disk of this torrent.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// The shared upload limiter.
    pub fn upload_limit(&self) -> &RateLimiter {
        &self.up
    }

    /// The shared download limiter.
    pub fn download_limit(&self) -> &RateLimiter {
        &self.down
    }

    /// Becomes `true` once every piece is verified.
    pub fn completion(&self) -> watch::Receiver<bool> {
        self.complete.subscribe()
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        *self.complete.borrow()
    }

    /// The settings it runs with.
    pub fn config(&self) -> &TorrentConfig {
        &self.config
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.lock().peers.len()
    }

    /// Whether a connection to or from `addr` may be tried.
    pub fn may_connect(&self, addr: SocketAddr) -> bool {
        let s = self.lock();
        !s.banned_addrs.contains(&addr) && !s.peers.values().any(|p| p.addr == addr)
    }

    /// The extended handshake we send (BEP 10): our messages and key when receipts are on,
    /// our port, our version and how many requests we queue.
    pub fn extended_handshake(&self) -> Vec<u8> {
        let (ids, public_key) = self.our_extension();
        let h = bep10::Handshake {
            ids,
            public_key,
            port: Some(self.listen_port),
            version: Some(concat!("pbts-peer ", env!("CARGO_PKG_VERSION")).to_owned()),
            reqq: Some(MAX_SERVE_QUEUE as u32),
            other: Vec::new(),
        };
        let mut out = Vec::new();
        bep10::write_handshake(&h, &mut out);
        out
    }

    /// Adds a peer whose handshake completed; `None` if it is banned, already connected under
    /// the same peer id, or over the connection limit. Returns its key and the pieces we have
    /// now (what to send first: later pieces reach it as `have` through `tx`).
    pub fn register(
        &self,
        addr: SocketAddr,
        theirs: &Handshake,
        tx: mpsc::UnboundedSender<Out>,
        serving: Arc<AtomicUsize>,
    ) -> Option<(PeerKey, Bitfield)> {
        let mut s = self.lock();
        if s.banned_ids.contains(&theirs.peer_id)
            || s.banned_addrs.contains(&addr)
            || s.peers.len() >= self.config.max_peers
            || s.peers.values().any(|p| p.id == theirs.peer_id)
        {
            return None;
        }
        let key = PeerKey(s.next_key);
        s.next_key = s.next_key.wrapping_add(1);
        let now = Instant::now();
        s.peers.insert(
            key,
            Peer {
                addr,
                id: theirs.peer_id,
                tx,
                serving,
                bitfield: Bitfield::new(self.geometry.pieces()),
                have_count: 0,
                am_choking: true,
                am_interested: false,
                peer_choking: true,
                peer_interested: false,
                reqq: DEFAULT_REQQ,
                down: RateMeter::new(now),
                up: RateMeter::new(now),
                connected: now,
                last_block: now,
                snubbed: false,
                strikes: 0,
                client: None,
                receipts: PeerReceipts::default(),
            },
        );
        Some((key, s.picker.have().clone()))
    }

    /// Removes a peer whose connection ended; its requests go to others, its slot too.
    /// Whether the peer had every piece.
    pub fn unregister(&self, key: PeerKey, ended: &Result<(), PeerError>) -> bool {
        let mut s = self.lock();
        let Some(peer) = s.peers.remove(&key) else { return false };
        match ended {
            Ok(()) => tracing::debug!(peer = %peer.addr, client = ?peer.client, "disconnected"),
            Err(e) => {
                tracing::debug!(peer = %peer.addr, client = ?peer.client, "disconnected: {e}")
            }
        }
        s.picker.peer_gone(key);
        Self::pbts_departed(&mut s, key, &peer);
        if !peer.am_choking {
            self.fill_free_slots(&mut s);
        }
        self.request_all(&mut s);
        peer.have_count == self.geometry.pieces()
    }

    /// Queues `out` for a peer's writer.
    pub fn send(&self, key: PeerKey, out: Out) {
        if let Some(p) = self.lock().peers.get(&key) {
            p.send(out);
        }
    }

    /// The peer choked us: our requests to it are void (BEP 3; with BEP 6 it also rejects
    /// them one by one, which then find nothing to release).
    pub fn peer_choked_us(&self, key: PeerKey) {
        let mut s = self.lock();
        let Some(p) = s.peers.get_mut(&key) else { return };
        p.peer_choking = true;
        s.picker.peer_choked(key);
        self.request_all(&mut s);
    }

    /// The peer unchoked us: request from it.
    pub fn peer_unchoked_us(&self, key: PeerKey) {
        let mut s = self.lock();
        let Some(p) = s.peers.get_mut(&key) else { return };
        p.peer_choking = false;
        self.request_more(&mut s, key);
    }

    /// The peer became interested or lost interest.
    pub fn peer_interest(&self, key: PeerKey, interested: bool) {
        let mut s = self.lock();
        let Some(p) = s.peers.get_mut(&key) else { return };
        p.peer_interested = interested;
        if interested {
            self.fill_free_slots(&mut s);
        }
    }

    /// The peer has piece `i`.
    ///
    /// # Errors
    /// A piece index outside the torrent.
    pub fn peer_have(&self, key: PeerKey, i: u32) -> Result<(), PeerError> {
        if i >= self.geometry.pieces() {
            return Err(PeerError::Protocol("have of a piece outside the torrent"));
        }
        let mut s = self.lock();
        let s = &mut *s;
        let Some(p) = s.peers.get_mut(&key) else { return Ok(()) };
        if p.bitfield.has(i) {
            return Ok(());
        }
        p.bitfield.set(i);
        p.have_count += 1;
        if s.picker.peer_have(key, i).is_err() {
            return Err(PeerError::Protocol("have of a piece outside the torrent"));
        }
        if p.have_count == self.geometry.pieces() && s.picker.is_complete() {
            // Two seeds have nothing to trade (once their receipts are settled).
            Self::close_seed(p, Instant::now());
            return Ok(());
        }
        if !p.am_interested && !s.picker.have().has(i) {
            p.am_interested = true;
            p.send(Out::Interested);
        }
        self.request_more(s, key);
        Ok(())
    }

    /// The peer's pieces (`bitfield`, `have all`, `have none`).
    pub fn peer_bitfield(&self, key: PeerKey, bits: Bitfield) {
        let mut s = self.lock();
        let s = &mut *s;
        let Some(p) = s.peers.get_mut(&key) else { return };
        if s.picker.peer_bitfield(key, &bits).is_err() {
            // Checked against the piece count when it was decoded.
            p.send(Out::Close);
            return;
        }
        if bits.is_full() && s.picker.is_complete() {
            Self::close_seed(p, Instant::now());
            return;
        }
        p.have_count = bits.count();
        p.bitfield = bits;
        let wanted = s.picker.peer_interesting(key);
        if wanted != p.am_interested {
            p.am_interested = wanted;
            p.send(if wanted { Out::Interested } else { Out::NotInterested });
        }
        self.request_more(s, key);
    }

    /// The peer's extended handshake (BEP 10).
    pub fn peer_extended(&self, key: PeerKey, h: &bep10::Handshake) {
        let mut s = self.lock();
        let Some(p) = s.peers.get_mut(&key) else { return };
        if let Some(q) = h.reqq {
            p.reqq = (q as usize).clamp(1, 2000);
        }
        p.client.clone_from(&h.version);
        self.pbts_handshake(&mut s, key, h);
        self.request_more(&mut s, key);
    }

    /// The peer asks for a block.
    ///
    /// # Errors
    /// A block outside its piece, or of a length no client asks.
    pub fn peer_request(&self, key: PeerKey, block: BlockRef, fast: bool) -> Result<(), PeerError> {
        if block.index >= self.geometry.pieces()
            || block.length == 0
            || block.length > MAX_REQUEST_LEN
            || u64::from(block.begin) + u64::from(block.length)
                > u64::from(self.geometry.len_of(block.index))
        {
            return Err(PeerError::Protocol("request outside the piece"));
        }
        let s = self.lock();
        let Some(p) = s.peers.get(&key) else { return Ok(()) };
        if p.am_choking || !s.picker.have().has(block.index) {
            // BEP 6: tell it; without the fast extension the request is simply dropped.
            if fast {
                p.send(Out::Reject(block));
            }
            return Ok(());
        }
        if p.serving.load(Ordering::Relaxed) >= MAX_SERVE_QUEUE {
            // Over the queue it was told (`reqq`): refused, or dropped.
            if fast {
                p.send(Out::Reject(block));
            }
            return Ok(());
        }
        p.serving.fetch_add(1, Ordering::Relaxed);
        p.send(Out::Serve(block));
        Ok(())
    }

    /// The peer refused one of our requests (BEP 6).
    pub fn request_rejected(&self, key: PeerKey, block: BlockRef) {
        let mut s = self.lock();
        s.picker.request_rejected(key, block);
        self.request_all(&mut s);
    }

    /// A block arrived: count it, queue it for the disk, request more, and verify its piece
    /// once the piece's last block is on disk.
    ///
    /// # Errors
    /// A block outside the torrent.
    pub async fn block_received(
        self: &Arc<Self>,
        key: PeerKey,
        index: u32,
        begin: u32,
        data: Bytes,
    ) -> Result<(), PeerError> {
        let len = data.len() as u64;
        if index >= self.geometry.pieces()
            || data.is_empty()
            || u64::from(begin) + len > u64::from(self.geometry.len_of(index))
        {
            return Err(PeerError::Protocol("block outside the piece"));
        }
        let block = BlockRef { index, begin, length: len as u32 };
        let now = Instant::now();
        {
            let mut s = self.lock();
            let s = &mut *s;
            s.downloaded += len;
            s.down_meter.add(now, len);
            if let Some(p) = s.peers.get_mut(&key) {
                p.down.add(now, len);
                p.last_block = now;
                p.snubbed = false;
            }
            let (cancels, piece_complete) = match s.picker.block_received(key, block) {
                BlockOutcome::Accepted { cancels } => (cancels, false),
                BlockOutcome::PieceComplete { cancels, .. } => (cancels, true),
                // Endgame's cancel crossed the block, or a choke released its request.
                BlockOutcome::Duplicate | BlockOutcome::Unrequested => {
                    s.wasted += len;
                    self.request_more(s, key);
                    return Ok(());
                }
                BlockOutcome::Invalid => {
                    return Err(PeerError::Protocol("block outside the piece"));
                }
            };
            for other in cancels {
                if let Some(p) = s.peers.get(&other) {
                    p.send(Out::Cancel(block));
                }
            }
            *s.writes_pending.entry(index).or_insert(0) += 1;
            if piece_complete {
                s.awaiting_verify.insert(index);
            }
            self.request_more(s, key);
        }
        // Off the network path: the reader waits only for room in the disk's queue (so a slow
        // disk slows the senders), and the write's outcome is handled when it lands.
        match self.disk.write_block(index, begin, data).await {
            Ok(written) => {
                let torrent = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = written.await;
                    torrent.block_written(index, outcome);
                });
            }
            Err(e) => self.block_written(index, Err(e)),
        }
        Ok(())
    }

    /// A block reached the disk (or failed to): verify its piece if it was the last one.
    fn block_written(self: &Arc<Self>, index: u32, written: Result<(), StorageError>) {
        if let Err(e) = &written {
            tracing::error!("writing piece {index}: {e}");
        }
        let verify = {
            let mut s = self.lock();
            let pending = s.writes_pending.entry(index).or_insert(1);
            *pending -= 1;
            let done = *pending == 0;
            if done {
                s.writes_pending.remove(&index);
            }
            done && s.awaiting_verify.remove(&index)
        };
        if verify {
            let torrent = Arc::clone(self);
            tokio::spawn(async move {
                let ok = match torrent.disk.piece_complete(index).await {
                    Ok(ok) => ok,
                    Err(e) => {
                        tracing::error!("verifying piece {index}: {e}");
                        false
                    }
                };
                torrent.piece_checked(index, ok);
            });
        }
    }

    /// A piece's hash check finished.
    fn piece_checked(&self, index: u32, ok: bool) {
        let mut s = self.lock();
        let s = &mut *s;
        if ok {
            let contributors = match s.picker.piece_verified(index) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("piece {index}: {e}");
                    return;
                }
            };
            // The receipt credits the peer that delivered most of the piece.
            let creditee = contributors.first().copied();
            let credited = self.sign_for_piece(s, index, creditee);
            self.log_transfer(s, index, creditee, credited);
            let done = s.picker.is_complete();
            for p in s.peers.values_mut() {
                if !p.bitfield.has(index) {
                    p.send(Out::Have(index));
                }
                if done {
                    if p.have_count == self.geometry.pieces() {
                        Self::close_seed(p, Instant::now());
                    } else if p.am_interested {
                        p.am_interested = false;
                        p.send(Out::NotInterested);
                    }
                }
            }
            if done {
                self.complete.send_replace(true);
            }
            return;
        }
        s.failed_pieces += 1;
        s.wasted += u64::from(self.geometry.len_of(index));
        let contributors = s.picker.piece_failed(index).unwrap_or_else(|e| {
            tracing::error!("piece {index}: {e}");
            Vec::new()
        });
        tracing::warn!(piece = index, ?contributors, "piece failed its hash check");
        let sole = contributors.len() == 1;
        for key in contributors {
            let Some(p) = s.peers.get_mut(&key) else { continue };
            p.strikes += 1;
            // Pieces it sent that were still being checked fail after it is banned.
            if (sole || p.strikes >= MAX_STRIKES) && s.banned_ids.insert(p.id) {
                tracing::warn!(peer = %p.addr, client = ?p.client, "banned: sent bad data");
                s.banned_addrs.insert(p.addr);
                p.send(Out::Close);
            }
        }
        self.request_all(s);
    }

    /// A block of `len` bytes of piece `index` went to a peer.
    pub fn block_sent(&self, key: PeerKey, index: u32, len: u32) {
        let now = Instant::now();
        let mut s = self.lock();
        s.uploaded += u64::from(len);
        s.up_meter.add(now, u64::from(len));
        if let Some(p) = s.peers.get_mut(&key) {
            p.up.add(now, u64::from(len));
            self.pbts_block_sent(p, index, len, now);
        }
    }

    /// One line of the transfer log: the piece, its bytes, the peer that delivered most of
    /// it and the key its receipt credits (`null` for none).
    fn log_transfer(
        &self,
        s: &State,
        index: u32,
        creditee: Option<PeerKey>,
        credited: Option<pbts_verifier::receipt::PublicKeyBytes>,
    ) {
        let Some(log) = &self.transfer_log else { return };
        use base64::Engine;
        let line = serde_json::json!({
            "piece": index,
            "bytes": self.geometry.len_of(index),
            "from": creditee.and_then(|k| s.peers.get(&k)).map(|p| p.addr.to_string()),
            "credited": credited
                .map(|pk| base64::engine::general_purpose::STANDARD.encode(pk.0)),
        });
        let mut f = log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = writeln!(f, "{line}") {
            tracing::warn!("transfer log: {e}");
        }
    }

    /// Periodic work: a choking round when one is due, and snubbed peers' requests released.
    pub fn tick(&self, now: Instant) {
        let mut s = self.lock();
        let s = &mut *s;
        let mut released = false;
        for (key, p) in &mut s.peers {
            if !p.snubbed
                && s.picker.outstanding(*key) > 0
                && now.saturating_duration_since(p.last_block) > REQUEST_TIMEOUT
            {
                tracing::debug!(peer = %p.addr, "snubbed: no block for {REQUEST_TIMEOUT:?}");
                p.snubbed = true;
                s.picker.requests_timed_out(*key);
                released = true;
            }
        }
        if released {
            self.request_all(s);
        }
        self.pbts_tick(s, now);
        if now.saturating_duration_since(s.last_round) >= ROUND {
            s.last_round = now;
            self.choke_round(s, now);
        } else {
            // A pbts peer that caught up with its receipts is served again.
            self.fill_free_slots(s);
        }
    }

    fn choke_round(&self, s: &mut State, now: Instant) {
        let seeding = s.picker.is_complete();
        let new_within = ROUND * OPTIMISTIC_ROUNDS;
        let candidates: Vec<Candidate<PeerKey>> = s
            .peers
            .iter_mut()
            .map(|(&key, p)| {
                let (servable, preferred) = self.servable(p);
                Candidate {
                    key,
                    interested: p.peer_interested && servable,
                    rate: if seeding { p.up.rate(now) } else { p.down.rate(now) },
                    new: now.saturating_duration_since(p.connected) < new_within,
                    preferred,
                }
            })
            .collect();
        let unchoke = s.choker.round(&candidates, &mut s.rng);
        for (key, p) in &mut s.peers {
            let want = unchoke.contains(key);
            if want == p.am_choking {
                p.am_choking = !want;
                p.send(if want { Out::Unchoke } else { Out::Choke });
            }
        }
    }

    /// Unchokes interested peers while upload slots are free, preferred peers first.
    fn fill_free_slots(&self, s: &mut State) {
        let mut unchoked = s.peers.values().filter(|p| !p.am_choking).count();
        if !s.choker.has_free_slot(unchoked) {
            return;
        }
        let mut waiting: Vec<(bool, PeerKey)> = s
            .peers
            .iter()
            .filter(|(_, p)| p.am_choking && p.peer_interested)
            .filter_map(|(&k, p)| match self.servable(p) {
                (true, preferred) => Some((preferred, k)),
                (false, _) => None,
            })
            .collect();
        waiting.sort_by_key(|&(preferred, _)| !preferred);
        for (_, key) in waiting {
            if !s.choker.has_free_slot(unchoked) {
                break;
            }
            let Some(p) = s.peers.get_mut(&key) else { continue };
            p.am_choking = false;
            p.send(Out::Unchoke);
            unchoked += 1;
        }
    }

    /// Fills the request queue of every peer that unchoked us.
    fn request_all(&self, s: &mut State) {
        let keys: Vec<PeerKey> = s.peers.keys().copied().collect();
        for key in keys {
            self.request_more(s, key);
        }
    }

    /// Tops up the requests outstanding to `key`, and drops our interest when it has nothing
    /// left for us.
    fn request_more(&self, s: &mut State, key: PeerKey) {
        let Some(p) = s.peers.get_mut(&key) else { return };
        if !p.am_interested || p.peer_choking || p.snubbed {
            return;
        }
        let depth = self.config.queue_depth.min(p.reqq);
        let outstanding = s.picker.outstanding(key);
        if outstanding >= depth {
            return;
        }
        let mut blocks = Vec::new();
        s.picker.pick(key, depth - outstanding, &mut blocks);
        if blocks.is_empty() && outstanding == 0 && !s.picker.peer_interesting(key) {
            p.am_interested = false;
            p.send(Out::NotInterested);
        }
        for b in blocks {
            p.send(Out::Request(b));
        }
    }

    /// The counters and rates now.
    pub fn stats(&self) -> Stats {
        let now = Instant::now();
        let mut s = self.lock();
        let down_rate = s.down_meter.rate(now);
        let up_rate = s.up_meter.rate(now);
        Stats {
            have: s.picker.have().count(),
            pieces: self.geometry.pieces(),
            left: s.picker.left_bytes(),
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            wasted: s.wasted,
            failed_pieces: s.failed_pieces,
            down_rate,
            up_rate,
            peers: s.peers.len(),
            seeds: s.peers.values().filter(|p| p.have_count == self.geometry.pieces()).count(),
            receipts: s.pbts.stats,
        }
    }

    /// Asks every connection to close (shutdown).
    pub fn close_all(&self) {
        for p in self.lock().peers.values() {
            p.send(Out::Close);
        }
    }
}
