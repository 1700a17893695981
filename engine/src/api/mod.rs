//! The JSON/text API: `/health`, `/stats`, `/metrics` here; the other endpoints in their
//! modules ([`accounts`], [`admin`], [`config`], [`receipts`], [`tee`], [`contract`]). Every
//! endpoint returns a [`response::ApiResult`]; [`serve`] writes it.
//!
//! Writes go to the store thread and are answered only after they are committed.

pub(crate) mod accounts;
pub(crate) mod admin;
pub(crate) mod config;
pub(crate) mod contract;
pub(crate) mod decode;
pub(crate) mod receipt_json;
pub(crate) mod receipts;
pub(crate) mod response;
pub(crate) mod tee;

use std::sync::atomic::Ordering;

use pbts_http::request::{Method, Request};
use serde_json::json;

use self::config::mode_str;
use self::response::{ApiError, ApiResult, Response};
use crate::metrics::{Counter, Stat};
use crate::state::{Client, Core};
use crate::swarm::table::SwarmTotals;

/// The endpoints that do BLS or quote work for clients that have not authenticated.
fn is_expensive(req: &Request<'_>) -> bool {
    req.method == Method::Post
        && matches!(req.path, b"/register" | b"/verify-receipt" | b"/verify-attestation")
}

/// Answers an API request into `out`.
pub(crate) async fn serve(core: &Core, req: &Request<'_>, client: Client, out: &mut Vec<u8>) {
    response::write(out, route(core, req, client).await, req.keep_alive);
}

async fn route(core: &Core, req: &Request<'_>, client: Client) -> ApiResult {
    let state = &core.state;
    if is_expensive(req)
        && let Err(wait) = state.limiter.check(client.ip, std::time::Instant::now())
    {
        let secs = wait.as_secs().max(1);
        let message = format!("too many requests from this address: retry in {secs} s");
        return Err(ApiError::new(429, message).retry_after(secs));
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
            Ok(Response::json(200, &body))
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
            Ok(Response::json(200, &body))
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
            Ok(Response::with_type(200, "text/plain; version=0.0.4", text.into_bytes()))
        }
        (Method::Post, b"/register") => accounts::register(core, req).await,
        (Method::Post, b"/invites") => accounts::user_invite(core, req).await,
        (Method::Post, b"/verify-receipt") => receipts::verify_receipt(req).await,
        (Method::Post, b"/keygen") => receipts::keygen(core, client).await,
        (Method::Post, b"/keygen-tee") => tee::keygen(core, req).await,
        (Method::Post, b"/generate-attestation") => tee::generate(core, req).await,
        (Method::Post, b"/verify-attestation") => tee::verify(core, req).await,
        (Method::Get | Method::Head, b"/tee/status") => tee::status(core).await,
        (Method::Post, b"/attest") => receipts::attest(core, req, client).await,
        (Method::Post, path) if receipts::report_route(path).is_some() => {
            let passkey = receipts::report_route(path).flatten();
            receipts::report(core, req, passkey).await
        }
        (Method::Get | Method::Head, b"/config") => {
            Ok(Response::json(200, &config::config_json(core)))
        }
        (Method::Post, b"/config") => {
            if !is_admin(core, req, client) {
                return Err(ApiError::new(403, "changing the configuration requires admin access"));
            }
            config::set_config(core, req).await
        }
        (Method::Get, path) if path.starts_with(b"/user/") => {
            let name = decode::path_param(path, b"/user/", "user id")?;
            let Some(user) = state.accounts.by_name(&name) else {
                return Err(ApiError::new(404, "User not found"));
            };
            let r = user.to_record();
            let mut body = receipts::user_totals(&user, state.config.ratio.source);
            body["user_id"] = r.name.into();
            body["public_key"] = r.public_key.into();
            body["registered_at"] = r.created_at.into();
            Ok(Response::json(200, &body))
        }
        (_, path) if path.starts_with(b"/contract/") => {
            let admin = is_admin(core, req, client);
            contract::route(core, req, admin).await
        }
        (_, path) if path.starts_with(b"/admin/") => {
            if !is_admin(core, req, client) {
                return Err(ApiError::new(
                    403,
                    "admin access requires a loopback client or the admin token",
                ));
            }
            admin::route(core, req).await
        }
        (_, b"/health" | b"/stats" | b"/metrics" | b"/config") => {
            Err(ApiError::new(405, "method not allowed"))
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
        ) => Err(ApiError::new(405, "method not allowed")),
        _ => Err(ApiError::new(404, "not found")),
    }
}

/// Swarm totals at most [`crate::state::TOTALS_MAX_AGE`] old, computed on a blocking thread
/// by one request at a time (the others answer with the previous totals meanwhile).
async fn swarm_totals(core: &Core) -> SwarmTotals {
    let cache = &core.state.totals;
    match cache.get(std::time::Instant::now()) {
        Ok(t) => t,
        Err(stale) if !cache.begin_refresh() => stale,
        Err(_) => {
            // Ends the recomputation even if this request is dropped while it waits.
            struct Refresh<'a>(&'a crate::state::TotalsCache, Option<SwarmTotals>);
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
