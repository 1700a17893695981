//! Receipt exchange between peers over the BEP 10 extension protocol.
//!
//! ```text
//! frame     = u32be(len) ‖ 20 ‖ ext_id ‖ payload          len = 2 + payload length
//! ext_id 0  = extended handshake: {m: {name: id, …}, p: port, pbts_pk: 48B, reqq: n,
//!                                  v: "client"}
//! ext_id k  = the message the *receiver* mapped to k in its handshake
//! ```
//!
//! Each side advertises, in the standard `m` map of its extended handshake, the ids it wants
//! to *receive* our three messages under: [`RECEIPT`], [`RECEIPT_BATCH`] and
//! [`REQUEST_RECEIPT`] (defaults 1, 2, 3; 0 disables a message, as BEP 10 specifies). A sender
//! uses the id the remote peer chose ([`write_message`]); a receiver maps incoming ids through
//! its own choice ([`decode_frame`]).
//!
//! A pbts peer also puts its 48-byte BLS public key in the handshake under `pbts_pk`: the key
//! a downloader names as `sender_pk` in the receipts it signs for pieces this peer gave it.
//!
//! Payloads (bencoded dictionaries, keys in sorted order):
//!
//! ```text
//! pbts_receipt          {info_hash: 20B, piece_hash: 20B|32B, piece_index: int (u32),
//!                        receiver_pk: 48B, sender_pk: 48B, signature: 96B,
//!                        timestamp: int (Unix seconds, 0 ..= i64::MAX)}
//! pbts_receipt_batch    {receipts: [receipt dict, …]}              1 ..= MAX_BATCH receipts
//! pbts_request_receipt  {info_hash: 20B, piece_hash: 20B|32B, piece_index: int (u32)}
//! ```
//!
//! # Compatibility
//!
//! - Each message is its own integer entry in `m`, as BEP 10 requires, next to `ut_metadata`,
//!   `ut_pex` and whatever else the peer supports. A handshake that nests a dictionary under
//!   `m.pbts` (the PBTS prototype's form, which real clients ignore or mis-parse) still
//!   decodes: its `pbts` entry is not an integer and is ignored, so it advertises none of our
//!   messages.
//! - There is no `t_epoch`: the signature covers exactly [`Receipt::message`], the tracker's
//!   `/report` message, so a receipt travels unchanged from peer to tracker. The field is
//!   `info_hash`.
//!
//! docs/COMPATIBILITY.md describes the prototype's forms.
//!
//! # Decoding
//!
//! Payloads must be canonical bencode ([`pbts_proto::bencode`]) and a single dictionary.
//! Every field of ours is checked for type, length and integer range with a typed
//! [`Bep10Error`]; keys we do not know are ignored. Nothing panics on any input.
//!
//! # Example
//!
//! ```
//! use pbts_proto::InfoHash;
//! use pbts_verifier::bep10::{self, ExtensionIds, Frame, Handshake, Message};
//! use pbts_verifier::receipt::PieceHash;
//!
//! // Both sides send their extended handshake right after the BitTorrent handshake.
//! let mut wire = Vec::new();
//! let ours = Handshake { port: Some(6881), ..Handshake::default() };
//! bep10::write_handshake(&ours, &mut wire);
//!
//! // The peer decodes it and learns the ids we want to receive our messages under.
//! let (frame, used) = bep10::decode_frame(&wire, &ExtensionIds::default())?.expect("complete");
//! let Frame::Handshake(advertised) = frame else { unreachable!() };
//! assert_eq!(used, wire.len());
//!
//! // The peer asks us for a receipt, using our ids.
//! let request = Message::RequestReceipt {
//!     info_hash: InfoHash([1; 20]),
//!     piece_index: 3,
//!     piece_hash: PieceHash::from_slice(&[2; 32]).expect("32 bytes"),
//! };
//! let mut wire = Vec::new();
//! bep10::write_message(&advertised.ids, &request, &mut wire)?;
//! let (frame, _) = bep10::decode_frame(&wire, &ours.ids)?.expect("complete");
//! assert_eq!(frame, Frame::Pbts(request));
//! # Ok::<(), bep10::Bep10Error>(())
//! ```

use core::fmt;

use pbts_proto::InfoHash;
use pbts_proto::bencode::{self, DecodeError, DecodeLimits, Encoder, Value};

use crate::receipt::{
    PUBLIC_KEY_LEN, PieceHash, PublicKeyBytes, Receipt, SIGNATURE_LEN, SignatureBytes,
};

/// BitTorrent message id of every BEP 10 extended message.
pub const EXTENDED_MESSAGE_ID: u8 = 20;
/// Extended message id of the extended handshake.
pub const HANDSHAKE_ID: u8 = 0;
/// `m` name of a single receipt.
pub const RECEIPT: &str = "pbts_receipt";
/// `m` name of a batch of receipts.
pub const RECEIPT_BATCH: &str = "pbts_receipt_batch";
/// `m` name of a request for a receipt.
pub const REQUEST_RECEIPT: &str = "pbts_request_receipt";
/// Most receipts in one batch message.
pub const MAX_BATCH: usize = 256;
/// Largest length prefix (`2 + payload`) of a message this module parses: the extended
/// handshake and our three messages. A full batch of [`MAX_BATCH`] receipts with 32-byte
/// piece hashes and the largest integers is about 97 KiB (a test checks it fits).
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;
/// Largest length prefix of a message [`decode_frame`] skips (other extensions, ordinary
/// BitTorrent messages such as `piece` or a large `bitfield`): libtorrent's default largest
/// receive buffer.
pub const MAX_SKIPPED_LEN: usize = 2 * 1024 * 1024;

/// Decoding bounds for payloads (at most [`MAX_MESSAGE_LEN`] bytes, so at most ~64 K values
/// anyway; ours nest 3 deep).
const LIMITS: DecodeLimits = DecodeLimits { max_depth: 16, max_items: 1 << 15 };

/// Which extended message id each of our messages is received under, as one side advertised
/// in its handshake. `None` means the name was absent; `Some(0)` means explicitly disabled.
/// Both mean "not supported".
///
/// `Default` is the local default assignment 1, 2, 3; [`ExtensionIds::NONE`] has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionIds {
    /// Id of [`RECEIPT`].
    pub receipt: Option<u8>,
    /// Id of [`RECEIPT_BATCH`].
    pub receipt_batch: Option<u8>,
    /// Id of [`REQUEST_RECEIPT`].
    pub request_receipt: Option<u8>,
}

impl Default for ExtensionIds {
    fn default() -> Self {
        Self::LOCAL_DEFAULT
    }
}

impl ExtensionIds {
    /// No message supported (what a peer without pbts advertises).
    pub const NONE: Self = Self { receipt: None, receipt_batch: None, request_receipt: None };
    /// The default local assignment: 1, 2, 3.
    pub const LOCAL_DEFAULT: Self =
        Self { receipt: Some(1), receipt_batch: Some(2), request_receipt: Some(3) };

    /// Applies a later handshake from the same peer: BEP 10 says names it mentions take their
    /// new id (0 disables), names it omits keep theirs.
    pub fn update(&mut self, later: &Self) {
        for kind in Kind::ALL {
            if let Some(id) = later.slot(kind) {
                *self.slot_mut(kind) = Some(id);
            }
        }
    }

