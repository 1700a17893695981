//! The UDP serving loop of one core and socket.
//!
//! Datagrams are drained with one non-blocking `recvmmsg` per batch and answered with one
//! `sendmmsg`, so a loaded core makes two system calls per `udp_batch_size` requests instead of
//! two per request. When nothing is queued the loop waits in the io_uring ring (a 1-byte
//! `MSG_PEEK` receive that leaves the datagram queued), so an idle core sleeps.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use glommio::net::UdpSocket;
use pbts_proto::InfoHash;
use pbts_proto::udp::{self as wire, Request, RequestError};

use crate::clock::Uptime;
use crate::common::{self, Announce, Core, canonical_ip, split_passkey_path};
use crate::config::TrackerMode;
use crate::metrics::Counter;
use crate::sys::{RecvBatch, SendBatch};

/// The refusal of a private-mode UDP announce that carried no BEP 41 URL data: the passkey is
/// in the announce URL's path, which only such data carries over UDP. libtorrent-based clients
/// (qBittorrent, Deluge) send it; Transmission, rtorrent and aria2 do not, and their users need
/// the HTTP announce URL. (A UDP announce *with* URL data but no passkey in it gets HTTP's
/// "passkey required: announce to /<passkey>/announce": its URL is what is wrong.)
pub(crate) const PASSKEY_WITHOUT_URL_DATA: &str = "passkey required: your client sent no URL \
    data (BEP 41) with this UDP announce, so the passkey cannot reach the tracker over UDP; \
    use the HTTP announce URL";

/// Serves `socket` until the executor stops.
pub(crate) async fn run_udp_worker(core: Rc<Core>, socket: UdpSocket, batch: usize) {
    let fd = socket.as_raw_fd();
    let mut rx = RecvBatch::new(batch, wire::MAX_REQUEST_BYTES);
    let mut tx = SendBatch::new(batch);
    let mut out = Vec::with_capacity(batch * 512);
    let mut replies = Vec::with_capacity(batch);
    let mut peek = [0u8; 1];
    loop {
        let n = match rx.recv(fd) {
            Ok(n) => n,
            Err(e) => {
                // Typically a queued ICMP error from an earlier send; reading it cleared it.
                tracing::debug!("udp recvmmsg: {e:#}");
                continue;
            }
        };
        if n == 0 {
            if let Err(e) = socket.peek_from(&mut peek).await {
                tracing::debug!("udp wait: {e:#}");
            }
            continue;
        }
        out.clear();
        replies.clear();
        // One clock read per batch: a batch is served within microseconds.
        let now = core.state.now();
        for i in 0..n {
            let (bytes, src) = rx.datagram(i);
            let Some(src) = src else { continue };
            let start = out.len();
            match bytes {
                Some(bytes) => {
                    // A panic costs this datagram (no reply), never the core.
                    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handle(&core, bytes, src, now, &mut out);
                    }));
                    if answered.is_err() {
                        core.metrics().inc(Counter::UdpPanics);
                        tracing::error!("panic while handling a UDP datagram: dropped");
                        out.truncate(start);
                    }
                }
                None => core.metrics().inc(Counter::UdpDropped),
            }
            if out.len() > start {
                replies.push((start..out.len(), src));
            }
        }
        let mut sent = 0;
        while sent < replies.len() {
            match tx.send(fd, &out, &replies[sent..]) {
                Ok(k) if k > 0 => sent += k,
                other => {
                    if let Err(e) = other {
                        tracing::debug!("udp sendmmsg: {e:#}");
                    }
                    // Send buffer full (or an error for this destination): send one through
                    // the ring, which waits for room, then try the batch again.
                    let (range, to) = &replies[sent];
                    let _ = socket.send_to(&out[range.clone()], *to).await;
                    sent += 1;
                }
            }
        }
        if n == batch {
            // A full batch means more is queued: let HTTP tasks on this core run too.
            glommio::yield_if_needed().await;
        }
    }
}

