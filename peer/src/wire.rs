//! One peer connection on the wire: the handshake, then length-prefixed message frames read
//! into a buffer that never grows past the frame limit, and written from one reusable buffer.
//!
//! ```text
//!  outgoing: send our handshake ──▶ read theirs (same info-hash?)  ──▶ frames
//!  incoming: read theirs (a torrent we serve?) ──▶ send ours        ──▶ frames
//! ```
//!
//! The codec is [`pbts_proto::peer_wire`]; here are the bytes in motion and their bounds: a peer
//! that announces a frame longer than [`Limits::max_frame`] is refused before its payload is
//! read, one that stalls mid-handshake is dropped after [`Limits::handshake_timeout`], and a
//! decoded message owns its payload as a slice of the frame (no copy of block data).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use pbts_proto::peer_wire::{
    self, BlockRef, DEFAULT_MAX_FRAME, HANDSHAKE_LEN, Handshake, HandshakeError, Message, WireError,
};
use pbts_proto::{InfoHash, PeerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bounds of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest frame accepted (id and payload): a 16 KiB block plus its header fits many times
    /// over, and so does the bitfield of a torrent of 8 million pieces.
    pub max_frame: u32,
    /// Time for the whole handshake.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_frame: DEFAULT_MAX_FRAME, handshake_timeout: Duration::from_secs(10) }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not complete in time.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer does not speak BitTorrent.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer answered for another torrent, or asked for one we do not serve.
    #[error("the peer's handshake is for torrent {0}, which is not ours")]
    WrongTorrent(InfoHash),
    /// The peer is ourselves (our own address came back from the tracker).
    #[error("connected to ourselves")]
    OwnPeerId,
    /// A frame broke the protocol.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// The peer closed the connection in the middle of a frame or handshake.
    #[error("the peer closed the connection mid-message")]
    Truncated,
}

/// Sends our handshake and reads the peer's, which must be for the same torrent.
///
/// # Errors
/// I/O, a stranger, another torrent, ourselves, or no answer within the limit.
pub async fn handshake_outgoing<S>(
    stream: &mut S,
    ours: &Handshake,
    limits: &Limits,
) -> Result<Handshake, ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(limits.handshake_timeout, async {
        stream.write_all(&ours.encode()).await?;
        let theirs = read_handshake(stream).await?;
        check_peer(ours, &theirs)?;
        Ok(theirs)
    })
    .await
}

/// Reads the peer's handshake, asks `ours_for` for our handshake for its torrent (`None`: not
/// a torrent we serve), and answers with it.
///
/// # Errors
/// I/O, a stranger, a torrent we do not serve, ourselves, or no handshake within the limit.
pub async fn handshake_incoming<S>(
    stream: &mut S,
    ours_for: impl FnOnce(InfoHash) -> Option<Handshake>,
    limits: &Limits,
) -> Result<(Handshake, Handshake), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(limits.handshake_timeout, async {
        let theirs = read_handshake(stream).await?;
        let ours = ours_for(theirs.info_hash).ok_or(ConnError::WrongTorrent(theirs.info_hash))?;
        check_peer(&ours, &theirs)?;
        stream.write_all(&ours.encode()).await?;
        Ok((ours, theirs))
    })
    .await
}

async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(limit, work).await.map_err(|_| ConnError::HandshakeTimeout(limit))?
}

fn check_peer(ours: &Handshake, theirs: &Handshake) -> Result<(), ConnError> {
    if theirs.info_hash != ours.info_hash {
        return Err(ConnError::WrongTorrent(theirs.info_hash));
    }
    if theirs.peer_id == ours.peer_id {
        return Err(ConnError::OwnPeerId);
    }
    Ok(())
}

/// Reads exactly one handshake, refusing a stranger as soon as its first bytes arrive.
async fn read_handshake<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Handshake, ConnError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    let mut filled = 0;
    loop {
        if let Some(h) = Handshake::decode(&buf[..filled])? {
            return Ok(h);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(ConnError::Truncated);
        }
        filled += n;
    }
}