    /// Whether at least one of our messages is supported.
    pub fn supports_any(&self) -> bool {
        Kind::ALL.into_iter().any(|k| self.id(k).is_some())
    }

    /// The usable (non-zero) id of `kind`.
    fn id(&self, kind: Kind) -> Option<u8> {
        self.slot(kind).filter(|&id| id != 0)
    }

    /// The message kind received under `id`; the first match in [`Kind::ALL`] order if the
    /// assignment is ambiguous (a handshake of ours never is).
    fn kind_of(&self, id: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|&k| id != 0 && self.slot(k) == Some(id))
    }

    fn slot(&self, kind: Kind) -> Option<u8> {
        match kind {
            Kind::Receipt => self.receipt,
            Kind::ReceiptBatch => self.receipt_batch,
            Kind::RequestReceipt => self.request_receipt,
        }
    }

    fn slot_mut(&mut self, kind: Kind) -> &mut Option<u8> {
        match kind {
            Kind::Receipt => &mut self.receipt,
            Kind::ReceiptBatch => &mut self.receipt_batch,
            Kind::RequestReceipt => &mut self.request_receipt,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Receipt,
    ReceiptBatch,
    RequestReceipt,
}

impl Kind {
    const ALL: [Self; 3] = [Self::Receipt, Self::ReceiptBatch, Self::RequestReceipt];

    fn name(self) -> &'static str {
        match self {
            Self::Receipt => RECEIPT,
            Self::ReceiptBatch => RECEIPT_BATCH,
            Self::RequestReceipt => REQUEST_RECEIPT,
        }
    }

    fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name().as_bytes() == name)
    }
}

/// An extended handshake (extended message id 0).
///
/// `Default` advertises our three messages under 1, 2, 3 and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Handshake {
    /// Ids under which the sender wants to receive our messages.
    pub ids: ExtensionIds,
    /// `p`: the sender's listening port. Port 0 is neither written nor decoded (`None`).
    pub port: Option<u16>,
    /// `v`: client name and version. Decoded lossily if not UTF-8.
    pub version: Option<String>,
    /// `reqq`: how many outstanding requests the sender queues.
    pub reqq: Option<u32>,
    /// `pbts_pk`: the sender's BLS public key (compressed G1), whom receipts for the pieces it
    /// uploads credit.
    pub public_key: Option<PublicKeyBytes>,
    /// Other `m` entries (other extensions: `ut_metadata`, `ut_pex`, …), kept as received in
    /// sorted order. Entries whose value is not an integer are dropped on decode; entries
    /// named like ours, and repeated names, are skipped on write.
    pub other: Vec<(Vec<u8>, i64)>,
}

/// One of our messages.
// A receipt inline (264 bytes) rather than boxed: it is the common message, `Copy`, and
// boxing would add an allocation per receipt for a value that is moved once or twice.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A receipt, usually sent by the downloader to the uploader it credits.
    Receipt(Receipt),
    /// Up to [`MAX_BATCH`] receipts, each with its own signature.
    ReceiptBatch(Vec<Receipt>),
    /// An uploader asking for a receipt for a piece it sent.
    RequestReceipt {
        /// The torrent.
        info_hash: InfoHash,
        /// The piece.
        piece_index: u32,
        /// Hash of the piece's data.
        piece_hash: PieceHash,
    },
}

impl Message {
    fn kind(&self) -> Kind {
        match self {
            Self::Receipt(_) => Kind::Receipt,
            Self::ReceiptBatch(_) => Kind::ReceiptBatch,
            Self::RequestReceipt { .. } => Kind::RequestReceipt,
        }
    }
}

/// One framed peer-wire message, as [`decode_frame`] classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A zero-length keep-alive.
    KeepAlive,
    /// An extended handshake.
    Handshake(Handshake),
    /// One of our messages.
    Pbts(Message),
    /// An extended message of another extension (not parsed).
    OtherExtension {
        /// Its extended message id.
        id: u8,
    },
    /// An ordinary BitTorrent message (not parsed).
    NotExtended {
        /// Its BitTorrent message id.
        id: u8,
    },
}

/// Why a message cannot be written or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bep10Error {
    /// The remote peer assigned no id to this message (absent or 0 in its handshake).
    NotSupported,
    /// The length prefix exceeds the bound for this kind of message; the stream cannot be
    /// followed further.
    TooLong {
        /// The length prefix.
        len: usize,
        /// [`MAX_MESSAGE_LEN`] or [`MAX_SKIPPED_LEN`].
        max: usize,
    },
    /// An extended message (length 1) with no extended message id.
    MissingExtendedId,
    /// The payload is not canonical bencode (offset within the payload).
    Bencode(DecodeError),
    /// A value has the wrong bencode type.
    WrongType {
        /// The field (`payload` for the whole dictionary).
        field: &'static str,
        /// `dictionary`, `list`, `integer` or `byte string`.
        expected: &'static str,
    },
    /// A required field is absent.
    MissingField(&'static str),
    /// A fixed-length byte string has the wrong length.
    BadFieldLength {
        /// The field.
        field: &'static str,
        /// Its length.
        got: usize,
        /// The required length.
        expected: usize,
    },
    /// A piece hash is neither 20 (SHA-1) nor 32 (SHA-256) bytes.
    BadPieceHashLength {
        /// Its length.
        got: usize,
    },
    /// An integer is outside its field's range (`u32` index, non-negative timestamp, `u8` id).
    IntOutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        got: i64,
    },
    /// A batch holds more than [`MAX_BATCH`] receipts.
    BatchTooLarge {
        /// Receipts in the batch.
        got: usize,
        /// [`MAX_BATCH`].
        max: usize,
    },
    /// A batch holds no receipts.
    EmptyBatch,
    /// A receipt's timestamp does not fit a bencode integer (`i64`); writing only.
    TimestampTooLarge {
        /// The timestamp.
        timestamp: u64,
    },
}

impl Bep10Error {
    /// A short fixed description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotSupported => "bep10: message not supported by the peer",
            Self::TooLong { .. } => "bep10: message too long",
            Self::MissingExtendedId => "bep10: extended message without an id",
            Self::Bencode(e) => e.as_str(),
            Self::WrongType { .. } => "bep10: field has the wrong type",
            Self::MissingField(_) => "bep10: missing field",
            Self::BadFieldLength { .. } => "bep10: field has the wrong length",
            Self::BadPieceHashLength { .. } => "bep10: piece hash is not 20 or 32 bytes",
            Self::IntOutOfRange { .. } => "bep10: integer out of range",
            Self::BatchTooLarge { .. } => "bep10: batch too large",
            Self::EmptyBatch => "bep10: empty batch",
            Self::TimestampTooLarge { .. } => "bep10: timestamp too large to encode",
        }
    }
}

