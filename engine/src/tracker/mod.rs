//! The tracker protocol: announce and scrape, independent of the transport. [`udp`] and
//! [`http`] decode requests into an [`Announce`] and encode the outcome; the serving loops in
//! [`crate::workers::socket`] own the sockets.

pub mod connection_id;
pub(crate) mod http;
pub(crate) mod udp;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pbts_proto::{AnnounceEvent, InfoHash};

use crate::clock::Uptime;
use crate::config::TrackerMode;
use crate::metrics::Counter;
use crate::state::{Core, State};
use crate::store::{Passkey, User, saturating_add_to};
use crate::swarm::table::{AnnounceInput, AnnounceOutcome, Credit, PeerAnnounce, Refusal, UserId};

/// An announce from either protocol, after decoding.
#[derive(Clone, Copy, Debug)]
pub struct Announce<'a> {
    /// What the client said about its peer.
    pub peer: PeerAnnounce,
    /// Peers wanted (`None`: default).
    pub numwant: Option<u32>,
    /// Passkey bytes from the URL, if any.
    pub passkey: Option<&'a [u8]>,
    /// Seconds since start-up ([`State::now`]), read once per request or batch.
    pub now: Uptime,
}

/// Why an announce or scrape was refused: the text goes to the client.
pub type Rejection = Cow<'static, str>;

/// Resolves the passkey according to the tracker mode.
pub fn authenticate(core: &Core, passkey: Option<&[u8]>) -> Result<Option<Arc<User>>, Rejection> {
    let state = &core.state;
    if state.config.tracker.mode == TrackerMode::Open {
        return Ok(None);
    }
    let reject = |text: &'static str| {
        core.metrics().inc(Counter::AuthRejected);
        Err(Cow::Borrowed(text))
    };
    let Some(raw) = passkey else {
        return reject("passkey required: announce to /<passkey>/announce");
    };
    let Some(pk) = Passkey::parse(raw) else {
        return reject("invalid passkey: expected 32 lowercase hex characters");
    };
    match state.accounts.by_passkey(&pk) {
        Some(user) => Ok(Some(user)),
        None => reject("unknown passkey"),
    }
}

/// Handles an announce: authentication, torrent registry, ratio gate, swarm update,
/// accounting. Chosen peers are left in `core.selected`.
///
/// # Errors
/// The failure text for the client.
pub fn announce(core: &Core, a: &Announce<'_>) -> Result<AnnounceOutcome, Rejection> {
    let state = &core.state;
    let user = authenticate(core, a.passkey)?;
    let registered =
        !state.registered.is_empty() && state.registered.contains_key(&a.peer.info_hash);
    if state.config.tracker.require_registered_torrents && !registered {
        return Err(Cow::Borrowed("unregistered torrent"));
    }
    let now = a.now;
    let t = &state.config.tracker;
    let mut input = AnnounceInput {
        peer: a.peer,
        numwant: a.numwant.map_or(t.default_numwant, |n| n as usize).min(t.max_peers),
        now,
        valid_until: now.after(t.peer_timeout_secs),
        user: user.as_ref().map(|u| u.id),
        // Only registered torrents get durable snatch counts: anyone (in open mode) or any
        // passkey holder (in private mode) can invent info-hashes, and each must not grow the
        // database for good.
        durable_snatches: registered,
        admit_new: user.as_ref().is_none_or(|u| {
            u.active_peers.load(Ordering::Relaxed) < state.config.limits.max_torrents_per_user
        }),
        max_peers_per_ip: state.config.limits.max_peers_per_ip_per_swarm,
    };
    let rejection = user.as_deref().and_then(|u| ratio_rejection(core, u, a));
    if rejection.is_some() {
        // Take the peer out of the swarm (crediting what it reported) and hand out nothing.
        input.peer.event = AnnounceEvent::Stopped;
    }
    let mut selected = core.selected.borrow_mut();
    selected.clear();
    let outcome = state.swarms.announce(&input, &mut *core.rng.borrow_mut(), &mut selected);
    track_ownership(state, user.as_deref(), &outcome);
    if let Some(user) = &user {
        // Unregistered torrents share one row per user (the all-zero hash), so invented
        // info-hashes cannot each add a durable row.
        let key = if registered { a.peer.info_hash } else { InfoHash::default() };
        credit(core, user, key, &outcome);
    }
    if outcome.new_snatch && input.durable_snatches {
        core.pending.borrow_mut().add_snatch(a.peer.info_hash);
    }
    if let Some(refusal) = outcome.refused {
        selected.clear();
        return Err(Cow::Owned(match refusal {
            Refusal::UserFull => format!(
                "too many active torrents for this account (limit {}): stop some first",
                state.config.limits.max_torrents_per_user
            ),
            Refusal::AddressFull => format!(
                "too many peers from this address in this swarm (limit {})",
                state.config.limits.max_peers_per_ip_per_swarm
            ),
        }));
    }
    match rejection {
        Some(text) => {
            selected.clear();
            core.metrics().inc(Counter::RatioRejected);
            Err(Cow::Owned(text))
        }
        None => Ok(outcome),
    }
}

