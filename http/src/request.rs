//! HTTP/1.1 request parsing (and, for clients, response-head parsing).
//!
//! The parser is zero-copy: a [`Request`] borrows every field from the caller's buffer. It
//! understands exactly what a tracker needs (method, target, a handful of headers, a
//! `Content-Length` body) and rejects what it does not support instead of guessing.
//!
//! # Grammar accepted
//!
//! ```text
//! request      = *( [CR] LF ) request-line *( header-line ) ( [CR] LF ) body
//! request-line = method SP target SP ( "HTTP/1.0" / "HTTP/1.1" ) [CR] LF
//! header-line  = name ":" OWS value OWS [CR] LF
//! ```
//!
//! * Lines may end in CRLF or a bare LF (as httparse and most servers accept).
//! * Empty lines before the request line are skipped (RFC 9112 §2.2 robustness).
//! * `method` and header `name` are tokens; `target` is visible ASCII or obs-text (bytes
//!   `>= 0x80`, which some clients send unescaped); header values are visible ASCII, SP, HTAB
//!   or obs-text. Obsolete line folding is rejected.
//! * `Transfer-Encoding` of any kind is rejected with 501, so a request is always framed by
//!   `Content-Length` alone and request smuggling through conflicting framing is impossible.
//!
//! # Incremental use and limits
//!
//! Call [`parse_request`] each time new bytes arrive. [`Status::Partial`] means "read more";
//! the parser keeps no state, so it re-scans from the start. That is cheap because the head is
//! bounded: once the buffer holds more than [`Limits::max_header_bytes`] without a complete
//! head the parser answers [`ParseError::HeadersTooLarge`], so a client trickling bytes cannot
//! grow the buffer (or the re-scan cost) past that limit. Callers should still bound the time a
//! request may take to arrive; this module cannot see the clock.
//!
//! Each complete line is validated as soon as it is seen, so a malformed request is rejected
//! without waiting for the rest of it.

use core::fmt;

use memchr::memchr;

/// Size limits applied while parsing a request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head (leading empty lines, request line, headers and the blank line),
    /// bytes. Default 8192. Too small rejects clients with long query strings (a multi-scrape of
    /// 74 hashes is about 4.5 KiB); too large lets each connection pin more memory.
    pub max_header_bytes: usize,
    /// Most header lines. Default 64.
    pub max_headers: usize,
    /// Largest `Content-Length` accepted, bytes. Default 65536.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_header_bytes: 8192, max_headers: 64, max_body_bytes: 65536 }
    }
}

/// The request method. Only the methods the tracker routes on get a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// Any other syntactically valid method (methods are case-sensitive, so `get` is `Other`).
    Other,
}

impl Method {
    /// Classifies a method token (case-sensitive, RFC 9110 §9.1).
    pub fn from_bytes(token: &[u8]) -> Self {
        match token {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }
}

/// A parsed request head and its body, borrowed from the input buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The target up to the first `?`, raw (not percent-decoded), e.g. `b"/abc/announce"`.
    pub path: &'a [u8],
    /// The target after the first `?`, raw; empty if there is none.
    pub query: &'a [u8],
    /// The HTTP minor version: 0 or 1.
    pub minor_version: u8,
    /// The first `Host` header value.
    pub host: Option<&'a [u8]>,
    /// Whether the connection stays open after the response: for HTTP/1.1 true unless a
    /// `Connection` header lists `close`; for HTTP/1.0 false unless it lists `keep-alive` (and
    /// not `close`).
    pub keep_alive: bool,
    /// The first `Content-Type` header value.
    pub content_type: Option<&'a [u8]>,
    /// The **last** `X-Forwarded-For` header value, raw (a comma-separated list).
    ///
    /// The last one is kept because proxies that add rather than merge (HAProxy's `option
    /// forwardfor`) append theirs after anything the client sent. This header is
    /// client-controlled unless a trusted proxy sits in front: only use it when configured to.
    pub x_forwarded_for: Option<&'a [u8]>,
    /// The **last** `X-Real-IP` header value, raw. Client-controlled unless a trusted proxy
    /// sets it; see [`Request::x_forwarded_for`].
    pub x_real_ip: Option<&'a [u8]>,
    /// The first `Authorization` header value, raw.
    pub authorization: Option<&'a [u8]>,
    /// The body: exactly `Content-Length` bytes (empty if there is no `Content-Length`).
    pub body: &'a [u8],
}