/// A received message that owns its payload (slices of the frame it came in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An empty frame.
    KeepAlive,
    /// 0.
    Choke,
    /// 1.
    Unchoke,
    /// 2.
    Interested,
    /// 3.
    NotInterested,
    /// 4.
    Have(u32),
    /// 5: the raw bitfield (check it with `Bitfield::from_wire` against the piece count).
    Bitfield(Bytes),
    /// 6.
    Request(BlockRef),
    /// 7.
    Piece {
        /// The piece.
        index: u32,
        /// Offset within the piece.
        begin: u32,
        /// The block's bytes.
        data: Bytes,
    },
    /// 8.
    Cancel(BlockRef),
    /// 9.
    Port(u16),
    /// 0x0D (BEP 6).
    Suggest(u32),
    /// 0x0E (BEP 6).
    HaveAll,
    /// 0x0F (BEP 6).
    HaveNone,
    /// 0x10 (BEP 6).
    Reject(BlockRef),
    /// 0x11 (BEP 6).
    AllowedFast(u32),
    /// 20 (BEP 10).
    Extended {
        /// The extended id (0: the extended handshake).
        id: u8,
        /// Its payload.
        payload: Bytes,
    },
    /// An id we do not know: skipped by the caller.
    Unknown {
        /// The id.
        id: u8,
    },
}

impl Received {
    /// The owned form of `message`, whose payloads lie inside `frame`.
    fn from_message(message: Message<'_>, frame: &Bytes) -> Self {
        match message {
            Message::KeepAlive => Self::KeepAlive,
            Message::Choke => Self::Choke,
            Message::Unchoke => Self::Unchoke,
            Message::Interested => Self::Interested,
            Message::NotInterested => Self::NotInterested,
            Message::Have(i) => Self::Have(i),
            Message::Bitfield(bits) => Self::Bitfield(frame.slice_ref(bits)),
            Message::Request(b) => Self::Request(b),
            Message::Piece { index, begin, data } => {
                Self::Piece { index, begin, data: frame.slice_ref(data) }
            }
            Message::Cancel(b) => Self::Cancel(b),
            Message::Port(p) => Self::Port(p),
            Message::Suggest(i) => Self::Suggest(i),
            Message::HaveAll => Self::HaveAll,
            Message::HaveNone => Self::HaveNone,
            Message::Reject(b) => Self::Reject(b),
            Message::AllowedFast(i) => Self::AllowedFast(i),
            Message::Extended { id, payload } => {
                Self::Extended { id, payload: frame.slice_ref(payload) }
            }
            Message::Unknown { id, .. } => Self::Unknown { id },
        }
    }
}

/// Reads frames from the receiving half of a connection.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max_frame: u32,
}

/// Bytes asked of the socket at once when the buffer is empty.
const READ_CHUNK: usize = 32 << 10;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `io` with the frame bound of `limits`.
    pub fn new(io: R, limits: &Limits) -> Self {
        Self { io, buf: BytesMut::with_capacity(READ_CHUNK), max_frame: limits.max_frame }
    }

    /// The next message; `None` when the peer closed the connection between frames.
    ///
    /// # Errors
    /// I/O, a frame over the limit (refused from its length prefix alone), a malformed known
    /// message, or a connection closed mid-frame.
    pub async fn next(&mut self) -> Result<Option<Received>, ConnError> {
        loop {
            if let Some(total) = peer_wire::frame_len(&self.buf, self.max_frame)? {
                if self.buf.len() >= total {
                    let frame = self.buf.split_to(total).freeze();
                    let Some((message, _)) = peer_wire::decode(&frame, self.max_frame)? else {
                        // `frame_len` said the frame is whole.
                        return Err(ConnError::Truncated);
                    };
                    return Ok(Some(Received::from_message(message, &frame)));
                }
                // Room for the rest of this frame, and no more than that past a chunk.
                self.buf.reserve((total - self.buf.len()).max(READ_CHUNK.min(total)));
            } else if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ConnError::Truncated) };
            }
        }
    }

    /// Bytes received but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Writes frames to the sending half of a connection.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer over `io`.
    pub fn new(io: W) -> Self {
        Self { io, buf: BytesMut::with_capacity(1024) }
    }

    /// Queues `message` (written by the next [`FrameWriter::flush`]).
    pub fn queue(&mut self, message: &Message<'_>) {
        message.encode(&mut self.buf);
    }

    /// Queues bytes that are already whole frames (e.g. an extended handshake written by
    /// `pbts_verifier::bep10`).
    pub fn queue_raw(&mut self, frames: &[u8]) {
        self.buf.extend_from_slice(frames);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The socket's.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        while self.buf.has_remaining() {
            let n = self.io.write_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
            }
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Queues `message` and writes everything queued.
    ///
    /// # Errors
    /// The socket's.
    pub async fn send(&mut self, message: &Message<'_>) -> Result<(), ConnError> {
        self.queue(message);
        self.flush().await
    }
}

