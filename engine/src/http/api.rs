//! The JSON/text API: `/health`, `/stats`, `/metrics`, `/config`, `/register`, `/user/<id>`,
//! the admin endpoints, and the routes of [`super::receipts`].
//!
//! Writes go to the store thread and are answered only after they are committed.

use std::sync::atomic::Ordering;

use pbts_http::request::{Method, Request};
use pbts_http::response;
use pbts_proto::InfoHash;
use serde::Deserialize;
use serde_json::json;

use super::receipts;
use crate::common::{Client, Core};
use crate::config::{RegistrationPolicy, TrackerMode};
use crate::metrics::{Counter, Stat};
use crate::store::{Overrides, StoreCmd, StoreError, TorrentRecord};
use crate::swarm::store::StoreTotals;

const JSON: &str = "application/json";

/// Writes a JSON response.
pub(crate) fn write_json(out: &mut Vec<u8>, status: u16, body: &str, keep_alive: bool) {
    response::write_response(out, status, JSON, body.as_bytes(), keep_alive);
}

/// `{"success": false, "error": ...}`: the original API's failure shape (`/register`,
/// `/report`, `/verify-receipt`, `/config`).
pub(crate) fn fail(out: &mut Vec<u8>, status: u16, message: &str, keep_alive: bool) {
    write_json(out, status, &json!({ "success": false, "error": message }).to_string(), keep_alive);
}

/// [`fail`] with a `Retry-After` of `secs` seconds (429 and 503 answers).
pub(crate) fn fail_retry(out: &mut Vec<u8>, status: u16, message: &str, secs: u64, ka: bool) {
    let body = json!({ "success": false, "error": message }).to_string();
    let secs = secs.to_string();
    response::write_response_with_headers(
        out,
        status,
        JSON,
        &[("Retry-After", secs.as_bytes())],
        body.as_bytes(),
        ka,
    );
}

fn error(out: &mut Vec<u8>, status: u16, message: &str, keep_alive: bool) {
    write_json(out, status, &json!({ "error": message }).to_string(), keep_alive);
}

/// The endpoints that do BLS or quote work for clients that have not authenticated.
fn is_expensive(req: &Request<'_>) -> bool {
    req.method == Method::Post
        && matches!(req.path, b"/register" | b"/verify-receipt" | b"/verify-attestation")
}