/// The outcome of parsing a buffer that may not hold a whole message yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole message, and the number of bytes it used (including any body and any leading
    /// empty lines). The next pipelined message starts at that offset.
    Complete(T, usize),
    /// The message is not complete yet: read more bytes and parse again.
    Partial,
}

impl<T> Status<T> {
    /// True for [`Status::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete(..))
    }

    /// True for [`Status::Partial`].
    pub fn is_partial(&self) -> bool {
        matches!(self, Self::Partial)
    }
}

/// Why a message was rejected. After any of these the stream's framing is lost: send the
/// [`status_code`](Self::status_code) response with `Connection: close` and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The head did not end within `limit` bytes (431).
    HeadersTooLarge {
        /// [`Limits::max_header_bytes`].
        limit: usize,
    },
    /// The head has more than `limit` header lines (431).
    TooManyHeaders {
        /// [`Limits::max_headers`].
        limit: usize,
    },
    /// `Content-Length` announced `got` bytes, more than `limit` (413).
    BodyTooLarge {
        /// The announced length.
        got: u64,
        /// [`Limits::max_body_bytes`].
        limit: usize,
    },
    /// The request line is not `method SP target SP version` with a token method and a
    /// non-empty target of visible characters (400).
    InvalidRequestLine,
    /// The version is not of the form `HTTP/<digit>.<digit>` (400).
    InvalidVersion,
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1 (505).
    UnsupportedVersion {
        /// The major version digit.
        major: u8,
        /// The minor version digit.
        minor: u8,
    },
    /// A header line is not `token ":" value`, or its value holds a control character (400).
    InvalidHeader,
    /// `Content-Length` is not a decimal number, or two `Content-Length` headers differ (400).
    InvalidContentLength,
    /// The request has a `Transfer-Encoding` header; chunked bodies are not supported (501).
    TransferEncodingUnsupported,
    /// (Responses only) the status line is not `HTTP/1.x SP 3DIGIT [SP reason]`.
    InvalidStatusLine,
}

impl ParseError {
    /// The HTTP status to answer with: 400, 413, 431, 501 or 505.
    pub fn status_code(self) -> u16 {
        match self {
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::BodyTooLarge { .. } => 413,
            Self::TransferEncodingUnsupported => 501,
            Self::UnsupportedVersion { .. } => 505,
            Self::InvalidRequestLine
            | Self::InvalidVersion
            | Self::InvalidHeader
            | Self::InvalidContentLength
            | Self::InvalidStatusLine => 400,
        }
    }

    /// A short fixed description, suitable as a response body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeadersTooLarge { .. } => "request headers too large",
            Self::TooManyHeaders { .. } => "too many request headers",
            Self::BodyTooLarge { .. } => "request body too large",
            Self::InvalidRequestLine => "invalid request line",
            Self::InvalidVersion => "invalid HTTP version",
            Self::UnsupportedVersion { .. } => "HTTP version not supported",
            Self::InvalidHeader => "invalid header line",
            Self::InvalidContentLength => "invalid Content-Length",
            Self::TransferEncodingUnsupported => "Transfer-Encoding is not supported",
            Self::InvalidStatusLine => "invalid status line",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match *self {
            Self::HeadersTooLarge { limit } => write!(f, " (limit {limit} bytes)"),
            Self::TooManyHeaders { limit } => write!(f, " (limit {limit})"),
            Self::BodyTooLarge { got, limit } => write!(f, " ({got} bytes, limit {limit})"),
            Self::UnsupportedVersion { major, minor } => write!(f, " (HTTP/{major}.{minor})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ParseError {}

/// The next complete line of `buf[start..end]`: the line without its `[CR] LF`, and the offset
/// just past the LF. `None` when no LF lies in that range.
fn next_line(buf: &[u8], start: usize, end: usize) -> Option<(&[u8], usize)> {
    let area = buf.get(start..end)?;
    let lf = memchr(b'\n', area)?;
    let line = area.get(..lf)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, start + lf + 1))
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request-target byte: visible ASCII or obs-text.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// A header-value byte: HTAB, SP, visible ASCII or obs-text.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Parses `HTTP/<d>.<d>` into (major, minor).
fn parse_version(v: &[u8]) -> Result<(u8, u8), ParseError> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Ok((major - b'0', minor - b'0'))
        }
        _ => Err(ParseError::InvalidVersion),
    }
}

