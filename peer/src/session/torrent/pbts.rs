//! The torrent's side of receipts (docs/PBTS-EXTENSION.md): which peers speak the extension
//! and under which key, the receipts we sign as a downloader and send in batches, the receipts
//! we earn as an uploader (checked here, verified and stored off the network path), and which
//! peers the unchoker may serve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pbts_verifier::batch::verify_batch;
use pbts_verifier::bep10::{self, ExtensionIds, Message};
use pbts_verifier::keys::PublicKey;
use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};

use super::{Peer, State, Torrent};
use crate::picker::PeerKey;
use crate::receipts::Mode;
use crate::receipts::signer::Job;
use crate::receipts::state::{PbtsPeer, ReceiptStats};
use crate::session::messages::{Out, PeerError};

/// Owed pieces older than this are asked for with `pbts_request_receipt`.
const ASK_AFTER: Duration = Duration::from_secs(5);

/// Owed pieces older than this no longer count against the peer.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Longest two seeds stay connected for receipts still pending between them.
const SEED_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Peers that left whose keys we keep, so a piece they delivered just before leaving is still
/// signed for them (and offered when they come back).
const DEPARTED_KEPT: usize = 256;

/// Most receipts verified in one batch.
const MAX_VERIFY_BATCH: usize = 1024;

/// Receipts the verifier waits for (at most [`VERIFY_WAIT`]) before it verifies a batch:
/// batch verification costs about 0.5 ms a receipt in batches of 8 and 0.3 ms from about a
/// hundred receipts of a few signers on (experiments/results/paper/receipts_batches.csv).
const MIN_VERIFY_BATCH: usize = 32;

/// Longest a received receipt waits for others before it is verified.
const VERIFY_WAIT: Duration = Duration::from_millis(500);

/// Most receipts waiting for verification (about a second of the verifier's work on a small
/// machine); more are dropped, and their senders asked again later.
const MAX_VERIFY_QUEUE: usize = 4096;