pub(crate) async fn route(core: &Core, req: &Request<'_>, client: Client, out: &mut Vec<u8>) {
    let ka = req.keep_alive;
    let state = &core.state;
    if is_expensive(req)
        && let Err(wait) = state.limiter.check(client.ip, std::time::Instant::now())
    {
        let secs = wait.as_secs().max(1);
        let message = format!("too many requests from this address: retry in {secs} s");
        return fail_retry(out, 429, &message, secs, ka);
    }
    match (req.method, req.path) {
        (Method::Get | Method::Head, b"/health") => {
            let body = json!({
                "status": if state.is_shutting_down() { "stopping" } else { "healthy" },
                "instance_id": state.instance_id,
                "mode": mode_str(state.config.tracker.mode),
                // Always on: credit comes only from verified signatures.
                "signature_verification": true,
            });
            write_json(out, 200, &body.to_string(), ka);
        }
        (Method::Get | Method::Head, b"/stats") => {
            let t = swarm_totals(core).await;
            let m = &state.metrics;
            let rs = &state.receipt_stats;
            let body = json!({
                "instance_id": state.instance_id,
                "mode": mode_str(state.config.tracker.mode),
                "uptime_secs": state.now().secs(),
                "cores": state.config.serving_cores(),
                "total_torrents": t.torrents,
                "total_peers": t.peers_v4 + t.peers_v6,
                "peers_v4": t.peers_v4,
                "peers_v6": t.peers_v6,
                "seeders": t.seeders,
                "leechers": t.leechers,
                "total_users": state.accounts.len(),
                "registered_torrents": state.registered.len(),
                "min_ratio": state.runtime.min_ratio(),
                "max_peers": state.config.tracker.max_peers,
                "receipts": {
                    "reports": rs.reports.load(Ordering::Relaxed),
                    "accepted": rs.accepted.load(Ordering::Relaxed),
                    "rejected": rs.rejected.load(Ordering::Relaxed),
                    "credited_bytes": rs.credited_bytes.load(Ordering::Relaxed),
                    "credited_pieces": rs.credited_pieces.load(Ordering::Relaxed),
                    "in_flight": rs.in_flight.load(Ordering::Relaxed),
                    "verifier_threads": state.verifier.threads(),
                },
                "requests": {
                    "udp_connect": m.total(Counter::UdpConnect),
                    "udp_announce": m.total(Counter::UdpAnnounce),
                    "udp_scrape": m.total(Counter::UdpScrape),
                    "udp_error": m.total(Counter::UdpError),
                    "udp_dropped": m.total(Counter::UdpDropped),
                    "http_announce": m.total(Counter::HttpAnnounce),
                    "http_scrape": m.total(Counter::HttpScrape),
                    "http_failure": m.total(Counter::HttpFailure),
                    "ratio_rejected": m.total(Counter::RatioRejected),
                    "passkey_rejected": m.total(Counter::AuthRejected),
                },
                "open_connections": m.open_connections(),
            });
            write_json(out, 200, &body.to_string(), ka);
        }
        (Method::Get | Method::Head, b"/metrics") => {
            let t = swarm_totals(core).await;
            let rs = &state.receipt_stats;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let text = state.metrics.render(&[
                (Stat::Torrents, t.torrents as u64),
                (Stat::PeersV4, t.peers_v4 as u64),
                (Stat::PeersV6, t.peers_v6 as u64),
                (Stat::Seeders, t.seeders as u64),
                (Stat::Leechers, t.leechers as u64),
                (Stat::Users, state.accounts.len() as u64),
                (Stat::ReceiptsAccepted, load(&rs.accepted)),
                (Stat::ReceiptsRejected, load(&rs.rejected)),
                (Stat::ReceiptCreditedBytes, load(&rs.credited_bytes)),
                (Stat::CreditedPieces, load(&rs.credited_pieces)),
                (Stat::StoreCommitFailures, load(&state.store_stats.commit_failures)),
                (Stat::StoreAccountingRetrying, load(&state.store_stats.accounting_retrying)),
            ]);
            response::write_response(out, 200, "text/plain; version=0.0.4", text.as_bytes(), ka);
        }
        (Method::Post, b"/register") => register(core, req, out).await,
        (Method::Post, b"/invites") => user_invite(core, req, out).await,
        (Method::Post, b"/verify-receipt") => receipts::verify_receipt(req, out).await,
        (Method::Post, b"/keygen") => receipts::keygen(core, req, client, out).await,
        (Method::Post, b"/keygen-tee") => super::tee::keygen(core, req, out).await,
        (Method::Post, b"/generate-attestation") => super::tee::generate(core, req, out).await,
        (Method::Post, b"/verify-attestation") => super::tee::verify(core, req, out).await,
        (Method::Get | Method::Head, b"/tee/status") => super::tee::status(core, ka, out).await,
        (Method::Post, b"/attest") => receipts::attest(core, req, client, out).await,
        (Method::Post, path) if receipts::report_route(path).is_some() => {
            let passkey = receipts::report_route(path).flatten();
            receipts::report(core, req, passkey, out).await;
        }
        (Method::Get | Method::Head, b"/config") => {
            write_json(out, 200, &config_json(core).to_string(), ka);
        }
        (Method::Post, b"/config") => {
            if !is_admin(core, req, client) {
                return fail(out, 403, "changing the configuration requires admin access", ka);
            }
            set_config(core, req, out).await;
        }
        (Method::Get, path) if path.starts_with(b"/user/") => {
            let name = match path_param(path, b"/user/", "user id") {
                Ok(name) => name,
                Err(e) => return error(out, 400, &e, ka),
            };
            let Some(user) = state.accounts.by_name(&name) else {
                return error(out, 404, "User not found", ka);
            };
            let r = user.to_record();
            let mut body = receipts::user_totals(&user, state.config.ratio.source);
            body["user_id"] = r.name.into();
            body["public_key"] = r.public_key.into();
            body["registered_at"] = r.created_at.into();
            write_json(out, 200, &body.to_string(), ka);
        }
        (_, path) if path.starts_with(b"/contract/") => {
            let admin = is_admin(core, req, client);
            super::contract::route(core, req, admin, out).await;
        }
        (_, path) if path.starts_with(b"/admin/") => {
            if !is_admin(core, req, client) {
                return error(
                    out,
                    403,
                    "admin access requires a loopback client or the admin token",
                    ka,
                );
            }
            admin(core, req, out).await;
        }
        (_, b"/health" | b"/stats" | b"/metrics" | b"/config") => {
            error(out, 405, "method not allowed", ka)
        }
        (
            _,
            b"/register"
            | b"/invites"
            | b"/report"
            | b"/verify-receipt"
            | b"/keygen"
            | b"/attest"
            | b"/keygen-tee"
            | b"/generate-attestation"
            | b"/verify-attestation"
            | b"/tee/status",
        ) => error(out, 405, "method not allowed", ka),
        _ => error(out, 404, "not found", ka),
    }
}