/// Accepts HTTP/1.0 and HTTP/1.1 and returns the minor version.
fn supported_minor(v: &[u8]) -> Result<u8, ParseError> {
    match parse_version(v)? {
        (1, minor @ (0 | 1)) => Ok(minor),
        (major, minor) => Err(ParseError::UnsupportedVersion { major, minor }),
    }
}

/// Splits `name: value` and validates both; the value is trimmed of OWS.
fn split_header(line: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let colon = memchr(b':', line).ok_or(ParseError::InvalidHeader)?;
    let (name, rest) = line.split_at(colon);
    let value = rest.get(1..).unwrap_or_default();
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::InvalidHeader);
    }
    if !value.iter().all(|&b| is_value_byte(b)) {
        return Err(ParseError::InvalidHeader);
    }
    Ok((name, trim_ows(value)))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if !is_ows(*first) {
            break;
        }
        v = rest;
    }
    while let [rest @ .., last] = v {
        if !is_ows(*last) {
            break;
        }
        v = rest;
    }
    v
}

/// Parses a `Content-Length` value: 1 to 19 ASCII digits (so it always fits a `u64`).
fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidContentLength);
    }
    Ok(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// The `Connection` options a message carries.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

impl ConnectionTokens {
    fn add(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = trim_ows(token);
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }

    fn keep_alive(&self, minor_version: u8) -> bool {
        !self.close && (minor_version >= 1 || self.keep_alive)
    }
}

/// Records one `Content-Length`, rejecting a second one that differs.
fn set_content_length(
    slot: &mut Option<u64>,
    value: &[u8],
    max_body_bytes: usize,
) -> Result<(), ParseError> {
    let n = parse_content_length(value)?;
    match *slot {
        Some(prev) if prev != n => return Err(ParseError::InvalidContentLength),
        _ => *slot = Some(n),
    }
    if n > max_body_bytes as u64 {
        return Err(ParseError::BodyTooLarge { got: n, limit: max_body_bytes });
    }
    Ok(())
}

/// The result for a head that did not end within the scanned window.
fn incomplete<T>(buf_len: usize, max_header_bytes: usize) -> Result<Status<T>, ParseError> {
    if buf_len > max_header_bytes {
        Err(ParseError::HeadersTooLarge { limit: max_header_bytes })
    } else {
        Ok(Status::Partial)
    }
}

/// Parses one request from the start of `buf`.
///
/// Returns [`Status::Complete`] with the request and the number of bytes it used; a pipelined
/// next request starts at that offset. Returns [`Status::Partial`] when the head or the body is
/// not complete yet.
///
/// # Errors
///
/// A [`ParseError`] for a malformed request or one over `limits`; see each variant. In
/// particular [`ParseError::HeadersTooLarge`] is returned as soon as `buf` holds more than
/// `max_header_bytes` bytes without a complete head.
///
/// # Example
///
/// ```
/// use pbts_http::request::{parse_request, Limits, Method, Status};
///
/// let buf = b"GET /announce?port=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /scrape HTTP/1.1\r\n";
/// let Status::Complete(req, used) = parse_request(buf, &Limits::default())? else { panic!() };
/// assert_eq!((req.method, req.path, req.query), (Method::Get, &b"/announce"[..], &b"port=1"[..]));
/// assert!(req.keep_alive);
/// // The second request is not complete yet.
/// assert!(parse_request(&buf[used..], &Limits::default())?.is_partial());
/// # Ok::<(), pbts_http::request::ParseError>(())
/// ```
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Status<Request<'a>>, ParseError> {
    // Only lines ending within the first `max_header_bytes` bytes belong to a valid head.
    let window = buf.len().min(limits.max_header_bytes);
    let mut pos = 0;

    let line = loop {
        let Some((line, next)) = next_line(buf, pos, window) else {
            return incomplete(buf.len(), limits.max_header_bytes);
        };
        pos = next;
        if !line.is_empty() {
            break line;
        }
    };

    let (method, target, version) = split_request_line(line)?;
    let minor_version = supported_minor(version)?;
    let (path, query) = match memchr(b'?', target) {
        Some(q) => (target.get(..q).unwrap_or_default(), target.get(q + 1..).unwrap_or_default()),
        None => (target, &b""[..]),
    };

    let mut req = Request {
        method: Method::from_bytes(method),
        path,
        query,
        minor_version,
        host: None,
        keep_alive: false,
        content_type: None,
        x_forwarded_for: None,
        x_real_ip: None,
        authorization: None,
        body: &[],
    };
    let mut connection = ConnectionTokens::default();
    let mut content_length = None;
    let head_end = for_each_header(buf, pos, window, limits, |name, value| {
        // Dispatch on length first so most lines cost one comparison.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                req.host.get_or_insert(value);
            }
            9 if name.eq_ignore_ascii_case(b"x-real-ip") => req.x_real_ip = Some(value),
            10 if name.eq_ignore_ascii_case(b"connection") => connection.add(value),
            12 if name.eq_ignore_ascii_case(b"content-type") => {
                req.content_type.get_or_insert(value);
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                req.authorization.get_or_insert(value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                set_content_length(&mut content_length, value, limits.max_body_bytes)?;
            }
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => {
                req.x_forwarded_for = Some(value);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                return Err(ParseError::TransferEncodingUnsupported);
            }
            _ => {}
        }
        Ok(())
    })?;
    let Some(pos) = head_end else {
        return incomplete(buf.len(), limits.max_header_bytes);
    };

    req.keep_alive = connection.keep_alive(minor_version);
    // `set_content_length` bounded the length by `max_body_bytes`, a usize.
    let body_len = usize::try_from(content_length.unwrap_or(0))
        .map_err(|_| ParseError::InvalidContentLength)?;
    let Some(end) = pos.checked_add(body_len) else {
        return Err(ParseError::InvalidContentLength);
    };
    match buf.get(pos..end) {
        Some(body) => {
            req.body = body;
            Ok(Status::Complete(req, end))
        }
        None => Ok(Status::Partial),
    }
}

