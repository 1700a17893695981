//! Where a torrent's bytes live: its files laid end to end as one byte stream, cut into pieces.
//! Pure: no file is touched here.
//!
//! ```text
//!  stream   |0 ........................................................ total_size|
//!  files    |  a (5)  |b (0)|        c (9)          |  d (6)  |
//!  pieces   |   piece 0 (8)    |    piece 1 (8)     | piece 2 (4)|   the last one is shorter
//! ```
//!
//! Piece 0 above covers all of `a` and the start of `c`; the empty file `b` covers nothing.

use std::path::PathBuf;

use pbts_proto::metainfo::{MAX_PIECE_LENGTH, Metainfo, PathError};

/// One file of the torrent, checked and placed in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutFile {
    /// Path under the download directory: plain names only (see
    /// [`FileEntry::relative_path`](pbts_proto::metainfo::FileEntry::relative_path)), so it
    /// cannot leave the directory by itself.
    pub path: PathBuf,
    /// Bytes.
    pub length: u64,
    /// Where the file's first byte sits in the torrent's byte stream.
    pub offset: u64,
}

/// The part of one file that a range of a piece covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Index into [`Layout::files`].
    pub file: usize,
    /// Offset in that file.
    pub offset: u64,
    /// Bytes (never zero).
    pub len: usize,
}

/// Why a torrent's layout cannot be stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A v2-only torrent: it has no v1 piece hashes, so its pieces are not laid out over the
    /// files as one stream.
    #[error("the torrent has no v1 piece hashes (a v2-only torrent)")]
    NotV1,
    /// A file path that is not safe to create.
    #[error("file {file}: {error}")]
    Path {
        /// The file's index in the torrent.
        file: usize,
        /// What is wrong with its path.
        error: PathError,
    },
    /// Two files with the same path: one would overwrite the other.
    #[error("two files have the path {0:?}")]
    DuplicatePath(PathBuf),
    /// A file's path is a directory of another file's path (`a` and `a/b`).
    #[error("{file:?} is a file, but {inner:?} needs it to be a directory")]
    FileIsDirectory {
        /// The file.
        file: PathBuf,
        /// The file that would live inside it.
        inner: PathBuf,
    },
    /// The files' lengths do not add up to the torrent's size.
    #[error("the files hold {files} bytes but the torrent's size is {total}")]
    Size {
        /// Sum of the file lengths (saturating).
        files: u64,
        /// The torrent's `total_size`.
        total: u64,
    },
    /// The piece length is zero or above [`MAX_PIECE_LENGTH`].
    #[error("piece length must be in 1..={MAX_PIECE_LENGTH}, got {0}")]
    PieceLength(u64),
    /// More pieces than a 32-bit piece index can name.
    #[error("the torrent would have {0} pieces (at most 2^32 - 1)")]
    TooManyPieces(u64),
    /// `pieces` does not hold one 20-byte SHA-1 per piece.
    #[error("the torrent has {got} bytes of piece hashes for {pieces} pieces (20 bytes each)")]
    PieceHashes {
        /// Bytes of hashes.
        got: usize,
        /// Pieces the size and piece length make.
        pieces: u32,
    },
}

/// A block request that does not fit the torrent: the caller asked for bytes that are not there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// No such piece.
    #[error("piece {piece} does not exist (the torrent has {pieces})")]
    NoSuchPiece {
        /// The piece asked for.
        piece: u32,
        /// Pieces in the torrent.
        pieces: u32,
    },
    /// The block is empty or runs past the end of its piece.
    #[error("block {begin}+{len} is not inside piece {piece} of {piece_len} bytes")]
    OutOfPiece {
        /// The piece.
        piece: u32,
        /// Offset of the block in the piece.
        begin: u32,
        /// Bytes asked for.
        len: u64,
        /// Bytes in the piece.
        piece_len: u32,
    },
}

/// A torrent's files and piece geometry, checked: safe and distinct paths, sizes that add up,
/// one hash per piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    files: Vec<LayoutFile>,
    piece_length: u32,
    total_size: u64,
    piece_count: u32,
    hashes: Vec<[u8; 20]>,
}

