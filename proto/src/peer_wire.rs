//! The BitTorrent peer wire (BEP 3): the handshake and the length-prefixed messages, with the
//! fast extension's messages (BEP 6) and the extension protocol's envelope (BEP 10).
//!
//! ```text
//! handshake: pstrlen=19 (1) "BitTorrent protocol" (19) reserved (8) info_hash (20) peer_id (20)
//! message:   length (4, big-endian, counts the id and payload) [id (1) payload (length - 1)]
//!            length 0 is a keep-alive
//! ```
//!
//! Decoding borrows from the caller's buffer and never allocates: [`decode`] returns
//! `Ok(None)` until a whole frame is buffered, then the message and how many bytes it used.
//! Every frame length is checked against the caller's bound *before* anything is buffered for
//! it, so a peer announcing a 4 GiB message is refused at its first four bytes.
//!
//! Unknown message ids are not errors: BEP 3 clients ignore what they do not understand, so
//! they decode as [`Message::Unknown`] for the caller to skip.

use bytes::BufMut;

use crate::{InfoHash, PeerId};

/// The protocol string of the handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Bytes in a handshake.
pub const HANDSHAKE_LEN: usize = 68;

/// The block size every client requests (BEP 3: "all current implementations use 2^14").
pub const BLOCK_LEN: u32 = 16 * 1024;

/// Default bound on one frame: a 16 KiB block with its header, or a bitfield of up to
/// 8 Mi pieces, or an extension message of up to 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// The 8 reserved bytes of the handshake: which extensions a peer speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// None of the extensions.
    pub const NONE: Self = Self([0; 8]);

    /// BEP 10 extension protocol (bit 20 from the right: byte 5, 0x10).
    pub fn extension_protocol(self) -> bool {
        self.0[5] & 0x10 != 0
    }

    /// BEP 6 fast extension (byte 7, 0x04).
    pub fn fast(self) -> bool {
        self.0[7] & 0x04 != 0
    }

    /// BEP 5 DHT (byte 7, 0x01).
    pub fn dht(self) -> bool {
        self.0[7] & 0x01 != 0
    }

    /// These bits with the BEP 10 extension protocol set.
    #[must_use]
    pub fn with_extension_protocol(mut self) -> Self {
        self.0[5] |= 0x10;
        self
    }

    /// These bits with the BEP 6 fast extension set.
    #[must_use]
    pub fn with_fast(mut self) -> Self {
        self.0[7] |= 0x04;
        self
    }
}

/// The opening message of a peer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits.
    pub reserved: Reserved,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

/// Why a handshake was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first 20 bytes are not `\x13BitTorrent protocol` (another protocol, or an
    /// encrypted stream, which pbts does not speak).
    #[error("not a BitTorrent handshake")]
    NotBitTorrent,
}

impl Handshake {
    /// The 68 bytes on the wire.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved.0);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    /// Decodes a handshake from the start of `buf`: `Ok(None)` until 68 bytes are there.
    /// The protocol string is checked as soon as its bytes arrive, so a stranger is refused
    /// without waiting for the rest.
    ///
    /// # Errors
    /// [`HandshakeError::NotBitTorrent`] when the bytes so far cannot start a handshake.
    pub fn decode(buf: &[u8]) -> Result<Option<Self>, HandshakeError> {
        let mut expected = [0u8; 20];
        expected[0] = 19;
        expected[1..].copy_from_slice(PROTOCOL);
        let seen = buf.len().min(20);
        if buf[..seen] != expected[..seen] {
            return Err(HandshakeError::NotBitTorrent);
        }
        let Some(whole) = buf.get(..HANDSHAKE_LEN) else { return Ok(None) };
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&whole[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&whole[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&whole[48..68]);
        Ok(Some(Self {
            reserved: Reserved(reserved),
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
        }))
    }
}

/// A block: `length` bytes at `begin` within piece `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// The piece.
    pub index: u32,
    /// Offset within the piece.
    pub begin: u32,
    /// Bytes.
    pub length: u32,
}

