//! A torrent's files on disk: created under one download directory, read and written with
//! positional I/O (`pread`/`pwrite`, no shared seek position), pieces checked by SHA-1.
//! Synchronous: it runs on the disk thread ([`super::disk`]), never on the network path.
//!
//! Symlinks are never followed below the download directory. Every directory on a file's path is
//! checked with `lstat` (and created when missing), and the file itself is opened with
//! `O_NOFOLLOW`, so neither a torrent nor a symlink already sitting in the directory can make us
//! write elsewhere. The download directory itself may be reached through symlinks: it is the
//! operator's choice. What this does not stop is another local user swapping a checked directory
//! for a symlink between the check and the open (doing that needs `openat` on every component);
//! the download directory should not be writable by others.
//!
//! Existing files are kept, for resume: a file shorter than the torrent says is extended, one of
//! the right size is used as it is, and one that is longer is refused
//! ([`StorageError::LongerThanTorrent`]) instead of being truncated, since its extra bytes are
//! someone's data that this torrent does not describe.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use pbts_proto::peer_wire::Bitfield;
use sha1::{Digest, Sha1};

use super::layout::{BlockError, Layout};

/// Most files held open at once: a torrent of thousands of files must not run the process out
/// of file descriptors (the soft limit is often 1024). Files beyond this are closed first in,
/// first out and reopened (with the same checks) when needed again.
pub const MAX_OPEN_FILES: usize = 128;

/// Bytes read at a time when hashing a piece from disk: a piece may be up to 512 MiB, and is
/// never held in memory whole.
const HASH_CHUNK: usize = 256 * 1024;

/// How files are pre-allocated when they are created or extended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Allocation {
    /// Set the file's length only: no blocks are reserved, holes fill as pieces arrive. Fast,
    /// but the disk can run out mid-download, and files fragment.
    #[default]
    Sparse,
    /// Reserve every block up front (`posix_fallocate` on Linux), so a full disk shows at
    /// start-up and files are laid out contiguously. Where the file system cannot (tmpfs on old
    /// kernels, non-Linux systems) this falls back to [`Allocation::Sparse`].
    Full,
}

/// A storage failure: which file, and what happened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call on a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A symbolic link where a directory or file of the torrent should be: refused, so that
    /// nothing is written outside the download directory.
    #[error("{} is a symbolic link; refusing to follow it", path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a directory where the torrent needs one.
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a regular file (a directory, FIFO, device) where the torrent has a
    /// file.
    #[error("{} exists and is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// An existing file is longer than the torrent says; it is left alone rather than
    /// truncated. Move it away, or point the download elsewhere.
    #[error("{} holds {have} bytes but the torrent says {want}; refusing to truncate it", path.display())]
    LongerThanTorrent {
        /// The file.
        path: PathBuf,
        /// Its length on disk.
        have: u64,
        /// Its length in the torrent.
        want: u64,
    },
    /// A block outside its piece, or a piece that does not exist: the caller's (or its peer's)
    /// mistake, and nothing was read or written.
    #[error("{0}")]
    Block(#[from] BlockError),
    /// The disk thread has stopped (it panicked, or could not be started).
    #[error("the disk thread has stopped")]
    Stopped,
}

/// A torrent's files under a download directory.
#[derive(Debug)]
pub struct Storage {
    layout: Layout,
    root: PathBuf,
    /// Bytes of each file that were on disk when it was opened (0 for a file we created), up to
    /// its length in the torrent: what [`Storage::check_existing`] may hash.
    found: Vec<u64>,
    /// Open handles by file index, at most [`MAX_OPEN_FILES`] of them.
    handles: Vec<Option<File>>,
    /// Indices of the open handles, oldest first.
    open_order: VecDeque<usize>,
}