impl Layout {
    /// Lays out a v1 or hybrid torrent.
    ///
    /// # Errors
    /// [`LayoutError`]: a v2-only torrent, an unsafe, duplicate or nested file path, sizes that
    /// do not add up, or a piece hash count that does not match the size.
    pub fn from_metainfo(meta: &Metainfo) -> Result<Self, LayoutError> {
        let pieces = meta.pieces.as_deref().ok_or(LayoutError::NotV1)?;
        if !(1..=MAX_PIECE_LENGTH).contains(&meta.piece_length) {
            return Err(LayoutError::PieceLength(meta.piece_length));
        }
        let piece_length =
            u32::try_from(meta.piece_length).expect("MAX_PIECE_LENGTH (2^29) fits in u32");
        let count = meta.total_size.div_ceil(meta.piece_length);
        let piece_count = u32::try_from(count).map_err(|_| LayoutError::TooManyPieces(count))?;
        if pieces.len() % 20 != 0 || pieces.len() / 20 != piece_count as usize {
            return Err(LayoutError::PieceHashes { got: pieces.len(), pieces: piece_count });
        }
        let mut files = Vec::with_capacity(meta.files.len());
        let mut segments = Vec::with_capacity(meta.files.len());
        let mut offset = 0u64;
        for (index, entry) in meta.files.iter().enumerate() {
            let path =
                entry.relative_path().map_err(|error| LayoutError::Path { file: index, error })?;
            files.push(LayoutFile { path: path.iter().collect(), length: entry.length, offset });
            segments.push(path);
            offset = offset.saturating_add(entry.length);
        }
        if offset != meta.total_size {
            return Err(LayoutError::Size { files: offset, total: meta.total_size });
        }
        check_distinct(segments)?;
        Ok(Self {
            files,
            piece_length,
            total_size: meta.total_size,
            piece_count,
            hashes: pieces
                .chunks_exact(20)
                .map(|h| h.try_into().expect("chunks_exact(20) yields 20-byte chunks"))
                .collect(),
        })
    }

    /// The files, in stream order.
    pub fn files(&self) -> &[LayoutFile] {
        &self.files
    }

    /// Bytes per piece (all but the last).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Pieces in the torrent.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Bytes in piece `piece` (the last piece holds what is left); `None` past the end.
    pub fn piece_len(&self, piece: u32) -> Option<u32> {
        if piece >= self.piece_count {
            return None;
        }
        let start = u64::from(piece) * u64::from(self.piece_length);
        let len = (self.total_size - start).min(u64::from(self.piece_length));
        Some(u32::try_from(len).expect("at most piece_length, a u32"))
    }

    /// The SHA-1 piece `piece` must have; `None` past the end.
    pub fn piece_hash(&self, piece: u32) -> Option<&[u8; 20]> {
        self.hashes.get(piece as usize)
    }

    /// Checks that `len` bytes at `begin` lie inside piece `piece` (and `len` is not zero).
    ///
    /// # Errors
    /// [`BlockError`] when they do not.
    pub fn check_block(&self, piece: u32, begin: u32, len: u64) -> Result<(), BlockError> {
        let piece_len = self
            .piece_len(piece)
            .ok_or(BlockError::NoSuchPiece { piece, pieces: self.piece_count })?;
        if len == 0 || u64::from(begin) + len > u64::from(piece_len) {
            return Err(BlockError::OutOfPiece { piece, begin, len, piece_len });
        }
        Ok(())
    }

    /// The file spans that `len` bytes at `begin` in piece `piece` cover, in stream order.
    /// Empty files cover nothing and never appear.
    ///
    /// # Errors
    /// [`BlockError`] when the bytes are not inside the piece.
    pub fn spans(&self, piece: u32, begin: u32, len: u32) -> Result<Vec<Span>, BlockError> {
        self.check_block(piece, begin, u64::from(len))?;
        let mut start = u64::from(piece) * u64::from(self.piece_length) + u64::from(begin);
        let end = start + u64::from(len);
        // The first file that ends after `start`: files are sorted by offset, and an empty file
        // ends where it starts, so it is skipped here and below.
        let first = self.files.partition_point(|f| f.offset + f.length <= start);
        let mut spans = Vec::new();
        for (index, file) in self.files.iter().enumerate().skip(first) {
            if start >= end {
                break;
            }
            let file_end = file.offset + file.length;
            if file_end <= start {
                continue;
            }
            let take = file_end.min(end) - start;
            spans.push(Span {
                file: index,
                offset: start - file.offset,
                len: usize::try_from(take).expect("at most a u32 block length"),
            });
            start += take;
        }
        Ok(spans)
    }
}