/// One peer-wire message, borrowing its payload from the receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// An empty frame: the connection is alive.
    KeepAlive,
    /// 0: the sender will not serve requests.
    Choke,
    /// 1: the sender will serve requests.
    Unchoke,
    /// 2: the sender wants pieces the receiver has.
    Interested,
    /// 3: it no longer does.
    NotInterested,
    /// 4: the sender has verified this piece.
    Have(u32),
    /// 5: which pieces the sender has (high bit of the first byte is piece 0).
    Bitfield(&'a [u8]),
    /// 6: a block wanted.
    Request(BlockRef),
    /// 7: a block's data.
    Piece {
        /// The piece.
        index: u32,
        /// Offset within the piece.
        begin: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// 8: a request withdrawn.
    Cancel(BlockRef),
    /// 9: the sender's DHT port (BEP 5).
    Port(u16),
    /// 0x0D (BEP 6): a piece the receiver might download from the sender.
    Suggest(u32),
    /// 0x0E (BEP 6): the sender has every piece.
    HaveAll,
    /// 0x0F (BEP 6): the sender has no piece.
    HaveNone,
    /// 0x10 (BEP 6): a request the sender will not serve.
    Reject(BlockRef),
    /// 0x11 (BEP 6): a piece the receiver may request even while choked.
    AllowedFast(u32),
    /// 20 (BEP 10): an extension message; `id` 0 is the extended handshake, other ids are
    /// the ones the receiver assigned in its handshake's `m`.
    Extended {
        /// The extended message id.
        id: u8,
        /// Its payload (bencode for the handshake; what the extension defines otherwise).
        payload: &'a [u8],
    },
    /// A message id this codec does not know, for the caller to skip.
    Unknown {
        /// The id.
        id: u8,
        /// Its payload.
        payload: &'a [u8],
    },
}

/// Why a frame could not be decoded; the connection should be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame announces more bytes than the receiver allows.
    #[error("message of {length} bytes exceeds the limit of {max}")]
    TooLong {
        /// The announced length.
        length: u32,
        /// The bound.
        max: u32,
    },
    /// A message of a known id has a payload of the wrong size.
    #[error("message id {id} with a {payload}-byte payload")]
    BadLength {
        /// The message id.
        id: u8,
        /// The payload bytes it had.
        payload: u32,
    },
    /// A BEP 10 message with no extended id byte.
    #[error("extended message without an extended id")]
    EmptyExtended,
}

