//! The receipt a downloader signs for a piece it received, and its canonical message.
//!
//! ```text
//! message = info_hash (20) ‖ sender_pk (48) ‖ piece_hash (20 or 32) ‖ u32be(piece_index)
//!         ‖ u64be(timestamp)                                           = 100 or 112 bytes
//! signature = Sign(receiver_sk, message)       (the downloader signs; 96 bytes)
//! ```
//!
//! This is the PBTS prototype's `/report` message, byte for byte (see the golden vectors in
//! `keys` and docs/COMPATIBILITY.md). The BEP 10 exchange signs the same message, so a receipt
//! received from a peer verifies at the tracker.

use pbts_proto::InfoHash;

/// Bytes of a compressed G1 public key.
pub const PUBLIC_KEY_LEN: usize = 48;
/// Bytes of a compressed G2 signature.
pub const SIGNATURE_LEN: usize = 96;
/// Longest canonical message (SHA-256 piece hash).
pub const MAX_MESSAGE_LEN: usize = 20 + PUBLIC_KEY_LEN + 32 + 4 + 8;

/// A compressed public key as received (not yet decompressed or validated).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKeyBytes(pub [u8; PUBLIC_KEY_LEN]);

/// A compressed signature as received (not yet decompressed or subgroup-checked).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignatureBytes(pub [u8; SIGNATURE_LEN]);

impl core::fmt::Debug for PublicKeyBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        pbts_proto::types::debug_hex(f, "PublicKeyBytes", &self.0, 8)
    }
}

impl core::fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        pbts_proto::types::debug_hex(f, "SignatureBytes", &self.0, 8)
    }
}

/// A piece hash: SHA-1 (20 bytes, BitTorrent v1 pieces) or SHA-256 (32 bytes, v2 / BEP 10).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PieceHash {
    bytes: [u8; 32],
    len: u8,
}

impl core::fmt::Debug for PieceHash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        pbts_proto::types::debug_hex(f, "PieceHash", self.as_bytes(), 32)
    }
}

impl PieceHash {
    /// Accepts exactly 20 or 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 20 && bytes.len() != 32 {
            return None;
        }
        let mut out = [0u8; 32];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(Self { bytes: out, len: bytes.len() as u8 })
    }

    /// The hash bytes (20 or 32).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A receipt: `receiver_pk`'s owner (the downloader) states that `sender_pk`'s owner (the
/// uploader) gave it piece `piece_index` (with hash `piece_hash`) of torrent `info_hash` at
/// `timestamp` (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The uploader's public key (who gets upload credit).
    pub sender_pk: PublicKeyBytes,
    /// The downloader's public key: the signer (who gets download credit).
    pub receiver_pk: PublicKeyBytes,
    /// Hash of the piece's data.
    pub piece_hash: PieceHash,
    /// Index of the piece in the torrent.
    pub piece_index: u32,
    /// When the downloader signed, Unix seconds.
    pub timestamp: u64,
    /// BLS signature by `receiver_pk` over [`Receipt::message`].
    pub signature: SignatureBytes,
}

impl Receipt {
    /// Appends the canonical signed message to `out`.
    pub fn write_message(&self, out: &mut Vec<u8>) {
        write_message(
            &self.info_hash,
            &self.sender_pk,
            &self.piece_hash,
            self.piece_index,
            self.timestamp,
            out,
        );
    }

    /// The canonical signed message.
    pub fn message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_MESSAGE_LEN);
        self.write_message(&mut out);
        out
    }
}

/// Appends `info_hash ‖ sender_pk ‖ piece_hash ‖ u32be(piece_index) ‖ u64be(timestamp)`.
pub fn write_message(
    info_hash: &InfoHash,
    sender_pk: &PublicKeyBytes,
    piece_hash: &PieceHash,
    piece_index: u32,
    timestamp: u64,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&info_hash.0);
    out.extend_from_slice(&sender_pk.0);
    out.extend_from_slice(piece_hash.as_bytes());
    out.extend_from_slice(&piece_index.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let r = Receipt {
            info_hash: InfoHash([1; 20]),
            sender_pk: PublicKeyBytes([2; 48]),
            receiver_pk: PublicKeyBytes([3; 48]),
            piece_hash: PieceHash::from_slice(&[4; 20]).unwrap(),
            piece_index: 0x0102_0304,
            timestamp: 0x1122_3344_5566_7788,
            signature: SignatureBytes([5; 96]),
        };
        let m = r.message();
        assert_eq!(m.len(), 100);
        assert_eq!(&m[..20], &[1; 20]);
        assert_eq!(&m[20..68], &[2; 48]);
        assert_eq!(&m[68..88], &[4; 20]);
        assert_eq!(&m[88..92], &[1, 2, 3, 4]);
        assert_eq!(&m[92..], &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        let r32 = Receipt { piece_hash: PieceHash::from_slice(&[4; 32]).unwrap(), ..r };
        assert_eq!(r32.message().len(), MAX_MESSAGE_LEN);
        assert_eq!(PieceHash::from_slice(&[0; 21]), None);
    }
}
