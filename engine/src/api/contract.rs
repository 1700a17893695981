//! `/contract/*`: the contract endpoints, with admin-only writes, checked receipts (a revert is
//! an error with its reason, never `success: true`) and the address of the contract in use
//! kept in the database.

use pbts_chain::worker::wait_async;
use pbts_chain::{Address, ChainError, ChainHandle, U256, UserRecord};
use pbts_http::request::Request;
use serde::Deserialize;
use serde_json::{Value, json};

use super::decode::json_body;
use super::response::{ApiError, ApiResult, Response};
use crate::state::Core;
use crate::store::StoreCmd;

/// A uint256 as JSON: a number when it fits in u64, else a decimal string.
fn amount(v: U256) -> Value {
    u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from)
}

/// A chain failure: the contract refused (409), the node failed (502), the chain thread is gone
/// (503).
impl From<ChainError> for ApiError {
    fn from(e: ChainError) -> Self {
        let status = match e {
            ChainError::Reverted(_) => 409,
            ChainError::Rpc(_) | ChainError::Failed { .. } | ChainError::Timeout { .. } => 502,
            ChainError::Config(_) | ChainError::Stopped => 503,
        };
        Self::new(status, e.to_string())
    }
}

const NOT_CONFIGURED: &str =
    "on-chain reputation is not configured: set chain.rpc_url (RPC) and the signing key (PK0)";
const NO_REPUTATION: &str = "No Reputation contract initialized. Call /contract/init first.";

/// The chain thread, or a 503 when no chain is configured.
fn handle(core: &Core) -> Result<&ChainHandle, ApiError> {
    core.state.chain.handle.as_ref().ok_or(ApiError::new(503, NOT_CONFIGURED))
}

/// The Reputation contract in use, or a 400 before `/contract/init`.
fn reputation(core: &Core) -> Result<Address, ApiError> {
    core.state.chain.reputation().ok_or(ApiError::new(400, NO_REPUTATION))
}

fn opt_addr(a: Option<Address>) -> Value {
    a.map_or(Value::Null, |a| a.to_string().into())
}

/// Routes `/contract/...`; `admin` says whether the client may write.
pub(crate) async fn route(core: &Core, req: &Request<'_>, admin: bool) -> ApiResult {
    use pbts_http::request::Method::{Get, Head, Post};
    match (req.method, req.path) {
        (Get | Head, b"/contract/status") => status(core).await,
        (
            Post,
            b"/contract/init" | b"/contract/register" | b"/contract/update" | b"/contract/migrate",
        ) if !admin => Err(ApiError::new(403, "contract writes require admin access")),
        (Post, b"/contract/init") => init(core, req).await,
        (Post, b"/contract/register") => register(core, req).await,
        (Post, b"/contract/update") => update(core, req).await,
        (Post, b"/contract/migrate") => migrate(core, req).await,
        (Get, path) if path.starts_with(b"/contract/user/") => {
            let name = super::decode::path_param(path, b"/contract/user/", "username")?;
            user(core, &name).await
        }
        _ => Err(ApiError::new(404, "not found")),
    }
}

async fn status(core: &Core) -> ApiResult {
    use std::sync::atomic::Ordering::Relaxed;
    let state = &core.state;
    let chain = &state.chain;
    let o = &chain.outbox;
    let batch_id = o.batch_id.load(Relaxed);
    let mut body = json!({
        "configured": chain.handle.is_some(),
        "connected": false,
        "rpc_url": redact_url(&state.config.chain.rpc_url),
        "account_address": opt_addr(chain.handle.as_ref().map(ChainHandle::account)),
        "factory_address": opt_addr(chain.factory),
        "reputation_address": opt_addr(chain.reputation()),
        "outbox": {
            "pending_users": o.pending_users.load(Relaxed),
            "batch_in_flight": if batch_id == 0 { Value::Null } else {
                json!({ "id": batch_id, "users": o.batch_users.load(Relaxed) })
            },
            "last_batch_id": o.last_batch_id.load(Relaxed),
            "last_success_unix": o.last_success_unix.load(Relaxed),
            "failures": o.failures.load(Relaxed),
            "last_error": chain.last_error().map(|e| redact_urls_in(&e)),
        },
    });
    if let Some(h) = &chain.handle {
        match wait_async(h.status()).await {
            Ok(s) => {
                body["connected"] = true.into();
                body["chain_id"] = s.chain_id.into();
                body["block_number"] = s.block_number.into();
                body["balance_wei"] = s.balance.to_string().into();
            }
            // HTTP client errors quote the URL they failed on ("... for url (https://...)").
            Err(e) => body["error"] = redact_urls_in(&e.to_string()).into(),
        }
    }
    Ok(Response::json(200, &body))
}