/// Swarm totals at most [`crate::common::TOTALS_MAX_AGE`] old, computed on a blocking thread
/// by one request at a time (the others answer with the previous totals meanwhile).
async fn swarm_totals(core: &Core) -> StoreTotals {
    let cache = &core.state.totals;
    match cache.get(std::time::Instant::now()) {
        Ok(t) => t,
        Err(stale) if !cache.begin_refresh() => stale,
        Err(_) => {
            // Ends the recomputation even if this request is dropped while it waits.
            struct Refresh<'a>(&'a crate::common::TotalsCache, Option<StoreTotals>);
            impl Drop for Refresh<'_> {
                fn drop(&mut self) {
                    self.0.finish_refresh(self.1);
                }
            }
            let mut refresh = Refresh(cache, None);
            let state = core.state.clone();
            let t = glommio::executor().spawn_blocking(move || state.swarms.totals()).await;
            refresh.1 = Some(t);
            t
        }
    }
}

/// `GET /config`: the original's fields, with the values in force.
fn config_json(core: &Core) -> serde_json::Value {
    let state = &core.state;
    let c = &state.config;
    json!({
        "instance_id": state.instance_id,
        "mode": mode_str(c.tracker.mode),
        // Not a switch any more: the original let anyone turn verification off.
        "verify_signatures": true,
        "receipt_window": state.runtime.receipt_window_secs(),
        "receipt_max_future_secs": c.receipts.max_future_secs,
        "min_ratio": state.runtime.min_ratio(),
        "ratio_source": receipts::user_totals_source(c.ratio.source),
        "max_peers": c.tracker.max_peers,
        "max_receipts_per_report": c.receipts.max_receipts_per_report,
        "used_receipts_count": state.receipt_stats.credited_pieces.load(Ordering::Relaxed),
        "tee_available": state.tee.can_quote(),
        "tee_mode": state.tee.mode().as_str(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    #[serde(default)]
    verify_signatures: Option<bool>,
    #[serde(default)]
    receipt_window: Option<u64>,
    #[serde(default)]
    min_ratio: Option<f64>,
    #[serde(default)]
    tee_mode: Option<serde::de::IgnoredAny>,
}

/// Decodes and checks a `POST /config` body: the overrides it asks for, or why it is refused
/// (pure; [`set_config`] applies the result).
pub(crate) fn decode_config_change(raw: &[u8]) -> Result<Overrides, String> {
    let change: ConfigChange = parse_json(raw)?;
    if change.verify_signatures == Some(false) {
        return Err("verify_signatures cannot be turned off: upload credit comes only from \
                    verified signatures"
            .to_owned());
    }
    if change.tee_mode.is_some() {
        return Err("tee_mode is chosen at start-up (TEE_MODE), not at run time".to_owned());
    }
    if let Some(w) = change.receipt_window
        && !(1..=crate::config::MAX_RECEIPT_WINDOW_SECS).contains(&w)
    {
        let max = crate::config::MAX_RECEIPT_WINDOW_SECS;
        return Err(format!("receipt_window must be in 1..={max} seconds, got {w}"));
    }
    if let Some(r) = change.min_ratio
        && !(r.is_finite() && r >= 0.0)
    {
        return Err("min_ratio must be a finite number >= 0".to_owned());
    }
    Ok(Overrides { min_ratio: change.min_ratio, receipt_window_secs: change.receipt_window })
}

/// `POST /config` (admin): validates every key first and applies all or nothing (the original
/// applied keys one by one, so a bad later key left earlier ones changed), then persists the
/// change so a restart keeps it. Types are strict: `"false"` is not a boolean.
async fn set_config(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) {
    let ka = req.keep_alive;
    let overrides = match decode_config_change(req.body) {
        Ok(v) => v,
        Err(e) => return fail(out, 400, &e, ka),
    };
    match ask(core, |reply| StoreCmd::SetOverrides { overrides, reply }).await {
        Ok(in_force) => {
            core.state.runtime.apply(in_force);
            let body = json!({
                "success": true,
                "message": "Configuration updated",
                "config": config_json(core),
            });
            write_json(out, 200, &body.to_string(), ka);
        }
        Err(e) => fail(out, 503, &e.to_string(), ka),
    }
}

fn mode_str(mode: TrackerMode) -> &'static str {
    match mode {
        TrackerMode::Private => "private",
        TrackerMode::Open => "open",
    }
}

fn is_admin(core: &Core, req: &Request<'_>, client: Client) -> bool {
    let state = &core.state;
    if state.config.admin.allow_loopback && client.loopback {
        return true;
    }
    let (Some(token), Some(auth)) = (&state.admin_token, req.authorization) else {
        return false;
    };
    let Some(given) = auth.strip_prefix(b"Bearer ") else { return false };
    constant_time_eq(given, token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// The original's field name is `user_id`; `name` is accepted too.
    #[serde(alias = "user_id")]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTorrent {
    info_hash: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    piece_length: Option<u64>,
    #[serde(default)]
    total_size: Option<u64>,
}

/// A registry record from a `.torrent` body (`Content-Type: application/x-bittorrent`), with its
/// v1 piece hashes, or from JSON `{"info_hash", "piece_length"?, "total_size"?, "name"?}`.
fn torrent_record(req: &Request<'_>) -> Result<(TorrentRecord, Option<Vec<u8>>), String> {
    let now = crate::clock::unix_now();
    let is_torrent = req.content_type.is_some_and(|ct| {
        ct.split(|&b| b == b';')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"application/x-bittorrent"))
    });
    if is_torrent {
        let m = pbts_proto::metainfo::parse_torrent(req.body).map_err(|e| e.to_string())?;
        let primary = m.announce_hashes()[0];
        let record = TorrentRecord {
            info_hash: primary.to_string(),
            name: m.name,
            registered_at: now,
            v2_info_hash: m.v2.map(|h| crate::common::hex(&h)),
            piece_length: Some(m.piece_length),
            total_size: Some(m.total_size),
        };
        return Ok((record, m.pieces));
    }
    let new: NewTorrent = json_body(req)?;
    let ih = InfoHash::from_hex(&new.info_hash).ok_or("info_hash must be 40 hex characters")?;
    pbts_proto::metainfo::check_layout(new.piece_length, new.total_size)
        .map_err(|e| e.to_string())?;
    let record = TorrentRecord {
        info_hash: ih.to_string(),
        name: new.name,
        registered_at: now,
        v2_info_hash: None,
        piece_length: new.piece_length,
        total_size: new.total_size,
    };
    Ok((record, None))
}

/// The route parameter after `prefix` in `path`, percent-decoded (`/user/%61lice` names
/// `alice`; `+` stays a plus sign). Routing matched the raw path, so the parameter is decoded
/// exactly once, here.
///
/// # Errors
/// The text of a 400 naming `what` and the bad escape or the invalid UTF-8.
pub(crate) fn path_param<'a>(
    path: &'a [u8],
    prefix: &[u8],
    what: &str,
) -> Result<std::borrow::Cow<'a, str>, String> {
    let raw = path.strip_prefix(prefix).unwrap_or_default();
    pbts_http::path::decode_segment(raw).map_err(|e| format!("{what} in the path: {e}"))
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Decodes a JSON body. The content type is not enforced: `curl -d` sends
/// `application/x-www-form-urlencoded`, and refusing it (as the original's Flask did with a 415
/// turned into a 500) only breaks the documented commands.
pub(crate) fn json_body<'de, T: Deserialize<'de>>(req: &Request<'de>) -> Result<T, String> {
    parse_json(req.body)
}

