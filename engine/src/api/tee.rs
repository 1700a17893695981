//! The TEE endpoints: `POST /keygen-tee` returns the derived public key and never a private
//! key; quote sizes are binary sizes; `POST /generate-attestation` binds client payloads in a
//! domain of their own ([`pbts_tee::quote::Binding`]), apart from the tracker's factory
//! statement; `POST /verify-attestation` needs no TEE, enforces the report data, fetches
//! collateral only from the operator's PCCS (`tee.pccs_url`), and runs on the bounded
//! attestation threads ([`crate::attest`]). Provider calls run on the core's blocking thread,
//! never on the serving core. docs/COMPATIBILITY.md lists how each differs from PBTS.

use std::time::Instant;

use pbts_http::request::Request;
use pbts_tee::quote::Binding;
use pbts_tee::verify::{Collateral, Expected};
use pbts_tee::{TeeError, quote};
use serde::Deserialize;
use serde_json::{Value, json};

use super::decode::json_body;
use super::response::{ApiError, ApiResult, Response};
use crate::clock::unix_now;
use crate::encoding::b64;
use crate::state::Core;
use crate::workers::attest::SubmitError;

/// A TEE failure: no TEE (503), the provider failed (502), or the request's quote, collateral
/// or derivation path is bad (400).
impl From<TeeError> for ApiError {
    fn from(e: TeeError) -> Self {
        let status = match e {
            TeeError::Unavailable(_) => 503,
            TeeError::Provider(_) => 502,
            TeeError::Quote(_) | TeeError::Collateral(_) | TeeError::Derivation(_) => 400,
        };
        Self::new(status, e.to_string())
    }
}