/// A URL fit for a public answer: scheme and `host[:port]` only. Hosted RPC endpoints carry
/// their API key in the path (`https://eth-mainnet.g.alchemy.com/v2/<key>`), the userinfo
/// (`https://user:key@host/`) or the query (`?apikey=<key>`), and `GET /contract/status` needs
/// no authentication; so anything past the authority becomes `/…` and userinfo is dropped.
/// A URL with nothing to hide (`http://127.0.0.1:8545`, with or without a final `/`) is shown
/// as it is; text that is not `scheme://...` is shown as `…`.
fn redact_url(url: &str) -> String {
    let url = url.trim();
    if url.is_empty() {
        return String::new();
    }
    let Some((scheme, rest)) = url.split_once("://") else { return "…".to_owned() };
    if scheme.is_empty()
        || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return "…".to_owned();
    }
    // The authority ends where URL parsers end it (`\` too, for http and https).
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (had_userinfo, host) = match authority.rfind('@') {
        Some(at) => (true, &authority[at + 1..]),
        None => (false, authority),
    };
    let tail = if had_userinfo || !matches!(tail, "" | "/") { "/…" } else { tail };
    format!("{scheme}://{host}{tail}")
}

/// `text` with every `scheme://...` in it passed through [`redact_url`] (a URL ends at
/// whitespace, a quote, `<`, `>` or `)`, as error messages quote them).
fn redact_urls_in(text: &str) -> String {
    let is_scheme = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    let ends_url = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | '`');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_scheme(c))
            .last()
            .map_or(sep, |(i, _)| i);
        let after = &rest[sep + 3..];
        let end = sep + 3 + after.find(ends_url).unwrap_or(after.len());
        if start == sep {
            // No scheme before it: not a URL.
            out.push_str(&rest[..sep + 3]);
            rest = &rest[sep + 3..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(default)]
    referrer_address: Option<String>,
}