const CHOKE: u8 = 0;
const UNCHOKE: u8 = 1;
const INTERESTED: u8 = 2;
const NOT_INTERESTED: u8 = 3;
const HAVE: u8 = 4;
const BITFIELD: u8 = 5;
const REQUEST: u8 = 6;
const PIECE: u8 = 7;
const CANCEL: u8 = 8;
const PORT: u8 = 9;
const SUGGEST: u8 = 0x0D;
const HAVE_ALL: u8 = 0x0E;
const HAVE_NONE: u8 = 0x0F;
const REJECT: u8 = 0x10;
const ALLOWED_FAST: u8 = 0x11;
const EXTENDED: u8 = 20;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// How many bytes the frame at the start of `buf` takes, once its length prefix is buffered:
/// lets a reader size its buffer (or refuse) before the payload arrives.
///
/// # Errors
/// [`WireError::TooLong`] when the announced length exceeds `max_frame`.
pub fn frame_len(buf: &[u8], max_frame: u32) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.get(..4) else { return Ok(None) };
    let length = be32(prefix);
    if length > max_frame {
        return Err(WireError::TooLong { length, max: max_frame });
    }
    Ok(Some(4 + length as usize))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` until it is whole, else the message
/// and the bytes it used. `max_frame` bounds the length prefix (id and payload).
///
/// # Errors
/// [`WireError`] for a frame longer than `max_frame` or a known message of the wrong size.
pub fn decode(buf: &[u8], max_frame: u32) -> Result<Option<(Message<'_>, usize)>, WireError> {
    let Some(total) = frame_len(buf, max_frame)? else { return Ok(None) };
    let Some(frame) = buf.get(4..total) else { return Ok(None) };
    let Some((&id, payload)) = frame.split_first() else {
        return Ok(Some((Message::KeepAlive, total)));
    };
    let sized = |n: usize| {
        if payload.len() == n {
            Ok(())
        } else {
            Err(WireError::BadLength { id, payload: payload.len() as u32 })
        }
    };
    let block = |p: &[u8]| BlockRef { index: be32(p), begin: be32(&p[4..]), length: be32(&p[8..]) };
    let message = match id {
        CHOKE | UNCHOKE | INTERESTED | NOT_INTERESTED | HAVE_ALL | HAVE_NONE => {
            sized(0)?;
            match id {
                CHOKE => Message::Choke,
                UNCHOKE => Message::Unchoke,
                INTERESTED => Message::Interested,
                NOT_INTERESTED => Message::NotInterested,
                HAVE_ALL => Message::HaveAll,
                _ => Message::HaveNone,
            }
        }
        HAVE | SUGGEST | ALLOWED_FAST => {
            sized(4)?;
            let index = be32(payload);
            match id {
                HAVE => Message::Have(index),
                SUGGEST => Message::Suggest(index),
                _ => Message::AllowedFast(index),
            }
        }
        BITFIELD => Message::Bitfield(payload),
        REQUEST | CANCEL | REJECT => {
            sized(12)?;
            let b = block(payload);
            match id {
                REQUEST => Message::Request(b),
                CANCEL => Message::Cancel(b),
                _ => Message::Reject(b),
            }
        }
        PIECE => {
            if payload.len() < 8 {
                return Err(WireError::BadLength { id, payload: payload.len() as u32 });
            }
            Message::Piece { index: be32(payload), begin: be32(&payload[4..]), data: &payload[8..] }
        }
        PORT => {
            sized(2)?;
            Message::Port(u16::from_be_bytes([payload[0], payload[1]]))
        }
        EXTENDED => {
            let Some((&ext, payload)) = payload.split_first() else {
                return Err(WireError::EmptyExtended);
            };
            Message::Extended { id: ext, payload }
        }
        _ => Message::Unknown { id, payload },
    };
    Ok(Some((message, total)))
}

impl Message<'_> {
    /// Bytes this message takes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        4 + match self {
            Self::KeepAlive => 0,
            Self::Choke | Self::Unchoke | Self::Interested | Self::NotInterested => 1,
            Self::HaveAll | Self::HaveNone => 1,
            Self::Have(_) | Self::Suggest(_) | Self::AllowedFast(_) => 5,
            Self::Bitfield(b) => 1 + b.len(),
            Self::Request(_) | Self::Cancel(_) | Self::Reject(_) => 13,
            Self::Piece { data, .. } => 9 + data.len(),
            Self::Port(_) => 3,
            Self::Extended { payload, .. } => 2 + payload.len(),
            Self::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// The message id byte (none for a keep-alive).
    fn id(&self) -> Option<u8> {
        Some(match *self {
            Self::KeepAlive => return None,
            Self::Choke => CHOKE,
            Self::Unchoke => UNCHOKE,
            Self::Interested => INTERESTED,
            Self::NotInterested => NOT_INTERESTED,
            Self::Have(_) => HAVE,
            Self::Bitfield(_) => BITFIELD,
            Self::Request(_) => REQUEST,
            Self::Piece { .. } => PIECE,
            Self::Cancel(_) => CANCEL,
            Self::Port(_) => PORT,
            Self::Suggest(_) => SUGGEST,
            Self::HaveAll => HAVE_ALL,
            Self::HaveNone => HAVE_NONE,
            Self::Reject(_) => REJECT,
            Self::AllowedFast(_) => ALLOWED_FAST,
            Self::Extended { .. } => EXTENDED,
            Self::Unknown { id, .. } => id,
        })
    }

    /// Appends the frame to `out`.
    ///
    /// # Panics
    /// If a payload exceeds 4 GiB, which no caller can hold.
    pub fn encode(&self, out: &mut impl BufMut) {
        let len = u32::try_from(self.encoded_len() - 4).expect("a frame under 4 GiB");
        out.put_u32(len);
        if let Some(id) = self.id() {
            out.put_u8(id);
        }
        match *self {
            Self::KeepAlive
            | Self::Choke
            | Self::Unchoke
            | Self::Interested
            | Self::NotInterested
            | Self::HaveAll
            | Self::HaveNone => {}
            Self::Have(i) | Self::Suggest(i) | Self::AllowedFast(i) => out.put_u32(i),
            Self::Request(b) | Self::Cancel(b) | Self::Reject(b) => {
                out.put_u32(b.index);
                out.put_u32(b.begin);
                out.put_u32(b.length);
            }
            Self::Piece { index, begin, data } => {
                out.put_u32(index);
                out.put_u32(begin);
                out.put_slice(data);
            }
            Self::Port(port) => out.put_u16(port),
            Self::Extended { id, payload } => {
                out.put_u8(id);
                out.put_slice(payload);
            }
            Self::Bitfield(payload) | Self::Unknown { payload, .. } => out.put_slice(payload),
        }
    }
}

/// A piece bitfield: bit `i` (high bit first) is piece `i`; spare bits in the last byte are
/// zero, as BEP 3 requires of what a peer sends.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    pieces: u32,
}

impl core::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Bitfield({}/{} pieces)", self.count(), self.pieces)
    }
}

/// A received bitfield that does not fit the torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// Not `ceil(pieces / 8)` bytes.
    #[error("bitfield of {got} bytes for a torrent needing {want}")]
    WrongLength {
        /// Bytes received.
        got: usize,
        /// Bytes the torrent needs.
        want: usize,
    },
    /// A spare bit past the last piece is set.
    #[error("bitfield has a bit set past the last piece")]
    SpareBitSet,
}

/// The spare (always zero) low bits of the last byte of a bitfield of `pieces`.
fn spare_bits(pieces: u32) -> u8 {
    match pieces % 8 {
        0 => 0,
        used => 0xff >> used,
    }
}

impl Bitfield {
    /// No piece of `pieces`.
    pub fn new(pieces: u32) -> Self {
        Self { bytes: vec![0; (pieces as usize).div_ceil(8)], pieces }
    }

    /// Every piece of `pieces`.
    pub fn full(pieces: u32) -> Self {
        let mut b = Self::new(pieces);
        b.bytes.fill(0xff);
        if let Some(last) = b.bytes.last_mut() {
            *last &= !spare_bits(pieces);
        }
        b
    }

    /// Checks a received bitfield against the torrent's piece count.
    ///
    /// # Errors
    /// [`BitfieldError`] for a wrong length or a spare bit set.
    pub fn from_wire(bytes: &[u8], pieces: u32) -> Result<Self, BitfieldError> {
        let want = (pieces as usize).div_ceil(8);
        if bytes.len() != want {
            return Err(BitfieldError::WrongLength { got: bytes.len(), want });
        }
        if bytes.last().is_some_and(|last| last & spare_bits(pieces) != 0) {
            return Err(BitfieldError::SpareBitSet);
        }
        Ok(Self { bytes: bytes.to_vec(), pieces })
    }

    /// The bytes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Pieces in the torrent.
    pub fn pieces(&self) -> u32 {
        self.pieces
    }

    /// Whether piece `i` is set (false past the end).
    pub fn has(&self, i: u32) -> bool {
        i < self.pieces && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets piece `i`; false (and nothing changes) past the end.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.pieces {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        true
    }

    /// Pieces set.
    pub fn count(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every piece is set.
    pub fn is_full(&self) -> bool {
        self.count() == self.pieces
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn handshake_bytes() {
        let h = Handshake {
            reserved: Reserved::NONE.with_extension_protocol().with_fast(),
            info_hash: InfoHash([0xaa; 20]),
            peer_id: PeerId(*b"-PB0001-abcdefghijkl"),
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..20], b"\x13BitTorrent protocol");
        assert_eq!(&bytes[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert_eq!(&bytes[48..], b"-PB0001-abcdefghijkl");
        assert_eq!(Handshake::decode(&bytes), Ok(Some(h)));
        assert!(h.reserved.extension_protocol() && h.reserved.fast() && !h.reserved.dht());
        // Partial: nothing yet, then a prefix, then a wrong byte refused at once.
        assert_eq!(Handshake::decode(&[]), Ok(None));
        assert_eq!(Handshake::decode(&bytes[..67]), Ok(None));
        assert_eq!(Handshake::decode(b"\x13BitTorrent pro"), Ok(None));
        assert_eq!(Handshake::decode(b"GET / HTTP/1.1"), Err(HandshakeError::NotBitTorrent));
        assert_eq!(
            Handshake::decode(b"\x13BitTorrent protocoX"),
            Err(HandshakeError::NotBitTorrent)
        );
    }

    #[test]
    fn exact_frames() {
        let cases: Vec<(Message<'_>, &[u8])> = vec![
            (Message::KeepAlive, b"\0\0\0\0"),
            (Message::Choke, b"\0\0\0\x01\x00"),
            (Message::Unchoke, b"\0\0\0\x01\x01"),
            (Message::Interested, b"\0\0\0\x01\x02"),
            (Message::NotInterested, b"\0\0\0\x01\x03"),
            (Message::Have(0x0102_0304), b"\0\0\0\x05\x04\x01\x02\x03\x04"),
            (Message::Bitfield(&[0xf0, 0x80]), b"\0\0\0\x03\x05\xf0\x80"),
            (
                Message::Request(BlockRef { index: 1, begin: 0x4000, length: 0x4000 }),
                b"\0\0\0\x0d\x06\0\0\0\x01\0\0\x40\0\0\0\x40\0",
            ),
            (
                Message::Piece { index: 2, begin: 0, data: b"ab" },
                b"\0\0\0\x0b\x07\0\0\0\x02\0\0\0\0ab",
            ),
            (
                Message::Cancel(BlockRef { index: 0, begin: 0, length: 1 }),
                b"\0\0\0\x0d\x08\0\0\0\0\0\0\0\0\0\0\0\x01",
            ),
            (Message::Port(6881), b"\0\0\0\x03\x09\x1a\xe1"),
            (Message::Suggest(7), b"\0\0\0\x05\x0d\0\0\0\x07"),
            (Message::HaveAll, b"\0\0\0\x01\x0e"),
            (Message::HaveNone, b"\0\0\0\x01\x0f"),
            (
                Message::Reject(BlockRef { index: 3, begin: 0, length: 16 }),
                b"\0\0\0\x0d\x10\0\0\0\x03\0\0\0\0\0\0\0\x10",
            ),
            (Message::AllowedFast(9), b"\0\0\0\x05\x11\0\0\0\x09"),
            (Message::Extended { id: 0, payload: b"de" }, b"\0\0\0\x04\x14\x00de"),
            (Message::Unknown { id: 0x42, payload: b"x" }, b"\0\0\0\x02\x42x"),
        ];
        for (message, bytes) in cases {
            let mut out = Vec::new();
            message.encode(&mut out);
            assert_eq!(out, bytes, "{message:?}");
            assert_eq!(message.encoded_len(), bytes.len());
            assert_eq!(decode(bytes, DEFAULT_MAX_FRAME), Ok(Some((message, bytes.len()))));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut], DEFAULT_MAX_FRAME), Ok(None), "{message:?}");
            }
        }
    }

    #[test]
    fn hostile_frames() {
        // A 4 GiB frame is refused from its prefix alone.
        assert_eq!(
            decode(b"\xff\xff\xff\xff", DEFAULT_MAX_FRAME),
            Err(WireError::TooLong { length: u32::MAX, max: DEFAULT_MAX_FRAME })
        );
        assert_eq!(frame_len(b"\0\0\x40\x09", 16393), Ok(Some(16397)));
        assert_eq!(
            decode(b"\0\0\x40\x0a", 16393),
            Err(WireError::TooLong { length: 16394, max: 16393 })
        );
        assert_eq!(
            decode(b"\0\0\0\x02\x00\x00", 64),
            Err(WireError::BadLength { id: 0, payload: 1 })
        );
        assert_eq!(
            decode(b"\0\0\0\x04\x04\0\0\0", 64),
            Err(WireError::BadLength { id: 4, payload: 3 })
        );
        assert_eq!(
            decode(b"\0\0\0\x08\x07\0\0\0\0\0\0\0", 64),
            Err(WireError::BadLength { id: 7, payload: 7 })
        );
        assert_eq!(decode(b"\0\0\0\x01\x14", 64), Err(WireError::EmptyExtended));
        assert_eq!(
            WireError::TooLong { length: 5, max: 4 }.to_string(),
            "message of 5 bytes exceeds the limit of 4"
        );
        // Two frames back to back: the first is returned with its length.
        let two = b"\0\0\0\x01\x01\0\0\0\x01\x02";
        assert_eq!(decode(two, 64), Ok(Some((Message::Unchoke, 5))));
        assert_eq!(decode(&two[5..], 64), Ok(Some((Message::Interested, 5))));
    }

    #[test]
    fn bitfields() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes(), &[0, 0]);
        assert!(b.set(0) && b.set(9) && !b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert!(b.has(0) && b.has(9) && !b.has(1) && !b.has(10) && !b.has(u32::MAX));
        assert_eq!(b.count(), 2);
        assert_eq!(Bitfield::from_wire(&[0x80, 0x40], 10), Ok(b.clone()));
        assert_eq!(Bitfield::from_wire(&[0x80, 0x60], 10), Err(BitfieldError::SpareBitSet));
        assert_eq!(
            Bitfield::from_wire(&[0x80], 10),
            Err(BitfieldError::WrongLength { got: 1, want: 2 })
        );
        let full = Bitfield::full(10);
        assert_eq!(full.as_bytes(), &[0xff, 0xc0]);
        assert!(full.is_full() && !b.is_full());
        assert_eq!(Bitfield::full(16).as_bytes(), &[0xff, 0xff]);
        assert_eq!(Bitfield::from_wire(&[], 0), Ok(Bitfield::new(0)));
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_reencodes(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((message, used))) = decode(&buf, 48) {
                let mut out = Vec::new();
                message.encode(&mut out);
                prop_assert_eq!(&out[..], &buf[..used]);
            }
        }
    }
}
