//! Test torrents with real piece hashes over seeded random bytes.

use pbts_proto::metainfo::{FileEntry, Metainfo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};

use super::layout::Layout;

/// Bytes per piece of [`torrent`].
pub(super) const PIECE: u64 = 64;

/// Bytes per block the tests write.
pub(super) const BLOCK: u32 = 16;

/// The test torrent's files: piece 0 covers `a`, the empty file, `sub/b` and the start of `c`;
/// piece 2, the last, is 32 bytes.
pub(super) const FILES: &[(&str, u64)] =
    &[("t/a", 50), ("t/empty", 0), ("t/sub/b", 10), ("t/c", 100)];

/// A torrent of `files` in pieces of `piece_length` over seeded random bytes: its metainfo and
/// its whole byte stream.
pub(super) fn torrent_of(files: &[(&str, u64)], piece_length: u64) -> (Metainfo, Vec<u8>) {
    let total_size = files.iter().map(|f| f.1).sum::<u64>();
    let mut data = vec![0; total_size as usize];
    SmallRng::seed_from_u64(total_size).fill(&mut data[..]);
    let pieces =
        data.chunks(piece_length as usize).flat_map(|p| Sha1::digest(p).to_vec()).collect();
    let meta = Metainfo {
        v1: None,
        v2: None,
        name: None,
        piece_length,
        total_size,
        pieces: Some(pieces),
        files: files
            .iter()
            .map(|(path, length)| FileEntry {
                path: path.split('/').map(|s| s.as_bytes().to_vec()).collect(),
                length: *length,
            })
            .collect(),
        trackers: Vec::new(),
        private: false,
    };
    (meta, data)
}

/// [`FILES`] in pieces of [`PIECE`]: its layout and byte stream.
pub(super) fn torrent() -> (Layout, Vec<u8>) {
    let (meta, data) = torrent_of(FILES, PIECE);
    (Layout::from_metainfo(&meta).expect("a valid layout"), data)
}

/// Every block of `layout` as (piece, begin, len), in a seeded shuffled order.
pub(super) fn shuffled_blocks(layout: &Layout, seed: u64) -> Vec<(u32, u32, u32)> {
    let mut blocks = Vec::new();
    for piece in 0..layout.piece_count() {
        let len = layout.piece_len(piece).expect("piece in range");
        blocks.extend((0..len).step_by(BLOCK as usize).map(|b| (piece, b, BLOCK.min(len - b))));
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in (1..blocks.len()).rev() {
        blocks.swap(i, rng.random_range(0..=i));
    }
    blocks
}

/// The bytes of a block in the stream `data`.
pub(super) fn block_of(data: &[u8], layout: &Layout, piece: u32, begin: u32, len: u32) -> Vec<u8> {
    let start = piece as usize * layout.piece_length() as usize + begin as usize;
    data[start..start + len as usize].to_vec()
}
