//! The receipt endpoints: `POST /report` (credit), `POST /verify-receipt` (a pure check), and
//! the server-side key endpoints `POST /keygen` and `POST /attest`, kept for compatibility and
//! limited to loopback clients by default (they handle private keys).

use pbts_http::request::Request;
use pbts_proto::InfoHash;
use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
use serde::Deserialize;
use serde_json::json;

use super::decode::{b64_array, json_body, parse_json};
use super::receipt_json::{ReceiptJson, b64_bytes, hex_bytes};
use super::response::{ApiError, ApiResult, Response};
use crate::clock::unix_now;
use crate::config::{RatioSource, ServerSideKeys};
use crate::report::{ReportError, Verdict};
use crate::state::{Client, Core};
use crate::store::{Passkey, User};

/// The passkey a `/report` path carries: `Some(None)` for `/report`, `Some(Some(pk))` for
/// `/<pk>/report` and `/report/<pk>`, `None` for any other path.
pub(crate) fn report_route(path: &[u8]) -> Option<Option<&[u8]>> {
    if path == b"/report" {
        return Some(None);
    }
    let rest = path.strip_prefix(b"/")?;
    let single = |s: &[u8]| !s.is_empty() && !s.contains(&b'/');
    if let Some(pk) = rest.strip_prefix(b"report/")
        && single(pk)
    {
        return Some(Some(pk));
    }
    if let Some(pk) = rest.strip_suffix(b"/report")
        && single(pk)
    {
        return Some(Some(pk));
    }
    None
}

/// Whether a buffered request (its request line, at least) is a `POST` to a `/report` route:
/// only those may send bodies above the normal limit.
pub(crate) fn is_report_request(buf: &[u8]) -> bool {
    let Some(line) = buf.split(|&b| b == b'\n').next() else { return false };
    let Some(target) = line.strip_prefix(b"POST ") else { return false };
    let target = target.split(|&b| b == b' ').next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    report_route(path).is_some()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportBody {
    /// The reporter's passkey (or in the path).
    #[serde(default)]
    passkey: Option<String>,
    /// Optional, for compatibility: if given, it must name the passkey's user.
    #[serde(default)]
    user_id: Option<String>,
    /// Optional, for compatibility: if given, it must be the user's registered key.
    #[serde(default)]
    public_key: Option<String>,
    /// A client's claim: accepted for compatibility, never credited (only receipts earn credit).
    #[serde(default)]
    uploaded_delta: Option<i64>,
    /// As `uploaded_delta`.
    #[serde(default)]
    downloaded_delta: Option<i64>,
    /// The receipts, each decoded on its own so one malformed receipt gets its own verdict.
    #[serde(default)]
    receipts: Vec<serde_json::Value>,
}

/// Decodes a report body: the envelope, and each receipt on its own (`Err` with the decoder's
/// message for a malformed one). Fails only if the envelope itself does not decode.
pub(crate) fn parse_report(
    raw: &[u8],
) -> Result<(ReportBody, Vec<Result<Receipt, String>>), String> {
    let mut body: ReportBody = parse_json(raw)?;
    let decoded = std::mem::take(&mut body.receipts)
        .into_iter()
        .map(|v| {
            serde_json::from_value::<ReceiptJson>(v)
                .map_err(|e| format!("invalid receipt: {e}"))
                .and_then(|r| r.to_receipt())
        })
        .collect();
    Ok((body, decoded))
}

/// `POST /report`: credits receipts signed by downloaders to the reporting uploader, with one
/// verdict per receipt.
pub(crate) async fn report(
    core: &Core,
    req: &Request<'_>,
    path_passkey: Option<&[u8]>,
) -> ApiResult {
    let state = &core.state;
    // Parsing up to a megabyte of JSON and decoding a thousand receipts takes milliseconds:
    // not on the serving core.
    let raw = req.body.to_vec();
    let (body, decoded) = glommio::executor().spawn_blocking(move || parse_report(&raw)).await?;
    let passkey = match (path_passkey, body.passkey.as_deref()) {
        (Some(p), Some(b)) if p != b.as_bytes() => {
            return Err(ApiError::new(400, "passkey in the path and in the body differ"));
        }
        (Some(p), _) => p,
        (None, Some(b)) => b.as_bytes(),
        (None, None) => {
            return Err(ApiError::new(
                401,
                "passkey required: send \"passkey\" in the body or POST /<passkey>/report",
            ));
        }
    };
    let Some(user) = Passkey::parse(passkey).and_then(|pk| state.accounts.by_passkey(&pk)) else {
        return Err(ApiError::new(401, "unknown passkey"));
    };
    if body.user_id.as_deref().is_some_and(|id| id != user.name) {
        return Err(ApiError::new(403, "user_id does not match the passkey"));
    }
    if let Some(given) = &body.public_key {
        let given = b64_bytes("public_key", given).ok();
        let registered = user.public_key.get().map(|k| k.0.to_vec());
        if given.is_none() || given != registered {
            return Err(ApiError::new(403, "public_key is not the reporter's registered key"));
        }
    }
    if decoded.is_empty() {
        return Err(ApiError::new(
            400,
            "no receipts: upload is credited only for receipts signed by downloaders \
             (uploaded_delta and downloaded_delta are not credited)",
        ));
    }
    let limit = state.config.receipts.max_receipts_per_report;
    if decoded.len() > limit {
        let n = decoded.len();
        return Err(ApiError::new(
            413,
            format!("too many receipts: {n} (limit {limit} per report)"),
        ));
    }
    let outcome = crate::report::report(state, &user, decoded).await?;
    let results: Vec<serde_json::Value> = outcome
        .verdicts
        .iter()
        .enumerate()
        .map(|(index, v)| match v {
            Verdict::Credited { bytes } => {
                json!({ "index": index, "accepted": true, "credited_bytes": bytes })
            }
            Verdict::Rejected(why) => json!({
                "index": index,
                "accepted": false,
                "code": why.code(),
                "reason": why.to_string(),
            }),
        })
        .collect();
    let mut resp = user_totals(&user, state.config.ratio.source);
    resp["success"] = true.into();
    resp["user_id"] = user.name.clone().into();
    resp["verified_receipts"] = outcome.accepted.into();
    resp["rejected_receipts"] = (outcome.verdicts.len() - outcome.accepted).into();
    resp["credited_bytes"] = outcome.credited_bytes.into();
    resp["results"] = results.into();
    if body.uploaded_delta.unwrap_or(0) != 0 || body.downloaded_delta.unwrap_or(0) != 0 {
        resp["warning"] = "uploaded_delta and downloaded_delta are ignored: credit comes only \
                           from verified receipts"
            .into();
    }
    Ok(Response::json(200, &resp))
}

/// A refused report: the reporter has no key (403) or the verifier cannot take it now (503,
/// retry in a second when busy).
impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::NoKey => Self::new(403, e.to_string()),
            ReportError::Busy { .. } => Self::new(503, e.to_string()).retry_after(1),
            ReportError::Unavailable(_) => Self::new(503, e.to_string()),
        }
    }
}

