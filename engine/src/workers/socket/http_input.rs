//! The pure half of an HTTP connection: the input buffer (grow up to a limit, compact, shrink
//! back) and the parse step that takes the next pipelined request off its front. The worker's
//! loop drives these with real sockets; [`harness`] drives them with arbitrary bytes split in
//! arbitrary chunks, for the fuzz target and the tests.

use pbts_http::request::{self, Limits, Request, Status};

/// Normal size of a connection's input buffer.
pub(crate) const INPUT_BUFFER: usize = 4096;

/// A buffer grown past this (a large report or `.torrent`) returns to [`INPUT_BUFFER`] once
/// everything in it was consumed.
pub(crate) const SHRINK_ABOVE: usize = 64 << 10;

/// Bytes received and not yet consumed, at the front of a buffer that grows on demand.
#[derive(Debug)]
pub(crate) struct InputBuffer {
    buf: Vec<u8>,
    len: usize,
}

impl InputBuffer {
    pub(crate) fn new() -> Self {
        Self { buf: vec![0; INPUT_BUFFER], len: 0 }
    }

    /// The buffered bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Room left for the next read; empty when the buffer is full.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// `n` bytes were read into [`InputBuffer::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    /// Whether no room is left.
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Current capacity.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Drops the first `n` bytes (answered requests); a buffer grown large and now empty
    /// shrinks back.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
        if self.len == 0 && self.buf.len() > SHRINK_ABOVE {
            self.buf = vec![0; INPUT_BUFFER];
        }
    }

    /// Doubles the capacity, up to `allowed`; `false` if it is there already.
    pub(crate) fn grow(&mut self, allowed: usize) -> bool {
        if self.buf.len() >= allowed {
            return false;
        }
        self.buf.resize((self.buf.len() * 2).min(allowed), 0);
        true
    }
}

/// What is at the front of the buffered bytes.
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    /// A complete request of `n` bytes.
    Request(Request<'a>, usize),
    /// A complete request whose body is over `normal_body` and whose route may not have one
    /// that large (only reports may).
    TooLarge,
    /// More bytes are needed.
    Partial,
    /// Not HTTP the parser accepts: answer the error and close.
    Invalid(request::ParseError),
}

/// Parses the next pipelined request from `bytes`, applying the route body limit.
pub(crate) fn next_request<'a>(bytes: &'a [u8], limits: &Limits, normal_body: usize) -> Parsed<'a> {
    match request::parse_request(bytes, limits) {
        Ok(Status::Complete(req, n)) => {
            if req.body.len() > normal_body
                && crate::api::receipts::report_route(req.path).is_none()
            {
                Parsed::TooLarge
            } else {
                Parsed::Request(req, n)
            }
        }
        Ok(Status::Partial) => Parsed::Partial,
        Err(e) => Parsed::Invalid(e),
    }
}

/// What a connection made of its input: each request's (method, path, body), and how it
/// ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Transcript {
    pub(crate) requests: Vec<(String, Vec<u8>, Vec<u8>)>,
    pub(crate) end: &'static str,
}