impl fmt::Display for Bep10Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Bencode(e) => return write!(f, "bep10 payload: {e}"),
            _ => f.write_str(self.as_str())?,
        }
        match *self {
            Self::TooLong { len, max } => write!(f, " ({len} > {max})"),
            Self::WrongType { field, expected } => write!(f, ": {field} should be a {expected}"),
            Self::MissingField(field) => write!(f, ": {field}"),
            Self::BadFieldLength { field, got, expected } => {
                write!(f, ": {field} has {got} bytes, expected {expected}")
            }
            Self::BadPieceHashLength { got } => write!(f, " ({got} bytes)"),
            Self::IntOutOfRange { field, got } => write!(f, ": {field} = {got}"),
            Self::BatchTooLarge { got, max } => write!(f, " ({got} > {max})"),
            Self::TimestampTooLarge { timestamp } => write!(f, " ({timestamp})"),
            Self::NotSupported | Self::MissingExtendedId | Self::Bencode(_) | Self::EmptyBatch => {
                Ok(())
            }
        }
    }
}

impl std::error::Error for Bep10Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bencode(e) => Some(e),
            _ => None,
        }
    }
}

// ---- writing ------------------------------------------------------------------------------

/// Appends a frame `u32be(len) ‖ 20 ‖ ext_id ‖ payload`, the payload written by `body`.
fn write_frame(out: &mut Vec<u8>, ext_id: u8, body: impl FnOnce(&mut Encoder<'_>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, EXTENDED_MESSAGE_ID, ext_id]);
    body(&mut Encoder::new(out));
    // Only a caller-built handshake with gigabytes of `other` entries could overflow; such a
    // frame is refused by every peer anyway.
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends `h` as a complete framed extended handshake.
///
/// `m` lists our messages that have an id (`Some(0)` is written, announcing "disabled"; `None`
/// is omitted) merged in sorted order with `h.other`. Keep `version` and `other` small: peers
/// (and [`decode_frame`]) refuse handshakes over [`MAX_MESSAGE_LEN`].
pub fn write_handshake(h: &Handshake, out: &mut Vec<u8>) {
    let mut m: Vec<(&[u8], i64)> = Kind::ALL
        .into_iter()
        .filter_map(|k| h.ids.slot(k).map(|id| (k.name().as_bytes(), i64::from(id))))
        .collect();
    m.extend(
        h.other
            .iter()
            .filter(|(name, _)| Kind::from_name(name).is_none())
            .map(|(name, id)| (name.as_slice(), *id)),
    );
    // Stable: among repeated names the first stays first, and dedup keeps it.
    m.sort_by(|a, b| a.0.cmp(b.0));
    m.dedup_by(|later, earlier| later.0 == earlier.0);

    write_frame(out, HANDSHAKE_ID, |enc| {
        enc.begin_dict();
        enc.str("m");
        enc.begin_dict();
        for (name, id) in &m {
            enc.bytes(name);
            enc.int(*id);
        }
        enc.end();
        if let Some(port) = h.port.filter(|&p| p != 0) {
            enc.str("p");
            enc.int(i64::from(port));
        }
        if let Some(pk) = &h.public_key {
            enc.str("pbts_pk");
            enc.bytes(&pk.0);
        }
        if let Some(reqq) = h.reqq {
            enc.str("reqq");
            enc.int(i64::from(reqq));
        }
        if let Some(v) = &h.version {
            enc.str("v");
            enc.str(v);
        }
        enc.end();
    });
}

/// Appends `msg` as a complete framed extended message, under the id the *remote* peer
/// assigned in its handshake (`remote_ids`). Nothing is appended on error.
///
/// # Errors
///
/// [`Bep10Error::NotSupported`] if the remote peer gave the message no id (absent or 0);
/// [`Bep10Error::EmptyBatch`] / [`Bep10Error::BatchTooLarge`] for a batch outside
/// `1..=MAX_BATCH`; [`Bep10Error::TimestampTooLarge`] for a timestamp over `i64::MAX`.
pub fn write_message(
    remote_ids: &ExtensionIds,
    msg: &Message,
    out: &mut Vec<u8>,
) -> Result<(), Bep10Error> {
    let ext_id = remote_ids.id(msg.kind()).ok_or(Bep10Error::NotSupported)?;
    match msg {
        Message::Receipt(r) => {
            let ts = encodable_timestamp(r)?;
            write_frame(out, ext_id, |enc| write_receipt(enc, r, ts));
        }
        Message::ReceiptBatch(receipts) => {
            check_batch_len(receipts.len())?;
            let timestamps =
                receipts.iter().map(encodable_timestamp).collect::<Result<Vec<_>, _>>()?;
            write_frame(out, ext_id, |enc| {
                enc.begin_dict();
                enc.str("receipts");
                enc.begin_list();
                for (r, ts) in receipts.iter().zip(timestamps) {
                    write_receipt(enc, r, ts);
                }
                enc.end();
                enc.end();
            });
        }
        Message::RequestReceipt { info_hash, piece_index, piece_hash } => {
            write_frame(out, ext_id, |enc| {
                enc.begin_dict();
                enc.str("info_hash");
                enc.bytes(&info_hash.0);
                enc.str("piece_hash");
                enc.bytes(piece_hash.as_bytes());
                enc.str("piece_index");
                enc.int(i64::from(*piece_index));
                enc.end();
            });
        }
    }
    Ok(())
}

fn encodable_timestamp(r: &Receipt) -> Result<i64, Bep10Error> {
    i64::try_from(r.timestamp).map_err(|_| Bep10Error::TimestampTooLarge { timestamp: r.timestamp })
}

fn check_batch_len(got: usize) -> Result<(), Bep10Error> {
    if got == 0 {
        return Err(Bep10Error::EmptyBatch);
    }
    if got > MAX_BATCH {
        return Err(Bep10Error::BatchTooLarge { got, max: MAX_BATCH });
    }
    Ok(())
}

/// Writes one receipt dictionary; keys in sorted byte order.
fn write_receipt(enc: &mut Encoder<'_>, r: &Receipt, timestamp: i64) {
    enc.begin_dict();
    enc.str("info_hash");
    enc.bytes(&r.info_hash.0);
    enc.str("piece_hash");
    enc.bytes(r.piece_hash.as_bytes());
    enc.str("piece_index");
    enc.int(i64::from(r.piece_index));
    enc.str("receiver_pk");
    enc.bytes(&r.receiver_pk.0);
    enc.str("sender_pk");
    enc.bytes(&r.sender_pk.0);
    enc.str("signature");
    enc.bytes(&r.signature.0);
    enc.str("timestamp");
    enc.int(timestamp);
    enc.end();
}

// ---- decoding -----------------------------------------------------------------------------

/// Decodes the framed peer-wire message at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold the whole message, and otherwise the
/// message with the number of bytes it used (`4 + len`). Extended messages are mapped through
/// `local_ids`, the ids *we* advertised; extended messages and ordinary BitTorrent messages
/// that are not ours come back unparsed, to be skipped.
///
/// # Errors
///
/// [`Bep10Error::TooLong`] as soon as the length prefix exceeds [`MAX_MESSAGE_LEN`] (a
/// handshake or one of our messages) or [`MAX_SKIPPED_LEN`] (anything else): close the
/// connection. Any other error concerns one complete frame, whose `4 + u32be(buf[..4])`
/// bytes the caller may skip to carry on.
pub fn decode_frame(
    buf: &[u8],
    local_ids: &ExtensionIds,
) -> Result<Option<(Frame, usize)>, Bep10Error> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 {
        return Ok(Some((Frame::KeepAlive, 4)));
    }
    if len > MAX_SKIPPED_LEN {
        return Err(Bep10Error::TooLong { len, max: MAX_SKIPPED_LEN });
    }
    let Some(&id) = buf.get(4) else {
        return Ok(None);
    };
    let total = 4 + len;
    if id != EXTENDED_MESSAGE_ID {
        return Ok((buf.len() >= total).then_some((Frame::NotExtended { id }, total)));
    }
    if len < 2 {
        return Err(Bep10Error::MissingExtendedId);
    }
    let Some(&ext_id) = buf.get(5) else {
        return Ok(None);
    };
    let kind = local_ids.kind_of(ext_id);
    if ext_id != HANDSHAKE_ID && kind.is_none() {
        return Ok((buf.len() >= total).then_some((Frame::OtherExtension { id: ext_id }, total)));
    }
    if len > MAX_MESSAGE_LEN {
        return Err(Bep10Error::TooLong { len, max: MAX_MESSAGE_LEN });
    }
    let Some(payload) = buf.get(6..total) else {
        return Ok(None);
    };
    let frame = match kind {
        _ if ext_id == HANDSHAKE_ID => Frame::Handshake(parse_handshake(payload)?),
        Some(kind) => Frame::Pbts(parse_message(kind, payload)?),
        // Handled above: a non-handshake id without a kind is another extension.
        None => Frame::OtherExtension { id: ext_id },
    };
    Ok(Some((frame, total)))
}

/// Decodes the payload of an extended message received under `ext_id` (not the handshake's
/// 0), given the ids *we* advertised: `Ok(None)` if `ext_id` is not one of our messages (another
/// extension's, to be skipped). For peers that frame messages themselves.
///
/// # Errors
///
/// [`Bep10Error::TooLong`] for a payload over [`MAX_MESSAGE_LEN`]` - 2`; otherwise as
/// [`decode_frame`] for one of our messages.
pub fn parse_extended(
    ext_id: u8,
    payload: &[u8],
    local_ids: &ExtensionIds,
) -> Result<Option<Message>, Bep10Error> {
    let Some(kind) = local_ids.kind_of(ext_id) else { return Ok(None) };
    let len = payload.len() + 2;
    if len > MAX_MESSAGE_LEN {
        return Err(Bep10Error::TooLong { len, max: MAX_MESSAGE_LEN });
    }
    parse_message(kind, payload).map(Some)
}

/// Decodes an extended handshake payload (the bencoded dictionary after `20 ‖ 0`).
///
/// Lenient where other clients differ: a missing `m` is empty, `m` entries that are not
/// integers are dropped, and `p`, `reqq` and `v` of the wrong type or range are ignored. Strict
/// about our names: their ids must be integers in `0..=255`, and `pbts_pk` a 48-byte string.
///
/// # Errors
///
/// [`Bep10Error::Bencode`] for non-canonical bencode; [`Bep10Error::WrongType`] if the payload
/// or `m` is not a dictionary, one of our ids is not an integer or `pbts_pk` not a byte string;
/// [`Bep10Error::IntOutOfRange`] if one of our ids is outside `0..=255`;
/// [`Bep10Error::BadFieldLength`] if `pbts_pk` is not 48 bytes.
pub fn parse_handshake(payload: &[u8]) -> Result<Handshake, Bep10Error> {
    let root = bencode::decode(payload, &LIMITS).map_err(Bep10Error::Bencode)?;
    expect_dict(&root, "payload")?;
    let mut h = Handshake { ids: ExtensionIds::NONE, ..Handshake::default() };
    if let Some(m) = root.get(b"m") {
        let entries =
            m.as_dict().ok_or(Bep10Error::WrongType { field: "m", expected: "dictionary" })?;
        for (name, value) in entries {
            match Kind::from_name(name) {
                Some(kind) => {
                    let field = kind.name();
                    let got = value
                        .as_int()
                        .ok_or(Bep10Error::WrongType { field, expected: "integer" })?;
                    let id =
                        u8::try_from(got).map_err(|_| Bep10Error::IntOutOfRange { field, got })?;
                    *h.ids.slot_mut(kind) = Some(id);
                }
                None => {
                    if let Some(id) = value.as_int() {
                        h.other.push((name.to_vec(), id));
                    }
                }
            }
        }
    }
    h.port = root
        .get(b"p")
        .and_then(Value::as_int)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0);
    h.reqq = root.get(b"reqq").and_then(Value::as_int).and_then(|q| u32::try_from(q).ok());
    if root.get(b"pbts_pk").is_some() {
        h.public_key = Some(PublicKeyBytes(fixed_bytes(&root, "pbts_pk")?));
    }
    h.version =
        root.get(b"v").and_then(Value::as_bytes).map(|v| String::from_utf8_lossy(v).into_owned());
    Ok(h)
}

