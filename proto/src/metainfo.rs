//! `.torrent` metainfo: the info-hashes (v1 SHA-1, v2 SHA-256) and the piece layout the
//! registry needs to credit receipts. Pure; hostile input gets a typed error.
//!
//! A hybrid torrent (BEP 52) has both hashes; clients announce the v1 hash or the v2 hash
//! truncated to 20 bytes, and both name the same torrent.

use crate::InfoHash;
use crate::bencode::{self, DecodeError, DecodeLimits, Value};
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Largest `.torrent` accepted, bytes.
pub const MAX_TORRENT_BYTES: usize = 8 << 20;

/// Largest piece length accepted, bytes (512 MiB; clients use 16 KiB to 16 MiB): a receipt's
/// credit is one piece, so the bound caps what one signature can move.
pub const MAX_PIECE_LENGTH: u64 = 1 << 29;

/// Largest torrent accepted, bytes (1 PiB).
pub const MAX_TOTAL_SIZE: u64 = 1 << 50;

/// Most pieces in a torrent: piece indices are `u32` on the wire.
pub const MAX_PIECES: u64 = 1 << 32;

/// What the registry keeps from a `.torrent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the info dictionary (v1 and hybrid torrents).
    pub v1: Option<InfoHash>,
    /// SHA-256 of the info dictionary (v2 and hybrid torrents).
    pub v2: Option<[u8; 32]>,
    /// `info.name`, if it is UTF-8.
    pub name: Option<String>,
    /// Bytes per piece.
    pub piece_length: u64,
    /// Bytes of all files.
    pub total_size: u64,
    /// The v1 piece hashes (SHA-1, 20 bytes each, one per piece): v1 and hybrid torrents.
    pub pieces: Option<Vec<u8>>,
    /// The files, in the order their bytes follow each other in the pieces (BEP 3): one file
    /// named `info.name` for a single-file torrent, or `info.files` under the directory
    /// `info.name`. Empty for a v2-only torrent (its `file tree` is not laid out as v1 pieces).
    pub files: Vec<FileEntry>,
    /// The trackers, by tier: `announce-list` (BEP 12) when present, else `announce` alone.
    /// URLs that are not UTF-8 are left out.
    pub trackers: Vec<Vec<String>>,
    /// `info.private` is 1 (BEP 27): only the torrent's trackers may be used to find peers.
    pub private: bool,
}

/// One file of a torrent: its path under the download directory, as raw segments (arbitrary
/// bytes from the torrent: check them with [`FileEntry::relative_path`] before they touch a
/// file system), and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path segments, the torrent's name first.
    pub path: Vec<Vec<u8>>,
    /// Bytes.
    pub length: u64,
}

/// Why a file path from a torrent is not safe to create.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// No segment at all.
    #[error("empty file path")]
    Empty,
    /// A segment that is not UTF-8.
    #[error("file path segment {0} is not UTF-8")]
    NotUtf8(usize),
    /// A segment that names no file of its own, or leaves the download directory: empty, `.`,
    /// `..`, or containing `/`, `\`, NUL or another control character.
    #[error("file path segment {index} ({segment:?}) is not a plain file name")]
    Unsafe {
        /// Its position.
        index: usize,
        /// The segment.
        segment: String,
    },
    /// Longer than 255 bytes (most file systems' limit).
    #[error("file path segment {0} is longer than 255 bytes")]
    TooLong(usize),
}

impl FileEntry {
    /// The path's segments as file names that cannot leave the download directory or name
    /// a device: each must be UTF-8, 1 to 255 bytes, not `.` or `..`, without `/`, `\`, NUL
    /// or control characters, and not end in `.` or a space (Windows drops those, so two
    /// files could become one).
    ///
    /// # Errors
    /// The first segment that is not such a name.
    pub fn relative_path(&self) -> Result<Vec<&str>, PathError> {
        if self.path.is_empty() {
            return Err(PathError::Empty);
        }
        self.path
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                let segment = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8(index))?;
                if segment.len() > 255 {
                    return Err(PathError::TooLong(index));
                }
                let unsafe_name = segment.is_empty()
                    || segment == "."
                    || segment == ".."
                    || segment.ends_with('.')
                    || segment.ends_with(' ')
                    || segment.chars().any(|c| c == '/' || c == '\\' || c.is_control());
                if unsafe_name {
                    return Err(PathError::Unsafe { index, segment: segment.to_owned() });
                }
                Ok(segment)
            })
            .collect()
    }
}

