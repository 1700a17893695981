//! The async face of [`Storage`]: a [`Disk`] handle that connection tasks clone, and one
//! `peer-disk` thread that owns the files and does every read, write and hash.
//!
//! ```text
//!  connection tasks ──Disk::write_block / read_block / piece_complete──┐
//!                                                                      ▼  bounded mpsc queue
//!  peer-disk thread: take what is queued ─▶ sort each run of writes by (piece, begin)
//!                    ─▶ pwrite, feed in-order bytes to the piece's SHA-1 ─▶ answer (oneshot)
//! ```
//!
//! File I/O blocks, so it stays off the tokio workers; one thread is enough for a 2-core machine
//! and keeps the files' state (open handles, hashers) unshared. The queue is bounded: when the
//! disk falls behind, `write_block` waits, which slows the connections that feed it.
//!
//! Hashing is incremental. Each piece being downloaded has a SHA-1 state and the length of the
//! prefix it has eaten; a block that starts exactly there is hashed as it is written, so a piece
//! whose blocks came in order is verified without reading anything back. Blocks that came out of
//! order are read back from disk when the piece is checked. A block that rewrites bytes already
//! hashed (a duplicate from end-game, say) throws the state away, and the whole piece is read
//! back. A check, passed or failed, ends the piece's state.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::{mpsc, oneshot};

use super::files::{Storage, StorageError};
use super::layout::{BlockError, Layout};

/// Commands the disk thread takes from its queue per batch, at most: it answers these before
/// looking at the queue again.
const MAX_BATCH: usize = 64;

/// A cheap-to-clone handle to the disk thread. The thread ends when the last handle is dropped
/// (after finishing what is queued).
#[derive(Clone, Debug)]
pub struct Disk {
    layout: Arc<Layout>,
    queue: mpsc::Sender<Command>,
}

/// The acknowledgement of one queued write: await it for the write's outcome, or drop it to
/// fire and forget (a failed write is then logged, and the piece fails its check).
#[derive(Debug)]
#[must_use = "await it to learn whether the block reached the disk, or drop it explicitly"]
pub struct Written(oneshot::Receiver<Result<(), StorageError>>);

impl Future for Written {
    type Output = Result<(), StorageError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| answer.unwrap_or(Err(StorageError::Stopped)))
    }
}

#[derive(Debug)]
enum Command {
    Write { piece: u32, begin: u32, data: Bytes, done: oneshot::Sender<Result<(), StorageError>> },
    Read { piece: u32, begin: u32, len: u32, reply: oneshot::Sender<Result<Bytes, StorageError>> },
    Complete { piece: u32, reply: oneshot::Sender<Result<bool, StorageError>> },
    Sync { reply: oneshot::Sender<Result<(), StorageError>> },
}

impl Disk {
    /// Starts the disk thread over `storage`, with room for `queue` commands in flight
    /// (at least 1).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn spawn(storage: Storage, queue: usize) -> std::io::Result<Self> {
        let layout = Arc::new(storage.layout().clone());
        let (tx, rx) = mpsc::channel(queue.max(1));
        std::thread::Builder::new()
            .name("peer-disk".to_owned())
            .spawn(move || run_disk_worker(Worker { storage, hashing: HashMap::new() }, rx))?;
        Ok(Self { layout, queue: tx })
    }

    /// The torrent's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Queues `data` to be written at `begin` in piece `piece`, waiting only for room in the
    /// queue. Await the returned [`Written`] for the outcome.
    ///
    /// # Errors
    /// [`StorageError::Block`] at once for a block outside its piece (nothing is queued);
    /// [`StorageError::Stopped`] if the disk thread is gone.
    pub async fn write_block(
        &self,
        piece: u32,
        begin: u32,
        data: Bytes,
    ) -> Result<Written, StorageError> {
        self.layout.check_block(piece, begin, data.len() as u64)?;
        let (done, ack) = oneshot::channel();
        self.send(Command::Write { piece, begin, data, done }).await?;
        Ok(Written(ack))
    }

    /// Reads `len` bytes at `begin` in piece `piece` (to upload them).
    ///
    /// # Errors
    /// [`StorageError::Block`] for a block outside its piece; I/O errors naming the file;
    /// [`StorageError::Stopped`] if the disk thread is gone.
    pub async fn read_block(
        &self,
        piece: u32,
        begin: u32,
        len: u32,
    ) -> Result<Bytes, StorageError> {
        self.layout.check_block(piece, begin, u64::from(len))?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Read { piece, begin, len, reply }).await?;
        answer.await.unwrap_or(Err(StorageError::Stopped))
    }

    /// Checks a piece whose blocks have all been written: true when its SHA-1 matches. Either
    /// way the piece's hashing state is dropped, so a failed piece starts over.
    ///
    /// # Errors
    /// [`StorageError::Block`] for a piece that does not exist; I/O errors naming the file;
    /// [`StorageError::Stopped`] if the disk thread is gone.
    pub async fn piece_complete(&self, piece: u32) -> Result<bool, StorageError> {
        if self.layout.piece_len(piece).is_none() {
            let pieces = self.layout.piece_count();
            return Err(BlockError::NoSuchPiece { piece, pieces }.into());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Complete { piece, reply }).await?;
        answer.await.unwrap_or(Err(StorageError::Stopped))
    }

    /// Waits until everything queued before it is written, then makes it durable (on a
    /// clean stop: a restart then finds every verified piece without trusting the page cache).
    ///
    /// # Errors
    /// The first file that failed to sync; [`StorageError::Stopped`] if the thread is gone.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Sync { reply }).await?;
        answer.await.unwrap_or(Err(StorageError::Stopped))
    }

    async fn send(&self, command: Command) -> Result<(), StorageError> {
        self.queue.send(command).await.map_err(|_| StorageError::Stopped)
    }
}