fn parse_message(kind: Kind, payload: &[u8]) -> Result<Message, Bep10Error> {
    let root = bencode::decode(payload, &LIMITS).map_err(Bep10Error::Bencode)?;
    expect_dict(&root, "payload")?;
    match kind {
        Kind::Receipt => parse_receipt(&root).map(Message::Receipt),
        Kind::ReceiptBatch => {
            let list = root
                .get(b"receipts")
                .ok_or(Bep10Error::MissingField("receipts"))?
                .as_list()
                .ok_or(Bep10Error::WrongType { field: "receipts", expected: "list" })?;
            check_batch_len(list.len())?;
            list.iter().map(parse_receipt).collect::<Result<_, _>>().map(Message::ReceiptBatch)
        }
        Kind::RequestReceipt => Ok(Message::RequestReceipt {
            info_hash: InfoHash(fixed_bytes(&root, "info_hash")?),
            piece_index: piece_index(&root)?,
            piece_hash: piece_hash(&root)?,
        }),
    }
}

fn parse_receipt(v: &Value<'_>) -> Result<Receipt, Bep10Error> {
    expect_dict(v, "receipt")?;
    let got = int_field(v, "timestamp")?;
    let timestamp =
        u64::try_from(got).map_err(|_| Bep10Error::IntOutOfRange { field: "timestamp", got })?;
    Ok(Receipt {
        info_hash: InfoHash(fixed_bytes(v, "info_hash")?),
        sender_pk: PublicKeyBytes(fixed_bytes::<PUBLIC_KEY_LEN>(v, "sender_pk")?),
        receiver_pk: PublicKeyBytes(fixed_bytes::<PUBLIC_KEY_LEN>(v, "receiver_pk")?),
        piece_hash: piece_hash(v)?,
        piece_index: piece_index(v)?,
        timestamp,
        signature: SignatureBytes(fixed_bytes::<SIGNATURE_LEN>(v, "signature")?),
    })
}

fn expect_dict(v: &Value<'_>, field: &'static str) -> Result<(), Bep10Error> {
    match v {
        Value::Dict(_) => Ok(()),
        _ => Err(Bep10Error::WrongType { field, expected: "dictionary" }),
    }
}

fn bytes_field<'a>(v: &Value<'a>, field: &'static str) -> Result<&'a [u8], Bep10Error> {
    v.get(field.as_bytes())
        .ok_or(Bep10Error::MissingField(field))?
        .as_bytes()
        .ok_or(Bep10Error::WrongType { field, expected: "byte string" })
}

fn fixed_bytes<const N: usize>(v: &Value<'_>, field: &'static str) -> Result<[u8; N], Bep10Error> {
    let b = bytes_field(v, field)?;
    b.try_into().map_err(|_| Bep10Error::BadFieldLength { field, got: b.len(), expected: N })
}

