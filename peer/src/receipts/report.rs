//! Reports the receipts we earned to the tracker's `POST /<passkey>/report`, in batches, and
//! files each receipt by the tracker's verdict: credited or refused receipts leave the pending
//! set for good; `in_flight` and `future` (and a tracker that cannot be reached or is busy)
//! mean "try again", with a backoff.
//!
//! A batch goes when [`BATCH`] receipts are pending or the oldest has waited [`MAX_AGE`]: well
//! inside the tracker's freshness window (`receipts.window_secs`, an hour by default).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pbts_verifier::receipt::Receipt;
use tokio::sync::{Notify, watch};

use super::store::{Settled, Store, StoreError};
use crate::tracker::{self, TrackerError, TrackerUrl};

/// Receipts per report (the tracker takes up to 1024).
pub const BATCH: usize = 256;

/// Longest a stored receipt waits before it is reported.
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// Longest wait between two attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Longest the final report at shutdown may take.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// What the reporter has done.
#[derive(Debug, Default)]
pub struct ReportStats {
    /// Receipts the tracker credited.
    pub credited: AtomicU64,
    /// Bytes it credited for them.
    pub credited_bytes: AtomicU64,
    /// Receipts it refused for good.
    pub refused: AtomicU64,
}

/// Where and as whom to report.
#[derive(Debug, Clone)]
pub struct Target {
    /// The tracker's HTTP base.
    pub tracker: TrackerUrl,
    /// `/<passkey>/report`.
    pub path: Vec<u8>,
    /// Timeouts and bounds of the exchange.
    pub config: tracker::Config,
}

/// Why a report did not give verdicts.
#[derive(Debug, thiserror::Error)]
enum ReportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tracker(#[from] TrackerError),
    /// The tracker refused the whole report (its status and words).
    #[error("the tracker refused the report: HTTP {status}: {error}")]
    Refused { status: u16, error: String },
}

/// Reports until `stop`, then reports what is left (within [`DRAIN_LIMIT`]). `wake` is
/// notified when receipts are stored.
pub async fn run(
    store: Arc<Store>,
    target: Target,
    wake: Arc<Notify>,
    stats: Arc<ReportStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::ZERO;
    loop {
        let stopping = *stop.borrow();
        if stopping {
            break;
        }
        // Wait for receipts, then give others MAX_AGE to join them unless a batch is full.
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(MAX_AGE.max(backoff)) => {}
            _ = stop.changed() => {}
        }
        if pending_len(&store).await < BATCH as u64 && !*stop.borrow() {
            tokio::select! {
                () = tokio::time::sleep(MAX_AGE.max(backoff)) => {}
                _ = stop.changed() => {}
            }
        }
        match report_all(&store, &target, &stats).await {
            Ok(()) => backoff = Duration::ZERO,
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tracing::warn!("reporting receipts: {e} (again in {backoff:?})");
            }
        }
    }
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        let mut wait = Duration::from_millis(250);
        loop {
            match report_all(&store, &target, &stats).await {
                Ok(()) => return,
                Err(e) => tracing::warn!("reporting receipts at shutdown: {e}"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(4));
        }
    })
    .await;
    if drained.is_err() {
        let left = pending_len(&store).await;
        tracing::warn!("{left} receipt(s) not reported yet: they will be at the next start");
    }
}

async fn pending_len(store: &Arc<Store>) -> u64 {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.pending_len().unwrap_or(0)).await.unwrap_or(0)
}

/// Reports every pending receipt, batch by batch; stops at the first failure or at a batch
/// that gave no final verdict (those wait for the next round).
async fn report_all(
    store: &Arc<Store>,
    target: &Target,
    stats: &ReportStats,
) -> Result<(), ReportError> {
    loop {
        let s = store.clone();
        let batch = tokio::task::spawn_blocking(move || s.pending(BATCH))
            .await
            .map_err(|e| StoreError::from_join(&e))??;
        if batch.is_empty() {
            return Ok(());
        }
        let verdicts = report_once(&batch, target).await?;
        let mut settle = Vec::with_capacity(batch.len());
        for (r, v) in batch.iter().zip(&verdicts) {
            match v {
                Verdict::Credited { bytes } => {
                    stats.credited.fetch_add(1, Ordering::Relaxed);
                    stats.credited_bytes.fetch_add(*bytes, Ordering::Relaxed);
                    settle.push((*r, Settled::Credited));
                }
                Verdict::Refused { code, reason } => {
                    tracing::warn!(piece = r.piece_index, "receipt refused: {code}: {reason}");
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    settle.push((*r, Settled::Refused));
                }
                Verdict::Later { code } => {
                    tracing::debug!(piece = r.piece_index, "receipt to report again: {code}");
                }
            }
        }
        let settled = settle.len();
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.settle(&settle))
            .await
            .map_err(|e| StoreError::from_join(&e))??;
        if settled < batch.len() {
            // Some asked to be reported later: not in a tight loop.
            return Ok(());
        }
    }
}