/// A user's claimed and verified totals and the ratio the gate uses, as `/report`, `/user/<id>`
/// and the admin API show them.
pub(crate) fn user_totals(user: &User, source: RatioSource) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "total_uploaded": user.uploaded.load(Relaxed),
        "total_downloaded": user.downloaded.load(Relaxed),
        "verified_uploaded": user.verified_uploaded.load(Relaxed),
        "verified_downloaded": user.verified_downloaded.load(Relaxed),
        // JSON has no Infinity: an undefined ratio is null.
        "ratio": user.ratio(source),
        "ratio_source": user_totals_source(source),
    })
}

/// The configuration's spelling of a ratio source.
pub(crate) fn user_totals_source(source: RatioSource) -> &'static str {
    match source {
        RatioSource::Claimed => "claimed",
        RatioSource::Verified => "verified",
    }
}

/// `POST /verify-receipt`: checks one receipt's signature (a pure check: nothing is credited
/// or marked used). The signature check runs off the serving core.
pub(crate) async fn verify_receipt(req: &Request<'_>) -> ApiResult {
    let parsed: ReceiptJson = json_body(req)?;
    let receipt = parsed.to_receipt()?;
    let verdict = glommio::executor()
        .spawn_blocking(move || pbts_verifier::batch::verify_one(&receipt))
        .await;
    let body = match verdict {
        Ok(()) => json!({ "success": true, "valid": true, "message": "Receipt is valid" }),
        Err(e) => json!({
            "success": true,
            "valid": false,
            "message": "Receipt is invalid",
            "reason": e.as_str(),
        }),
    };
    Ok(Response::json(200, &body))
}

/// A 403 unless `client` may use the server-side key endpoints.
fn server_side_keys_allowed(core: &Core, client: Client) -> Result<(), ApiError> {
    let allowed = match core.state.config.receipts.server_side_keys {
        ServerSideKeys::Anyone => true,
        ServerSideKeys::Loopback => client.loopback,
        ServerSideKeys::Disabled => false,
    };
    if !allowed {
        return Err(ApiError::new(
            403,
            "server-side key endpoints handle private keys and are limited to loopback clients \
             (receipts.server_side_keys); make keys on the client (pbts keygen)",
        ));
    }
    Ok(())
}

