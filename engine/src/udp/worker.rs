//! The UDP serving loop of one core: `udp_inflight` receive tasks per socket, each receiving a
//! datagram, answering it and receiving again, so many operations are in the ring at once.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use glommio::net::UdpSocket;
use pbts_http::InfoHash;

use super::wire::{self, Request, RequestError};
use crate::common::{self, Announce, Core, canonical_ip, split_passkey_path};
use crate::metrics::Counter;

/// Runs `inflight` receive loops on `socket` until the executor stops.
pub(crate) async fn run_udp_worker(core: Rc<Core>, socket: UdpSocket, inflight: usize) {
    let socket = Rc::new(socket);
    let tasks: Vec<_> = (0..inflight)
        .map(|_| glommio::spawn_local(receive_loop(core.clone(), socket.clone())))
        .collect();
    for t in tasks {
        t.await;
    }
}

async fn receive_loop(core: Rc<Core>, socket: Rc<UdpSocket>) {
    let mut buf = vec![0u8; wire::MAX_REQUEST_BYTES + 1];
    let mut out = Vec::with_capacity(2048);
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("udp recv: {e:#}");
                continue;
            }
        };
        out.clear();
        handle(&core, &buf[..n], src, &mut out);
        if !out.is_empty()
            && let Err(e) = socket.send_to(&out, src).await
        {
            tracing::debug!("udp send to {src}: {e:#}");
        }
    }
}

/// Answers one datagram into `out` (left empty when the datagram is dropped).
pub(crate) fn handle(core: &Core, datagram: &[u8], src: SocketAddr, out: &mut Vec<u8>) {
    let ip = canonical_ip(src.ip());
    let state = &core.state;
    let now = state.start.elapsed().as_secs();
    let m = core.metrics();
    let request = match wire::parse_request(datagram) {
        Ok(r) => r,
        Err(RequestError::Drop) => {
            m.inc(Counter::UdpDropped);
            return;
        }
        Err(RequestError::Sendable { transaction_id, message }) => {
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
                passkey,
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
                            for &(ip, port, _) in &selected.v4 {
                                wire::write_peer_v4(out, ip, port);
                            }
                        }
                        IpAddr::V6(_) => {
                            for &(ip, port, _) in &selected.v6 {
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