/// The tracker's word on one receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Credited, for this many bytes.
    Credited {
        /// Bytes credited.
        bytes: u64,
    },
    /// Refused for good.
    Refused {
        /// The tracker's code.
        code: String,
        /// Its words.
        reason: String,
    },
    /// Not decided now: report again later.
    Later {
        /// The tracker's code.
        code: String,
    },
}

/// Codes that mean "not now" rather than "no": another report of the same piece is being
/// verified, or our clock is ahead of the tracker's.
const TRANSIENT: [&str; 2] = ["in_flight", "future"];

/// The report's JSON body.
pub fn body(receipts: &[Receipt]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = receipts
        .iter()
        .map(|r| {
            serde_json::json!({
                "infohash": const_hex::encode(r.info_hash.0),
                "sender_pk": B64.encode(r.sender_pk.0),
                "receiver_public_key": B64.encode(r.receiver_pk.0),
                "piece_hash": const_hex::encode(r.piece_hash.as_bytes()),
                "piece_index": r.piece_index,
                "timestamp": r.timestamp,
                "signature": B64.encode(r.signature.0),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "receipts": items })).expect("serializes")
}

/// The verdicts of a 200 answer, one per receipt sent (`n`), in order.
///
/// # Errors
/// An answer without a verdict for each receipt.
pub fn parse_verdicts(answer: &[u8], n: usize) -> Result<Vec<Verdict>, &'static str> {
    let v: serde_json::Value =
        serde_json::from_slice(answer).map_err(|_| "the answer is not JSON")?;
    let results = v["results"].as_array().ok_or("the answer has no results")?;
    let mut out: Vec<Option<Verdict>> = vec![None; n];
    for r in results {
        let i = r["index"].as_u64().ok_or("a result without an index")? as usize;
        let slot = out.get_mut(i).ok_or("a result for a receipt not sent")?;
        let text = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        *slot = Some(match r["accepted"].as_bool() {
            Some(true) => Verdict::Credited { bytes: r["credited_bytes"].as_u64().unwrap_or(0) },
            Some(false) if TRANSIENT.contains(&text("code").as_str()) => {
                Verdict::Later { code: text("code") }
            }
            Some(false) => Verdict::Refused { code: text("code"), reason: text("reason") },
            None => return Err("a result without \"accepted\""),
        });
    }
    out.into_iter().collect::<Option<Vec<_>>>().ok_or("a receipt without a result")
}

async fn report_once(batch: &[Receipt], target: &Target) -> Result<Vec<Verdict>, ReportError> {
    let body = body(batch);
    let (status, answer) =
        tracker::http::exchange(&target.tracker, "POST", &target.path, Some(&body), &target.config)
            .await?;
    if status != 200 {
        let error = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).chars().take(200).collect());
        return Err(ReportError::Refused { status, error });
    }
    parse_verdicts(&answer, batch.len())
        .map_err(|e| ReportError::Tracker(TrackerError::Malformed(e)))
}

impl StoreError {
    fn from_join(e: &tokio::task::JoinError) -> Self {
        Self::other(format!("the store's task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_tracker_codes() {
        let answer = br#"{"success":true,"results":[
            {"index":1,"accepted":false,"code":"in_flight","reason":"x"},
            {"index":0,"accepted":true,"credited_bytes":65536},
            {"index":2,"accepted":false,"code":"already_credited","reason":"piece 3 was credited"}]}"#;
        assert_eq!(
            parse_verdicts(answer, 3).unwrap(),
            [
                Verdict::Credited { bytes: 65536 },
                Verdict::Later { code: "in_flight".into() },
                Verdict::Refused {
                    code: "already_credited".into(),
                    reason: "piece 3 was credited".into()
                },
            ]
        );
        assert_eq!(parse_verdicts(answer, 4), Err("a receipt without a result"));
        assert_eq!(parse_verdicts(answer, 2), Err("a result for a receipt not sent"));
        assert_eq!(parse_verdicts(b"<html>", 1), Err("the answer is not JSON"));
    }
}