/// Our handshake for `info_hash`: the BEP 10 extension protocol and the BEP 6 fast extension
/// advertised.
pub fn our_handshake(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
    Handshake {
        reserved: peer_wire::Reserved::default().with_extension_protocol().with_fast(),
        info_hash,
        peer_id,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    const IH: InfoHash = InfoHash([7; 20]);

    fn hs(id: u8) -> Handshake {
        our_handshake(IH, PeerId([id; 20]))
    }

    #[tokio::test]
    async fn handshakes_meet_in_both_directions() {
        let (mut a, mut b) = duplex(256);
        let limits = Limits::default();
        let one = hs(1);
        let (out, inc) = tokio::join!(
            handshake_outgoing(&mut a, &one, &limits),
            handshake_incoming(&mut b, |ih| (ih == IH).then(|| hs(2)), &limits),
        );
        assert_eq!(out.unwrap(), hs(2));
        let (ours, theirs) = inc.unwrap();
        assert_eq!((ours, theirs), (hs(2), hs(1)));
        assert!(theirs.reserved.extension_protocol() && theirs.reserved.fast());
    }

    #[tokio::test]
    async fn a_handshake_for_another_torrent_or_from_ourselves_is_refused() {
        let limits = Limits::default();
        let one = hs(1);
        let (mut a, b) = duplex(256);
        let (out, inc) = tokio::join!(handshake_outgoing(&mut a, &one, &limits), async move {
            let mut b = b;
            // The refusing side closes without answering (dropping `b` on return).
            handshake_incoming(&mut b, |_| None, &limits).await
        });
        assert!(matches!(inc, Err(ConnError::WrongTorrent(ih)) if ih == IH), "{inc:?}");
        assert!(matches!(out, Err(ConnError::Truncated) | Err(ConnError::Io(_))), "{out:?}");

        // Our own id answered back (the tracker gave us our own address).
        let (mut a, mut b) = duplex(256);
        b.write_all(&hs(1).encode()).await.unwrap();
        let out = handshake_outgoing(&mut a, &one, &limits).await;
        assert!(matches!(out, Err(ConnError::OwnPeerId)), "{out:?}");
        // And an incoming connection from ourselves is refused before we answer.
        let (mut a, mut b) = duplex(256);
        a.write_all(&hs(1).encode()).await.unwrap();
        let inc = handshake_incoming(&mut b, |_| Some(hs(1)), &limits).await;
        assert!(matches!(inc, Err(ConnError::OwnPeerId)), "{inc:?}");
    }

    #[tokio::test]
    async fn a_stranger_is_refused_at_its_first_bytes_and_a_silent_peer_times_out() {
        let limits = Limits { handshake_timeout: Duration::from_millis(50), ..Limits::default() };
        let (mut a, mut b) = duplex(256);
        b.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let r = handshake_outgoing(&mut a, &hs(1), &limits).await;
        assert!(matches!(r, Err(ConnError::Handshake(HandshakeError::NotBitTorrent))), "{r:?}");

        let (mut a, _b) = duplex(256);
        let r = handshake_outgoing(&mut a, &hs(1), &limits).await;
        assert!(matches!(r, Err(ConnError::HandshakeTimeout(_))), "{r:?}");
    }

    #[tokio::test]
    async fn frames_arrive_whole_whatever_the_read_sizes() {
        let block = vec![0xab; 16 << 10];
        let messages = [
            Message::KeepAlive,
            Message::Bitfield(&[0b1010_0000]),
            Message::Interested,
            Message::Request(BlockRef { index: 3, begin: 16384, length: 16384 }),
            Message::Piece { index: 3, begin: 16384, data: &block },
            Message::Extended { id: 0, payload: b"d1:md11:ut_metadatai1eee" },
            Message::HaveAll,
            Message::Unknown { id: 99, payload: b"xyz" },
        ];
        let mut wire = Vec::new();
        for m in &messages {
            m.encode(&mut wire);
        }
        // A tiny pipe makes every frame arrive in many small reads.
        let (mut tx, rx) = duplex(7);
        let writer = tokio::spawn(async move { tx.write_all(&wire).await.unwrap() });
        let mut reader = FrameReader::new(rx, &Limits::default());
        let mut got = Vec::new();
        while let Some(m) = reader.next().await.unwrap() {
            got.push(m);
        }
        writer.await.unwrap();
        assert_eq!(
            got,
            vec![
                Received::KeepAlive,
                Received::Bitfield(Bytes::from_static(&[0b1010_0000])),
                Received::Interested,
                Received::Request(BlockRef { index: 3, begin: 16384, length: 16384 }),
                Received::Piece { index: 3, begin: 16384, data: Bytes::from(block) },
                Received::Extended {
                    id: 0,
                    payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee")
                },
                Received::HaveAll,
                Received::Unknown { id: 99 },
            ]
        );
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_from_its_prefix_and_a_cut_frame_is_an_error() {
        let limits = Limits { max_frame: 1024, ..Limits::default() };
        let (mut tx, rx) = duplex(64);
        // Announces 1 GiB and sends nothing more: refused without waiting or allocating.
        tx.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        let mut reader = FrameReader::new(rx, &limits);
        let r = reader.next().await;
        assert!(
            matches!(r, Err(ConnError::Wire(WireError::TooLong { length, max: 1024 })) if length == 1 << 30)
        );
        assert!(reader.buf.capacity() < 64 << 10);

        let (mut tx, rx) = duplex(64);
        tx.write_all(&[0, 0, 0, 5, 4, 0]).await.unwrap();
        drop(tx);
        let mut reader = FrameReader::new(rx, &limits);
        assert!(matches!(reader.next().await, Err(ConnError::Truncated)));

        let (mut tx, rx) = duplex(64);
        // A `have` with a 2-byte payload.
        tx.write_all(&[0, 0, 0, 3, 4, 0, 1]).await.unwrap();
        let mut reader = FrameReader::new(rx, &limits);
        let r = reader.next().await;
        assert!(matches!(r, Err(ConnError::Wire(WireError::BadLength { id: 4, payload: 2 }))));
    }

    #[tokio::test]
    async fn the_writer_sends_exactly_the_encoded_frames() {
        let (tx, mut rx) = duplex(1 << 16);
        let mut writer = FrameWriter::new(tx);
        writer.queue(&Message::Unchoke);
        writer.queue(&Message::Have(9));
        assert_eq!(writer.queued(), 5 + 9);
        writer.send(&Message::Cancel(BlockRef { index: 1, begin: 2, length: 3 })).await.unwrap();
        assert_eq!(writer.queued(), 0);
        drop(writer);
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            [
                &[0, 0, 0, 1, 1][..],
                &[0, 0, 0, 5, 4, 0, 0, 0, 9],
                &[0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3],
            ]
            .concat()
        );
    }
}