/// `POST /keygen`: server-side key generation, kept for compatibility (a fresh IETF KeyGen key
/// from OS randomness), plus the proof of possession `POST /register` needs.
pub(crate) async fn keygen(core: &Core, client: Client) -> ApiResult {
    server_side_keys_allowed(core, client)?;
    let (sk, pk, pop) = glommio::executor()
        .spawn_blocking(|| {
            let sk = SecretKey::random();
            let pk = sk.public_key().to_bytes();
            let pop = sk.prove_possession();
            (b64(&sk.to_bytes()[..]), b64(&pk.0), b64(&pop.0))
        })
        .await;
    let body = json!({
        "success": true,
        "private_key": sk.as_str(),
        "public_key": pk.as_str(),
        "proof_of_possession": pop.as_str(),
        "key_type": "BLS12-381",
        "private_key_size": 32,
        "public_key_size": 48,
        "warning": "Store private key securely! Never share it!",
    });
    Ok(Response::json(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestBody {
    /// Base64 of the downloader's 32-byte secret scalar.
    receiver_private_key: String,
    /// Base64 of the uploader's 48-byte key.
    #[serde(alias = "sender_pk")]
    sender_public_key: String,
    /// Hex, 20 or 32 bytes.
    piece_hash: String,
    piece_index: u32,
    /// Hex, 20 bytes.
    #[serde(alias = "info_hash")]
    infohash: String,
    /// Unix seconds; default now.
    #[serde(default)]
    timestamp: Option<u64>,
}

/// `POST /attest`: signs a receipt on the server with a private key the client sends (kept for
/// compatibility; clients should sign locally).
pub(crate) async fn attest(core: &Core, req: &Request<'_>, client: Client) -> ApiResult {
    server_side_keys_allowed(core, client)?;
    let a: AttestBody = json_body(req)?;
    let decoded = (|| {
        let sk = zeroize::Zeroizing::new(b64_array::<32>(
            "receiver_private_key",
            &a.receiver_private_key,
        )?);
        let sender = b64_array::<48>("sender_public_key", &a.sender_public_key)?;
        let ih = hex_bytes("infohash", &a.infohash)?;
        let ih: [u8; 20] = ih
            .try_into()
            .map_err(|v: Vec<u8>| format!("infohash must be 20 bytes, got {}", v.len()))?;
        let ph = hex_bytes("piece_hash", &a.piece_hash)?;
        let piece_hash = PieceHash::from_slice(&ph)
            .ok_or_else(|| format!("piece_hash must be 20 or 32 bytes, got {}", ph.len()))?;
        Ok::<_, String>((sk, sender, InfoHash(ih), piece_hash))
    })();
    let (sk, sender, info_hash, piece_hash) = decoded?;
    let timestamp = a.timestamp.unwrap_or_else(unix_now);
    let piece_index = a.piece_index;
    let signed = glommio::executor()
        .spawn_blocking(move || {
            let sk = SecretKey::from_bytes(&sk).ok()?;
            let mut r = Receipt {
                info_hash,
                sender_pk: PublicKeyBytes(sender),
                receiver_pk: sk.public_key().to_bytes(),
                piece_hash,
                piece_index,
                timestamp,
                signature: SignatureBytes([0; 96]),
            };
            sk.sign_receipt(&mut r);
            Some(r.signature)
        })
        .await;
    let Some(sig) = signed else {
        return Err(ApiError::new(400, "Invalid secret key"));
    };
    let body = json!({
        "success": true,
        "receipt": b64(&sig.0).as_str(),
        "timestamp": timestamp,
        "message": "Receipt generated successfully",
    });
    Ok(Response::json(200, &body))
}

fn b64(bytes: &[u8]) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(crate::encoding::b64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_routes() {
        let pk: &[u8] = b"0123456789abcdef0123456789abcdef";
        assert_eq!(report_route(b"/report"), Some(None));
        assert_eq!(report_route(b"/0123456789abcdef0123456789abcdef/report"), Some(Some(pk)));
        assert_eq!(report_route(b"/report/0123456789abcdef0123456789abcdef"), Some(Some(pk)));
        assert_eq!(report_route(b"/report/"), None);
        assert_eq!(report_route(b"/a/b/report"), None);
        assert_eq!(report_route(b"/reports"), None);
        assert!(is_report_request(b"POST /report HTTP/1.1\r\nHost: x\r\n"));
        assert!(is_report_request(b"POST /abc/report?x=1 HTTP/1.1\r\n"));
        assert!(!is_report_request(b"GET /report HTTP/1.1\r\n"));
        assert!(!is_report_request(b"POST /register HTTP/1.1\r\n"));
    }
}