impl Metainfo {
    /// The 20-byte hashes clients announce with: v1, and v2 truncated.
    pub fn announce_hashes(&self) -> Vec<InfoHash> {
        let mut out = Vec::new();
        out.extend(self.v1);
        if let Some(v2) = self.v2 {
            out.extend(InfoHash::from_slice(&v2[..20]));
        }
        out
    }
}

/// Why a `.torrent` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// Larger than [`MAX_TORRENT_BYTES`].
    #[error("torrent file larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Not strict bencode.
    #[error("invalid bencode: {0}")]
    Bencode(DecodeError),
    /// No `info` dictionary.
    #[error("torrent has no info dictionary")]
    MissingInfo,
    /// A required field is absent or has the wrong type.
    #[error("torrent info field {0:?} is missing or invalid")]
    BadField(&'static str),
    /// Neither `pieces` (v1) nor `meta version` 2 (v2).
    #[error("torrent is neither BitTorrent v1 nor v2")]
    UnknownVersion,
    /// `piece length` or the size is outside what the registry accepts.
    #[error("{0}")]
    Layout(LayoutError),
    /// `pieces` does not hold one 20-byte hash per piece.
    #[error("torrent has {got} piece hashes for {expected} pieces")]
    PieceCount {
        /// Hashes given (`pieces` length / 20, rounded down).
        got: u64,
        /// Pieces the size and piece length make.
        expected: u64,
    },
}

/// A piece layout the registry refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Zero or above [`MAX_PIECE_LENGTH`].
    #[error("piece_length must be in 1..={MAX_PIECE_LENGTH}, got {0}")]
    PieceLength(u64),
    /// Above [`MAX_TOTAL_SIZE`].
    #[error("total_size must be at most {MAX_TOTAL_SIZE}, got {0}")]
    TotalSize(u64),
    /// More than [`MAX_PIECES`] pieces.
    #[error("the torrent would have {0} pieces (at most {MAX_PIECES}: piece indices are 32-bit)")]
    Pieces(u64),
}

/// Checks a piece layout (either part may be unknown).
///
/// # Errors
/// The first bound the layout breaks.
pub fn check_layout(piece_length: Option<u64>, total_size: Option<u64>) -> Result<(), LayoutError> {
    if let Some(len) = piece_length
        && !(1..=MAX_PIECE_LENGTH).contains(&len)
    {
        return Err(LayoutError::PieceLength(len));
    }
    if let Some(total) = total_size
        && total > MAX_TOTAL_SIZE
    {
        return Err(LayoutError::TotalSize(total));
    }
    if let (Some(len), Some(total)) = (piece_length, total_size) {
        let pieces = total.div_ceil(len);
        if pieces > MAX_PIECES {
            return Err(LayoutError::Pieces(pieces));
        }
    }
    Ok(())
}

fn positive(v: Option<&Value<'_>>, field: &'static str) -> Result<u64, MetainfoError> {
    v.and_then(Value::as_int)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(MetainfoError::BadField(field))
}

/// Sums the `length` of every file in a v2 `file tree`.
fn file_tree_size(tree: &Value<'_>, depth: usize) -> Result<u64, MetainfoError> {
    let entries = tree.as_dict().ok_or(MetainfoError::BadField("file tree"))?;
    let mut total = 0u64;
    for (key, value) in entries {
        let size = if key.is_empty() {
            positive(value.get(b"length"), "file tree length")?
        } else if depth < 64 {
            file_tree_size(value, depth + 1)?
        } else {
            return Err(MetainfoError::BadField("file tree"));
        };
        total = total.checked_add(size).ok_or(MetainfoError::BadField("file tree length"))?;
    }
    Ok(total)
}