/// Refuses two files at the same path, or a file at a path another file needs as a directory.
fn check_distinct(mut paths: Vec<Vec<&str>>) -> Result<(), LayoutError> {
    // Sorted segment-wise, every path that starts with `p` directly follows `p`, so comparing
    // neighbours finds both duplicates and nesting.
    paths.sort_unstable();
    for pair in paths.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a == b {
            return Err(LayoutError::DuplicatePath(a.iter().collect()));
        }
        if b.starts_with(a) {
            return Err(LayoutError::FileIsDirectory {
                file: a.iter().collect(),
                inner: b.iter().collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbts_proto::metainfo::FileEntry;

    /// A torrent of files `(path, length)` in pieces of `piece_length`, with made-up hashes
    /// (piece `i`'s hash is twenty bytes of `i`).
    fn meta(files: &[(&str, u64)], piece_length: u64) -> Metainfo {
        let total_size = files.iter().map(|f| f.1).sum::<u64>();
        let pieces = total_size.div_ceil(piece_length);
        Metainfo {
            v1: None,
            v2: None,
            name: Some("t".to_owned()),
            piece_length,
            total_size,
            pieces: Some((0..pieces).flat_map(|i| [i as u8; 20]).collect()),
            files: files
                .iter()
                .map(|(path, length)| FileEntry {
                    path: path.split('/').map(|s| s.as_bytes().to_vec()).collect(),
                    length: *length,
                })
                .collect(),
            trackers: Vec::new(),
            private: false,
        }
    }

    fn span(file: usize, offset: u64, len: usize) -> Span {
        Span { file, offset, len }
    }

    /// The picture in the module docs.
    fn pictured() -> Layout {
        Layout::from_metainfo(&meta(&[("t/a", 5), ("t/b", 0), ("t/c", 9), ("t/d", 6)], 8)).unwrap()
    }

    #[test]
    fn geometry_and_the_last_short_piece() {
        let l = pictured();
        assert_eq!((l.piece_count(), l.piece_length(), l.total_size()), (3, 8, 20));
        assert_eq!([0, 1, 2, 3].map(|p| l.piece_len(p)), [Some(8), Some(8), Some(4), None]);
        assert_eq!(l.piece_hash(2), Some(&[2; 20]));
        assert_eq!(l.piece_hash(3), None);
        assert_eq!(
            l.files().iter().map(|f| (f.path.to_str().unwrap(), f.offset)).collect::<Vec<_>>(),
            vec![("t/a", 0), ("t/b", 5), ("t/c", 5), ("t/d", 14)]
        );
        // An exact multiple: the last piece is full.
        let even = Layout::from_metainfo(&meta(&[("x", 16)], 8)).unwrap();
        assert_eq!((even.piece_count(), even.piece_len(1)), (2, Some(8)));
    }

    #[test]
    fn spans_skip_empty_files_and_cross_file_boundaries() {
        let l = pictured();
        // Piece 0: all of a, then c's first 3 bytes; empty b is not there.
        assert_eq!(l.spans(0, 0, 8), Ok(vec![span(0, 0, 5), span(2, 0, 3)]));
        // Piece 1: c's bytes 3..9, then d's first 2.
        assert_eq!(l.spans(1, 0, 8), Ok(vec![span(2, 3, 6), span(3, 0, 2)]));
        // The last, short piece: d's last 4 bytes.
        assert_eq!(l.spans(2, 0, 4), Ok(vec![span(3, 2, 4)]));
        // A block inside one file, and one starting exactly at a file boundary.
        assert_eq!(l.spans(1, 1, 2), Ok(vec![span(2, 4, 2)]));
        assert_eq!(l.spans(0, 5, 1), Ok(vec![span(2, 0, 1)]));
    }

    #[test]
    fn a_piece_spanning_three_files() {
        let l = Layout::from_metainfo(&meta(&[("a", 3), ("e", 0), ("b", 2), ("c", 5)], 8)).unwrap();
        assert_eq!(l.spans(0, 0, 8), Ok(vec![span(0, 0, 3), span(2, 0, 2), span(3, 0, 3)]));
        assert_eq!(l.spans(0, 2, 4), Ok(vec![span(0, 2, 1), span(2, 0, 2), span(3, 0, 1)]));
        assert_eq!(l.spans(1, 0, 2), Ok(vec![span(3, 3, 2)]));
    }

    #[test]
    fn blocks_outside_their_piece_are_errors() {
        let l = pictured();
        let out = |piece, begin, len, piece_len| {
            Err(BlockError::OutOfPiece { piece, begin, len, piece_len })
        };
        assert_eq!(l.spans(3, 0, 1), Err(BlockError::NoSuchPiece { piece: 3, pieces: 3 }));
        assert_eq!(
            l.spans(u32::MAX, 0, 1),
            Err(BlockError::NoSuchPiece { piece: u32::MAX, pieces: 3 })
        );
        assert_eq!(l.spans(2, 0, 5), out(2, 0, 5, 4));
        assert_eq!(l.spans(2, 4, 1), out(2, 4, 1, 4));
        assert_eq!(l.spans(0, 0, 0), out(0, 0, 0, 8));
        assert_eq!(l.spans(0, u32::MAX, u32::MAX), out(0, u32::MAX, u64::from(u32::MAX), 8));
        assert_eq!(
            l.check_block(0, 0, u64::MAX),
            Err(BlockError::OutOfPiece { piece: 0, begin: 0, len: u64::MAX, piece_len: 8 })
        );
    }

    #[test]
    fn only_empty_files() {
        let l = Layout::from_metainfo(&meta(&[("a", 0), ("b", 0)], 8)).unwrap();
        assert_eq!((l.piece_count(), l.piece_len(0)), (0, None));
        assert_eq!(l.spans(0, 0, 1), Err(BlockError::NoSuchPiece { piece: 0, pieces: 0 }));
    }

    #[test]
    fn hostile_layouts_are_refused() {
        let refused = |files: &[(&str, u64)]| Layout::from_metainfo(&meta(files, 8)).unwrap_err();
        assert_eq!(refused(&[("t/a", 1), ("t/a", 2)]), LayoutError::DuplicatePath("t/a".into()));
        assert_eq!(
            refused(&[("t/a/b", 1), ("t/c", 1), ("t/a", 2)]),
            LayoutError::FileIsDirectory { file: "t/a".into(), inner: "t/a/b".into() }
        );
        // Siblings that only share a prefix of their names are fine.
        assert!(Layout::from_metainfo(&meta(&[("t/a", 1), ("t/ab", 1), ("t/a.b", 1)], 8)).is_ok());
        assert_eq!(
            refused(&[("t/..", 1)]),
            LayoutError::Path {
                file: 0,
                error: PathError::Unsafe { index: 1, segment: "..".to_owned() }
            }
        );

        let mut v2_only = meta(&[("a", 1)], 8);
        v2_only.pieces = None;
        assert_eq!(Layout::from_metainfo(&v2_only), Err(LayoutError::NotV1));
        let mut short_hashes = meta(&[("a", 17)], 8);
        short_hashes.pieces = Some(vec![0; 40]);
        assert_eq!(
            Layout::from_metainfo(&short_hashes),
            Err(LayoutError::PieceHashes { got: 40, pieces: 3 })
        );
        let mut odd_hashes = meta(&[("a", 17)], 8);
        odd_hashes.pieces = Some(vec![0; 61]);
        assert_eq!(
            Layout::from_metainfo(&odd_hashes),
            Err(LayoutError::PieceHashes { got: 61, pieces: 3 })
        );
        let mut wrong_size = meta(&[("a", 17)], 8);
        wrong_size.total_size = 16;
        wrong_size.pieces = Some(vec![0; 40]);
        assert_eq!(
            Layout::from_metainfo(&wrong_size),
            Err(LayoutError::Size { files: 17, total: 16 })
        );
        let mut no_piece_length = meta(&[("a", 17)], 8);
        no_piece_length.piece_length = 0;
        assert_eq!(Layout::from_metainfo(&no_piece_length), Err(LayoutError::PieceLength(0)));
    }
}