/// Answers one datagram into `out` (nothing is appended when the datagram is dropped). `now` is
/// seconds since start-up.
pub(crate) fn handle(
    core: &Core,
    datagram: &[u8],
    src: SocketAddr,
    now: Uptime,
    out: &mut Vec<u8>,
) {
    let ip = canonical_ip(src.ip());
    let state = &core.state;
    let m = core.metrics();
    if state.fault_requests && datagram.starts_with(crate::supervisor::FAULT_DATAGRAM) {
        panic!("injected fault: {}=request", crate::supervisor::FAULT_ENV);
    }
    let request = match wire::parse_request(datagram) {
        Ok(r) => r,
        Err(RequestError::Drop) => {
            m.inc(Counter::UdpDropped);
            return;
        }
        Err(RequestError::Sendable { connection_id, transaction_id, message }) => {
            // Only a source that proved it receives our packets gets an error: anything else
            // could be a spoofed victim address.
            if !state.validator.check(connection_id, ip, now) {
                m.inc(Counter::UdpDropped);
                return;
            }
            m.inc(Counter::UdpError);
            wire::write_error(out, transaction_id, message);
            return;
        }
    };
    match request {
        Request::Connect { transaction_id } => {
            m.inc(Counter::UdpConnect);
            wire::write_connect(out, transaction_id, state.validator.make(ip, now));
        }
        Request::Announce(a) => {
            if !state.validator.check(a.connection_id, ip, now) {
                // No answer: an unauthenticated source must not make us send anything.
                m.inc(Counter::UdpDropped);
                return;
            }
            if a.url_data.is_empty() && state.config.tracker.mode == TrackerMode::Private {
                // Transmission, rtorrent and aria2 never send BEP 41 URL data: "announce to
                // /<passkey>/announce" would send their users looking for a mistake in a URL
                // that is right. Say what is missing instead.
                m.inc(Counter::AuthRejected);
                m.inc(Counter::UdpError);
                wire::write_error(out, a.transaction_id, PASSKEY_WITHOUT_URL_DATA);
                return;
            }
            let path = a.url_data.split(|&b| b == b'?').next().unwrap_or(b"");
            let (_, passkey) = split_passkey_path(path);
            let announce = Announce {
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                ip,
                port: a.port,
                event: a.event,
                left: Some(a.left),
                uploaded: a.uploaded,
                downloaded: a.downloaded,
                numwant: a.num_want,
                both_families: false,
                peer_ids: false,
                passkey,
                now,
            };
            match common::announce(core, &announce) {
                Ok(outcome) => {
                    m.inc(Counter::UdpAnnounce);
                    wire::write_announce_head(
                        out,
                        a.transaction_id,
                        core.interval(),
                        outcome.incomplete,
                        outcome.complete,
                    );
                    let selected = core.selected.borrow();
                    match ip {
                        IpAddr::V4(_) => {
                            for &(ip, port) in &selected.v4 {
                                wire::write_peer_v4(out, ip, port);
                            }
                        }
                        IpAddr::V6(_) => {
                            for &(ip, port) in &selected.v6 {
                                wire::write_peer_v6(out, ip, port);
                            }
                        }
                    }
                }
                Err(text) => {
                    m.inc(Counter::UdpError);
                    wire::write_error(out, a.transaction_id, &text);
                }
            }
        }
        Request::Scrape { connection_id, transaction_id, info_hashes } => {
            if !state.validator.check(connection_id, ip, now) {
                m.inc(Counter::UdpDropped);
                return;
            }
            let max = state.config.tracker.max_scrape_hashes;
            if info_hashes.len() / 20 > max {
                m.inc(Counter::UdpError);
                wire::write_error(out, transaction_id, "too many info hashes in one scrape");
                return;
            }
            m.inc(Counter::UdpScrape);
            wire::write_scrape_head(out, transaction_id);
            for raw in info_hashes.chunks_exact(20) {
                let ih = InfoHash::from_slice(raw).expect("chunks_exact yields 20 bytes");
                let (complete, downloaded, incomplete) = common::scrape(core, &ih);
                wire::write_scrape_entry(out, complete, downloaded, incomplete);
            }
        }
    }
}
