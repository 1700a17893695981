//! The HTTP tracker (BEP 3, 7, 23, 48): announce and scrape queries in, bencoded bodies out.
//! Query decoding and response encoding are `pbts_http`'s; the connection loop is
//! [`crate::workers::socket::http`].

use std::net::IpAddr;

use pbts_http::query::{self, QueryError};
use pbts_http::response::{self, AnnounceResponse, PeerList, ScrapeEntry};
use pbts_proto::PeerId;

use super::Announce;
use crate::metrics::Counter;
use crate::state::Core;
use crate::swarm::PeerAnnounce;

/// Answers an announce query into `body` (a bencoded response or failure).
pub(crate) fn announce(
    core: &Core,
    q: &[u8],
    ip: IpAddr,
    passkey: Option<&[u8]>,
    body: &mut Vec<u8>,
) {
    let m = core.metrics();
    let parsed = match query::parse_announce(q) {
        Ok(p) => p,
        Err(e) => {
            m.inc(Counter::HttpFailure);
            response::write_failure_body(e.as_str(), body);
            return;
        }
    };
    let a = Announce {
        peer: PeerAnnounce {
            info_hash: parsed.info_hash,
            peer_id: parsed.peer_id,
            ip,
            port: parsed.port,
            event: parsed.event,
            left: parsed.left,
            uploaded: parsed.uploaded,
            downloaded: parsed.downloaded,
            both_families: true,
            peer_ids: !parsed.compact && !parsed.no_peer_id,
        },
        numwant: parsed.numwant,
        passkey,
        now: core.state.now(),
    };
    match super::announce(core, &a) {
        Ok(outcome) => {
            m.inc(Counter::HttpAnnounce);
            let selected = core.selected.borrow();
            let tracker_id = core.state.instance_id.as_bytes();
            let t = &core.state.config.tracker;
            let mut dict = Vec::new();
            let peers = if parsed.compact {
                PeerList::Compact { v4: &selected.v4, v6: &selected.v6 }
            } else {
                let id = |ids: &[PeerId], i: usize| ids.get(i).copied();
                dict.extend(
                    selected
                        .v4
                        .iter()
                        .enumerate()
                        .map(|(i, &(ip, port))| (ip.into(), port, id(&selected.v4_ids, i))),
                );
                dict.extend(
                    selected
                        .v6
                        .iter()
                        .enumerate()
                        .map(|(i, &(ip, port))| (ip.into(), port, id(&selected.v6_ids, i))),
                );
                PeerList::Dict { peers: &dict }
            };
            let resp = AnnounceResponse {
                interval: core.interval(),
                min_interval: t.min_interval_secs,
                complete: outcome.complete,
                incomplete: outcome.incomplete,
                downloaded: outcome.downloaded,
                tracker_id: Some(tracker_id),
                warning: None,
                external_ip: Some(ip),
                peers,
            };
            response::write_announce_body(&resp, body);
        }
        Err(text) => {
            m.inc(Counter::HttpFailure);
            response::write_failure_body(&text, body);
        }
    }
}

/// Answers a scrape query into `body`.
pub(crate) fn scrape(core: &Core, q: &[u8], passkey: Option<&[u8]>, body: &mut Vec<u8>) {
    let m = core.metrics();
    if let Err(text) = super::authenticate(core, passkey) {
        m.inc(Counter::HttpFailure);
        response::write_failure_body(&text, body);
        return;
    }
    let hashes = match query::parse_scrape(q, core.state.config.tracker.max_scrape_hashes) {
        Ok(h) => h,
        Err(e) => {
            m.inc(Counter::HttpFailure);
            response::write_failure_body(QueryError::as_str(e), body);
            return;
        }
    };
    m.inc(Counter::HttpScrape);
    let entries: Vec<ScrapeEntry> = hashes
        .iter()
        .map(|ih| {
            let (complete, downloaded, incomplete) = super::scrape(core, ih);
            ScrapeEntry { info_hash: *ih, complete, downloaded, incomplete }
        })
        .collect();
    response::write_scrape_body(&entries, body);
}