/// Parses a `.torrent` file.
///
/// # Errors
/// A [`MetainfoError`] saying what is wrong.
pub fn parse_torrent(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
    if bytes.len() > MAX_TORRENT_BYTES {
        return Err(MetainfoError::TooLarge { max: MAX_TORRENT_BYTES });
    }
    let limits = DecodeLimits::default();
    let root = bencode::decode(bytes, &limits).map_err(MetainfoError::Bencode)?;
    let span = bencode::dict_value_span(bytes, b"info", &limits)
        .map_err(MetainfoError::Bencode)?
        .ok_or(MetainfoError::MissingInfo)?;
    let info =
        root.get(b"info").filter(|i| i.as_dict().is_some()).ok_or(MetainfoError::MissingInfo)?;
    let raw = &bytes[span];
    let piece_length = positive(info.get(b"piece length"), "piece length")?;
    if piece_length == 0 {
        return Err(MetainfoError::BadField("piece length"));
    }
    let pieces = info.get(b"pieces").and_then(Value::as_bytes);
    let is_v1 = pieces.is_some();
    let is_v2 = info.get(b"meta version").and_then(Value::as_int) == Some(2);
    if !is_v1 && !is_v2 {
        return Err(MetainfoError::UnknownVersion);
    }
    let name = info.get(b"name").and_then(Value::as_bytes);
    let mut layout = Vec::new();
    let total_size = if let Some(len) = info.get(b"length") {
        let length = positive(Some(len), "length")?;
        layout.push(FileEntry { path: name.into_iter().map(<[u8]>::to_vec).collect(), length });
        length
    } else if let Some(files) = info.get(b"files") {
        let files = files.as_list().ok_or(MetainfoError::BadField("files"))?;
        let mut total = 0u64;
        for f in files {
            let length = positive(f.get(b"length"), "files length")?;
            total = total.checked_add(length).ok_or(MetainfoError::BadField("files length"))?;
            // BEP 3's `path`; `path.utf-8` (a common extension) wins when present.
            let segments = f
                .get(b"path.utf-8")
                .or_else(|| f.get(b"path"))
                .and_then(Value::as_list)
                .ok_or(MetainfoError::BadField("files path"))?;
            let mut path: Vec<Vec<u8>> = name.into_iter().map(<[u8]>::to_vec).collect();
            for segment in segments {
                let segment = segment.as_bytes().ok_or(MetainfoError::BadField("files path"))?;
                path.push(segment.to_vec());
            }
            layout.push(FileEntry { path, length });
        }
        total
    } else if let Some(tree) = info.get(b"file tree") {
        file_tree_size(tree, 0)?
    } else {
        return Err(MetainfoError::BadField("length"));
    };
    check_layout(Some(piece_length), Some(total_size)).map_err(MetainfoError::Layout)?;
    if let Some(p) = pieces {
        let expected = total_size.div_ceil(piece_length);
        if p.len() % 20 != 0 || p.len() as u64 / 20 != expected {
            return Err(MetainfoError::PieceCount { got: p.len() as u64 / 20, expected });
        }
    }
    Ok(Metainfo {
        v1: is_v1.then(|| InfoHash(Sha1::digest(raw).into())),
        v2: is_v2.then(|| Sha256::digest(raw).into()),
        name: name.and_then(|n| std::str::from_utf8(n).ok()).map(str::to_owned),
        piece_length,
        total_size,
        pieces: pieces.map(<[u8]>::to_vec),
        files: layout,
        trackers: trackers(&root),
        private: info.get(b"private").and_then(Value::as_int) == Some(1),
    })
}

