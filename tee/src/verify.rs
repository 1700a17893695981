//! Quote verification with `dcap-qvl`: the signature chain to Intel's root, the TCB status
//! against the collateral, and the report data against the payload the caller expects. A
//! mismatch makes the quote invalid whatever its TCB status.

use std::time::Duration;

use dcap_qvl::QuoteCollateralV3;

use crate::error::TeeError;
use crate::quote::{self, Quote};

/// TCB statuses accepted as valid. Anything else (`OutOfDate`, `Revoked`, ...) is reported but
/// invalid. `SWHardeningNeeded` and the configuration variants are accepted as Intel's
/// reference policy does: the platform is current, mitigations are the software's business.
pub const ACCEPTED_STATUSES: &[&str] =
    &["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"];

/// Where the collateral comes from.
#[derive(Debug)]
pub enum Collateral {
    /// Given by the caller (offline verification).
    Given(Box<QuoteCollateralV3>),
    /// Fetched from a PCCS (or Intel's PCS) at this URL.
    Pccs(String),
}

/// What the caller expects the quote to bind.
#[derive(Clone, Copy, Debug)]
pub enum Expected<'a> {
    /// Report data must be what this binding gives ([`quote::Binding::report_data`]): a client
    /// payload or a tracker statement, each under its own scheme.
    Binds(quote::Binding<'a>),
    /// Report data must equal these 64 bytes exactly.
    ReportData(&'a [u8; 64]),
}

/// A verification's outcome. `valid` needs all of: a quote that parses, a signature chain and
/// collateral that verify, an accepted TCB status, and matching report data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The verdict.
    pub valid: bool,
    /// Why it is invalid, if it is.
    pub reason: Option<String>,
    /// TCB status from the collateral (empty when verification did not get that far).
    pub status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
    /// Whether the report data binds the expected payload.
    pub report_data_matches: bool,
    /// The parsed quote (when it parsed).
    pub quote: Option<Quote>,
}

/// The JSON collateral format dcap-qvl and Intel's tools use.
///
/// # Errors
/// [`TeeError::Collateral`] with the parser's message.
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, TeeError> {
    serde_json::from_slice(json).map_err(|e| TeeError::Collateral(format!("collateral JSON: {e}")))
}

/// Fetches collateral for `raw` from a PCCS (blocking; runs its own small runtime).
///
/// # Errors
/// [`TeeError::Collateral`] for network or PCCS failures.
pub fn fetch_collateral(
    pccs_url: &str,
    raw: &[u8],
    timeout: Duration,
) -> Result<QuoteCollateralV3, TeeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TeeError::Collateral(format!("runtime: {e}")))?;
    rt.block_on(async {
        let client = dcap_qvl::collateral::CollateralClient::with_default_http(pccs_url)
            .map_err(|e| TeeError::Collateral(format!("PCCS client: {e}")))?;
        tokio::time::timeout(timeout, client.fetch(raw))
            .await
            .map_err(|_| {
                TeeError::Collateral(format!(
                    "PCCS {pccs_url} did not answer within {}s",
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| TeeError::Collateral(format!("PCCS {pccs_url}: {e:#}")))
    })
}

/// Unix seconds of the collateral's TCB info `issueDate`: a moment at which the collateral is
/// valid (offline verification of old sample quotes pins "now" near it).
///
/// # Errors
/// [`TeeError::Collateral`] when the TCB info or its date does not parse.
pub fn collateral_issue_time(c: &QuoteCollateralV3) -> Result<u64, TeeError> {
    let bad = |why: &str| TeeError::Collateral(format!("tcb_info issueDate: {why}"));
    let v: serde_json::Value =
        serde_json::from_str(&c.tcb_info).map_err(|e| bad(&e.to_string()))?;
    let date =
        v.get("issueDate").and_then(serde_json::Value::as_str).ok_or_else(|| bad("missing"))?;
    parse_rfc3339_utc(date).ok_or_else(|| bad(date))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to Unix seconds (the form Intel's collateral uses).
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Verifies `raw` against `collateral` at `now_secs` (Unix seconds; tests pin it inside the
/// collateral's validity window), and its report data against `expected`.
pub fn verify(
    raw: &[u8],
    collateral: &QuoteCollateralV3,
    now_secs: u64,
    expected: Expected<'_>,
) -> Verification {
    let mut v = Verification {
        valid: false,
        reason: None,
        status: String::new(),
        advisory_ids: Vec::new(),
        report_data_matches: false,
        quote: None,
    };
    let parsed = match quote::parse(raw) {
        Ok(q) => q,
        Err(e) => {
            v.reason = Some(e.to_string());
            return v;
        }
    };
    let want = match expected {
        Expected::Binds(binding) => binding.report_data(),
        Expected::ReportData(rd) => *rd,
    };
    v.report_data_matches = parsed.report.report_data == want;
    v.quote = Some(parsed);
    match dcap_qvl::verify::verify(raw, collateral, now_secs) {
        Ok(report) => {
            v.status = report.status.clone();
            v.advisory_ids = report.advisory_ids.clone();
            if !ACCEPTED_STATUSES.contains(&report.status.as_str()) {
                v.reason = Some(format!("TCB status {} is not accepted", report.status));
            } else if !v.report_data_matches {
                v.reason = Some("report data does not match the expected payload".to_owned());
            } else {
                v.valid = true;
            }
        }
        Err(e) => v.reason = Some(format!("quote verification failed: {e:#}")),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_utc("2025-06-19T10:16:03Z"), Some(1_750_328_163));
        assert_eq!(parse_rfc3339_utc("2024-02-29T23:59:59.123Z"), Some(1_709_251_199));
        assert_eq!(parse_rfc3339_utc("2025-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("yesterday"), None);
    }
}