/// Decodes JSON bytes, with the message every endpoint answers for a body that does not decode.
pub(crate) fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Sends a command to the store thread and awaits its (post-commit) reply.
pub(crate) async fn ask<T>(
    core: &Core,
    make: impl FnOnce(crate::store::Reply<T>) -> StoreCmd,
) -> Result<T, StoreError> {
    let (tx, rx) = flume::bounded(1);
    core.state.store_tx.send(make(tx)).map_err(|_| StoreError::Closed)?;
    rx.recv_async().await.map_err(|_| StoreError::Closed)?
}

fn announce_urls(core: &Core, passkey: &str) -> (String, String) {
    let base = core.state.config.tracker.public_url.trim_end_matches('/');
    let http = format!("{base}/{passkey}/announce");
    let host = base.split("://").nth(1).unwrap_or(base);
    (http, format!("udp://{host}/{passkey}/announce"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    user_id: String,
    /// Base64 of the 48-byte compressed G1 public key.
    public_key: String,
    /// Base64 of the 96-byte proof of possession (PopProve): required, so nobody can register
    /// a key they do not hold (rogue keys).
    proof_of_possession: String,
    /// Optional: base64 of the original's registration signature over
    /// `"register" ‖ instance_id ‖ user_id`, verified when present.
    #[serde(default)]
    signature: Option<String>,
    /// For a user an admin created (who has a passkey but no key yet): their passkey, which
    /// authorises attaching the key to that existing user.
    #[serde(default)]
    passkey: Option<String>,
    /// An invite code (`registration.policy = "invite"`).
    #[serde(default)]
    invite: Option<String>,
}

/// Decodes base64 of exactly `N` bytes, naming `field` on failure.
pub(crate) fn b64_array<const N: usize>(field: &str, value: &str) -> Result<[u8; N], String> {
    let raw = super::receipt_json::b64_bytes(field, value)?;
    let got = raw.len();
    raw.try_into().map_err(|_| format!("{field} must decode to {N} bytes, got {got}"))
}

/// A `POST /register` body, decoded: the name checked, the keys decoded to their sizes (the
/// signatures are not checked yet).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NewRegistration {
    pub(crate) user_id: String,
    pub(crate) public_key: [u8; 48],
    pub(crate) proof_of_possession: [u8; 96],
    pub(crate) signature: Option<[u8; 96]>,
    pub(crate) passkey: Option<String>,
    pub(crate) invite: Option<String>,
}

/// Decodes a `POST /register` body, or says what is wrong with it (pure; [`register`] checks
/// the signatures and stores the user).
pub(crate) fn decode_registration(raw: &[u8]) -> Result<NewRegistration, String> {
    let r: Registration = parse_json(raw)?;
    if !valid_name(&r.user_id) {
        return Err("user_id must be 1-64 characters of A-Z a-z 0-9 _ - .".to_owned());
    }
    Ok(NewRegistration {
        public_key: b64_array::<48>("public_key", &r.public_key)?,
        proof_of_possession: b64_array::<96>("proof_of_possession", &r.proof_of_possession)?,
        signature: r.signature.as_deref().map(|s| b64_array::<96>("signature", s)).transpose()?,
        user_id: r.user_id,
        passkey: r.passkey,
        invite: r.invite,
    })
}

/// Checks a registration's key, proof of possession and optional signature (CPU-heavy: runs
/// off the serving core). Returns the HTTP status and reason on failure.
fn check_registration(
    public_key: [u8; 48],
    proof: [u8; 96],
    signature: Option<[u8; 96]>,
    instance_id: &str,
    user_id: &str,
) -> Result<(), (u16, String)> {
    use pbts_verifier::keys::PublicKey;
    use pbts_verifier::receipt::{PublicKeyBytes, SignatureBytes};
    let pk = PublicKey::from_bytes(&PublicKeyBytes(public_key))
        .map_err(|e| (400, format!("invalid public_key: {e}")))?;
    pk.verify_possession(&SignatureBytes(proof))
        .map_err(|_| (401, "invalid proof_of_possession".to_owned()))?;
    if let Some(sig) = signature {
        let mut msg = b"register".to_vec();
        msg.extend_from_slice(instance_id.as_bytes());
        msg.extend_from_slice(user_id.as_bytes());
        pk.verify(&msg, &SignatureBytes(sig))
            .map_err(|_| (401, "invalid registration signature".to_owned()))?;
    }
    Ok(())
}

/// `POST /register`: binds a new user to a BLS public key proven by a proof of possession and
/// returns the passkey. Failures answer `{"success": false, "error": ...}` as the original did.
async fn register(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) {
    let ka = req.keep_alive;
    let r = match decode_registration(req.body) {
        Ok(v) => v,
        Err(e) => return fail(out, 400, &e, ka),
    };
    // Attaching a key to an account that exists (the passkey proves it) is not registration.
    let invite = match (core.state.config.registration_policy(), &r.passkey) {
        (_, Some(_)) | (RegistrationPolicy::Open, None) => None,
        (RegistrationPolicy::Closed, None) => {
            return fail(out, 403, "registration is closed: an admin creates accounts", ka);
        }
        (RegistrationPolicy::Invite, None) => match r.invite.clone() {
            Some(code) => Some(code),
            None => {
                return fail(
                    out,
                    403,
                    "an invite code is required to register: send \"invite\": \"<code>\"",
                    ka,
                );
            }
        },
    };
    let (pk, proof, sig) = (r.public_key, r.proof_of_possession, r.signature);
    let instance_id = core.state.instance_id.clone();
    let user_id = r.user_id.clone();
    let checked = glommio::executor()
        .spawn_blocking(move || check_registration(pk, proof, sig, &instance_id, &user_id))
        .await;
    if let Err((status, message)) = checked {
        return fail(out, status, &message, ka);
    }
    let public_key = pbts_verifier::receipt::PublicKeyBytes(pk);
    let result = match &r.passkey {
        Some(given) => {
            // Attaching a key to an existing user: the passkey proves it is theirs.
            let owner = crate::store::Passkey::parse(given.as_bytes())
                .and_then(|pk| core.state.accounts.by_passkey(&pk));
            if owner.is_none_or(|u| u.name != r.user_id) {
                return fail(out, 403, "passkey does not belong to user_id", ka);
            }
            ask(core, |reply| StoreCmd::AttachKey { name: r.user_id, public_key, reply }).await
        }
        None => {
            let public_key = Some(public_key);
            ask(core, |reply| StoreCmd::CreateUser { name: r.user_id, invite, public_key, reply })
                .await
        }
    };
    match result {
        Ok(record) => {
            let (http, udp) = announce_urls(core, &record.passkey);
            let body = json!({
                "success": true,
                "message": "User registered successfully",
                "instance_id": core.state.instance_id,
                "user_id": record.name,
                "passkey": record.passkey,
                "announce_url": http,
                "udp_announce_url": udp,
            });
            write_json(out, 200, &body.to_string(), ka);
        }
        Err(StoreError::UserExists(_)) => fail(out, 409, "User already exists", ka),
        Err(e @ StoreError::InvalidInvite) => fail(out, 403, &e.to_string(), ka),
        Err(e @ (StoreError::KeyExists | StoreError::UserHasKey)) => {
            fail(out, 409, &e.to_string(), ka)
        }
        Err(e) => fail(out, 503, &e.to_string(), ka),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    passkey: String,
}

/// `POST /invites {"passkey": ...}`: a user creates an invite code, within the budget
/// `registration.user_invites` (0 by default: only admins invite).
async fn user_invite(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) {
    let ka = req.keep_alive;
    let body: InviteRequest = match json_body(req) {
        Ok(v) => v,
        Err(e) => return fail(out, 400, &e, ka),
    };
    let Some(user) = crate::store::Passkey::parse(body.passkey.as_bytes())
        .and_then(|pk| core.state.accounts.by_passkey(&pk))
    else {
        return fail(out, 401, "unknown passkey", ka);
    };
    let budget = core.state.config.registration.user_invites;
    match ask(core, |reply| StoreCmd::CreateInvite { by: Some((user.id, budget)), reply }).await {
        Ok(code) => write_json(out, 201, &json!({"success": true, "code": code}).to_string(), ka),
        Err(e @ StoreError::NoInvitesLeft { .. }) => fail(out, 403, &e.to_string(), ka),
        Err(e) => fail(out, 503, &e.to_string(), ka),
    }
}

async fn admin(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) {
    let ka = req.keep_alive;
    let state = &core.state;
    match (req.method, req.path) {
        (Method::Post, b"/admin/users") => {
            let new: NewUser = match json_body(req) {
                Ok(v) => v,
                Err(e) => return error(out, 400, &e, ka),
            };
            if !valid_name(&new.name) {
                return error(out, 400, "name must be 1-64 characters of A-Z a-z 0-9 _ - .", ka);
            }
            match ask(core, |reply| StoreCmd::CreateUser {
                name: new.name,
                invite: None,
                public_key: None,
                reply,
            })
            .await
            {
                Ok(record) => {
                    let (http, udp) = announce_urls(core, &record.passkey);
                    let body = json!({
                        "success": true,
                        "user_id": record.name,
                        "id": record.id,
                        "passkey": record.passkey,
                        "announce_url": http,
                        "udp_announce_url": udp,
                    });
                    write_json(out, 201, &body.to_string(), ka);
                }
                Err(e @ StoreError::UserExists(_)) => error(out, 409, &e.to_string(), ka),
                Err(e) => error(out, 503, &e.to_string(), ka),
            }
        }
        (Method::Get, path) if path.starts_with(b"/admin/users/") => {
            let name = match path_param(path, b"/admin/users/", "user name") {
                Ok(name) => name,
                Err(e) => return error(out, 400, &e, ka),
            };
            let Some(user) = state.accounts.by_name(&name) else {
                return error(out, 404, "user not found", ka);
            };
            let r = user.to_record();
            let (http, udp) = announce_urls(core, &r.passkey);
            let mut body = receipts::user_totals(&user, state.config.ratio.source);
            body["user_id"] = r.name.into();
            body["id"] = r.id.into();
            body["passkey"] = r.passkey.into();
            body["announce_url"] = http.into();
            body["udp_announce_url"] = udp.into();
            body["uploaded"] = r.uploaded.into();
            body["downloaded"] = r.downloaded.into();
            body["public_key"] = r.public_key.into();
            body["created_at"] = r.created_at.into();
            write_json(out, 200, &body.to_string(), ka);
        }
        (Method::Post, b"/admin/invites") => {
            match ask(core, |reply| StoreCmd::CreateInvite { by: None, reply }).await {
                Ok(code) => {
                    write_json(out, 201, &json!({"success": true, "code": code}).to_string(), ka)
                }
                Err(e) => error(out, 503, &e.to_string(), ka),
            }
        }
        (Method::Post, b"/admin/torrents") => {
            let (record, pieces) = match torrent_record(req) {
                Ok(r) => r,
                Err(e) => return error(out, 400, &e, ka),
            };
            let piece_hashes = pieces.is_some();
            match ask(core, |reply| StoreCmd::RegisterTorrent { record, pieces, reply }).await {
                Ok((new, stored)) => {
                    for ih in stored.announce_hashes() {
                        state.registered.insert(ih, stored.info());
                    }
                    let body = json!({
                        "success": true,
                        "new": new,
                        "info_hash": stored.info_hash,
                        "v2_info_hash": stored.v2_info_hash,
                        "piece_length": stored.piece_length,
                        "total_size": stored.total_size,
                        "name": stored.name,
                        "piece_hashes": piece_hashes,
                    });
                    write_json(out, if new { 201 } else { 200 }, &body.to_string(), ka);
                }
                Err(e @ StoreError::TorrentConflict { .. }) => error(out, 409, &e.to_string(), ka),
                Err(e) => error(out, 503, &e.to_string(), ka),
            }
        }
        _ => error(out, 404, "not found", ka),
    }
}