/// The tracker tiers of a torrent (see [`Metainfo::trackers`]).
fn trackers(root: &Value<'_>) -> Vec<Vec<String>> {
    let url = |v: &Value<'_>| {
        let text = v.as_bytes().and_then(|b| std::str::from_utf8(b).ok())?;
        (!text.is_empty()).then(|| text.to_owned())
    };
    let tiers: Vec<Vec<String>> = root
        .get(b"announce-list")
        .and_then(Value::as_list)
        .map(|tiers| {
            tiers
                .iter()
                .filter_map(Value::as_list)
                .map(|tier| tier.iter().filter_map(url).collect::<Vec<_>>())
                .filter(|tier| !tier.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !tiers.is_empty() {
        return tiers;
    }
    root.get(b"announce").and_then(url).map(|u| vec![vec![u]]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 000 bytes in 16 KiB pieces: 7 pieces, so 140 bytes of hashes.
    fn single(extra_info: &str) -> Vec<u8> {
        let pieces = "a".repeat(140);
        format!("d8:announce3:url4:infod6:lengthi100000e4:name1:x12:piece lengthi16384e6:pieces140:{pieces}{extra_info}ee").into_bytes()
    }

    #[test]
    fn v1_single_file() {
        let t = single("");
        let m = parse_torrent(&t).unwrap();
        let start = t.windows(6).position(|w| w == b"4:info").unwrap() + 6;
        let raw = &t[start..t.len() - 1];
        assert_eq!(m.v1, Some(InfoHash(Sha1::digest(raw).into())));
        assert_eq!((m.piece_length, m.total_size, m.v2), (16384, 100_000, None));
        assert_eq!(m.pieces.as_deref(), Some(&[b'a'; 140][..]));
        assert_eq!(m.name.as_deref(), Some("x"));
        assert_eq!(m.announce_hashes().len(), 1);
    }

    #[test]
    fn v2_file_tree_and_errors() {
        let v2 = b"d4:infod9:file treed1:ad0:d6:lengthi5eee1:bd1:cd0:d6:lengthi7eeeee12:meta versioni2e4:name1:y12:piece lengthi16384eee";
        let m = parse_torrent(v2).unwrap();
        assert_eq!((m.v1, m.total_size), (None, 12));
        assert!(m.v2.is_some());
        assert_eq!(m.announce_hashes(), vec![InfoHash::from_slice(&m.v2.unwrap()[..20]).unwrap()]);
        assert_eq!(parse_torrent(b"d3:fooi1ee"), Err(MetainfoError::MissingInfo));
        assert_eq!(
            parse_torrent(b"d4:infod4:name1:x12:piece lengthi1eee"),
            Err(MetainfoError::UnknownVersion)
        );
        assert!(matches!(parse_torrent(b"d4:info"), Err(MetainfoError::Bencode(_))));
        let bad = b"d4:infod6:lengthi-1e12:piece lengthi16384e6:pieces0:ee";
        assert_eq!(parse_torrent(bad), Err(MetainfoError::BadField("length")));
    }

    #[test]
    fn piece_hashes_and_layout_bounds() {
        let t = |len: u64, piece: u64, hashes: usize| {
            let pieces = "p".repeat(hashes);
            parse_torrent(
                format!(
                    "d4:infod6:lengthi{len}e4:name1:x12:piece lengthi{piece}e6:pieces{}:{pieces}ee",
                    pieces.len()
                )
                .as_bytes(),
            )
        };
        assert_eq!(t(40, 16, 60).unwrap().pieces.map(|p| p.len()), Some(60));
        assert_eq!(t(40, 16, 40), Err(MetainfoError::PieceCount { got: 2, expected: 3 }));
        assert_eq!(t(40, 16, 61), Err(MetainfoError::PieceCount { got: 3, expected: 3 }));
        assert_eq!(
            t(1 << 30, 1 << 30, 20),
            Err(MetainfoError::Layout(LayoutError::PieceLength(1 << 30)))
        );
        assert_eq!(
            t(1 << 40, 1, 0).unwrap_err().to_string(),
            "the torrent would have 1099511627776 pieces (at most 4294967296: piece indices are \
             32-bit)"
        );
        assert_eq!(check_layout(Some(0), None), Err(LayoutError::PieceLength(0)));
        assert_eq!(check_layout(None, Some(u64::MAX)), Err(LayoutError::TotalSize(u64::MAX)));
        assert_eq!(check_layout(None, None), Ok(()));
        assert_eq!(
            LayoutError::PieceLength(0).to_string(),
            "piece_length must be in 1..=536870912, got 0"
        );
    }

    #[test]
    fn multi_file_layout_trackers_and_private_flag() {
        // Two files of 5 and 7 bytes under "dir"; the second has a path.utf-8 that wins.
        let pieces = "h".repeat(20);
        let t = format!(
            "d8:announce9:http://a/13:announce-listll9:http://b/8:udp://c/el0:el9:http://d/ee\
             4:infod5:filesld6:lengthi5e4:pathl3:sub5:a.txteed6:lengthi7e4:pathl1:xe\
             10:path.utf-8l5:b.bineee4:name3:dir12:piece lengthi16e6:pieces20:{pieces}\
             7:privatei1eee"
        );
        let m = parse_torrent(t.as_bytes()).unwrap();
        assert_eq!(m.total_size, 12);
        assert_eq!(
            m.files,
            vec![
                FileEntry {
                    path: vec![b"dir".to_vec(), b"sub".to_vec(), b"a.txt".to_vec()],
                    length: 5
                },
                FileEntry { path: vec![b"dir".to_vec(), b"b.bin".to_vec()], length: 7 },
            ]
        );
        assert_eq!(m.files[0].relative_path(), Ok(vec!["dir", "sub", "a.txt"]));
        // A tier of only an empty URL is dropped; announce-list wins over announce.
        assert_eq!(
            m.trackers,
            vec![vec!["http://b/".to_owned(), "udp://c/".to_owned()], vec!["http://d/".to_owned()]]
        );
        assert!(m.private);
        // A single-file torrent: one file named after the torrent; announce alone is one tier.
        let one = parse_torrent(&single("")).unwrap();
        assert_eq!(one.files, vec![FileEntry { path: vec![b"x".to_vec()], length: 100_000 }]);
        assert_eq!(one.trackers, vec![vec!["url".to_owned()]]);
        assert!(!one.private);
        assert!(!parse_torrent(&single("7:privatei0e")).unwrap().private);
    }

    #[test]
    fn file_paths_that_could_escape_or_collide_are_refused() {
        let entry = |segments: &[&[u8]]| FileEntry {
            path: segments.iter().map(|s| s.to_vec()).collect(),
            length: 1,
        };
        let unsafe_at = |index: usize, segment: &str| {
            Err(PathError::Unsafe { index, segment: segment.to_owned() })
        };
        assert_eq!(entry(&[]).relative_path(), Err(PathError::Empty));
        assert_eq!(entry(&[b"d", b".."]).relative_path(), unsafe_at(1, ".."));
        assert_eq!(entry(&[b"d", b"."]).relative_path(), unsafe_at(1, "."));
        assert_eq!(entry(&[b"d", b""]).relative_path(), unsafe_at(1, ""));
        assert_eq!(entry(&[b"/etc"]).relative_path(), unsafe_at(0, "/etc"));
        assert_eq!(entry(&[b"a\\b"]).relative_path(), unsafe_at(0, "a\\b"));
        assert_eq!(entry(&[b"a\0b"]).relative_path(), unsafe_at(0, "a\0b"));
        assert_eq!(entry(&[b"a\nb"]).relative_path(), unsafe_at(0, "a\nb"));
        assert_eq!(entry(&[b"con."]).relative_path(), unsafe_at(0, "con."));
        assert_eq!(entry(&[b"trailing "]).relative_path(), unsafe_at(0, "trailing "));
        assert_eq!(entry(&[b"d", b"\xff"]).relative_path(), Err(PathError::NotUtf8(1)));
        assert_eq!(entry(&[&[b'a'; 256]]).relative_path(), Err(PathError::TooLong(0)));
        assert_eq!(
            entry(&[b"ok", "caf\u{e9}.txt".as_bytes()]).relative_path(),
            Ok(vec!["ok", "caf\u{e9}.txt"])
        );
    }
}
