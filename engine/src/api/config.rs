//! `GET /config` and `POST /config`: the settings in force, and the ones an admin may change
//! while serving (persisted, so a restart keeps them).

use std::sync::atomic::Ordering;

use pbts_http::request::Request;
use serde::Deserialize;
use serde_json::json;

use super::decode::parse_json;
use super::receipts;
use super::response::{ApiResult, Response};
use crate::config::TrackerMode;
use crate::state::Core;
use crate::store::{Overrides, StoreCmd};

/// `GET /config`: PBTS's fields and a few more, with the values in force.
pub(crate) fn config_json(core: &Core) -> serde_json::Value {
    let state = &core.state;
    let c = &state.config;
    json!({
        "instance_id": state.instance_id,
        "mode": mode_str(c.tracker.mode),
        // Not a switch: upload credit comes only from verified signatures.
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

/// `POST /config` (admin): validates every key first and applies all or nothing, so a bad key
/// never leaves the others half applied, then persists the change so a restart keeps it. Types
/// are strict: `"false"` is not a boolean.
pub(crate) async fn set_config(core: &Core, req: &Request<'_>) -> ApiResult {
    let overrides = decode_config_change(req.body)?;
    let in_force = core.state.ask(|reply| StoreCmd::SetOverrides { overrides, reply }).await?;
    core.state.runtime.apply(in_force);
    let body = json!({
        "success": true,
        "message": "Configuration updated",
        "config": config_json(core),
    });
    Ok(Response::json(200, &body))
}

pub(crate) fn mode_str(mode: TrackerMode) -> &'static str {
    match mode {
        TrackerMode::Private => "private",
        TrackerMode::Open => "open",
    }
}
