//! `/admin/*`: users, invites and the torrent registry, for loopback clients or the admin
//! token.

use pbts_http::request::{Method, Request};
use pbts_proto::InfoHash;
use serde::Deserialize;
use serde_json::json;

use super::accounts::announce_urls;
use super::decode::{json_body, path_param, valid_name};
use super::receipts;
use super::response::{ApiError, ApiResult, Response};
use crate::state::Core;
use crate::store::{StoreCmd, TorrentRecord};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    /// `user_id`, as `POST /register` spells it, is accepted too.
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
            v2_info_hash: m.v2.map(|h| crate::encoding::hex(&h)),
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

/// Routes `/admin/...` (the caller checked admin access).
pub(crate) async fn route(core: &Core, req: &Request<'_>) -> ApiResult {
    let state = &core.state;
    match (req.method, req.path) {
        (Method::Post, b"/admin/users") => {
            let new: NewUser = json_body(req)?;
            if !valid_name(&new.name) {
                return Err(ApiError::new(
                    400,
                    "name must be 1-64 characters of A-Z a-z 0-9 _ - .",
                ));
            }
            let record = core
                .state
                .ask(|reply| StoreCmd::CreateUser {
                    name: new.name,
                    invite: None,
                    public_key: None,
                    reply,
                })
                .await?;
            let (http, udp) = announce_urls(core, &record.passkey);
            let body = json!({
                "success": true,
                "user_id": record.name,
                "id": record.id,
                "passkey": record.passkey,
                "announce_url": http,
                "udp_announce_url": udp,
            });
            Ok(Response::json(201, &body))
        }
        (Method::Get, path) if path.starts_with(b"/admin/users/") => {
            let name = path_param(path, b"/admin/users/", "user name")?;
            let Some(user) = state.accounts.by_name(&name) else {
                return Err(ApiError::new(404, "user not found"));
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
            Ok(Response::json(200, &body))
        }
        (Method::Post, b"/admin/invites") => {
            let code = core.state.ask(|reply| StoreCmd::CreateInvite { by: None, reply }).await?;
            Ok(Response::json(201, &json!({"success": true, "code": code})))
        }
        (Method::Post, b"/admin/torrents") => {
            let (record, pieces) = torrent_record(req)?;
            let piece_hashes = pieces.is_some();
            let (new, stored) =
                core.state.ask(|reply| StoreCmd::RegisterTorrent { record, pieces, reply }).await?;
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
            Ok(Response::json(if new { 201 } else { 200 }, &body))
        }
        _ => Err(ApiError::new(404, "not found")),
    }
}
