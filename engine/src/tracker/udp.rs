//! The UDP tracker (BEP 15, with BEP 41 URL data for passkeys): one datagram in, at most one
//! reply out. The codec is `pbts_proto::udp`; connection ids are [`super::connection_id`].

use std::net::{IpAddr, SocketAddr};

use pbts_proto::InfoHash;
use pbts_proto::udp::{self as wire, Request, RequestError};

use super::{Announce, split_passkey_path};
use crate::addr::canonical_ip;
use crate::clock::Uptime;
use crate::config::TrackerMode;
use crate::metrics::Counter;
use crate::state::Core;
use crate::swarm::PeerAnnounce;

/// The refusal of a private-mode UDP announce that carried no BEP 41 URL data: the passkey is
/// in the announce URL's path, which only such data carries over UDP. libtorrent-based clients
/// (qBittorrent, Deluge) send it; Transmission, rtorrent and aria2 do not, and their users need
/// the HTTP announce URL. (A UDP announce *with* URL data but no passkey in it gets HTTP's
/// "passkey required: announce to /<passkey>/announce": its URL is what is wrong.)
pub(crate) const PASSKEY_WITHOUT_URL_DATA: &str = "passkey required: your client sent no URL \
    data (BEP 41) with this UDP announce, so the passkey cannot reach the tracker over UDP; \
    use the HTTP announce URL";

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
                peer: PeerAnnounce {
                    info_hash: a.info_hash,
                    peer_id: a.peer_id,
                    ip,
                    port: a.port,
                    event: a.event,
                    left: Some(a.left),
                    uploaded: a.uploaded,
                    downloaded: a.downloaded,
                    both_families: false,
                    peer_ids: false,
                },
                numwant: a.num_want,
                passkey,
                now,
            };
            match super::announce(core, &announce) {
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
                let (complete, downloaded, incomplete) = super::scrape(core, &ih);
                wire::write_scrape_entry(out, complete, downloaded, incomplete);
            }
        }
    }
}

/// The benchmark ceiling (`pbts serve --udp-ceiling`): the same decoding, connection ids and
/// reply encoding as [`handle`], but no swarm: every announce is answered with no peers and
/// zero counts, every scrape with zeros. What the socket loop costs on its own.
pub(crate) fn handle_stateless(
    core: &Core,
    datagram: &[u8],
    src: SocketAddr,
    now: Uptime,
    out: &mut Vec<u8>,
) {
    let ip = canonical_ip(src.ip());
    let validator = &core.state.validator;
    match wire::parse_request(datagram) {
        Ok(Request::Connect { transaction_id }) => {
            wire::write_connect(out, transaction_id, validator.make(ip, now));
        }
        Ok(Request::Announce(a)) if validator.check(a.connection_id, ip, now) => {
            wire::write_announce_head(out, a.transaction_id, core.interval(), 0, 0);
        }
        Ok(Request::Scrape { connection_id, transaction_id, info_hashes })
            if validator.check(connection_id, ip, now) =>
        {
            wire::write_scrape_head(out, transaction_id);
            for _ in info_hashes.chunks_exact(20) {
                wire::write_scrape_entry(out, 0, 0, 0);
            }
        }
        _ => {}
    }
}