fn int_field(v: &Value<'_>, field: &'static str) -> Result<i64, Bep10Error> {
    v.get(field.as_bytes())
        .ok_or(Bep10Error::MissingField(field))?
        .as_int()
        .ok_or(Bep10Error::WrongType { field, expected: "integer" })
}

fn piece_index(v: &Value<'_>) -> Result<u32, Bep10Error> {
    let got = int_field(v, "piece_index")?;
    u32::try_from(got).map_err(|_| Bep10Error::IntOutOfRange { field: "piece_index", got })
}

fn piece_hash(v: &Value<'_>) -> Result<PieceHash, Bep10Error> {
    let b = bytes_field(v, "piece_hash")?;
    PieceHash::from_slice(b).ok_or(Bep10Error::BadPieceHashLength { got: b.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn receipt(seed: u8) -> Receipt {
        Receipt {
            info_hash: InfoHash([seed; 20]),
            sender_pk: PublicKeyBytes([seed.wrapping_add(1); 48]),
            receiver_pk: PublicKeyBytes([seed.wrapping_add(2); 48]),
            piece_hash: PieceHash::from_slice(&[seed.wrapping_add(3); 32]).expect("32 bytes"),
            piece_index: u32::from(seed) * 1000,
            timestamp: 1_700_000_000 + u64::from(seed),
            signature: SignatureBytes([seed.wrapping_add(4); 96]),
        }
    }

    fn frame(ext_id: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
        v.push(EXTENDED_MESSAGE_ID);
        v.push(ext_id);
        v.extend_from_slice(payload);
        v
    }

    fn decode_all(buf: &[u8], ids: &ExtensionIds) -> Result<Frame, Bep10Error> {
        let (f, used) = decode_frame(buf, ids)?.expect("complete frame");
        assert_eq!(used, buf.len());
        Ok(f)
    }

    fn encoded(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        write_message(&ExtensionIds::default(), msg, &mut out).expect("writable");
        out
    }

    #[test]
    fn handshake_exact_bytes() {
        let h = Handshake {
            port: Some(6881),
            version: Some("pbts-rs 0.1.0".into()),
            ..Handshake::default()
        };
        let mut out = Vec::new();
        write_handshake(&h, &mut out);
        let mut expected = vec![0, 0, 0, 0x69, 20, 0];
        expected.extend_from_slice(
            b"d1:md12:pbts_receipti1e18:pbts_receipt_batchi2e20:pbts_request_receipti3ee\
              1:pi6881e1:v13:pbts-rs 0.1.0e",
        );
        assert_eq!(out, expected);
        assert_eq!(decode_all(&out, &ExtensionIds::NONE), Ok(Frame::Handshake(h)));

        // All options and another extension; port 0 is not written.
        let h = Handshake {
            ids: ExtensionIds { receipt: Some(7), receipt_batch: Some(0), request_receipt: None },
            port: Some(0),
            version: None,
            reqq: Some(250),
            public_key: None,
            other: vec![(b"ut_pex".to_vec(), 1), (b"a".to_vec(), -1), (b"ut_pex".to_vec(), 9)],
        };
        let mut out = Vec::new();
        write_handshake(&h, &mut out);
        let payload: &[u8] =
            b"d1:md1:ai-1e12:pbts_receipti7e18:pbts_receipt_batchi0e6:ut_pexi1ee4:reqqi250ee";
        assert_eq!(out, frame(0, payload));
    }

    #[test]
    fn parse_extended_maps_our_ids_and_skips_others() {
        let msg = Message::RequestReceipt {
            info_hash: InfoHash([1; 20]),
            piece_index: 9,
            piece_hash: PieceHash::from_slice(&[2; 20]).expect("20 bytes"),
        };
        let wire = encoded(&msg);
        let ours = ExtensionIds::default();
        assert_eq!(parse_extended(wire[5], &wire[6..], &ours), Ok(Some(msg)));
        assert_eq!(parse_extended(9, &wire[6..], &ours), Ok(None));
        assert_eq!(parse_extended(wire[5], &wire[6..], &ExtensionIds::NONE), Ok(None));
        assert_eq!(
            parse_extended(3, &vec![b'0'; MAX_MESSAGE_LEN], &ours),
            Err(Bep10Error::TooLong { len: MAX_MESSAGE_LEN + 2, max: MAX_MESSAGE_LEN })
        );
        assert!(matches!(parse_extended(3, b"de", &ours), Err(Bep10Error::MissingField(_))));
    }

    #[test]
    fn handshake_carries_the_public_key() {
        let h = Handshake {
            ids: ExtensionIds { receipt: None, receipt_batch: Some(2), request_receipt: None },
            public_key: Some(PublicKeyBytes([0xab; 48])),
            ..Handshake::default()
        };
        let mut out = Vec::new();
        write_handshake(&h, &mut out);
        let mut payload = b"d1:md18:pbts_receipt_batchi2ee7:pbts_pk48:".to_vec();
        payload.extend_from_slice(&[0xab; 48]);
        payload.push(b'e');
        assert_eq!(out, frame(0, &payload));
        assert_eq!(decode_all(&out, &ExtensionIds::NONE), Ok(Frame::Handshake(h)));

        // Ours, so strict: a wrong length or type is an error, not a peer without a key.
        assert_eq!(
            parse_handshake(b"d7:pbts_pk3:abce"),
            Err(Bep10Error::BadFieldLength { field: "pbts_pk", got: 3, expected: 48 })
        );
        assert_eq!(
            parse_handshake(b"d7:pbts_pki1ee"),
            Err(Bep10Error::WrongType { field: "pbts_pk", expected: "byte string" })
        );
    }

    #[test]
    fn original_handshake_decodes_without_support() {
        // The PBTS prototype's 98-byte handshake (nested dict under m.pbts): no ids, not an error.
        let mut wire = vec![0, 0, 0, 0x5e, 20, 0];
        wire.extend_from_slice(
            b"d1:md4:pbtsd7:receipti1e13:receipt_batchi2e15:request_receipti3eee\
              1:pi6881e1:v10:PBTS 0.1.0e",
        );
        assert_eq!(wire.len(), 98);
        let Frame::Handshake(h) = decode_all(&wire, &ExtensionIds::default()).expect("decodes")
        else {
            panic!("not a handshake")
        };
        assert_eq!(h.ids, ExtensionIds::NONE);
        assert!(!h.ids.supports_any());
        assert_eq!(h.port, Some(6881));
        assert_eq!(h.version.as_deref(), Some("PBTS 0.1.0"));
        assert!(h.other.is_empty());
        let mut out = Vec::new();
        assert_eq!(
            write_message(&h.ids, &Message::Receipt(receipt(1)), &mut out),
            Err(Bep10Error::NotSupported)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn libtorrent_style_handshake() {
        let payload: &[u8] = b"d12:complete_agoi-1e\
            1:md11:lt_donthavei7e12:pbts_receipti5e10:share_modei8e11:upload_onlyi3e\
            12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee\
            13:metadata_sizei31235e1:pi51413e4:reqqi500e11:upload_onlyi0e\
            1:v17:libTorrent 1.2.19\
            6:yourip4:\x7f\x00\x00\x01e";
        let h = match decode_all(&frame(0, payload), &ExtensionIds::default()) {
            Ok(Frame::Handshake(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            h.ids,
            ExtensionIds { receipt: Some(5), receipt_batch: None, request_receipt: None }
        );
        assert_eq!(h.port, Some(51413));
        assert_eq!(h.reqq, Some(500));
        assert_eq!(h.version.as_deref(), Some("libTorrent 1.2.19"));
        let names: Vec<&[u8]> = h.other.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(
            names,
            [
                &b"lt_donthave"[..],
                b"share_mode",
                b"upload_only",
                b"ut_holepunch",
                b"ut_metadata",
                b"ut_pex"
            ]
        );
        assert_eq!(h.other[4].1, 2);
        // It supports single receipts only.
        let mut out = Vec::new();
        write_message(&h.ids, &Message::Receipt(receipt(1)), &mut out).expect("supported");
        assert_eq!(out[5], 5);
        assert_eq!(
            write_message(&h.ids, &Message::ReceiptBatch(vec![receipt(1)]), &mut out),
            Err(Bep10Error::NotSupported)
        );
        // Re-encoding keeps the other extensions.
        let mut again = Vec::new();
        write_handshake(&h, &mut again);
        assert_eq!(decode_all(&again, &ExtensionIds::NONE), Ok(Frame::Handshake(h)));
    }

    #[test]
    fn lenient_handshake_fields() {
        let cases: &[(&[u8], Handshake)] = &[
            (b"de", Handshake { ids: ExtensionIds::NONE, ..Handshake::default() }),
            (
                b"d1:md3:barli1eee1:pi70000e4:reqqi-1e1:vi3ee",
                Handshake { ids: ExtensionIds::NONE, ..Handshake::default() },
            ),
            (
                b"d1:md3:bari2ee1:pi0e1:v2:\xff\xfee",
                Handshake {
                    ids: ExtensionIds::NONE,
                    version: Some("\u{fffd}\u{fffd}".into()),
                    other: vec![(b"bar".to_vec(), 2)],
                    ..Handshake::default()
                },
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(parse_handshake(payload).as_ref(), Ok(want), "{}", payload.escape_ascii());
        }
    }

    #[test]
    fn extension_ids_update_and_lookup() {
        let mut ids = ExtensionIds::default();
        ids.update(&ExtensionIds {
            receipt: Some(0),
            receipt_batch: None,
            request_receipt: Some(9),
        });
        assert_eq!(
            ids,
            ExtensionIds { receipt: Some(0), receipt_batch: Some(2), request_receipt: Some(9) }
        );
        assert!(ids.supports_any());
        assert_eq!(ids.kind_of(0), None);
        assert_eq!(ids.kind_of(9), Some(Kind::RequestReceipt));
        assert_eq!(ids.id(Kind::Receipt), None);
        assert!(!ExtensionIds { receipt: Some(0), ..ExtensionIds::NONE }.supports_any());
        // Ambiguous ids resolve in a fixed order.
        let dup = ExtensionIds { receipt: Some(4), receipt_batch: Some(4), request_receipt: None };
        assert_eq!(dup.kind_of(4), Some(Kind::Receipt));
    }

    #[test]
    fn receipt_exact_layout_has_no_t_epoch() {
        let r = Receipt {
            info_hash: InfoHash([b'i'; 20]),
            sender_pk: PublicKeyBytes([b's'; 48]),
            receiver_pk: PublicKeyBytes([b'r'; 48]),
            piece_hash: PieceHash::from_slice(&[b'h'; 20]).expect("20 bytes"),
            piece_index: 42,
            timestamp: 1_700_000_000,
            signature: SignatureBytes([b'g'; 96]),
        };
        let out = encoded(&Message::Receipt(r));
        let mut payload = b"d9:info_hash20:".to_vec();
        payload.extend_from_slice(&[b'i'; 20]);
        payload.extend_from_slice(b"10:piece_hash20:");
        payload.extend_from_slice(&[b'h'; 20]);
        payload.extend_from_slice(b"11:piece_indexi42e11:receiver_pk48:");
        payload.extend_from_slice(&[b'r'; 48]);
        payload.extend_from_slice(b"9:sender_pk48:");
        payload.extend_from_slice(&[b's'; 48]);
        payload.extend_from_slice(b"9:signature96:");
        payload.extend_from_slice(&[b'g'; 96]);
        payload.extend_from_slice(b"9:timestampi1700000000ee");
        assert_eq!(out, frame(1, &payload));
    }

    #[test]
    fn extra_keys_ignored() {
        // The PBTS prototype's t_epoch, and an unknown key, are ignored.
        let r = receipt(3);
        let out = encoded(&Message::Receipt(r));
        let payload = &out[6..];
        let at = payload.windows(11).position(|w| w == b"9:timestamp").expect("present");
        let mut extended = payload[..at].to_vec();
        extended.extend_from_slice(b"7:t_epochi472222e");
        extended.extend_from_slice(&payload[at..payload.len() - 1]);
        extended.extend_from_slice(b"5:zzzzzli1eee");
        let out = frame(1, &extended);
        assert_eq!(
            decode_all(&out, &ExtensionIds::default()),
            Ok(Frame::Pbts(Message::Receipt(r)))
        );
    }

    #[test]
    fn largest_batch_fits() {
        let r = Receipt { piece_index: u32::MAX, timestamp: i64::MAX as u64, ..receipt(0xff) };
        let msg = Message::ReceiptBatch(vec![r; MAX_BATCH]);
        let out = encoded(&msg);
        let len = u32::from_be_bytes(out[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(len + 4, out.len());
        assert!(len <= MAX_MESSAGE_LEN, "{len}");
        assert!(len > MAX_MESSAGE_LEN * 2 / 3, "the bound is not slack: {len}");
        assert_eq!(decode_all(&out, &ExtensionIds::default()), Ok(Frame::Pbts(msg)));
    }

    #[test]
    fn frames_not_ours_are_skipped() {
        let ids = ExtensionIds::default();
        // Keep-alive, then an ordinary `have` message, then another extension.
        let mut wire = vec![0, 0, 0, 0];
        wire.extend_from_slice(&[0, 0, 0, 5, 4, 0, 0, 0, 9]);
        wire.extend_from_slice(&frame(42, b"d8:msg_typei0e5:piecei0ee"));
        let (f, n) = decode_frame(&wire, &ids).expect("ok").expect("complete");
        assert_eq!((f, n), (Frame::KeepAlive, 4));
        let (f, m) = decode_frame(&wire[n..], &ids).expect("ok").expect("complete");
        assert_eq!((f, m), (Frame::NotExtended { id: 4 }, 9));
        let rest = &wire[n + m..];
        assert_eq!(
            decode_frame(rest, &ids),
            Ok(Some((Frame::OtherExtension { id: 42 }, rest.len())))
        );
        // An id we did not assign is another extension even if it carries our payload.
        let msg = encoded(&Message::Receipt(receipt(1)));
        assert_eq!(
            decode_frame(&msg, &ExtensionIds::NONE),
            Ok(Some((Frame::OtherExtension { id: 1 }, msg.len())))
        );
        // A skipped message may exceed MAX_MESSAGE_LEN.
        let mut big = ((MAX_MESSAGE_LEN + 10) as u32).to_be_bytes().to_vec();
        big.push(7);
        big.resize(4 + MAX_MESSAGE_LEN + 10, 0);
        assert_eq!(decode_frame(&big, &ids), Ok(Some((Frame::NotExtended { id: 7 }, big.len()))));
    }

    #[test]
    fn every_split_point_needs_more() {
        let msgs = [
            {
                let mut v = Vec::new();
                write_handshake(&Handshake { port: Some(1), ..Handshake::default() }, &mut v);
                v
            },
            encoded(&Message::Receipt(receipt(1))),
            encoded(&Message::ReceiptBatch(vec![receipt(1), receipt(2)])),
            encoded(&Message::RequestReceipt {
                info_hash: InfoHash([1; 20]),
                piece_index: 5,
                piece_hash: PieceHash::from_slice(&[2; 20]).expect("20 bytes"),
            }),
            frame(77, b"whatever"),
            vec![0, 0, 0, 3, 9, 1, 2],
        ];
        for wire in msgs {
            for k in 0..wire.len() {
                assert_eq!(decode_frame(&wire[..k], &ExtensionIds::default()), Ok(None), "{k}");
            }
            // With the next message behind it, exactly one message is consumed.
            let mut two = wire.clone();
            two.extend_from_slice(&wire);
            let (_, used) =
                decode_frame(&two, &ExtensionIds::default()).expect("ok").expect("complete");
            assert_eq!(used, wire.len());
        }
    }

    #[test]
    fn every_error_variant() {
        let ids = ExtensionIds::default();
        let r_payload = encoded(&Message::Receipt(receipt(1)))[6..].to_vec();
        let replace = |payload: &[u8], from: &[u8], to: &[u8]| -> Vec<u8> {
            let at = payload.windows(from.len()).position(|w| w == from).expect("pattern present");
            let mut v = payload[..at].to_vec();
            v.extend_from_slice(to);
            v.extend_from_slice(&payload[at + from.len()..]);
            v
        };
        let short_sig = replace(
            &r_payload,
            &[&b"9:signature96:"[..], &[5; 96]].concat(),
            &[&b"9:signature95:"[..], &[5; 95]].concat(),
        );
        let bad_hash = {
            let mut p = b"d9:info_hash20:".to_vec();
            p.extend_from_slice(&[0; 20]);
            p.extend_from_slice(b"10:piece_hash21:");
            p.extend_from_slice(&[0; 21]);
            p.extend_from_slice(b"11:piece_indexi1ee");
            p
        };
        let big_len = ((MAX_SKIPPED_LEN + 1) as u32).to_be_bytes();
        let ours_too_long = ((MAX_MESSAGE_LEN + 1) as u32).to_be_bytes();
        let cases: Vec<(&str, Vec<u8>, Bep10Error)> = vec![
            (
                "too long (any)",
                [&big_len[..], &[20]].concat(),
                Bep10Error::TooLong { len: MAX_SKIPPED_LEN + 1, max: MAX_SKIPPED_LEN },
            ),
            (
                "too long (ours)",
                [&ours_too_long[..], &[20, 1]].concat(),
                Bep10Error::TooLong { len: MAX_MESSAGE_LEN + 1, max: MAX_MESSAGE_LEN },
            ),
            (
                "too long (handshake)",
                [&ours_too_long[..], &[20, 0]].concat(),
                Bep10Error::TooLong { len: MAX_MESSAGE_LEN + 1, max: MAX_MESSAGE_LEN },
            ),
            ("no extended id", vec![0, 0, 0, 1, 20], Bep10Error::MissingExtendedId),
            (
                "bad bencode",
                frame(1, b"d9:info_hash"),
                Bep10Error::Bencode(DecodeError::UnexpectedEof { offset: 12 }),
            ),
            (
                "trailing bytes",
                frame(0, b"dex"),
                Bep10Error::Bencode(DecodeError::TrailingBytes { offset: 2 }),
            ),
            (
                "handshake not a dict",
                frame(0, b"le"),
                Bep10Error::WrongType { field: "payload", expected: "dictionary" },
            ),
            (
                "m not a dict",
                frame(0, b"d1:mi1ee"),
                Bep10Error::WrongType { field: "m", expected: "dictionary" },
            ),
            (
                "our id not an int",
                frame(0, b"d1:md12:pbts_receipt1:xee"),
                Bep10Error::WrongType { field: RECEIPT, expected: "integer" },
            ),
            (
                "our id over 255",
                frame(0, b"d1:md18:pbts_receipt_batchi256eee"),
                Bep10Error::IntOutOfRange { field: RECEIPT_BATCH, got: 256 },
            ),
            (
                "our id negative",
                frame(0, b"d1:md20:pbts_request_receipti-1eee"),
                Bep10Error::IntOutOfRange { field: REQUEST_RECEIPT, got: -1 },
            ),
            (
                "receipt payload not a dict",
                frame(1, b"i1e"),
                Bep10Error::WrongType { field: "payload", expected: "dictionary" },
            ),
            ("missing field", frame(1, b"de"), Bep10Error::MissingField("timestamp")),
            (
                "wrong int type",
                frame(1, &replace(&r_payload, b"i1700000001e", b"1:x")),
                Bep10Error::WrongType { field: "timestamp", expected: "integer" },
            ),
            (
                "negative timestamp",
                frame(1, &replace(&r_payload, b"i1700000001e", b"i-1e")),
                Bep10Error::IntOutOfRange { field: "timestamp", got: -1 },
            ),
            (
                "piece index over u32",
                frame(1, &replace(&r_payload, b"i1000e", b"i4294967296e")),
                Bep10Error::IntOutOfRange { field: "piece_index", got: 1 << 32 },
            ),
            (
                "wrong bytes type",
                frame(
                    1,
                    &replace(
                        &r_payload,
                        &[&b"9:sender_pk48:"[..], &[2; 48]].concat(),
                        b"9:sender_pki0e",
                    ),
                ),
                Bep10Error::WrongType { field: "sender_pk", expected: "byte string" },
            ),
            (
                "short signature",
                frame(1, &short_sig),
                Bep10Error::BadFieldLength { field: "signature", got: 95, expected: 96 },
            ),
            ("bad piece hash", frame(3, &bad_hash), Bep10Error::BadPieceHashLength { got: 21 }),
            (
                "batch not a list",
                frame(2, b"d8:receiptsi1ee"),
                Bep10Error::WrongType { field: "receipts", expected: "list" },
            ),
            ("batch missing", frame(2, b"de"), Bep10Error::MissingField("receipts")),
            ("empty batch", frame(2, b"d8:receiptslee"), Bep10Error::EmptyBatch),
            (
                "batch item not a dict",
                frame(2, b"d8:receiptsli1eee"),
                Bep10Error::WrongType { field: "receipt", expected: "dictionary" },
            ),
        ];
        for (name, wire, want) in cases {
            assert_eq!(decode_frame(&wire, &ids), Err(want), "{name}");
            assert!(!want.to_string().is_empty());
            assert!(!want.as_str().is_empty());
        }

        // Batch too large on decode.
        let mut p = b"d8:receiptsl".to_vec();
        for _ in 0..=MAX_BATCH {
            p.extend_from_slice(b"de");
        }
        p.extend_from_slice(b"ee");
        assert_eq!(
            decode_frame(&frame(2, &p), &ids),
            Err(Bep10Error::BatchTooLarge { got: MAX_BATCH + 1, max: MAX_BATCH })
        );

        // Write-side errors leave `out` untouched.
        let mut out = vec![0xaa];
        let write_cases = [
            (Message::ReceiptBatch(vec![]), Bep10Error::EmptyBatch),
            (
                Message::ReceiptBatch(vec![receipt(1); MAX_BATCH + 1]),
                Bep10Error::BatchTooLarge { got: MAX_BATCH + 1, max: MAX_BATCH },
            ),
            (
                Message::Receipt(Receipt { timestamp: u64::MAX, ..receipt(1) }),
                Bep10Error::TimestampTooLarge { timestamp: u64::MAX },
            ),
            (
                Message::ReceiptBatch(vec![
                    receipt(1),
                    Receipt { timestamp: 1 << 63, ..receipt(2) },
                ]),
                Bep10Error::TimestampTooLarge { timestamp: 1 << 63 },
            ),
        ];
        for (msg, want) in write_cases {
            assert_eq!(write_message(&ids, &msg, &mut out), Err(want));
        }
        assert_eq!(
            write_message(
                &ExtensionIds { receipt: Some(0), ..ids },
                &Message::Receipt(receipt(1)),
                &mut out
            ),
            Err(Bep10Error::NotSupported)
        );
        assert_eq!(out, [0xaa]);
    }

    #[test]
    fn error_display() {
        let cases = [
            (Bep10Error::NotSupported, "bep10: message not supported by the peer"),
            (Bep10Error::TooLong { len: 9, max: 8 }, "bep10: message too long (9 > 8)"),
            (
                Bep10Error::Bencode(DecodeError::InvalidInt { offset: 3 }),
                "bep10 payload: bencode: invalid integer at offset 3",
            ),
            (
                Bep10Error::BadFieldLength { field: "signature", got: 95, expected: 96 },
                "bep10: field has the wrong length: signature has 95 bytes, expected 96",
            ),
            (Bep10Error::MissingField("receipts"), "bep10: missing field: receipts"),
            (
                Bep10Error::WrongType { field: "m", expected: "dictionary" },
                "bep10: field has the wrong type: m should be a dictionary",
            ),
        ];
        for (e, s) in cases {
            assert_eq!(e.to_string(), s);
        }
        use std::error::Error as _;
        assert!(Bep10Error::Bencode(DecodeError::InvalidInt { offset: 0 }).source().is_some());
        assert!(Bep10Error::EmptyBatch.source().is_none());
    }

    // ---- property tests -------------------------------------------------------------------

    fn arb_piece_hash() -> impl Strategy<Value = PieceHash> {
        prop_oneof![
            prop::array::uniform20(any::<u8>()).prop_map(|b| PieceHash::from_slice(&b)),
            prop::array::uniform32(any::<u8>()).prop_map(|b| PieceHash::from_slice(&b)),
        ]
        .prop_map(|h| h.expect("20 or 32 bytes"))
    }

    fn arb_receipt() -> impl Strategy<Value = Receipt> {
        (
            prop::array::uniform20(any::<u8>()),
            prop::collection::vec(any::<u8>(), 48 + 48 + 96),
            arb_piece_hash(),
            any::<u32>(),
            0..=i64::MAX as u64,
        )
            .prop_map(|(ih, keys, piece_hash, piece_index, timestamp)| Receipt {
                info_hash: InfoHash(ih),
                sender_pk: PublicKeyBytes(keys[..48].try_into().expect("48")),
                receiver_pk: PublicKeyBytes(keys[48..96].try_into().expect("48")),
                piece_hash,
                piece_index,
                timestamp,
                signature: SignatureBytes(keys[96..].try_into().expect("96")),
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            arb_receipt().prop_map(Message::Receipt),
            prop::collection::vec(arb_receipt(), 1..12).prop_map(Message::ReceiptBatch),
            (prop::array::uniform20(any::<u8>()), any::<u32>(), arb_piece_hash()).prop_map(
                |(ih, piece_index, piece_hash)| Message::RequestReceipt {
                    info_hash: InfoHash(ih),
                    piece_index,
                    piece_hash,
                }
            ),
        ]
    }

    /// Three distinct non-zero ids.
    fn arb_ids() -> impl Strategy<Value = ExtensionIds> {
        prop::sample::subsequence((1..=255u8).collect::<Vec<_>>(), 3).prop_shuffle().prop_map(|v| {
            ExtensionIds {
                receipt: Some(v[0]),
                receipt_batch: Some(v[1]),
                request_receipt: Some(v[2]),
            }
        })
    }

    fn arb_handshake() -> impl Strategy<Value = Handshake> {
        (
            prop::option::of(any::<u8>()),
            prop::option::of(any::<u8>()),
            prop::option::of(any::<u8>()),
            prop::option::of(1..=u16::MAX),
            prop::option::of(".{0,20}"),
            prop::option::of(any::<u32>()),
            prop::collection::btree_map(
                prop::collection::vec(any::<u8>(), 0..12),
                any::<i64>(),
                0..6,
            ),
        )
            .prop_map(|(a, b, c, port, version, reqq, other)| Handshake {
                ids: ExtensionIds { receipt: a, receipt_batch: b, request_receipt: c },
                port,
                version,
                reqq,
                public_key: reqq.map(|q| PublicKeyBytes([q as u8; 48])),
                other: other.into_iter().filter(|(n, _)| Kind::from_name(n).is_none()).collect(),
            })
    }

    proptest! {
        #[test]
        fn message_round_trip(msg in arb_message(), ids in arb_ids()) {
            let mut out = Vec::new();
            write_message(&ids, &msg, &mut out).expect("writable");
            prop_assert_eq!(out[5], ids.id(msg.kind()).expect("assigned"));
            prop_assert_eq!(decode_frame(&out, &ids), Ok(Some((Frame::Pbts(msg), out.len()))));
        }

        #[test]
        fn handshake_round_trip(h in arb_handshake()) {
            let mut out = Vec::new();
            write_handshake(&h, &mut out);
            prop_assert_eq!(decode_frame(&out, &ExtensionIds::NONE), Ok(Some((Frame::Handshake(h), out.len()))));
        }

        #[test]
        fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..600)) {
            check_no_panic(&buf)?;
            // Also behind a plausible header so the payload parsers see it.
            for ext in 0..4u8 {
                check_no_panic(&frame(ext, &buf))?;
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            msg in arb_message(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut out = encoded(&msg);
            for (at, b) in flips {
                let i = at.index(out.len());
                out[i] = b;
            }
            check_no_panic(&out)?;
            check_no_panic(&out[..cut.index(out.len())])?;
        }
    }

    fn check_no_panic(buf: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(Some((frame, used))) = decode_frame(buf, &ExtensionIds::default()) {
            prop_assert!(used <= buf.len());
            prop_assert!(used >= 4);
            // Whatever decodes as ours re-encodes and decodes to the same value.
            if let Frame::Pbts(msg) = frame {
                let again = encoded(&msg);
                prop_assert_eq!(decode_all(&again, &ExtensionIds::default()), Ok(Frame::Pbts(msg)));
            }
        }
        Ok(())
    }
}
