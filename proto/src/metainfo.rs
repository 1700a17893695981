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
    let total_size = if let Some(len) = info.get(b"length") {
        positive(Some(len), "length")?
    } else if let Some(files) = info.get(b"files") {
        let files = files.as_list().ok_or(MetainfoError::BadField("files"))?;
        files.iter().try_fold(0u64, |acc, f| {
            acc.checked_add(positive(f.get(b"length"), "files length")?)
                .ok_or(MetainfoError::BadField("files length"))
        })?
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
        name: info
            .get(b"name")
            .and_then(Value::as_bytes)
            .and_then(|n| std::str::from_utf8(n).ok())
            .map(str::to_owned),
        piece_length,
        total_size,
        pieces: pieces.map(<[u8]>::to_vec),
    })
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
}