/// Runs the buffering and pipelining of a connection over `stream`, received in chunks of the
/// given sizes (cycled; 0 means 1), with the worker's limits for an anonymous client (the
/// parser accepts report-sized bodies, the buffer grows to the normal limit). Checks the
/// invariants on the way:
/// the buffer never exceeds its limit, a parse never consumes more than is buffered, and every
/// request is consumed exactly once.
pub(crate) fn run(stream: &[u8], chunks: &[usize]) -> Transcript {
    let mut limits = Limits::default();
    let normal_body = limits.max_body_bytes;
    let allowed = limits.max_header_bytes + normal_body;
    limits.max_body_bytes = 1 << 20;
    let mut input = InputBuffer::new();
    let mut requests = Vec::new();
    let mut fed = 0;
    let mut k = 0;
    loop {
        let mut consumed = 0;
        loop {
            match next_request(&input.data()[consumed..], &limits, normal_body) {
                Parsed::Request(req, n) => {
                    assert!(n > 0 && consumed + n <= input.len(), "consumed past the input");
                    requests.push((
                        format!("{:?}", req.method),
                        req.path.to_vec(),
                        req.body.to_vec(),
                    ));
                    consumed += n;
                }
                Parsed::TooLarge => return Transcript { requests, end: "too large" },
                Parsed::Invalid(_) => return Transcript { requests, end: "invalid" },
                Parsed::Partial => break,
            }
        }
        input.consume(consumed);
        if fed == stream.len() {
            let end = if input.len() == 0 { "eof" } else { "eof mid-request" };
            return Transcript { requests, end };
        }
        if input.is_full() && !input.grow(allowed) {
            return Transcript { requests, end: "buffer limit" };
        }
        assert!(input.capacity() <= allowed.max(INPUT_BUFFER), "buffer past its limit");
        let want = chunks.get(k % chunks.len().max(1)).copied().unwrap_or(usize::MAX).max(1);
        k += 1;
        let spare = input.spare();
        let n = want.min(spare.len()).min(stream.len() - fed);
        spare[..n].copy_from_slice(&stream[fed..fed + n]);
        input.filled(n);
        fed += n;
    }
}

/// The fuzz harness: the first byte picks chunk sizes for the rest of the input, which is the
/// byte stream a client sends. Splitting a stream differently must never change what the
/// connection makes of it.
pub(crate) fn harness(data: &[u8]) {
    let (seed, stream) = data.split_first().unwrap_or((&1, &[]));
    let chunks: Vec<usize> = (0..8).map(|i| usize::from(seed.rotate_left(i)) % 97 + 1).collect();
    let chunked = run(stream, &chunks);
    let whole = run(stream, &[usize::MAX]);
    let bytewise = run(stream, &[1]);
    assert_eq!(chunked, whole, "chunking changed the requests");
    assert_eq!(bytewise, whole, "byte-by-byte reads changed the requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_requests_come_out_once_whatever_the_chunks() {
        let mut stream = Vec::new();
        for i in 0..50 {
            stream.extend_from_slice(
                format!("GET /health?{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
        }
        stream.extend_from_slice(b"POST /register HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        for chunks in [&[1usize][..], &[7, 300, 2], &[usize::MAX]] {
            let t = run(&stream, chunks);
            assert_eq!((t.requests.len(), t.end), (51, "eof"));
            assert_eq!(t.requests[50].2, b"hello");
        }
        harness(&[3, b'G', b'E']);
        harness(&[]);
    }

    #[test]
    fn limits_end_the_connection() {
        let big = format!("POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 100 << 10);
        let mut stream = big.into_bytes();
        stream.resize(stream.len() + (100 << 10), b'a');
        assert_eq!(run(&stream, &[4096]).end, "buffer limit");
        let over = (64 << 10) + 10;
        let mut stream = format!("POST /x HTTP/1.1\r\nContent-Length: {over}\r\n\r\n").into_bytes();
        stream.resize(stream.len() + over, b'a');
        assert_eq!(run(&stream, &[4096]).end, "too large");
        assert_eq!(run(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", &[5]).end, "invalid");
        assert_eq!(run(b"GET / HTTP/1.1\r\nHost", &[5]).end, "eof mid-request");
    }

    #[test]
    fn a_buffer_shrinks_back_after_a_large_request() {
        let mut b = InputBuffer::new();
        while b.grow(1 << 20) {}
        assert_eq!(b.capacity(), 1 << 20);
        b.spare()[..3].copy_from_slice(b"abc");
        b.filled(3);
        b.consume(1);
        assert_eq!((b.data(), b.capacity()), (&b"bc"[..], 1 << 20));
        b.consume(2);
        assert_eq!(b.capacity(), INPUT_BUFFER);
    }
}