/// 503 unless a TEE can make quotes and keys.
fn require_tee(core: &Core) -> Result<(), ApiError> {
    if core.state.tee.can_quote() {
        return Ok(());
    }
    Err(ApiError::new(
        503,
        "TEE not available (tee.mode = none): set tee.mode or TEE_MODE to tdx or dstack",
    ))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeygenBody {
    #[serde(default)]
    path: Option<String>,
    /// Ignored: accepted because PBTS's benchmark sends it.
    #[serde(default)]
    #[allow(dead_code)]
    salt: Option<Value>,
}

/// `POST /keygen-tee`: the TEE-derived BLS key for a path (default `tracker`): its public key
/// only.
pub(crate) async fn keygen(core: &Core, req: &Request<'_>) -> ApiResult {
    require_tee(core)?;
    let body: KeygenBody =
        if req.body.trim_ascii().is_empty() { KeygenBody::default() } else { json_body(req)? };
    let path = body.path.unwrap_or_else(|| pbts_tee::derive::BLS_PATH.to_owned());
    if path.is_empty() || path.len() > 128 || path.chars().any(char::is_control) {
        return Err(ApiError::new(400, "path must be 1 to 128 printable characters"));
    }
    let tee = core.state.tee.clone();
    let p = path.clone();
    let t = Instant::now();
    let pk = glommio::executor()
        .spawn_blocking(move || tee.bls_key(&p).map(|k| k.public_key().to_bytes()))
        .await?;
    let body = json!({
        "success": true,
        "public_key": b64(&pk.0),
        "key_type": "BLS12-381 (TEE-derived)",
        "public_key_size": 48,
        "tee_derived": true,
        "tee_mode": core.state.tee.mode().as_str(),
        "derivation_path": path,
        "derivation_time_ms": ms(t),
    });
    Ok(Response::json(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestBody {
    #[serde(default)]
    payload: Option<String>,
}

/// How `/generate-attestation` binds a payload, for clients that check quotes themselves.
const CLIENT_BINDING: &str =
    "sha256(\"pbts/client-attestation/v1\" || payload), zero-padded to 64 bytes";

/// `POST /generate-attestation`: a quote whose report data binds `payload` in the client domain
/// ([`Binding::Client`]): no payload yields the report data of the tracker's own statements.
pub(crate) async fn generate(core: &Core, req: &Request<'_>) -> ApiResult {
    let body: AttestBody = json_body(req)?;
    let Some(payload) = body.payload.filter(|p| !p.is_empty()) else {
        return Err(ApiError::new(400, "Missing payload"));
    };
    require_tee(core)?;
    let tee = core.state.tee.clone();
    let p = payload.clone();
    let t = Instant::now();
    let quoted =
        glommio::executor().spawn_blocking(move || tee.quote(Binding::Client(p.as_bytes())));
    let (raw, report_data) = quoted.await?;
    let body = json!({
        "success": true,
        "quote": quote::hex(&raw),
        "payload": payload,
        "report_data": quote::hex(&report_data),
        "report_data_binding": CLIENT_BINDING,
        // Bytes of the quote itself, not of its hex.
        "quote_size_bytes": raw.len(),
        "generation_time_ms": ms(t),
        "tee_mode": core.state.tee.mode().as_str(),
    });
    Ok(Response::json(200, &body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    #[serde(default)]
    quote: Option<String>,
    #[serde(default)]
    expected_payload: Option<String>,
    /// Hex of exactly 64 bytes, instead of a payload.
    #[serde(default)]
    expected_report_data: Option<String>,
    /// Collateral in dcap-qvl's JSON form (offline verification).
    #[serde(default)]
    collateral: Option<Value>,
    /// Refused, though PBTS clients may send it: clients do not choose what the tracker
    /// fetches. Read only to answer it with a clear 400.
    #[serde(default)]
    pccs_url: Option<serde::de::IgnoredAny>,
    /// Unix seconds to verify at (default now): old quotes verify against their old collateral.
    #[serde(default)]
    now: Option<u64>,
}

/// The answer to a request naming its own PCCS.
const PCCS_URL_REFUSED: &str = "pccs_url is not accepted: send the collateral in the request \
    (\"collateral\"), or let the tracker fetch it from the PCCS its operator configured \
    (tee.pccs_url)";

/// `POST /verify-attestation`: verifies a quote (no TEE needed) and its binding to a payload
/// (client domain, as `/generate-attestation` binds it) or to exact report data.
pub(crate) async fn verify(core: &Core, req: &Request<'_>) -> ApiResult {
    let b: VerifyBody = json_body(req)?;
    if b.pccs_url.is_some() {
        // A client-chosen URL fetched by the tracker is server-side request forgery: into the
        // operator's network, or at a tarpit that holds a verification thread.
        return Err(ApiError::new(400, PCCS_URL_REFUSED));
    }
    let Some(raw) = b.quote.filter(|q| !q.is_empty()) else {
        return Err(ApiError::new(400, "Missing quote"));
    };
    let raw = match quote::unhex(&raw) {
        Ok(r) if r.len() <= quote::MAX_QUOTE_LEN => r,
        Ok(_) => {
            let max = quote::MAX_QUOTE_LEN;
            return Err(ApiError::new(400, format!("quote is over {max} bytes")));
        }
        Err(_) => return Err(ApiError::new(400, "quote must be hex")),
    };
    let expected = match (b.expected_payload, b.expected_report_data) {
        (Some(p), None) => ExpectedOwned::ClientPayload(p.into_bytes()),
        (None, Some(h)) => match quote::unhex(&h).ok().and_then(|v| <[u8; 64]>::try_from(v).ok()) {
            Some(rd) => ExpectedOwned::ReportData(rd),
            None => {
                return Err(ApiError::new(400, "expected_report_data must be 64 bytes of hex"));
            }
        },
        (Some(_), Some(_)) => {
            let both = "give expected_payload or expected_report_data, not both";
            return Err(ApiError::new(400, both));
        }
        (None, None) => return Err(ApiError::new(400, "Missing expected_payload")),
    };
    let pccs_url = &core.state.config.tee.pccs_url;
    let collateral = match b.collateral {
        Some(c) => match serde_json::from_value(c) {
            Ok(c) => Collateral::Given(Box::new(c)),
            Err(e) => return Err(ApiError::new(400, format!("collateral: {e}"))),
        },
        None if !pccs_url.is_empty() => Collateral::Pccs(pccs_url.clone()),
        None => {
            return Err(ApiError::new(400, "collateral required (no tee.pccs_url is configured)"));
        }
    };
    let now = b.now.unwrap_or_else(unix_now);
    let timeout = std::time::Duration::from_secs(core.state.config.tee.timeout_secs);
    let tee = core.state.tee.clone();
    let t = Instant::now();
    let submitted = core.state.attestations.try_submit(move || {
        let c = match collateral {
            Collateral::Given(c) => *c,
            Collateral::Pccs(url) => pbts_tee::verify::fetch_collateral(&url, &raw, timeout)?,
        };
        let v = pbts_tee::verify::verify(&raw, &c, now, expected.as_expected());
        tee.stats.verified(t);
        Ok::<_, TeeError>(v)
    });
    let reply = match submitted {
        Ok(reply) => reply,
        Err(e @ SubmitError::Busy { .. }) => {
            return Err(ApiError::new(503, e.to_string()).retry_after(1));
        }
        Err(e @ SubmitError::Stopped) => return Err(ApiError::new(503, e.to_string())),
    };
    let v = reply
        .recv_async()
        .await
        .map_err(|_| ApiError::new(500, "attestation verification failed: internal error"))??;
    let mut body = json!({
        "success": true,
        "is_valid": v.valid,
        "reason": v.reason,
        "status": v.status,
        "advisory_ids": v.advisory_ids,
        "report_data_matches": v.report_data_matches,
        "verification_time_ms": ms(t),
    });
    if let Some(q) = &v.quote {
        let r = &q.report;
        body["quote_version"] = q.version.into();
        body["tee_type"] = "TDX".into();
        body["report_data"] = quote::hex(&r.report_data).into();
        body["measurements"] = json!({
            "mr_td": quote::hex(&r.mr_td),
            "rtmr0": quote::hex(&r.rtmr[0]),
            "rtmr1": quote::hex(&r.rtmr[1]),
            "rtmr2": quote::hex(&r.rtmr[2]),
            "rtmr3": quote::hex(&r.rtmr[3]),
            "mr_config_id": quote::hex(&r.mr_config_id),
            "mr_owner": quote::hex(&r.mr_owner),
            "mr_owner_config": quote::hex(&r.mr_owner_config),
            "mr_seam": quote::hex(&r.mr_seam),
            "td_attributes": quote::hex(&r.td_attributes),
            "debug": r.is_debug(),
        });
    }
    Ok(Response::json(200, &body))
}

/// [`Expected`] with owned data, to move to an attestation thread.
enum ExpectedOwned {
    /// `expected_payload`: a client payload, bound as `/generate-attestation` binds it.
    ClientPayload(Vec<u8>),
    ReportData([u8; 64]),
}

impl ExpectedOwned {
    fn as_expected(&self) -> Expected<'_> {
        match self {
            Self::ClientPayload(p) => Expected::Binds(Binding::Client(p)),
            Self::ReportData(rd) => Expected::ReportData(rd),
        }
    }
}

/// `GET /tee/status` (the provider's description may need a call to the agent: off the core).
pub(crate) async fn status(core: &Core) -> ApiResult {
    let tee = &core.state.tee;
    let t = tee.clone();
    let info = glommio::executor().spawn_blocking(move || t.info()).await;
    let body = json!({
        "tee_available": tee.can_quote(),
        "tee_mode": tee.mode().as_str(),
        "provider": info,
        "chain_key_in_tee": core.state.config.tee.chain_key,
        "statistics": tee.stats.snapshot(),
    });
    Ok(Response::json(200, &body))
}

/// The factory attestation for `POST /contract/init`: a quote binding the tracker statement
/// `PBTS-Tracker-v1.0:factory=<factory>:referrer=<referrer>` ([`Binding::Tracker`]: PBTS's
/// report-data scheme, which no client payload of `/generate-attestation` can reach) when a
/// TEE is configured (the quote's raw bytes, not hex text), else the fixed marker. Blocking.
///
/// # Errors
/// A configured TEE that fails to quote (never silently replaced by the marker).
pub(crate) fn factory_attestation(
    tee: &pbts_tee::Tee,
    factory: pbts_chain::Address,
    referrer: pbts_chain::Address,
) -> Result<(Vec<u8>, &'static str), TeeError> {
    if !tee.can_quote() {
        return Ok((pbts_chain::NO_TEE_ATTESTATION.to_vec(), "none"));
    }
    let payload = format!("PBTS-Tracker-v1.0:factory={factory}:referrer={referrer}");
    let (raw, _) = tee.quote(Binding::Tracker(payload.as_bytes()))?;
    Ok((raw, "tdx-quote"))
}