async fn init(core: &Core, req: &Request<'_>) -> ApiResult {
    let h = handle(core)?;
    let chain = &core.state.chain;
    let Some(factory) = chain.factory else {
        return Err(ApiError::new(
            400,
            "no factory: set chain.factory_address (FACTORY) or run `pbts chain deploy-factory`",
        ));
    };
    // An empty body is no referrer.
    let body: InitBody =
        if req.body.trim_ascii().is_empty() { InitBody::default() } else { json_body(req)? };
    let referrer = match body.referrer_address.as_deref().filter(|s| !s.is_empty()) {
        None => Address::ZERO,
        Some(s) => pbts_chain::config::parse_address(s)
            .map_err(|_| ApiError::new(400, "referrer_address must be a 20-byte hex address"))?,
    };
    let in_flight = chain.outbox.batch_id.load(std::sync::atomic::Ordering::Relaxed);
    if in_flight != 0 {
        let msg = format!(
            "batch {in_flight} of credit is still in flight to the current contract; retry once \
             it is confirmed"
        );
        return Err(ApiError::new(409, msg));
    }
    let tee = core.state.tee.clone();
    let (attestation, attestation_kind) = glommio::executor()
        .spawn_blocking(move || super::tee::factory_attestation(&tee, factory, referrer))
        .await
        .map_err(|e| ApiError::new(503, format!("factory attestation: {e}")))?;
    let created = wait_async(h.create_reputation(factory, referrer, attestation)).await?;
    let address = created.address;
    if let Err(e) = core
        .state
        .ask(|reply| StoreCmd::SetReputation { contract: address, last_batch_id: 0, reply })
        .await
    {
        let msg = format!("contract {address} was created but could not be recorded: {e}");
        return Err(ApiError::new(503, msg));
    }
    chain.set_reputation(address);
    let body = json!({
        "success": true,
        "reputation_address": address.to_string(),
        "referrer_address": referrer.to_string(),
        "factory_address": factory.to_string(),
        "tx_hash": created.tx.tx_hash.to_string(),
        "gas_used": created.tx.gas_used,
        "attestation": attestation_kind,
        "message": "Reputation contract created",
    });
    Ok(Response::json(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    username: String,
    #[serde(default)]
    salt: String,
    password_hash: String,
    #[serde(default)]
    download_size: u64,
    #[serde(default)]
    upload_size: u64,
}

/// Hex (0x optional) of at most 32 bytes, left-padded with zeros as PBTS pads it.
fn password_hash(s: &str) -> Result<pbts_chain::B256, String> {
    let hex = s.trim().strip_prefix("0x").unwrap_or(s.trim());
    if hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || hex.is_empty() {
        return Err("password_hash must be 1 to 64 hex digits (32 bytes)".to_owned());
    }
    let padded = format!("{hex:0>64}");
    padded.parse().map_err(|_| "password_hash must be 1 to 64 hex digits (32 bytes)".to_owned())
}

async fn register(core: &Core, req: &Request<'_>) -> ApiResult {
    let h = handle(core)?;
    let b: RegisterBody = json_body(req)?;
    let hash = password_hash(&b.password_hash)?;
    let rep = reputation(core)?;
    let record = UserRecord {
        username: b.username.clone(),
        salt: b.salt,
        password_hash: hash,
        download_size: U256::from(b.download_size),
        upload_size: U256::from(b.upload_size),
    };
    let tx = wait_async(h.add_user(rep, record)).await?;
    let body = json!({
        "success": true,
        "username": b.username,
        "tx_hash": tx.tx_hash.to_string(),
        "gas_used": tx.gas_used,
        "message": "User registered on chain",
    });
    Ok(Response::json(200, &body))
}

async fn user(core: &Core, name: &str) -> ApiResult {
    let h = handle(core)?;
    let rep = reputation(core)?;
    match wait_async(h.find_user(rep, name.to_owned())).await? {
        Some(found) => {
            let u = &found.user;
            let body = json!({
                "success": true,
                "user": {
                    "username": u.username,
                    "salt": u.salt,
                    "passwordHash": u.password_hash.to_string(),
                    "downloadSize": amount(u.download_size),
                    "uploadSize": amount(u.upload_size),
                    // JSON has no Infinity: nothing downloaded is null.
                    "ratio": u.ratio(),
                },
                "contract_address": rep.to_string(),
                // Where the record is: this contract, or one up its referrer chain (not yet
                // migrated here).
                "source_address": found.source.to_string(),
            });
            Ok(Response::json(200, &body))
        }
        None => Err(ApiError::new(404, format!("user not found in {rep} or its referrers"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    username: String,
    download_size: u64,
    upload_size: u64,
}

async fn update(core: &Core, req: &Request<'_>) -> ApiResult {
    let h = handle(core)?;
    let b: UpdateBody = json_body(req)?;
    let rep = reputation(core)?;
    let (down, up) = (U256::from(b.download_size), U256::from(b.upload_size));
    let tx = wait_async(h.update_user(rep, b.username.clone(), down, up)).await?;
    let body = json!({
        "success": true,
        "username": b.username,
        "tx_hash": tx.tx_hash.to_string(),
        "gas_used": tx.gas_used,
        "download_size": b.download_size,
        "upload_size": b.upload_size,
        "message": "User updated on chain",
    });
    Ok(Response::json(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    username: String,
}

async fn migrate(core: &Core, req: &Request<'_>) -> ApiResult {
    let h = handle(core)?;
    let b: MigrateBody = json_body(req)?;
    let rep = reputation(core)?;
    let m = wait_async(h.migrate_user(rep, b.username.clone())).await?;
    let body = json!({
        "success": true,
        "username": b.username,
        "migrated": m.source.is_some(),
        "source_address": opt_addr(m.source),
        "tx_hash": m.tx.tx_hash.to_string(),
        "gas_used": m.tx.gas_used,
        "message": if m.source.is_some() {
            "User migrated from the referrer chain"
        } else {
            "No referrer has this user; nothing changed"
        },
    });
    Ok(Response::json(200, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_are_left_padded_like_the_original() {
        let h = password_hash("0xabc").unwrap();
        assert_eq!(h.to_string(), format!("0x{}abc", "0".repeat(61)));
        assert_eq!(password_hash(&"f".repeat(64)).unwrap(), pbts_chain::B256::repeat_byte(0xff));
        for bad in ["", "0x", &"a".repeat(65), "xyz"] {
            assert!(password_hash(bad).is_err(), "{bad:?}");
        }
        assert_eq!(amount(U256::from(5)), json!(5));
        assert_eq!(amount(U256::MAX), json!(U256::MAX.to_string()));
    }

    #[test]
    fn rpc_urls_keep_only_scheme_and_authority() {
        for (url, shown) in [
            (
                "https://eth-mainnet.g.alchemy.com/v2/SECRETKEY",
                "https://eth-mainnet.g.alchemy.com/…",
            ),
            ("https://mainnet.infura.io/v3/0123abcd", "https://mainnet.infura.io/…"),
            ("http://user:pw@host:8545/", "http://host:8545/…"),
            ("http://user:pw@host:8545", "http://host:8545/…"),
            ("https://rpc.example/?apikey=SECRET", "https://rpc.example/…"),
            ("https://rpc.example?apikey=SECRET", "https://rpc.example/…"),
            ("https://rpc.example#SECRET", "https://rpc.example/…"),
            ("https://rpc.example\\SECRET", "https://rpc.example/…"),
            ("wss://a:b@[2001:db8::1]:8546/ws/KEY", "wss://[2001:db8::1]:8546/…"),
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
            ("http://127.0.0.1:8545/", "http://127.0.0.1:8545/"),
            ("  http://[::1]:8545  ", "http://[::1]:8545"),
            ("", ""),
            ("/var/run/geth.ipc", "…"),
            ("://host/x", "…"),
            ("ht tp://host/x", "…"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_inside_error_text_are_redacted() {
        for (text, shown) in [
            (
                "error sending request for url (https://eth-mainnet.g.alchemy.com/v2/KEY): \
                 connection refused",
                "error sending request for url (https://eth-mainnet.g.alchemy.com/…): \
                 connection refused",
            ),
            (
                "http://u:p@a:1/x and \"https://b/y?k=v\" then ws://c",
                "http://a:1/… and \"https://b/…\" then ws://c",
            ),
            ("no url here: a://", "no url here: a://"),
            ("bare ://x stays", "bare ://x stays"),
            ("ünïcode before https://h/k after", "ünïcode before https://h/… after"),
        ] {
            assert_eq!(redact_urls_in(text), shown, "{text}");
        }
    }
}