/// The SHA-1 of a piece's first `hashed` bytes.
#[derive(Debug)]
struct PieceHash {
    sha: Sha1,
    hashed: u32,
}

/// The disk thread's state.
#[derive(Debug)]
struct Worker {
    storage: Storage,
    /// Pieces with at least one block written since their last check.
    hashing: HashMap<u32, PieceHash>,
}

impl Worker {
    fn write(&mut self, piece: u32, begin: u32, data: &[u8]) -> Result<(), StorageError> {
        self.storage.write_block(piece, begin, data)?;
        let state =
            self.hashing.entry(piece).or_insert_with(|| PieceHash { sha: Sha1::new(), hashed: 0 });
        if begin == state.hashed {
            state.sha.update(data);
            state.hashed += u32::try_from(data.len()).expect("written: inside a piece");
        } else if begin < state.hashed {
            // Bytes already hashed may have changed: read the whole piece back at check time.
            *state = PieceHash { sha: Sha1::new(), hashed: 0 };
        }
        Ok(())
    }

    fn complete(&mut self, piece: u32) -> Result<bool, StorageError> {
        let PieceHash { mut sha, hashed } = self
            .hashing
            .remove(&piece)
            .unwrap_or_else(|| PieceHash { sha: Sha1::new(), hashed: 0 });
        self.storage.hash_from(piece, hashed, &mut sha)?;
        Ok(self.storage.hash_matches(piece, sha))
    }

    /// Runs a batch: each run of consecutive writes is sorted by (piece, begin), so blocks of
    /// one piece that came from several peers interleaved are hashed in order and written in
    /// file order. Reads and checks stay where they were, so they see every write queued
    /// before them.
    fn run_batch(&mut self, batch: &mut Vec<Command>) {
        let mut start = 0;
        while start < batch.len() {
            let end = batch[start..]
                .iter()
                .position(|c| !matches!(c, Command::Write { .. }))
                .map_or(batch.len(), |n| start + n);
            batch[start..end].sort_by_key(|c| match c {
                Command::Write { piece, begin, .. } => (*piece, *begin),
                _ => unreachable!("a run holds writes only"),
            });
            start = end + 1;
        }
        for command in batch.drain(..) {
            match command {
                Command::Write { piece, begin, data, done } => {
                    if let Err(Err(e)) = done.send(self.write(piece, begin, &data)) {
                        // Fired and forgotten: nobody else will see it (the piece's check will
                        // fail or error).
                        tracing::debug!(piece, begin, "block write failed: {e:#}");
                    }
                }
                Command::Read { piece, begin, len, reply } => {
                    let _ = reply.send(self.storage.read_block(piece, begin, len).map(Bytes::from));
                }
                Command::Complete { piece, reply } => {
                    let _ = reply.send(self.complete(piece));
                }
                Command::Sync { reply } => {
                    let _ = reply.send(self.storage.sync());
                }
            }
        }
    }
}