/// CPU time of the calling thread so far (Linux: `/proc/thread-self/schedstat`, nanoseconds
/// on the CPU); `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Torrent {
    /// The ids and key our extended handshake advertises.
    pub(super) fn our_extension(&self) -> (ExtensionIds, Option<PublicKeyBytes>) {
        match &self.pbts {
            Some(p) => (ExtensionIds::LOCAL_DEFAULT, Some(p.public_key)),
            None => (ExtensionIds::NONE, None),
        }
    }

    /// The peer's extended handshake said whether it speaks the extension, and its key.
    pub(super) fn pbts_handshake(&self, s: &mut State, key: PeerKey, h: &bep10::Handshake) {
        let Some(ours) = &self.pbts else { return };
        let Some(p) = s.peers.get_mut(&key) else { return };
        let pk = match (h.ids.supports_any(), h.public_key) {
            (true, Some(pk)) if pk != ours.public_key => pk,
            _ => return,
        };
        if PublicKey::from_bytes(&pk).is_err() {
            tracing::debug!(peer = %p.addr, "its pbts_pk is not a valid key: a plain peer");
            return;
        }
        let known = p.receipts.pbts.is_some();
        p.receipts.pbts = Some(PbtsPeer { ids: h.ids, pk });
        if known {
            return;
        }
        // Receipts we signed for this key before (it left and came back, or we restarted
        // while it kept its key): offered again; its store keeps each once.
        if !ours.config.withhold {
            let again: Vec<Receipt> =
                s.pbts.signed.values().filter(|r| r.sender_pk == pk).copied().collect();
            if !again.is_empty() {
                p.receipts.outbox.extend(again);
                Self::send_outbox(p, &mut s.pbts.stats);
            }
        }
        self.fill_free_slots(s);
    }

    /// A peer's extension message (not the handshake).
    ///
    /// # Errors
    /// One of our messages that does not decode.
    pub fn extended_message(
        self: &Arc<Self>,
        key: PeerKey,
        id: u8,
        payload: &[u8],
    ) -> Result<(), PeerError> {
        if self.pbts.is_none() {
            return Ok(());
        }
        let msg = match bep10::parse_extended(id, payload, &ExtensionIds::LOCAL_DEFAULT) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::debug!("a pbts message that does not decode: {e}");
                return Err(PeerError::Protocol("a pbts message that does not decode"));
            }
        };
        match msg {
            Message::Receipt(r) => self.receipts_received(key, vec![r]),
            Message::ReceiptBatch(rs) => self.receipts_received(key, rs),
            Message::RequestReceipt { info_hash, piece_index, .. } => {
                let mut s = self.lock();
                let s = &mut *s;
                let Some(p) = s.peers.get_mut(&key) else { return Ok(()) };
                let Some(pbts) = p.receipts.pbts else { return Ok(()) };
                if info_hash != self.info_hash
                    || self.pbts.as_ref().is_some_and(|c| c.config.withhold)
                {
                    return Ok(());
                }
                if let Some(r) = s.pbts.signed.get(&piece_index).filter(|r| r.sender_pk == pbts.pk)
                {
                    p.receipts.outbox.push(*r);
                    Self::send_outbox(p, &mut s.pbts.stats);
                }
            }
        }
        Ok(())
    }

    /// A piece passed its hash check: sign a receipt for the peer that delivered most of it,
    /// if that peer speaks the extension. Returns its key for the transfer log.
    pub(super) fn sign_for_piece(
        &self,
        s: &mut State,
        index: u32,
        creditee: Option<PeerKey>,
    ) -> Option<PublicKeyBytes> {
        let ours = self.pbts.as_ref()?;
        let key = creditee?;
        let pk = match s.peers.get(&key) {
            Some(p) => p.receipts.pbts.map(|b| b.pk),
            None => s.pbts.departed.get(&key).copied(),
        }?;
        if ours.config.withhold {
            return Some(pk);
        }
        let hash = ours.piece_hashes.get(index as usize)?;
        let receipt = Receipt {
            info_hash: self.info_hash,
            sender_pk: pk,
            receiver_pk: ours.public_key,
            piece_hash: PieceHash::from_slice(hash)?,
            piece_index: index,
            timestamp: unix_now(),
            signature: SignatureBytes([0; 96]),
        };
        if ours.signer.sign(Job { for_peer: key, receipt }) {
            if let Some(p) = s.peers.get_mut(&key) {
                p.receipts.signing += 1;
            }
        } else {
            tracing::error!("the signer thread is gone: piece {index} gets no receipt");
        }
        Some(pk)
    }

    /// The signer signed a receipt: keep it, and send it with the next batch to its peer.
    pub fn receipt_signed(self: &Arc<Self>, job: Job) {
        let Some(ours) = &self.pbts else { return };
        let mut s = self.lock();
        let s = &mut *s;
        s.pbts.stats.signed += 1;
        s.pbts.signed.insert(job.receipt.piece_index, job.receipt);
        if let Some(p) = s.peers.get_mut(&job.for_peer) {
            p.receipts.signing = p.receipts.signing.saturating_sub(1);
        }
        // The connection that delivered the piece, or the same key's new connection (it left
        // and came back while the piece was being checked).
        let pk = job.receipt.sender_pk;
        let key = if s
            .peers
            .get(&job.for_peer)
            .is_some_and(|p| p.receipts.pbts.is_some_and(|b| b.pk == pk))
        {
            job.for_peer
        } else {
            match s.peers.iter().find(|(_, p)| p.receipts.pbts.is_some_and(|b| b.pk == pk)) {
                Some((&k, _)) => k,
                // Offered when it connects again.
                None => return,
            }
        };
        let Some(p) = s.peers.get_mut(&key) else { return };
        p.receipts.outbox.push(job.receipt);
        if p.receipts.outbox.len() >= ours.config.batch {
            Self::send_outbox(p, &mut s.pbts.stats);
        } else if !p.receipts.outbox_armed {
            p.receipts.outbox_armed = true;
            let torrent = Arc::clone(self);
            let delay = ours.config.batch_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                torrent.flush_receipts(key);
            });
        }
    }

    /// Sends a peer's waiting receipts now.
    pub fn flush_receipts(&self, key: PeerKey) {
        let mut s = self.lock();
        let s = &mut *s;
        if let Some(p) = s.peers.get_mut(&key) {
            Self::send_outbox(p, &mut s.pbts.stats);
        }
    }

    /// Every peer's waiting receipts, now (shutdown).
    pub fn flush_all_receipts(&self) {
        let mut s = self.lock();
        let s = &mut *s;
        for p in s.peers.values_mut() {
            Self::send_outbox(p, &mut s.pbts.stats);
        }
    }

    fn send_outbox(p: &mut Peer, stats: &mut ReceiptStats) {
        p.receipts.outbox_armed = false;
        let Some(pbts) = p.receipts.pbts else {
            p.receipts.outbox.clear();
            return;
        };
        let outbox = std::mem::take(&mut p.receipts.outbox);
        for chunk in outbox.chunks(bep10::MAX_BATCH) {
            let mut frame = Vec::new();
            let batch = Message::ReceiptBatch(chunk.to_vec());
            // A peer that takes only single receipts gets them one by one.
            let written = bep10::write_message(&pbts.ids, &batch, &mut frame).or_else(|_| {
                chunk.iter().try_for_each(|r| {
                    bep10::write_message(&pbts.ids, &Message::Receipt(*r), &mut frame)
                })
            });
            if written.is_ok() {
                stats.sent += chunk.len() as u64;
                p.send(Out::Raw(Bytes::from(frame)));
            }
        }
    }

    /// Receipts a peer sent us: the cheap checks here, then BLS verification and the durable
    /// store on a blocking thread; they count only once stored.
    fn receipts_received(self: &Arc<Self>, key: PeerKey, receipts: Vec<Receipt>) {
        let Some(ours) = &self.pbts else { return };
        let mut candidates = Vec::with_capacity(receipts.len());
        {
            let mut s = self.lock();
            let s = &mut *s;
            let Some(p) = s.peers.get_mut(&key) else { return };
            let Some(pbts) = p.receipts.pbts else {
                // It never told us its key: nothing to check its receipts against.
                return;
            };
            if p.receipts.ledger.bad {
                // It sent an invalid one: we verify nothing more of it (each costs BLS work).
                return;
            }
            let mut bad = 0;
            for r in receipts {
                let ours_ok = r.info_hash == self.info_hash
                    && r.sender_pk == ours.public_key
                    && r.receiver_pk == pbts.pk
                    && ours
                        .piece_hashes
                        .get(r.piece_index as usize)
                        .is_some_and(|h| r.piece_hash.as_bytes() == h);
                if ours_ok {
                    // Paid provisionally (up to the slack): it no longer counts against the
                    // peer while it waits for verification; a bad signature chokes the peer
                    // when it is checked.
                    if p.receipts.unverified < ours.config.slack {
                        p.receipts.ledger.receipted(r.piece_index);
                    }
                    p.receipts.unverified += 1;
                    candidates.push(r);
                } else {
                    bad += 1;
                }
            }
            if bad > 0 {
                Self::bad_receipts(p, bad, &mut s.pbts.stats);
            }
        }
        if candidates.is_empty() {
            return;
        }
        // One verification task at a time takes everything queued: under load the batches
        // grow (the pairings are shared by more receipts) without waiting on a timer.
        let start = {
            let mut q = ours.verify_queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let room = MAX_VERIFY_QUEUE.saturating_sub(q.items.len());
            if candidates.len() > room {
                // Peers send what they owe a few at a time; a flood is dropped, not queued.
                tracing::debug!(
                    "verification queue full: {} receipt(s) dropped",
                    candidates.len() - room
                );
            }
            if q.items.is_empty() {
                q.since = Some(Instant::now());
            }
            q.items.extend(candidates.into_iter().take(room).map(|r| (key, r)));
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let torrent = Arc::clone(self);
            tokio::task::spawn_blocking(move || torrent.verify_queued());
        }
    }

    /// Verifies and stores queued receipts until the queue is empty (on a blocking thread).
    fn verify_queued(&self) {
        let Some(ours) = &self.pbts else { return };
        loop {
            let batch: Vec<(PeerKey, Receipt)> = {
                let mut q =
                    ours.verify_queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if q.items.is_empty() {
                    q.running = false;
                    return;
                }
                // Larger batches share the pairings among more receipts: wait a little for
                // them (receipts already count as paid while they wait).
                let young = q.since.is_some_and(|t| t.elapsed() < VERIFY_WAIT);
                if q.items.len() < MIN_VERIFY_BATCH && young && !q.flush {
                    drop(q);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let n = q.items.len().min(MAX_VERIFY_BATCH);
                let batch: Vec<(PeerKey, Receipt)> = q.items.drain(..n).collect();
                q.since = (!q.items.is_empty()).then(Instant::now);
                batch
            };
            let receipts: Vec<Receipt> = batch.iter().map(|(_, r)| *r).collect();
            let started = Instant::now();
            let cpu_before = thread_cpu();
            let verdicts = match verify_batch(&receipts, &mut rand::rng()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!("verifying receipts: {e}");
                    continue;
                }
            };
            // CPU time where the kernel tells it (a loaded machine stretches wall time).
            let took = match (cpu_before, thread_cpu()) {
                (Some(a), Some(b)) if b > a => b - a,
                // Not kept by this kernel (always zero), or not Linux.
                _ => started.elapsed(),
            };
            let valid: Vec<Receipt> = receipts
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.is_ok())
                .map(|(r, _)| *r)
                .collect();
            let new: std::collections::HashSet<(PublicKeyBytes, u32)> =
                match ours.store.insert(&valid) {
                    Ok(new) => new.iter().map(|r| (r.receiver_pk, r.piece_index)).collect(),
                    Err(e) => {
                        // Not stored, so not counted: the peers stay behind and are asked again.
                        tracing::error!("storing receipts: {e}");
                        continue;
                    }
                };
            let mut per_peer: HashMap<PeerKey, (Vec<Receipt>, u64, usize)> = HashMap::new();
            for ((key, r), v) in batch.iter().zip(&verdicts) {
                let e = per_peer.entry(*key).or_default();
                if v.is_ok() {
                    e.0.push(*r);
                    e.1 += u64::from(new.contains(&(r.receiver_pk, r.piece_index)));
                } else {
                    e.2 += 1;
                }
            }
            self.receipts_verified(receipts.len(), took);
            for (key, (valid, new, invalid)) in per_peer {
                self.receipts_stored(key, &valid, new, invalid);
            }
        }
    }

    fn receipts_verified(&self, n: usize, took: Duration) {
        let mut s = self.lock();
        s.pbts.stats.verified += n as u64;
        s.pbts.stats.verify_micros += took.as_micros() as u64;
    }

    /// Verified receipts are on disk.
    fn receipts_stored(&self, key: PeerKey, valid: &[Receipt], new: u64, invalid: usize) {
        let Some(ours) = &self.pbts else { return };
        let mut s = self.lock();
        let s = &mut *s;
        s.pbts.stats.stored += new;
        if let Some(p) = s.peers.get_mut(&key) {
            p.receipts.unverified = p.receipts.unverified.saturating_sub(valid.len() + invalid);
        }
        if new > 0 {
            ours.wake.notify_one();
        }
        let Some(p) = s.peers.get_mut(&key) else { return };
        for r in valid {
            p.receipts.ledger.receipted(r.piece_index);
        }
        p.receipts.ledger.stored += new;
        if invalid > 0 {
            Self::bad_receipts(p, invalid, &mut s.pbts.stats);
        }
        self.fill_free_slots(s);
    }

    fn bad_receipts(p: &mut Peer, n: usize, stats: &mut ReceiptStats) {
        stats.bad += n as u64;
        if !p.receipts.ledger.bad {
            tracing::warn!(peer = %p.addr, client = ?p.client, "sent {n} invalid receipt(s): choked");
            p.receipts.ledger.bad = true;
        }
        if !p.am_choking {
            p.am_choking = true;
            p.send(Out::Choke);
        }
    }

    /// A block went to a peer: a piece sent whole is owed; a pbts peer too far behind is choked.
    pub(super) fn pbts_block_sent(&self, p: &mut Peer, index: u32, len: u32, now: Instant) {
        let Some(ours) = &self.pbts else { return };
        if p.receipts.pbts.is_none() {
            return;
        }
        let whole = p.receipts.ledger.block_sent(index, len, self.geometry.len_of(index), now);
        if whole && p.receipts.ledger.behind() > ours.config.slack && !p.am_choking {
            tracing::debug!(peer = %p.addr, behind = p.receipts.ledger.behind(), "choked: behind in receipts");
            p.am_choking = true;
            p.send(Out::Choke);
        }
    }

    /// Whether the unchoker may serve `p` at all, and whether it comes first.
    pub(super) fn servable(&self, p: &Peer) -> (bool, bool) {
        let Some(ours) = &self.pbts else { return (true, false) };
        match (p.receipts.pbts, ours.config.mode) {
            (Some(_), _) => {
                let l = &p.receipts.ledger;
                (!l.bad && l.behind() <= ours.config.slack, true)
            }
            (None, Mode::Require) => (false, false),
            (None, Mode::Prefer | Mode::Off) => (true, false),
        }
    }

    /// Two seeds: close the connection now, or once the receipts between them are settled
    /// (the last pieces' receipts are usually still being signed or sent when both finish).
    pub(super) fn close_seed(p: &mut Peer, now: Instant) {
        let r = &p.receipts;
        let pending = r.pbts.is_some()
            && (r.signing > 0 || !r.outbox.is_empty() || (!r.ledger.bad && r.ledger.behind() > 0));
        if pending {
            p.receipts.close_by.get_or_insert(now + SEED_CLOSE_GRACE);
        } else {
            p.send(Out::Close);
        }
    }

    /// Once a second: ask for receipts long owed, forget those owed too long, close seeds
    /// whose receipts are settled.
    pub(super) fn pbts_tick(&self, s: &mut State, now: Instant) {
        for p in s.peers.values_mut() {
            if let Some(by) = p.receipts.close_by {
                let r = &p.receipts;
                let settled = r.signing == 0
                    && r.outbox.is_empty()
                    && (r.ledger.bad || r.ledger.behind() == 0);
                if settled || now >= by {
                    p.receipts.close_by = None;
                    p.send(Out::Close);
                }
            }
        }
        let Some(ours) = &self.pbts else { return };
        for p in s.peers.values_mut() {
            let Some(pbts) = p.receipts.pbts else { continue };
            for piece in p.receipts.ledger.to_ask(now, ASK_AFTER) {
                let Some(hash) = ours.piece_hashes.get(piece as usize) else { continue };
                let Some(piece_hash) = PieceHash::from_slice(hash) else { continue };
                let ask = Message::RequestReceipt {
                    info_hash: self.info_hash,
                    piece_index: piece,
                    piece_hash,
                };
                let mut frame = Vec::new();
                if bep10::write_message(&pbts.ids, &ask, &mut frame).is_ok() {
                    p.send(Out::Raw(Bytes::from(frame)));
                }
            }
            p.receipts.ledger.expire(now, FORGET_AFTER);
        }
    }

    /// A peer left: keep its key a while for pieces it delivered that are still being checked.
    pub(super) fn pbts_departed(s: &mut State, key: PeerKey, p: &Peer) {
        if let Some(pbts) = p.receipts.pbts {
            if s.pbts.departed.len() >= DEPARTED_KEPT {
                s.pbts.departed.clear();
            }
            s.pbts.departed.insert(key, pbts.pk);
        }
    }

    /// Whether receipts are still on their way with a connected pbts peer: ours being signed
    /// or waiting to be sent, or theirs owed to us.
    pub fn receipts_pending(&self) -> bool {
        let Some(ours) = &self.pbts else { return false };
        {
            // Waiting for verification: verify now rather than wait for a full batch.
            let mut q = ours.verify_queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !q.items.is_empty() || q.running {
                q.flush = true;
                return true;
            }
            q.flush = false;
        }
        self.lock().peers.values().any(|p| {
            let r = &p.receipts;
            r.pbts.is_some()
                && (r.signing > 0
                    || !r.outbox.is_empty()
                    || (!r.ledger.bad && r.ledger.behind() > 0))
        })
    }

    /// Receipt counters.
    pub fn receipt_stats(&self) -> ReceiptStats {
        self.lock().pbts.stats
    }
}
