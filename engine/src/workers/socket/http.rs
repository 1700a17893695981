//! HTTP connections: keep-alive, pipelining, idle and slow-request timeouts, a per-core
//! connection cap, and routing to the tracker (announce/scrape) or the API.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use pbts_http::request::{Limits, Method, Request};
use pbts_http::response;

use super::http_input::{InputBuffer, Parsed, SHRINK_ABOVE, next_request};
use crate::addr::canonical_ip;
use crate::api::response::ApiError;
use crate::api::{self, receipts};
use crate::config::ProxyHeader;
use crate::metrics::Counter;
use crate::state::{Client, Core};
use crate::tracker::{self, split_passkey_path};

/// Accepts connections until the executor stops: queued ones with one plain `accept4` each
/// (`plain` is a non-blocking duplicate of the listener), and only when none is queued through
/// glommio, which waits in the ring.
pub(crate) async fn run_http_worker(core: Rc<Core>, plain: socket2::Socket, listener: TcpListener) {
    let max = core.state.config.network.max_connections_per_core as u64;
    loop {
        // A queued connection is taken (or refused) without awaiting anything: under a flood
        // of them this loop must still let the connections it spawned, and the UDP loop, run.
        glommio::yield_if_needed().await;
        let accepted = match crate::sys::accept_nonblocking(&plain) {
            Ok(Some((stream, peer))) => Ok(Some((Conn::Plain(stream), peer))),
            // Polling the listener here instead (as the UDP loop polls its socket) measured no
            // better per CPU-second under a connection-per-request load: it parks.
            Ok(None) => match listener.accept().await {
                // Reset by the client between accept and getpeername: nothing to serve.
                Ok(stream) => Ok(stream.peer_addr().ok().map(|peer| (Conn::Ring(stream), peer))),
                Err(e) => Err(std::io::Error::from(e)),
            },
            Err(e) => Err(e),
        };
        let m = core.metrics();
        let (stream, peer) = match accepted {
            Ok(Some(accepted)) => accepted,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!("accept: {e:#}");
                // Out of descriptors or memory: back off instead of spinning. (A connection
                // reset while queued is only skipped.)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        if m.open_connections.load(Ordering::Relaxed) >= max {
            m.inc(Counter::HttpConnectionsRefused);
            drop(stream);
            continue;
        }
        let Some(slot) = IpSlot::take(&core, peer.ip()) else {
            m.inc(Counter::HttpConnectionsRefused);
            drop(stream);
            continue;
        };
        m.inc(Counter::HttpConnectionsAccepted);
        m.open_connections.fetch_add(1, Ordering::Relaxed);
        let core = core.clone();
        glommio::spawn_local(async move {
            serve_connection(&core, stream, peer).await;
            drop(slot);
            core.metrics().open_connections.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

/// A connection's socket. One accepted with a plain `accept4` is read and written with plain
/// non-blocking calls while they succeed: a connection-per-request client's request is usually
/// queued by the time it is accepted, and its response fits the send buffer, so it is served
/// with four system calls and no io_uring work at all. The first call that would block hands
/// the socket to glommio (made blocking again, registered with the ring), where it stays.
enum Conn {
    Plain(std::net::TcpStream),
    Ring(TcpStream),
    /// Only while being handed over.
    Gone,
}

impl Conn {
    /// The glommio stream (converting a plain socket first), with `timeouts` set.
    fn ring(&mut self, timeouts: Timeouts) -> std::io::Result<&mut TcpStream> {
        if matches!(self, Self::Plain(_))
            && let Self::Plain(plain) = std::mem::replace(self, Self::Gone)
        {
            // glommio's own calls pass MSG_DONTWAIT; its ring operations expect a blocking
            // socket. (On an error here the connection stays `Gone` and is closed.)
            plain.set_nonblocking(false)?;
            *self = Self::Ring(TcpStream::from(socket2::Socket::from(plain)));
        }
        match self {
            Self::Ring(stream) => {
                stream.set_write_timeout(timeouts.write)?;
                stream.set_read_timeout(timeouts.read)?;
                Ok(stream)
            }
            _ => Err(std::io::Error::other("connection lost while handed to glommio")),
        }
    }

    async fn read(&mut self, buf: &mut [u8], timeouts: Timeouts) -> std::io::Result<usize> {
        if let Self::Plain(plain) = self {
            match std::io::Read::read(plain, buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
        self.ring(timeouts)?.read(buf).await
    }

    async fn write_all(&mut self, mut buf: &[u8], timeouts: Timeouts) -> std::io::Result<()> {
        if let Self::Plain(plain) = self {
            while !buf.is_empty() {
                match std::io::Write::write(plain, buf) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => buf = &buf[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if buf.is_empty() {
                return Ok(());
            }
        }
        self.ring(timeouts)?.write_all(buf).await
    }

    fn set_nodelay(&self) -> std::io::Result<()> {
        match self {
            Self::Plain(plain) => plain.set_nodelay(true),
            Self::Ring(stream) => Ok(stream.set_nodelay(true)?),
            Self::Gone => Ok(()),
        }
    }
}

/// The timeouts a connection's reads and writes wait for (glommio's; a plain call never waits).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    read: Option<Duration>,
    write: Option<Duration>,
}

/// One of a client address's `network.max_connections_per_ip` connections, given back on drop.
struct IpSlot {
    core: Rc<Core>,
    ip: Option<IpAddr>,
}

impl IpSlot {
    /// Counts a connection from `peer`; `None` when the address has all its connections open
    /// already. Behind a proxy every peer is the proxy: nothing is counted.
    fn take(core: &Rc<Core>, peer: IpAddr) -> Option<Self> {
        let state = &core.state;
        if state.config.network.proxy_header != ProxyHeader::None {
            return Some(Self { core: core.clone(), ip: None });
        }
        let ip = canonical_ip(peer);
        let mut open = state.connections_per_ip.entry(ip).or_insert(0);
        if *open as usize >= state.config.network.max_connections_per_ip {
            return None;
        }
        *open += 1;
        Some(Self { core: core.clone(), ip: Some(ip) })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let map = &self.core.state.connections_per_ip;
        if let dashmap::mapref::entry::Entry::Occupied(mut e) = map.entry(ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Longest idle wait while a core holds more than 7/8 of its connection cap.
const SHED_IDLE: Duration = Duration::from_secs(2);

/// Responses buffered for one connection before they are written: past it the loop writes
/// before it parses more pipelined requests, so a client that sends many requests and never
/// reads costs this much memory, not a response per request.
const MAX_PENDING_OUTPUT: usize = 64 << 10;

/// What the connection loop does after a request.
enum Next {
    KeepAlive,
    Close,
}

async fn serve_connection(core: &Core, mut stream: Conn, peer: SocketAddr) {
    // Nagle's algorithm only holds back a write while an earlier one is unacknowledged, so the
    // first response always leaves at once: TCP_NODELAY is set before the second (a
    // connection-per-request client never costs the system call).
    let (mut wrote, mut nodelay) = (false, false);
    let net = &core.state.config.network;
    let idle = Duration::from_secs(net.idle_timeout_secs);
    let request_timeout = Duration::from_secs(net.request_timeout_secs);
    // A client must take its responses as promptly as it must send a request: one that never
    // reads is closed instead of holding its buffers forever.
    let mut timeouts = Timeouts { read: None, write: Some(request_timeout) };
    // Loopback admins may upload .torrent files (up to 8 MiB) and anyone may POST a receipt
    // report (1 KiB per receipt); every other body stays small, so 16k idle connections cannot
    // pin gigabytes of buffers. The parser accepts the largest limit; the buffer grows past
    // the normal one only for a request whose request line is a report.
    let mut limits = Limits::default();
    // Behind a proxy every peer is loopback: the larger limit is then decided by nobody.
    if core.state.config.admin.allow_loopback
        && core.state.config.network.proxy_header == ProxyHeader::None
        && canonical_ip(peer.ip()).is_loopback()
    {
        limits.max_body_bytes = pbts_proto::metainfo::MAX_TORRENT_BYTES;
    }
    let normal_body = limits.max_body_bytes;
    let normal_cap = limits.max_header_bytes + normal_body;
    limits.max_body_bytes = normal_body.max(core.state.config.receipts.max_report_bytes());
    let cap = limits.max_header_bytes + limits.max_body_bytes;
    let mut input = InputBuffer::new();
    let mut out = Vec::with_capacity(1024);
    let mut started: Option<Instant> = None;
    loop {
        // Answer the complete requests already buffered (pipelining), until the responses
        // pending reach MAX_PENDING_OUTPUT.
        let mut consumed = 0;
        let mut close = false;
        while consumed < input.len() && out.len() < MAX_PENDING_OUTPUT {
            match next_request(&input.data()[consumed..], &limits, normal_body) {
                Parsed::TooLarge => {
                    too_large(core, &mut out, normal_body);
                    close = true;
                    break;
                }
                Parsed::Request(req, n) => {
                    consumed += n;
                    // A panic while handling one request costs that request (a 500) and its
                    // connection, never the core: glommio would otherwise unwind the whole
                    // executor and stop this core's share of all traffic.
                    let mark = out.len();
                    let handled = std::panic::AssertUnwindSafe(handle(core, &req, peer, &mut out))
                        .catch_unwind()
                        .await;
                    match handled {
                        Ok(Next::KeepAlive) => {}
                        Ok(Next::Close) => {
                            close = true;
                            break;
                        }
                        Err(_) => {
                            core.metrics().inc(Counter::HttpPanics);
                            tracing::error!(
                                route = %route_for_log(req.path),
                                "panic while handling a request: answered 500"
                            );
                            out.truncate(mark);
                            response::write_response(
                                &mut out,
                                500,
                                "text/plain; charset=utf-8",
                                b"internal error\n",
                                false,
                            );
                            close = true;
                            break;
                        }
                    }
                }
                Parsed::Partial => break,
                Parsed::Invalid(e) => {
                    core.metrics().inc(Counter::HttpBadRequest);
                    let body = format!("{e}\n");
                    response::write_response(
                        &mut out,
                        e.status_code(),
                        "text/plain; charset=utf-8",
                        body.as_bytes(),
                        false,
                    );
                    close = true;
                    break;
                }
            }
        }
        let output_full = out.len() >= MAX_PENDING_OUTPUT;
        if !out.is_empty() {
            if wrote && !nodelay {
                let _ = stream.set_nodelay();
                nodelay = true;
            }
            if let Err(e) = stream.write_all(&out, timeouts).await {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    core.metrics().inc(Counter::HttpTimeouts);
                }
                return;
            }
            wrote = true;
            out.clear();
            if out.capacity() > SHRINK_ABOVE {
                out = Vec::with_capacity(1024);
            }
        }
        if close {
            // Dropping the stream closes it: the kernel sends what is buffered, then FIN (a
            // shutdown first would be one more system call for the same packets).
            return;
        }
        input.consume(consumed);
        let len = input.len();
        if output_full && len > 0 {
            // More requests may be buffered: answer them before reading anything new.
            continue;
        }
        started = if len == 0 { None } else { started.or(Some(Instant::now())) };
        // An idle connection waits `idle`; a half-received request must finish within
        // `request_timeout` of its first byte (slowloris).
        let timeout = match started {
            None => {
                // Near the cap, idle keep-alive connections make room for new clients.
                let open = core.metrics().open_connections.load(Ordering::Relaxed);
                let cap = net.max_connections_per_core as u64;
                if open * 8 > cap * 7 { idle.min(SHED_IDLE) } else { idle }
            }
            Some(t) => match request_timeout.checked_sub(t.elapsed()) {
                Some(left) if !left.is_zero() => left,
                _ => {
                    core.metrics().inc(Counter::HttpTimeouts);
                    return;
                }
            },
        };
        if input.is_full() {
            // Only a report of a known user may grow past the normal limit: an anonymous
            // client cannot make the server buffer a megabyte per connection.
            let allowed = match report_passkey(input.data()) {
                Some(Some(pk)) if known_passkey(core, pk) => cap,
                _ => normal_cap,
            };
            if !input.grow(allowed) {
                // The parser reports oversize heads itself; this is a body past the limit.
                if allowed < cap && receipts::is_report_request(input.data()) {
                    core.metrics().inc(Counter::HttpBadRequest);
                    let body = format!(
                        "request body too large (limit {} bytes): reports larger than that need \
                         a registered passkey in the path (POST /<passkey>/report)\n",
                        allowed - limits.max_header_bytes
                    );
                    response::write_response(
                        &mut out,
                        413,
                        "text/plain; charset=utf-8",
                        body.as_bytes(),
                        false,
                    );
                } else {
                    too_large(core, &mut out, allowed - limits.max_header_bytes);
                }
                let _ = stream.write_all(&out, timeouts).await;
                return;
            }
        }
        timeouts.read = Some(timeout);
        match stream.read(input.spare(), timeouts).await {
            Ok(0) => return,
            Ok(n) => {
                if started.is_none() {
                    started = Some(Instant::now());
                }
                input.filled(n);
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut {
                    core.metrics().inc(Counter::HttpTimeouts);
                }
                return;
            }
        }
    }
}

/// The passkey of a buffered `POST` to a `/report` route: `Some(Some(pk))` for
/// `/<pk>/report` and `/report/<pk>`, `Some(None)` for `/report`, `None` for anything else.
fn report_passkey(buf: &[u8]) -> Option<Option<&[u8]>> {
    if !receipts::is_report_request(buf) {
        return None;
    }
    let line = buf.split(|&b| b == b'\n').next()?;
    let target = line.strip_prefix(b"POST ")?.split(|&b| b == b' ').next()?;
    receipts::report_route(target.split(|&b| b == b'?').next()?)
}

fn known_passkey(core: &Core, raw: &[u8]) -> bool {
    crate::store::Passkey::parse(raw)
        .is_some_and(|pk| core.state.accounts.by_passkey(&pk).is_some())
}

/// A 413 for a body over the limit of its route (the connection is closed after it).
fn too_large(core: &Core, out: &mut Vec<u8>, limit: usize) {
    core.metrics().inc(Counter::HttpBadRequest);
    let body = format!("request body too large (limit {limit} bytes)\n");
    response::write_response(out, 413, "text/plain; charset=utf-8", body.as_bytes(), false);
}

/// The client of a request, honouring a trusted proxy header when configured.
pub(crate) fn client(core: &Core, req: &Request<'_>, peer: SocketAddr) -> Client {
    let peer_ip = canonical_ip(peer.ip());
    let header = match core.state.config.network.proxy_header {
        ProxyHeader::None => return Client { ip: peer_ip, loopback: peer_ip.is_loopback() },
        // The last hop is the one our proxy appended; earlier entries are client-supplied.
        ProxyHeader::XForwardedFor => {
            req.x_forwarded_for.and_then(|v| v.rsplit(|&b| b == b',').next())
        }
        ProxyHeader::XRealIp => req.x_real_ip,
    };
    match header
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
    {
        Some(ip) => {
            let ip = canonical_ip(ip);
            Client { ip, loopback: ip.is_loopback() }
        }
        // No (valid) header: the proxy did not forward it, or someone bypassed the proxy. The
        // peer's address is the best address there is, but never a reason for privileges.
        None => Client { ip: peer_ip, loopback: false },
    }
}

/// A request path fit for the log: passkeys (32 hex characters in any segment) replaced, at most
/// 128 bytes, lossy UTF-8. The query is never logged.
pub(crate) fn route_for_log(path: &[u8]) -> String {
    let mut out = String::new();
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if crate::store::Passkey::parse(segment).is_some() {
            out.push_str("<passkey>");
        } else {
            out.push_str(&String::from_utf8_lossy(segment));
        }
        if out.len() > 128 {
            let mut end = 128;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push('…');
            break;
        }
    }
    out
}

async fn handle(core: &Core, req: &Request<'_>, peer: SocketAddr, out: &mut Vec<u8>) -> Next {
    let keep_alive = req.keep_alive;
    if core.state.fault_requests && req.path == b"/fault/panic" {
        panic!("injected fault: {}=request", crate::supervisor::FAULT_ENV);
    }
    let client = client(core, req, peer);
    let (action, passkey) = split_passkey_path(req.path);
    let tracker_route = matches!(action, b"announce" | b"scrape")
        && (passkey.is_some() || matches!(req.path, b"/announce" | b"/scrape"));
    if tracker_route {
        // Announces change state, so HEAD (which must be safe) is refused like POST.
        if req.method != Method::Get {
            let refused = Err(ApiError::new(405, "method not allowed"));
            api::response::write(out, refused, keep_alive);
            return next(keep_alive);
        }
        let mut body = Vec::with_capacity(256);
        if action == b"announce" {
            tracker::http::announce(core, req.query, client.ip, passkey, &mut body);
        } else {
            tracker::http::scrape(core, req.query, passkey, &mut body);
        }
        response::write_response(out, 200, response::BENCODE_CONTENT_TYPE, &body, keep_alive);
        return next(keep_alive);
    }
    core.metrics().inc(Counter::HttpApi);
    let start = out.len();
    api::serve(core, req, client, out).await;
    if req.method == Method::Head {
        // Same head (Content-Length included) as GET, no body (RFC 9110 §9.3.2).
        if let Some(end) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            out.truncate(start + end + 4);
        }
    }
    next(keep_alive)
}

fn next(keep_alive: bool) -> Next {
    if keep_alive { Next::KeepAlive } else { Next::Close }
}
