//! One peer connection after its handshake: a reader task that turns the peer's messages into
//! state changes and block requests, and a writer task that sends what the torrent queued for
//! this peer and serves the peer's requests from disk.
//!
//! Reading and writing are separate tasks so that two peers that both upload never deadlock
//! with full socket buffers, each waiting for the other to read.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pbts_proto::peer_wire::{Bitfield, BlockRef, Handshake, Message};
use pbts_verifier::bep10;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::messages::{Out, PeerError};
use super::torrent::{PeerKey, Torrent};
use crate::storage::StorageError;
use crate::wire::{FrameReader, FrameWriter, Limits, Received};

/// A peer that sends nothing (not even a keep-alive) for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(150);

/// A peer that reads nothing we send for this long is dropped (the default of
/// [`TorrentConfig::stall_timeout`](super::TorrentConfig::stall_timeout)).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// We send a keep-alive after this long without sending anything.
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Disk reads in flight per peer while serving.
const READS_IN_FLIGHT: usize = 32;

/// Runs an established connection until it ends; unregisters the peer when it does. Whether
/// the peer was a seed (false if it was refused: banned, a duplicate, over the limit).
pub async fn run<S>(torrent: Arc<Torrent>, stream: S, addr: SocketAddr, theirs: Handshake) -> bool
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let serving = Arc::new(AtomicUsize::new(0));
    let Some((key, have)) = torrent.register(addr, &theirs, tx, serving.clone()) else {
        return false;
    };
    // Our handshake always offers both extensions; each is on when the peer's offers it too.
    let fast = theirs.reserved.fast();
    let (read_half, write_half) = tokio::io::split(stream);
    let mut writer = FrameWriter::new(write_half);
    // What we have, first (BEP 3: the bitfield is the first message); later pieces follow as
    // `have` through the channel. Then the extended handshake.
    match have.count() {
        0 if fast => writer.queue(&Message::HaveNone),
        0 => {}
        n if fast && n == have.pieces() => writer.queue(&Message::HaveAll),
        _ => writer.queue(&Message::Bitfield(have.as_bytes())),
    }
    if theirs.reserved.extension_protocol() {
        writer.queue_raw(&torrent.extended_handshake());
    }
    let limits = Limits::default();
    let queue = ServeQueue { serving, waiting: VecDeque::new(), reading: VecDeque::new() };
    let mut writer = tokio::spawn(write_loop(torrent.clone(), key, writer, rx, queue, fast));
    let mut reader = FrameReader::new(read_half, &limits);
    // Either half ending ends the connection: a writer stuck on a peer that never reads must
    // not leave a registered peer behind.
    let ended = tokio::select! {
        r = read_loop(&torrent, key, &mut reader, fast) => {
            writer.abort();
            // Polled once more only if it has not completed (a finished handle must not be).
            let _ = writer.await;
            r
        }
        w = &mut writer => w.unwrap_or(Err(PeerError::Closed)),
    };
    torrent.unregister(key, &ended)
}

async fn read_loop<R: AsyncRead + Unpin>(
    torrent: &Arc<Torrent>,
    key: PeerKey,
    reader: &mut FrameReader<R>,
    fast: bool,
) -> Result<(), PeerError> {
    let mut first = true;
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, reader.next()).await;
        let msg = match next {
            Err(_) => return Err(PeerError::Idle(IDLE_TIMEOUT)),
            Ok(r) => match r? {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        // Clients differ on whether the extended handshake or the bitfield comes first; both
        // are accepted before any other message.
        let was_first = first;
        first &= matches!(msg, Received::KeepAlive | Received::Extended { id: 0, .. });
        match msg {
            Received::KeepAlive | Received::Port(_) | Received::Suggest(_) => {}
            Received::AllowedFast(_) | Received::Unknown { .. } => {}
            Received::Choke => torrent.peer_choked_us(key),
            Received::Unchoke => torrent.peer_unchoked_us(key),
            Received::Interested => torrent.peer_interest(key, true),
            Received::NotInterested => torrent.peer_interest(key, false),
            Received::Have(i) => torrent.peer_have(key, i)?,
            Received::Bitfield(bits) => {
                // BEP 3 wants it first, but aria2 sends one after `have none`: a later bitfield
                // replaces what we knew of the peer, which is all it can do.
                if !was_first {
                    tracing::debug!("a bitfield after the first message");
                }
                let bits = Bitfield::from_wire(&bits, torrent.pieces())
                    .map_err(|_| PeerError::Protocol("bitfield of the wrong length"))?;
                torrent.peer_bitfield(key, bits);
            }
            Received::HaveAll | Received::HaveNone if !fast => {
                return Err(PeerError::Protocol("have-all/none without the fast extension"));
            }
            Received::HaveAll => torrent.peer_bitfield(key, Bitfield::full(torrent.pieces())),
            Received::HaveNone => torrent.peer_bitfield(key, Bitfield::new(torrent.pieces())),
            Received::Request(block) => torrent.peer_request(key, block, fast)?,
            Received::Cancel(block) => torrent.send(key, Out::Unserve(block)),
            Received::Reject(block) if fast => torrent.request_rejected(key, block),
            Received::Reject(_) => {
                return Err(PeerError::Protocol("reject without the fast extension"));
            }
            Received::Piece { index, begin, data } => {
                torrent.download_limit().acquire(data.len() as u64).await;
                torrent.block_received(key, index, begin, data).await?;
            }
            Received::Extended { id: 0, payload } => {
                // A bad extended handshake only means we learn nothing from it.
                if let Ok(h) = bep10::parse_handshake(&payload) {
                    torrent.peer_extended(key, &h);
                }
            }
            Received::Extended { id, payload } => torrent.extended_message(key, id, &payload)?,
        }
    }
}