/// The disk thread: takes what is queued, runs it, until every [`Disk`] handle is gone.
fn run_disk_worker(mut worker: Worker, mut queue: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        worker.run_batch(&mut batch);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::super::files::Allocation;
    use super::super::testing::{FILES, block_of, shuffled_blocks, torrent};
    use super::*;

    fn start(root: &std::path::Path) -> (Disk, Vec<u8>) {
        let (layout, data) = torrent();
        let storage = Storage::open(layout, root, Allocation::Sparse).unwrap();
        (Disk::spawn(storage, 8).unwrap(), data)
    }

    async fn write(disk: &Disk, data: &[u8], piece: u32, begin: u32, len: u32) {
        let bytes = Bytes::from(block_of(data, disk.layout(), piece, begin, len));
        disk.write_block(piece, begin, bytes).await.unwrap().await.unwrap();
    }

    /// Overwrites bytes of `t/c` behind the disk thread's back.
    fn scribble(root: &std::path::Path, offset: u64) {
        let c = std::fs::OpenOptions::new().write(true).open(root.join("t/c")).unwrap();
        c.write_all_at(b"XX", offset).unwrap();
    }

    #[tokio::test]
    async fn shuffled_blocks_fired_and_forgotten_verify_and_rebuild_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, data) = start(dir.path());
        let mut acks = Vec::new();
        for (piece, begin, len) in shuffled_blocks(disk.layout(), 7) {
            let bytes = Bytes::from(block_of(&data, disk.layout(), piece, begin, len));
            acks.push(disk.write_block(piece, begin, bytes).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
        for piece in 0..3 {
            assert!(disk.piece_complete(piece).await.unwrap(), "piece {piece}");
        }
        let on_disk: Vec<u8> =
            FILES.iter().flat_map(|(p, _)| std::fs::read(dir.path().join(p)).unwrap()).collect();
        assert_eq!(on_disk, data);
        assert_eq!(disk.read_block(0, 44, 20).await.unwrap(), data[44..64]);
    }

    #[tokio::test]
    async fn a_corrupted_block_fails_and_the_piece_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, data) = start(dir.path());
        write(&disk, &data, 1, 0, 16).await;
        let mut bad = block_of(&data, disk.layout(), 1, 16, 16);
        bad[3] ^= 1;
        disk.write_block(1, 16, bad.into()).await.unwrap().await.unwrap();
        write(&disk, &data, 1, 32, 16).await;
        write(&disk, &data, 1, 48, 16).await;
        assert!(!disk.piece_complete(1).await.unwrap());
        // Downloaded again (the good block alone would do; all of it, in another order).
        for begin in [48, 16, 0, 32] {
            write(&disk, &data, 1, begin, 16).await;
        }
        assert!(disk.piece_complete(1).await.unwrap());
    }

    #[tokio::test]
    async fn in_order_blocks_are_hashed_as_written_and_others_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, data) = start(dir.path());
        // Piece 2 (bytes 128..160, in t/c at 68..100) in order: its hash is done in memory, so
        // bytes changed on disk afterwards are not seen.
        write(&disk, &data, 2, 0, 16).await;
        write(&disk, &data, 2, 16, 16).await;
        scribble(dir.path(), 70);
        assert!(disk.piece_complete(2).await.unwrap());
        // Out of order, the second block is read back at check time, and the change is seen.
        write(&disk, &data, 2, 16, 16).await;
        write(&disk, &data, 2, 0, 16).await;
        scribble(dir.path(), 90);
        assert!(!disk.piece_complete(2).await.unwrap());
        // A block rewriting hashed bytes drops the in-memory hash: all is read back.
        write(&disk, &data, 2, 0, 16).await;
        write(&disk, &data, 2, 16, 16).await;
        write(&disk, &data, 2, 0, 16).await;
        scribble(dir.path(), 90);
        assert!(!disk.piece_complete(2).await.unwrap());
        // No state at all (nothing written since the last check): read back whole.
        write(&disk, &data, 2, 16, 16).await;
        assert!(disk.piece_complete(2).await.unwrap());
        assert!(disk.piece_complete(2).await.unwrap());
    }

    #[tokio::test]
    async fn blocks_outside_their_piece_are_refused_before_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _) = start(dir.path());
        let out =
            |piece, begin, len, piece_len| BlockError::OutOfPiece { piece, begin, len, piece_len };
        fn block<T>(r: Result<T, StorageError>) -> BlockError {
            match r {
                Err(StorageError::Block(b)) => b,
                Err(other) => panic!("not a block error: {other}"),
                Ok(_) => panic!("accepted"),
            }
        }
        assert_eq!(
            block(disk.write_block(2, 30, Bytes::from_static(b"abc")).await),
            out(2, 30, 3, 32)
        );
        assert_eq!(block(disk.write_block(0, 0, Bytes::new()).await), out(0, 0, 0, 64));
        assert_eq!(block(disk.read_block(0, 64, 1).await), out(0, 64, 1, 64));
        assert_eq!(
            block(disk.read_block(3, 0, 1).await),
            BlockError::NoSuchPiece { piece: 3, pieces: 3 }
        );
        assert_eq!(
            block(disk.piece_complete(u32::MAX).await),
            BlockError::NoSuchPiece { piece: u32::MAX, pieces: 3 }
        );
        assert_eq!(disk.read_block(2, 0, 32).await.unwrap(), vec![0; 32]);
    }

    #[tokio::test]
    async fn queued_writes_finish_after_the_last_handle_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, data) = start(dir.path());
        let mut acks = Vec::new();
        for begin in [0, 16, 32, 48] {
            let bytes = Bytes::from(block_of(&data, disk.layout(), 0, begin, 16));
            acks.push(disk.write_block(0, begin, bytes).await.unwrap());
        }
        let copy = disk.clone();
        drop(disk);
        drop(copy);
        for ack in acks {
            ack.await.unwrap();
        }
        assert_eq!(std::fs::read(dir.path().join("t/a")).unwrap(), data[..50]);
    }
}