/// Keeps each user's count of live peer entries (`limits.max_torrents_per_user`).
fn track_ownership(state: &State, user: Option<&User>, outcome: &AnnounceOutcome) {
    let adjust = |id: UserId, up: bool| {
        let apply = |u: &User| {
            let _ = u.active_peers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(if up { n.saturating_add(1) } else { n.saturating_sub(1) })
            });
        };
        match user {
            Some(u) if u.id == id => apply(u),
            _ => {
                if let Some(u) = state.accounts.by_id(id) {
                    apply(&u);
                }
            }
        }
    };
    if let Some(id) = outcome.left {
        adjust(id, false);
    }
    if let Some(id) = outcome.joined {
        adjust(id, true);
    }
}

/// Peers expired by the cleaner no longer count against their owners.
pub fn release_expired(state: &State, owners: &[UserId]) {
    for &id in owners {
        if let Some(u) = state.accounts.by_id(id) {
            let _ = u
                .active_peers
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }
}

fn credit(core: &Core, user: &User, key: InfoHash, outcome: &AnnounceOutcome) {
    let c = outcome.credit;
    if c.uploaded > 0 || c.downloaded > 0 {
        add_claimed(user, c);
        core.pending.borrow_mut().add_credit(user.id, key, c);
    }
}

/// Adds an announce's credit to the user's claimed totals. Saturating, as the database is:
/// the counters are whatever a client reports (up to `u64::MAX` per announce), and a wrapped
/// total would turn a huge claimed upload into a tiny one, or a tiny download into a huge one.
fn add_claimed(user: &User, c: Credit) {
    saturating_add_to(&user.uploaded, c.uploaded);
    saturating_add_to(&user.downloaded, c.downloaded);
}

/// The ratio gate: leechers past the grace allowance need uploaded/downloaded >= min_ratio,
/// counted from the configured source. Seeders and `stopped` announces always pass.
fn ratio_rejection(core: &Core, user: &User, a: &Announce<'_>) -> Option<String> {
    let r = &core.state.config.ratio;
    let leeching = a.peer.left.is_some_and(|l| l > 0);
    if !r.enabled || !leeching || a.peer.event == AnnounceEvent::Stopped {
        return None;
    }
    let (up, down) = user.ratio_counts(r.source);
    if down <= r.grace_bytes {
        return None;
    }
    let ratio = up as f64 / down as f64;
    let min_ratio = core.state.runtime.min_ratio();
    let kind = match r.source {
        crate::config::RatioSource::Claimed => "",
        crate::config::RatioSource::Verified => "verified ",
    };
    (ratio < min_ratio).then(|| {
        format!(
            "insufficient ratio: {ratio:.2} < {min_ratio:.2} ({kind}uploaded {up} bytes, \
             downloaded {down} bytes)"
        )
    })
}

/// Scrape counts for one torrent, all zero when unknown.
pub fn scrape(core: &Core, info_hash: &InfoHash) -> (u32, u32, u32) {
    core.state
        .swarms
        .scrape(info_hash)
        .map_or((0, 0, 0), |s| (s.complete, s.downloaded, s.incomplete))
}

/// Extracts the passkey from `/<passkey>/<action>` or `/<action>/<passkey>` (a trailing
/// query, if any, already removed). Returns (action, passkey).
pub fn split_passkey_path(path: &[u8]) -> (&[u8], Option<&[u8]>) {
    let trimmed = path.strip_prefix(b"/").unwrap_or(path);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    let mut parts = trimmed.splitn(3, |&b| b == b'/');
    let first = parts.next().unwrap_or(b"");
    match (parts.next(), parts.next()) {
        (None, _) => (first, None),
        (Some(second), None) => {
            if matches!(first, b"announce" | b"scrape") {
                (first, Some(second))
            } else {
                (second, Some(first))
            }
        }
        (Some(_), Some(_)) => (b"", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Accounts;

    #[test]
    fn passkey_paths() {
        let pk: &[u8] = b"0123456789abcdef0123456789abcdef";
        assert_eq!(split_passkey_path(b"/announce"), (&b"announce"[..], None));
        assert_eq!(
            split_passkey_path(b"/0123456789abcdef0123456789abcdef/announce"),
            (&b"announce"[..], Some(pk))
        );
        assert_eq!(
            split_passkey_path(b"/announce/0123456789abcdef0123456789abcdef"),
            (&b"announce"[..], Some(pk))
        );
        assert_eq!(split_passkey_path(b"/scrape/x"), (&b"scrape"[..], Some(&b"x"[..])));
        assert_eq!(split_passkey_path(b"/a/b/c"), (&b""[..], None));
    }

    #[test]
    fn claimed_totals_saturate_instead_of_wrapping() {
        let accounts = Accounts::default();
        let record = crate::store::UserRecord {
            id: 1,
            name: "big".to_owned(),
            passkey: "0123456789abcdef0123456789abcdef".to_owned(),
            created_at: 0,
            uploaded: u64::MAX - 5,
            downloaded: 7,
            public_key: None,
            verified_uploaded: 0,
            verified_downloaded: 0,
        };
        let user = accounts.insert(&record).unwrap();
        add_claimed(&user, Credit { uploaded: 10, downloaded: u64::MAX });
        assert_eq!(user.uploaded.load(Ordering::Relaxed), u64::MAX);
        assert_eq!(user.downloaded.load(Ordering::Relaxed), u64::MAX);
        add_claimed(&user, Credit { uploaded: u64::MAX, downloaded: 1 });
        assert_eq!(user.uploaded.load(Ordering::Relaxed), u64::MAX);
        assert_eq!(user.downloaded.load(Ordering::Relaxed), u64::MAX);
    }
}