/// Sends what the torrent queues for this peer and serves its requests, reading blocks ahead.
async fn write_loop<W: AsyncWrite + Unpin>(
    torrent: Arc<Torrent>,
    key: PeerKey,
    mut writer: FrameWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    queue: ServeQueue,
    fast: bool,
) -> Result<(), PeerError> {
    let stall = torrent.config().stall_timeout;
    flush_within(&mut writer, stall).await?;
    let ServeQueue { serving, mut waiting, mut reading } = queue;
    // A request leaves the queue: sent, withdrawn, or dropped by a choke.
    let done = |n: usize| {
        serving.fetch_sub(n, Ordering::Relaxed);
    };
    let mut last_sent = Instant::now();
    loop {
        while reading.len() < READS_IN_FLIGHT
            && let Some(block) = waiting.pop_front()
        {
            let disk = torrent.disk().clone();
            let read = tokio::spawn(async move {
                disk.read_block(block.index, block.begin, block.length).await
            });
            reading.push_back((block, read));
        }
        tokio::select! {
            // Commands first: a choke or a cancel takes effect before another block goes out
            // (a peer choked for owing receipts gets at most the block being sent).
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return Err(PeerError::Closed) };
                let mut cmd = Some(cmd);
                // Everything queued now goes out in one write.
                while let Some(c) = cmd {
                    match c {
                        Out::Close => {
                            let _ = flush_within(&mut writer, stall).await;
                            return Err(PeerError::Closed);
                        }
                        // Bounded by the torrent, which counts `serving` up.
                        Out::Serve(block) => waiting.push_back(block),
                        Out::Unserve(block) => {
                            let before = waiting.len() + reading.len();
                            waiting.retain(|b| *b != block);
                            reading.retain(|(b, read)| {
                                let keep = *b != block;
                                if !keep {
                                    read.abort();
                                }
                                keep
                            });
                            // BEP 6: a cancelled request is answered by its piece or a reject.
                            let removed = before - (waiting.len() + reading.len());
                            done(removed);
                            if fast && removed > 0 {
                                writer.queue(&Message::Reject(block));
                            }
                        }
                        Out::Choke => {
                            // BEP 3: a choke drops the peer's pending requests; with BEP 6 the
                            // peer is told which.
                            writer.queue(&Message::Choke);
                            for (block, read) in reading.drain(..) {
                                read.abort();
                                waiting.push_back(block);
                            }
                            done(waiting.len());
                            for block in waiting.drain(..) {
                                if fast {
                                    writer.queue(&Message::Reject(block));
                                }
                            }
                        }
                        Out::Raw(frames) => writer.queue_raw(&frames),
                        other => writer.queue(&message_of(&other)),
                    }
                    cmd = rx.try_recv().ok();
                }
            }
            read = front(&mut reading) => {
                let (block, _) = reading.pop_front().expect("front() completed, so it is there");
                done(1);
                let data = match read {
                    Ok(r) => r?,
                    // Aborted by a choke or cancel: already gone from the queue.
                    Err(_) => continue,
                };
                torrent.upload_limit().acquire(data.len() as u64).await;
                writer.queue(&Message::Piece { index: block.index, begin: block.begin, data: &data });
                torrent.block_sent(key, block.index, data.len() as u32);
            }
            () = tokio::time::sleep_until((last_sent + KEEP_ALIVE).into()) => {
                writer.queue(&Message::KeepAlive);
            }
        }
        if writer.queued() > 0 {
            flush_within(&mut writer, stall).await?;
            last_sent = Instant::now();
        }
    }
}

/// The peer's requests the writer holds: waiting for a disk read, and being read.
struct ServeQueue {
    serving: Arc<AtomicUsize>,
    waiting: VecDeque<BlockRef>,
    reading: VecDeque<(BlockRef, JoinHandle<Result<Bytes, StorageError>>)>,
}

/// Writes what is queued, or fails if the peer takes nothing for `limit`.
async fn flush_within<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    limit: Duration,
) -> Result<(), PeerError> {
    match tokio::time::timeout(limit, writer.flush()).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(PeerError::Stalled(limit)),
    }
}

/// The first read in flight, or never (when none is).
async fn front(
    reading: &mut VecDeque<(BlockRef, JoinHandle<Result<Bytes, StorageError>>)>,
) -> Result<Result<Bytes, StorageError>, tokio::task::JoinError> {
    match reading.front_mut() {
        Some((_, handle)) => handle.await,
        None => std::future::pending().await,
    }
}

fn message_of(out: &Out) -> Message<'static> {
    match *out {
        Out::Unchoke => Message::Unchoke,
        Out::Interested => Message::Interested,
        Out::NotInterested => Message::NotInterested,
        Out::Have(i) => Message::Have(i),
        Out::Request(b) => Message::Request(b),
        Out::Cancel(b) => Message::Cancel(b),
        Out::Reject(b) => Message::Reject(b),
        // Handled by the writer itself.
        Out::Choke | Out::Serve(_) | Out::Unserve(_) | Out::Raw(_) | Out::Close => {
            Message::KeepAlive
        }
    }
}