/// Reads the header lines from `pos` (just after the start line) up to the blank line that ends
/// the head, within the first `window` bytes, and hands each name and value to `on_header`.
/// Returns the position after the blank line, or `None` while the head is incomplete.
///
/// # Errors
/// More than [`Limits::max_headers`] headers, a malformed header line, or what `on_header`
/// refuses.
fn for_each_header<'a>(
    buf: &'a [u8],
    mut pos: usize,
    window: usize,
    limits: &Limits,
    mut on_header: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), ParseError>,
) -> Result<Option<usize>, ParseError> {
    let mut headers = 0usize;
    loop {
        let Some((line, next)) = next_line(buf, pos, window) else {
            return Ok(None);
        };
        pos = next;
        if line.is_empty() {
            return Ok(Some(pos));
        }
        headers += 1;
        if headers > limits.max_headers {
            return Err(ParseError::TooManyHeaders { limit: limits.max_headers });
        }
        let (name, value) = split_header(line)?;
        on_header(name, value)?;
    }
}

/// A request line's method, target and (unvalidated) version.
type RequestLine<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Splits and validates the request line's method and target; the version is returned raw.
fn split_request_line(line: &[u8]) -> Result<RequestLine<'_>, ParseError> {
    let sp1 = memchr(b' ', line).ok_or(ParseError::InvalidRequestLine)?;
    let (method, rest) = line.split_at(sp1);
    let rest = rest.get(1..).unwrap_or_default();
    let sp2 = memchr(b' ', rest).ok_or(ParseError::InvalidRequestLine)?;
    let (target, version) = rest.split_at(sp2);
    let version = version.get(1..).unwrap_or_default();
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::InvalidRequestLine);
    }
    if target.is_empty() || !target.iter().all(|&b| is_target_byte(b)) {
        return Err(ParseError::InvalidRequestLine);
    }
    Ok((method, target, version))
}

/// The head of an HTTP response, for clients (load generators, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code (100..=999).
    pub status: u16,
    /// The `Content-Length`, if present.
    pub content_length: Option<usize>,
    /// Whether the server keeps the connection open (same rules as [`Request::keep_alive`]).
    pub keep_alive: bool,
    /// Length of the head, including the blank line; the body starts here.
    pub head_len: usize,
}