impl Storage {
    /// Creates the torrent's directories and files under `root` (which is created if missing),
    /// keeping files that already exist, and pre-allocates them.
    ///
    /// # Errors
    /// [`StorageError`]: a symlink, a non-directory or non-file in the way, an existing file
    /// longer than the torrent says, or an I/O failure, naming the path.
    pub fn open(
        layout: Layout,
        root: impl Into<PathBuf>,
        allocation: Allocation,
    ) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| io_error(&root, source))?;
        let mut found = Vec::with_capacity(layout.files().len());
        for file in layout.files() {
            let path = root.join(&file.path);
            prepare_dirs(&root, &file.path, DirMode::Create)?;
            let on_disk = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(StorageError::Symlink { path });
                }
                Ok(meta) if !meta.file_type().is_file() => {
                    return Err(StorageError::NotAFile { path });
                }
                Ok(meta) if meta.len() > file.length => {
                    return Err(StorageError::LongerThanTorrent {
                        path,
                        have: meta.len(),
                        want: file.length,
                    });
                }
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(source) => return Err(io_error(&path, source)),
            };
            let handle = open_no_follow(&path, true)?;
            allocate(&handle, &path, on_disk, file.length, allocation)?;
            found.push(on_disk);
        }
        let handles = layout.files().iter().map(|_| None).collect();
        Ok(Self { layout, root, found, handles, open_order: VecDeque::new() })
    }

    /// The torrent's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The download directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads `len` bytes at `begin` in piece `piece`.
    ///
    /// # Errors
    /// [`StorageError::Block`] for a block outside its piece; I/O errors naming the file.
    pub fn read_block(
        &mut self,
        piece: u32,
        begin: u32,
        len: u32,
    ) -> Result<Vec<u8>, StorageError> {
        self.layout.check_block(piece, begin, u64::from(len))?;
        let mut buf = vec![0; len as usize];
        self.read_into(piece, begin, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` from `begin` in piece `piece`.
    ///
    /// # Errors
    /// [`StorageError::Block`] for a range outside the piece (or an empty `buf`); I/O errors
    /// naming the file.
    pub fn read_into(
        &mut self,
        piece: u32,
        begin: u32,
        buf: &mut [u8],
    ) -> Result<(), StorageError> {
        let len = buffer_block(&self.layout, piece, begin, buf.len())?;
        let mut at = 0;
        for span in self.layout.spans(piece, begin, len)? {
            let out = &mut buf[at..at + span.len];
            let file = self.handle(span.file)?;
            file.read_exact_at(out, span.offset).map_err(|e| self.file_error(span.file, e))?;
            at += span.len;
        }
        Ok(())
    }

    /// Writes `data` at `begin` in piece `piece`.
    ///
    /// # Errors
    /// [`StorageError::Block`] for a block outside its piece (nothing is written); I/O errors
    /// naming the file.
    pub fn write_block(&mut self, piece: u32, begin: u32, data: &[u8]) -> Result<(), StorageError> {
        let len = buffer_block(&self.layout, piece, begin, data.len())?;
        let mut at = 0;
        for span in self.layout.spans(piece, begin, len)? {
            let file = self.handle(span.file)?;
            file.write_all_at(&data[at..at + span.len], span.offset)
                .map_err(|e| self.file_error(span.file, e))?;
            at += span.len;
        }
        Ok(())
    }

    /// Feeds the bytes of piece `piece` from `from` to its end into `hasher`, reading them from
    /// disk a chunk at a time.
    ///
    /// # Errors
    /// [`StorageError::Block`] for a piece that does not exist; I/O errors naming the file.
    pub fn hash_from(
        &mut self,
        piece: u32,
        from: u32,
        hasher: &mut Sha1,
    ) -> Result<(), StorageError> {
        let piece_len = self.piece_len(piece)?;
        let mut chunk = vec![0; HASH_CHUNK.min(piece_len.saturating_sub(from) as usize)];
        let mut at = from;
        while at < piece_len {
            let n = (piece_len - at).min(HASH_CHUNK as u32) as usize;
            self.read_into(piece, at, &mut chunk[..n])?;
            hasher.update(&chunk[..n]);
            at += n as u32;
        }
        Ok(())
    }

    /// Reads piece `piece` and compares its SHA-1 with the torrent's.
    ///
    /// # Errors
    /// [`StorageError::Block`] for a piece that does not exist; I/O errors naming the file.
    pub fn verify_piece(&mut self, piece: u32) -> Result<bool, StorageError> {
        let mut hasher = Sha1::new();
        self.hash_from(piece, 0, &mut hasher)?;
        Ok(self.hash_matches(piece, hasher))
    }

    /// Whether a finished hash is piece `piece`'s (false for a piece that does not exist).
    pub fn hash_matches(&self, piece: u32, hasher: Sha1) -> bool {
        self.layout.piece_hash(piece).is_some_and(|want| hasher.finalize().as_slice() == want)
    }

    /// The pieces already on disk, for resume: hashes every piece whose bytes were all in the
    /// files when [`Storage::open`] found them (a file it created, or the part it extended,
    /// holds nothing yet, so pieces touching them are not had and not read). `progress` gets
    /// (pieces hashed, pieces to hash) after each one.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn check_existing(
        &mut self,
        mut progress: impl FnMut(u32, u32),
    ) -> Result<Bitfield, StorageError> {
        let count = self.layout.piece_count();
        let mut candidates = Vec::new();
        for piece in 0..count {
            let len = self.piece_len(piece)?;
            let spans = self.layout.spans(piece, 0, len)?;
            if spans.iter().all(|s| s.offset + s.len as u64 <= self.found[s.file]) {
                candidates.push(piece);
            }
        }
        let total = u32::try_from(candidates.len()).expect("at most piece_count, a u32");
        let mut have = Bitfield::new(count);
        for (done, piece) in (1..).zip(candidates) {
            if self.verify_piece(piece)? {
                have.set(piece);
            }
            progress(done, total);
        }
        Ok(have)
    }

    /// Makes every write so far durable (`fdatasync` of each open file).
    ///
    /// # Errors
    /// The first file that failed, named.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        for (i, handle) in self.handles.iter().enumerate() {
            if let Some(file) = handle {
                file.sync_data().map_err(|e| self.file_error(i, e))?;
            }
        }
        Ok(())
    }

    fn piece_len(&self, piece: u32) -> Result<u32, BlockError> {
        self.layout
            .piece_len(piece)
            .ok_or(BlockError::NoSuchPiece { piece, pieces: self.layout.piece_count() })
    }

    /// The open handle of file `index`, opening it (and closing the oldest) if needed.
    fn handle(&mut self, index: usize) -> Result<&File, StorageError> {
        if self.handles[index].is_none() {
            if self.open_order.len() >= MAX_OPEN_FILES
                && let Some(oldest) = self.open_order.pop_front()
            {
                self.handles[oldest] = None;
            }
            let relative = &self.layout.files()[index].path;
            prepare_dirs(&self.root, relative, DirMode::Check)?;
            let file = open_no_follow(&self.root.join(relative), false)?;
            self.handles[index] = Some(file);
            self.open_order.push_back(index);
        }
        Ok(self.handles[index].as_ref().expect("opened above if it was not open"))
    }

    fn file_error(&self, index: usize, source: io::Error) -> StorageError {
        io_error(&self.root.join(&self.layout.files()[index].path), source)
    }
}

/// Checks a block given as a buffer, and returns its length as a `u32`.
fn buffer_block(layout: &Layout, piece: u32, begin: u32, len: usize) -> Result<u32, BlockError> {
    layout.check_block(piece, begin, len as u64)?;
    Ok(u32::try_from(len).expect("inside a piece, whose length is a u32"))
}

fn io_error(path: &Path, source: io::Error) -> StorageError {
    StorageError::Io { path: path.to_owned(), source }
}

/// What [`prepare_dirs`] does with a missing directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirMode {
    /// Create it.
    Create,
    /// Fail: the file is not there.
    Check,
}

/// Checks (and creates) each directory between `root` and the file at `relative`, refusing
/// symlinks and non-directories.
fn prepare_dirs(root: &Path, relative: &Path, mode: DirMode) -> Result<(), StorageError> {
    let mut dir = root.to_owned();
    let Some(parent) = relative.parent() else { return Ok(()) };
    for part in parent.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StorageError::Symlink { path: dir });
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(StorageError::NotADirectory { path: dir }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode == DirMode::Create => {
                std::fs::create_dir(&dir).map_err(|source| io_error(&dir, source))?;
            }
            Err(source) => return Err(io_error(&dir, source)),
        }
    }
    Ok(())
}

/// Opens a file for reading and writing without following a symlink at its own name, and
/// checks that it is a regular file (opening a FIFO or device read-write does not block, so the
/// check can come after).
fn open_no_follow(path: &Path, create: bool) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => StorageError::Symlink { path: path.to_owned() },
            _ => io_error(path, source),
        })?;
    let meta = file.metadata().map_err(|source| io_error(path, source))?;
    if !meta.is_file() {
        return Err(StorageError::NotAFile { path: path.to_owned() });
    }
    Ok(file)
}

/// Grows a file from `have` to `want` bytes as `allocation` says.
fn allocate(
    file: &File,
    path: &Path,
    have: u64,
    want: u64,
    allocation: Allocation,
) -> Result<(), StorageError> {
    if allocation == Allocation::Full && want > 0 && reserve(file, path, want)? {
        return Ok(());
    }
    if have < want {
        file.set_len(want).map_err(|source| io_error(path, source))?;
    }
    Ok(())
}

/// Reserves `len` bytes of blocks for `file` (growing it to `len` if shorter); false where the
/// file system or system cannot, so the caller falls back to a sparse length.
#[cfg(target_os = "linux")]
fn reserve(file: &File, path: &Path, len: u64) -> Result<bool, StorageError> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else { return Ok(false) };
    // SAFETY: `file` is an open descriptor for the whole call; posix_fallocate reads no memory
    // of ours and returns an error number instead of setting errno.
    let err = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match err {
        0 => Ok(true),
        // The file system does not support it (EOPNOTSUPP: tmpfs before Linux 3.5, some FUSE
        // and network file systems; EINVAL from some of them too).
        libc::EOPNOTSUPP | libc::EINVAL => Ok(false),
        err => Err(io_error(path, io::Error::from_raw_os_error(err))),
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _path: &Path, _len: u64) -> Result<bool, StorageError> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::super::testing::{FILES, block_of, shuffled_blocks, torrent, torrent_of};
    use super::*;

    /// The files' bytes on disk, concatenated in torrent order.
    fn stream_on_disk(root: &Path) -> Vec<u8> {
        FILES.iter().flat_map(|(path, _)| std::fs::read(root.join(path)).unwrap()).collect()
    }

    #[test]
    fn blocks_in_any_order_make_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, data) = torrent();
        let mut storage = Storage::open(layout.clone(), dir.path(), Allocation::Sparse).unwrap();
        // Created at full length, zero-filled; the empty file exists.
        assert_eq!(stream_on_disk(dir.path()), vec![0; data.len()]);
        assert_eq!(std::fs::metadata(dir.path().join("t/empty")).unwrap().len(), 0);
        assert!(!storage.verify_piece(0).unwrap());
        for (piece, begin, len) in shuffled_blocks(&layout, 1) {
            storage
                .write_block(piece, begin, &block_of(&data, &layout, piece, begin, len))
                .unwrap();
        }
        assert_eq!(stream_on_disk(dir.path()), data);
        for piece in 0..3 {
            assert!(storage.verify_piece(piece).unwrap(), "piece {piece}");
        }
        // A read across a, sub/b and c.
        assert_eq!(storage.read_block(0, 40, 24).unwrap(), data[40..64]);
        assert_eq!(storage.read_block(2, 16, 16).unwrap(), data[144..160]);
    }

    #[test]
    fn reads_and_writes_outside_a_piece_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, _) = torrent();
        let mut storage = Storage::open(layout, dir.path(), Allocation::Sparse).unwrap();
        let block = |e: StorageError| match e {
            StorageError::Block(b) => b,
            other => panic!("not a block error: {other}"),
        };
        let out =
            |piece, begin, len, piece_len| BlockError::OutOfPiece { piece, begin, len, piece_len };
        assert_eq!(block(storage.read_block(2, 20, 13).unwrap_err()), out(2, 20, 13, 32));
        assert_eq!(block(storage.read_block(0, 0, 0).unwrap_err()), out(0, 0, 0, 64));
        assert_eq!(
            block(storage.read_block(3, 0, 1).unwrap_err()),
            BlockError::NoSuchPiece { piece: 3, pieces: 3 }
        );
        assert_eq!(block(storage.write_block(1, 60, &[1; 5]).unwrap_err()), out(1, 60, 5, 64));
        assert_eq!(
            block(storage.write_block(0, u32::MAX, &[1]).unwrap_err()),
            out(0, u32::MAX, 1, 64)
        );
        assert_eq!(
            block(storage.verify_piece(9).unwrap_err()),
            BlockError::NoSuchPiece { piece: 9, pieces: 3 }
        );
        // Nothing was written by the refused block.
        assert_eq!(storage.read_block(1, 0, 64).unwrap(), vec![0; 64]);
    }

    #[test]
    fn resume_finds_exactly_the_pieces_written() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, data) = torrent_of(&[("t/a", 100), ("t/b", 60), ("t/c", 160)], 32);
        let layout = Layout::from_metainfo(&meta).unwrap();
        let written = [0u32, 3, 4, 9];
        {
            let mut storage = Storage::open(layout.clone(), dir.path(), Allocation::Full).unwrap();
            for &piece in &written {
                let bytes = block_of(&data, &layout, piece, 0, 32);
                storage.write_block(piece, 0, &bytes).unwrap();
            }
        }
        let mut storage = Storage::open(layout.clone(), dir.path(), Allocation::Full).unwrap();
        let mut calls = Vec::new();
        let have = storage.check_existing(|done, total| calls.push((done, total))).unwrap();
        assert_eq!((0..10).filter(|&p| have.has(p)).collect::<Vec<_>>(), written);
        assert_eq!(calls, (1..=10).map(|done| (done, 10)).collect::<Vec<_>>());

        // t/b (bytes 100..160: pieces 3 and 4) deleted, t/c (from byte 160) cut to 40 bytes:
        // only pieces wholly inside what open found are hashed.
        std::fs::remove_file(dir.path().join("t/b")).unwrap();
        let c = OpenOptions::new().write(true).open(dir.path().join("t/c")).unwrap();
        c.set_len(40).unwrap();
        let mut storage = Storage::open(layout, dir.path(), Allocation::Sparse).unwrap();
        let mut calls = Vec::new();
        let have = storage.check_existing(|done, total| calls.push((done, total))).unwrap();
        // Hashed: 0, 1, 2 (all in t/a) and 5 (t/c's first 32 bytes).
        assert_eq!(calls, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
        assert_eq!((0..10).filter(|&p| have.has(p)).collect::<Vec<_>>(), vec![0]);
        // Both files are back at their full length.
        assert_eq!(std::fs::metadata(dir.path().join("t/b")).unwrap().len(), 60);
        assert_eq!(std::fs::metadata(dir.path().join("t/c")).unwrap().len(), 160);
    }

    #[test]
    fn a_longer_existing_file_is_refused_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, _) = torrent();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/a"), [7; 51]).unwrap();
        match Storage::open(layout, dir.path(), Allocation::Sparse).unwrap_err() {
            StorageError::LongerThanTorrent { path, have: 51, want: 50 } => {
                assert_eq!(path, dir.path().join("t/a"));
            }
            other => panic!("unexpected: {other}"),
        }
        assert_eq!(std::fs::read(dir.path().join("t/a")).unwrap(), [7; 51]);
    }

    #[test]
    fn full_allocation_reserves_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, _) = torrent_of(&[("big", 1 << 20)], 1 << 16);
        let layout = Layout::from_metainfo(&meta).unwrap();
        Storage::open(layout.clone(), dir.path().join("full"), Allocation::Full).unwrap();
        Storage::open(layout, dir.path().join("sparse"), Allocation::Sparse).unwrap();
        let full = std::fs::metadata(dir.path().join("full/big")).unwrap();
        let sparse = std::fs::metadata(dir.path().join("sparse/big")).unwrap();
        assert_eq!((full.len(), sparse.len()), (1 << 20, 1 << 20));
        // On file systems with fallocate (ext4, xfs, btrfs, tmpfs) the blocks are reserved.
        assert!(full.blocks() * 512 >= 1 << 20, "{} blocks", full.blocks());
        assert!(sparse.blocks() < full.blocks());
    }

    #[test]
    fn symlinks_under_the_download_directory_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let (layout, data) = torrent();

        // A symlink where a file goes.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        symlink(&victim, dir.path().join("t/a")).unwrap();
        assert!(matches!(
            Storage::open(layout.clone(), dir.path(), Allocation::Full),
            Err(StorageError::Symlink { path }) if path == dir.path().join("t/a")
        ));

        // A symlink where a directory goes: nothing is created in its target.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        symlink(outside.path(), dir.path().join("t/sub")).unwrap();
        assert!(matches!(
            Storage::open(layout.clone(), dir.path(), Allocation::Full),
            Err(StorageError::Symlink { path }) if path == dir.path().join("t/sub")
        ));
        // The top directory of the torrent too.
        let dir = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("t")).unwrap();
        assert!(matches!(
            Storage::open(layout.clone(), dir.path(), Allocation::Full),
            Err(StorageError::Symlink { path }) if path == dir.path().join("t")
        ));

        // A file swapped for a symlink after open: the reopen refuses it (O_NOFOLLOW).
        let dir = tempfile::tempdir().unwrap();
        let mut storage = Storage::open(layout.clone(), dir.path(), Allocation::Sparse).unwrap();
        std::fs::remove_file(dir.path().join("t/a")).unwrap();
        symlink(&victim, dir.path().join("t/a")).unwrap();
        let block = block_of(&data, &layout, 0, 0, 16);
        assert!(matches!(
            storage.write_block(0, 0, &block),
            Err(StorageError::Symlink { path }) if path == dir.path().join("t/a")
        ));

        let mut left: Vec<_> =
            std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, vec!["victim"]);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn things_in_the_way_are_refused() {
        let (layout, _) = torrent();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t/a")).unwrap();
        assert!(matches!(
            Storage::open(layout.clone(), dir.path(), Allocation::Sparse),
            Err(StorageError::NotAFile { path }) if path == dir.path().join("t/a")
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/sub"), b"").unwrap();
        assert!(matches!(
            Storage::open(layout, dir.path(), Allocation::Sparse),
            Err(StorageError::NotADirectory { path }) if path == dir.path().join("t/sub")
        ));
    }

    #[test]
    fn more_files_than_open_handles() {
        let names: Vec<String> = (0..MAX_OPEN_FILES + 10).map(|i| format!("t/f{i}")).collect();
        let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 3)).collect();
        let (meta, data) = torrent_of(&files, 16);
        let layout = Layout::from_metainfo(&meta).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut storage = Storage::open(layout.clone(), dir.path(), Allocation::Sparse).unwrap();
        for piece in 0..layout.piece_count() {
            let len = layout.piece_len(piece).unwrap();
            storage.write_block(piece, 0, &block_of(&data, &layout, piece, 0, len)).unwrap();
        }
        assert!(storage.open_order.len() <= MAX_OPEN_FILES);
        for piece in 0..layout.piece_count() {
            assert!(storage.verify_piece(piece).unwrap(), "piece {piece}");
        }
    }
}