/// Parses a response status line and headers, using [`Limits::default`] for the head size and
/// header count. The body is not waited for: read `content_length` more bytes after
/// `head_len`.
///
/// # Errors
///
/// [`ParseError::InvalidStatusLine`] for a bad status line, [`ParseError::InvalidHeader`],
/// [`ParseError::InvalidContentLength`], [`ParseError::TransferEncodingUnsupported`] (chunked
/// responses are not supported), and the size limits.
pub fn parse_response_head(buf: &[u8]) -> Result<Status<ResponseHead>, ParseError> {
    let limits = Limits { max_body_bytes: usize::MAX, ..Limits::default() };
    let window = buf.len().min(limits.max_header_bytes);
    let Some((line, pos)) = next_line(buf, 0, window) else {
        return incomplete(buf.len(), limits.max_header_bytes);
    };
    let (minor_version, status) = parse_status_line(line)?;

    let mut connection = ConnectionTokens::default();
    let mut content_length = None;
    let head_end = for_each_header(buf, pos, window, &limits, |name, value| {
        if name.eq_ignore_ascii_case(b"connection") {
            connection.add(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            set_content_length(&mut content_length, value, limits.max_body_bytes)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(ParseError::TransferEncodingUnsupported);
        }
        Ok(())
    })?;
    let Some(pos) = head_end else {
        return incomplete(buf.len(), limits.max_header_bytes);
    };
    let content_length = match content_length {
        Some(n) => Some(usize::try_from(n).map_err(|_| ParseError::InvalidContentLength)?),
        None => None,
    };
    Ok(Status::Complete(
        ResponseHead {
            status,
            content_length,
            keep_alive: connection.keep_alive(minor_version),
            head_len: pos,
        },
        pos,
    ))
}

/// Parses `HTTP/1.x SP 3DIGIT [SP reason]` into (minor version, status).
fn parse_status_line(line: &[u8]) -> Result<(u8, u16), ParseError> {
    let (version, rest) = match memchr(b' ', line) {
        Some(sp) => (line.get(..sp).unwrap_or_default(), line.get(sp + 1..).unwrap_or_default()),
        None => return Err(ParseError::InvalidStatusLine),
    };
    let minor = supported_minor(version)?;
    match rest {
        [a, b, c, tail @ ..]
            if a.is_ascii_digit()
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && *a != b'0'
                && (tail.is_empty() || tail.first() == Some(&b' ')) =>
        {
            let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            Ok((minor, code))
        }
        _ => Err(ParseError::InvalidStatusLine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_header_bytes: 8192, max_headers: 64, max_body_bytes: 65536 };

    /// `case!(name, input, |req, used| { checks })` for complete requests,
    /// `case!(name, input, limits, Partial)`, or `case!(name, input, limits, Err(e))`.
    macro_rules! case {
        ($name:ident, $buf:expr, |$req:ident, $used:ident| $body:block) => {
            #[test]
            fn $name() {
                let buf: &[u8] = $buf;
                match parse_request(buf, &L) {
                    Ok(Status::Complete($req, $used)) => {
                        assert!($used <= buf.len());
                        $body
                    }
                    other => panic!("expected Complete, got {other:?}"),
                }
            }
        };
        ($name:ident, $buf:expr, $limits:expr, Partial) => {
            #[test]
            fn $name() {
                assert_eq!(parse_request($buf, &$limits), Ok(Status::Partial));
            }
        };
        ($name:ident, $buf:expr, $limits:expr, Err($err:expr)) => {
            #[test]
            fn $name() {
                assert_eq!(parse_request($buf, &$limits), Err($err));
            }
        };
    }

    case!(
        get_with_query,
        b"GET /abc/announce?info_hash=%00&port=6881 HTTP/1.1\r\n\
        Host: tracker.example:8000\r\nUser-Agent: qBittorrent/4.6.2\r\nAccept-Encoding: gzip\r\n\
        Connection: close\r\n\r\n",
        |req, used| {
            assert_eq!(req.method, Method::Get);
            assert_eq!(req.path, b"/abc/announce");
            assert_eq!(req.query, b"info_hash=%00&port=6881");
            assert_eq!(req.minor_version, 1);
            assert_eq!(req.host, Some(&b"tracker.example:8000"[..]));
            assert!(!req.keep_alive);
            assert_eq!(req.body, b"");
            assert_eq!(used, 155);
        }
    );

    case!(no_query, b"GET /scrape HTTP/1.1\r\n\r\n", |req, used| {
        assert_eq!((req.path, req.query, used), (&b"/scrape"[..], &b""[..], 24));
        assert!(req.keep_alive);
        assert_eq!(req.host, None);
    });

    case!(empty_query_and_second_question_mark, b"GET /a??b HTTP/1.1\r\n\r\n", |req, _used| {
        assert_eq!((req.path, req.query), (&b"/a"[..], &b"?b"[..]));
    });

    case!(lf_only, b"GET /x?y HTTP/1.0\nHost: h\nConnection: keep-alive\n\n", |req, used| {
        assert_eq!((req.path, req.query, req.minor_version), (&b"/x"[..], &b"y"[..], 0));
        assert_eq!(req.host, Some(&b"h"[..]));
        assert!(req.keep_alive);
        assert_eq!(used, 50);
    });

    case!(mixed_line_endings, b"GET / HTTP/1.1\nA: b\r\n\n", |req, used| {
        assert_eq!(req.path, b"/");
        assert_eq!(used, 22);
    });

    case!(leading_empty_lines, b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n", |req, used| {
        assert_eq!(req.method, Method::Get);
        assert_eq!(used, 23);
    });

    case!(methods, b"DELETE /admin/torrents/x HTTP/1.1\r\n\r\n", |req, _used| {
        assert_eq!(req.method, Method::Delete);
    });

    case!(other_method_lowercase, b"get / HTTP/1.1\r\n\r\n", |req, _used| {
        assert_eq!(req.method, Method::Other);
    });

    const MANY_HEADERS: &[u8] = b"POST /register HTTP/1.1\r\nhOsT:  a.b \t\r\n\
        content-TYPE:application/json\r\nCONTENT-LENGTH: 2\r\nAuthorization: Bearer t0k\r\n\
        X-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 10.0.0.1, 2.2.2.2\r\n\
        X-Real-IP: 3.3.3.3\r\n\r\n{}tail";

    case!(header_names_case_insensitive_values_trimmed, MANY_HEADERS, |req, used| {
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.host, Some(&b"a.b"[..]));
        assert_eq!(req.content_type, Some(&b"application/json"[..]));
        assert_eq!(req.authorization, Some(&b"Bearer t0k"[..]));
        assert_eq!(req.x_forwarded_for, Some(&b"10.0.0.1, 2.2.2.2"[..]), "last one wins");
        assert_eq!(req.x_real_ip, Some(&b"3.3.3.3"[..]));
        assert_eq!(req.body, b"{}");
        assert_eq!(&MANY_HEADERS[used..], b"tail");
    });

    case!(first_host_wins, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", |req, _used| {
        assert_eq!(req.host, Some(&b"a"[..]));
    });

    case!(empty_header_value, b"GET / HTTP/1.1\r\nHost:\r\nX-Empty:   \r\n\r\n", |req, _used| {
        assert_eq!(req.host, Some(&b""[..]));
    });

    case!(
        obs_text_in_target_and_value,
        b"GET /\xff?\x80 HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
        |req, _used| {
            assert_eq!((req.path, req.query), (&b"/\xff"[..], &b"\x80"[..]));
        }
    );

    case!(
        identical_duplicate_content_length,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        |req, used| {
            assert_eq!((req.body, used), (&b"abc"[..], 60));
        }
    );

    case!(zero_content_length, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nrest", |req, used| {
        assert_eq!((req.body, used), (&b""[..], 38));
    });

    // Connection handling for both versions.
    case!(http11_default_keep_alive, b"GET / HTTP/1.1\r\n\r\n", |req, _u| {
        assert!(req.keep_alive);
    });
    case!(http11_close, b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", |req, _u| {
        assert!(!req.keep_alive);
    });
    case!(
        http11_close_in_list,
        b"GET / HTTP/1.1\r\nConnection: upgrade ,  close\r\n\r\n",
        |req, _u| {
            assert!(!req.keep_alive);
        }
    );
    case!(
        http11_close_in_second_header,
        b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        |req, _u| {
            assert!(!req.keep_alive);
        }
    );
    case!(http10_default_close, b"GET / HTTP/1.0\r\n\r\n", |req, _u| {
        assert!(!req.keep_alive);
    });
    case!(http10_keep_alive, b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", |req, _u| {
        assert!(req.keep_alive);
    });
    case!(
        http10_keep_alive_and_close,
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        |req, _u| {
            assert!(!req.keep_alive);
        }
    );
    case!(
        connection_token_not_substring,
        b"GET / HTTP/1.1\r\nConnection: closed\r\n\r\n",
        |req, _u| {
            assert!(req.keep_alive);
        }
    );

    // Errors.
    const SMALL: Limits = Limits { max_header_bytes: 32, max_headers: 2, max_body_bytes: 4 };
    case!(
        bad_version_http2,
        b"GET / HTTP/2.0\r\n\r\n",
        L,
        Err(ParseError::UnsupportedVersion { major: 2, minor: 0 })
    );
    case!(
        bad_version_http12,
        b"GET / HTTP/1.2\r\n\r\n",
        L,
        Err(ParseError::UnsupportedVersion { major: 1, minor: 2 })
    );
    case!(bad_version_lowercase, b"GET / http/1.1\r\n\r\n", L, Err(ParseError::InvalidVersion));
    case!(bad_version_garbage, b"GET / HTTP/1.1x\r\n\r\n", L, Err(ParseError::InvalidVersion));
    case!(
        bad_version_trailing_space,
        b"GET / HTTP/1.1 \r\n\r\n",
        L,
        Err(ParseError::InvalidVersion)
    );
    case!(bad_version_http09, b"GET /\r\n\r\n", L, Err(ParseError::InvalidRequestLine));
    case!(
        bad_request_line_double_space,
        b"GET  / HTTP/1.1\r\n\r\n",
        L,
        Err(ParseError::InvalidRequestLine)
    );
    case!(bad_method_char, b"G(T / HTTP/1.1\r\n\r\n", L, Err(ParseError::InvalidRequestLine));
    case!(
        bad_target_control,
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        L,
        Err(ParseError::InvalidRequestLine)
    );
    case!(
        bad_request_line_bare_cr,
        b"GET / HTTP/1.1\r\r\n\r\n",
        L,
        Err(ParseError::InvalidVersion)
    );
    case!(
        bad_line_rejected_before_complete,
        b"GET\x00 / HTTP/1.1\r\nHost: a\r\n",
        L,
        Err(ParseError::InvalidRequestLine)
    );
    case!(
        bad_header_no_colon,
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        L,
        Err(ParseError::InvalidHeader)
    );
    case!(
        bad_header_space_before_colon,
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        L,
        Err(ParseError::InvalidHeader)
    );
    case!(
        bad_header_empty_name,
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        L,
        Err(ParseError::InvalidHeader)
    );
    case!(
        bad_header_obs_fold,
        b"GET / HTTP/1.1\r\nA: b\r\n  c\r\n\r\n",
        L,
        Err(ParseError::InvalidHeader)
    );
    case!(
        bad_header_control_in_value,
        b"GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
        L,
        Err(ParseError::InvalidHeader)
    );
    case!(
        bad_content_length,
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        L,
        Err(ParseError::InvalidContentLength)
    );
    case!(
        bad_content_length_empty,
        b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        L,
        Err(ParseError::InvalidContentLength)
    );
    case!(
        bad_content_length_huge,
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        L,
        Err(ParseError::InvalidContentLength)
    );
    case!(
        conflicting_content_length,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        L,
        Err(ParseError::InvalidContentLength)
    );
    case!(
        chunked_rejected,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        L,
        Err(ParseError::TransferEncodingUnsupported)
    );
    case!(
        te_and_cl_rejected,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\ntransfer-encoding: identity\r\n\r\nabc",
        L,
        Err(ParseError::TransferEncodingUnsupported)
    );
    case!(
        body_too_large,
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n",
        Limits { max_body_bytes: 4, ..L },
        Err(ParseError::BodyTooLarge { got: 5, limit: 4 })
    );
    case!(
        body_at_limit,
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc",
        Limits { max_body_bytes: 4, ..L },
        Partial
    );
    case!(
        too_many_headers,
        b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n",
        Limits { max_headers: 2, ..L },
        Err(ParseError::TooManyHeaders { limit: 2 })
    );
    case!(
        headers_too_large_incomplete,
        b"GET /0123456789012345678901234567890 HTTP/1.1",
        SMALL,
        Err(ParseError::HeadersTooLarge { limit: 32 })
    );
    case!(
        headers_too_large_complete_beyond_limit,
        b"GET /012345678901234 HTTP/1.1\r\n\r\n",
        SMALL,
        Err(ParseError::HeadersTooLarge { limit: 32 })
    );
    case!(endless_empty_lines, &[b'\n'; 33], SMALL, Err(ParseError::HeadersTooLarge { limit: 32 }));
    case!(empty_buffer, b"", L, Partial);
    case!(only_cr, b"\r", L, Partial);

    #[test]
    fn head_exactly_at_limit_completes() {
        let buf = b"GET /012345678901 HTTP/1.0\r\n\r\n";
        assert_eq!(buf.len(), 30);
        let limits = Limits { max_header_bytes: 30, ..SMALL };
        assert!(parse_request(buf, &limits).unwrap().is_complete());
        let limits = Limits { max_header_bytes: 29, ..SMALL };
        assert_eq!(parse_request(buf, &limits), Err(ParseError::HeadersTooLarge { limit: 29 }));
    }

    #[test]
    fn pipelined_two_requests() {
        let buf = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET";
        let Status::Complete(first, n1) = parse_request(buf, &L).unwrap() else { panic!() };
        assert_eq!((first.method, first.path, first.query), (Method::Get, &b"/a"[..], &b"x=1"[..]));
        let Status::Complete(second, n2) = parse_request(&buf[n1..], &L).unwrap() else { panic!() };
        assert_eq!(
            (second.method, second.path, second.body),
            (Method::Post, &b"/b"[..], &b"hi"[..])
        );
        assert_eq!(&buf[n1 + n2..], b"GET");
        assert_eq!(parse_request(&buf[n1 + n2..], &L), Ok(Status::Partial));
    }

    #[test]
    fn partial_at_every_split_point() {
        let full: &[u8] = b"\r\nPOST /abc/announce?info_hash=%AA HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let Status::Complete(whole, used) = parse_request(full, &L).unwrap() else { panic!() };
        assert_eq!(used, full.len());
        for split in 0..full.len() {
            assert_eq!(parse_request(&full[..split], &L), Ok(Status::Partial), "split {split}");
        }
        // And with trailing bytes, the same request and length come back.
        let mut longer = full.to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let Status::Complete(again, used2) = parse_request(&longer, &L).unwrap() else { panic!() };
        assert_eq!((again, used2), (whole, used));
    }

    #[test]
    fn error_codes_and_texts() {
        use ParseError::*;
        let table: [(ParseError, u16, &str); 10] = [
            (HeadersTooLarge { limit: 8 }, 431, "request headers too large (limit 8 bytes)"),
            (TooManyHeaders { limit: 2 }, 431, "too many request headers (limit 2)"),
            (BodyTooLarge { got: 9, limit: 4 }, 413, "request body too large (9 bytes, limit 4)"),
            (InvalidRequestLine, 400, "invalid request line"),
            (InvalidVersion, 400, "invalid HTTP version"),
            (
                UnsupportedVersion { major: 2, minor: 0 },
                505,
                "HTTP version not supported (HTTP/2.0)",
            ),
            (InvalidHeader, 400, "invalid header line"),
            (InvalidContentLength, 400, "invalid Content-Length"),
            (TransferEncodingUnsupported, 501, "Transfer-Encoding is not supported"),
            (InvalidStatusLine, 400, "invalid status line"),
        ];
        for (err, code, text) in table {
            assert_eq!(err.status_code(), code, "{err:?}");
            assert_eq!(err.to_string(), text);
            assert!(text.starts_with(err.as_str()));
        }
    }

    #[test]
    fn response_heads() {
        let ok = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nd8:intervale");
        assert_eq!(
            ok,
            Ok(Status::Complete(
                ResponseHead {
                    status: 200,
                    content_length: Some(12),
                    keep_alive: true,
                    head_len: 65
                },
                65
            ))
        );
        let close = parse_response_head(b"HTTP/1.0 404\nConnection: keep-alive\n\n");
        assert_eq!(
            close,
            Ok(Status::Complete(
                ResponseHead { status: 404, content_length: None, keep_alive: true, head_len: 37 },
                37
            ))
        );
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n"), Ok(Status::Partial));
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
        ] {
            assert_eq!(parse_response_head(bad), Err(ParseError::InvalidStatusLine), "{bad:?}");
        }
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::TransferEncodingUnsupported)
        );
    }

    #[test]
    fn layout() {
        // Request is passed by value on the hot path; keep it a few cache lines at most.
        assert!(size_of::<Request<'static>>() <= 160);
        assert_eq!(size_of::<ParseError>(), 24);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Request<'static>>();
        send_sync::<ParseError>();
    }
}
