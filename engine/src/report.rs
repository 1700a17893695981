//! Receipt reports: upload credit proven by the downloaders' signatures.
//!
//! An uploader reports receipts its downloaders signed. Each receipt is checked on its own and
//! gets its own verdict; a bad one never voids the good ones, and the client's claimed deltas
//! are never credited in their place (see docs/COMPATIBILITY.md).
//!
//! ```text
//!  decoded receipts ─▶ precheck (serving core, map lookups only)
//!     │   malformed · sender_pk is not the reporter's key · signed by the reporter ·
//!     │   signer not registered · torrent not registered · piece out of range
//!     ▼
//!  reserve (store-01 owns the ledger)      wrong piece hash · stale · future · already
//!     │                                    credited · duplicate · in flight
//!     ▼
//!  verify (verifier-NN, batched)           malformed key/signature · bad signature
//!     ▼
//!  credit (store-01, one transaction)      the piece into the downloader's piece set +
//!                                          uploader's verified upload + signer's verified
//!                                          download; then the reservation is dropped
//! ```
//!
//! # The credit invariant
//!
//! Each (downloader, torrent, piece index) is credited at most once, ever, to one uploader, and
//! a downloader's verified download for a torrent never exceeds the torrent's size (see
//! [`pbts_verifier::credit`]). Credit is zero-sum: each receipt moves the torrent's registered
//! piece length (the remainder for the last piece) to the uploader's verified upload and the
//! signer's verified download, so colluding accounts can only pass credit between themselves,
//! and no more than the torrent's size per downloader. The number of bytes is never the
//! client's to choose, and the piece hash must be the torrent's own when the registry holds its
//! `.torrent` (`wrong_piece_hash` otherwise).
//!
//! A torrent registered by JSON (info-hash, piece length, size) has no piece hashes: any 20- or
//! 32-byte piece hash is accepted for it, and the bound above is what protects it. Register the
//! `.torrent` to have piece hashes checked too; it fills them in for a JSON-registered torrent.
//!
//! What remains: sybils. Every registered account is a downloader with its own bound, so `k`
//! throwaway signers can move `k` times a torrent's size to an uploader (each of them then shows
//! that much verified download and a ratio near zero). Registration policy (`invite` by default
//! in private mode), per-IP rate limits on `/register`, and ratio enforcement on the signers are
//! what limit `k`.
//!
//! Between reserve and credit the pieces are reserved: a concurrent report claiming the same
//! piece is told "in flight" and credits nothing. If the report is abandoned half way (the
//! executor stops), the reservations are released.

use std::sync::atomic::Ordering;

use pbts_proto::InfoHash;
use pbts_verifier::batch::ReceiptError;
use pbts_verifier::credit::{self, PieceClaim};
use pbts_verifier::receipt::{PublicKeyBytes, Receipt};

use crate::clock::unix_now;
use crate::state::State;
use crate::store::{
    PieceError, ReceiptCredit, ReceiptStats, ReserveError, ReserveItem, StoreCmd, User,
};
use crate::swarm::table::UserId;

/// Why one receipt was not credited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The receipt did not decode (the text names the field).
    Malformed(String),
    /// `sender_pk` is not the reporter's registered key: only the uploader may report.
    WrongSender,
    /// The reporter signed its own receipt.
    SelfSigned,
    /// The signer (`receiver_public_key`) is no registered user's key.
    UnregisteredSigner,
    /// The torrent is not in the registry, so its piece length is unknown.
    UnregisteredTorrent,
    /// The registry cannot price this piece.
    Piece(PieceError),
    /// The registry holds the torrent's piece hashes and the receipt's is not this piece's.
    WrongPieceHash,
    /// The double-spend ledger refused it (stale, future, credited, duplicate, in flight).
    Ledger(credit::Rejection),
    /// The signature check failed.
    Signature(ReceiptError),
}

impl Rejected {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongSender => "wrong_sender",
            Self::SelfSigned => "self_signed",
            Self::UnregisteredSigner => "unregistered_signer",
            Self::UnregisteredTorrent => "unregistered_torrent",
            Self::Piece(PieceError::NoPieceLength) => "no_piece_length",
            Self::Piece(PieceError::OutOfRange { .. }) => "piece_out_of_range",
            Self::WrongPieceHash => "wrong_piece_hash",
            Self::Ledger(credit::Rejection::Stale { .. }) => "stale",
            Self::Ledger(credit::Rejection::Future { .. }) => "future",
            Self::Ledger(credit::Rejection::AlreadyCredited) => "already_credited",
            Self::Ledger(credit::Rejection::DuplicateInBatch) => "duplicate_in_batch",
            Self::Ledger(credit::Rejection::InFlight) => "in_flight",
            Self::Signature(ReceiptError::MalformedSenderKey) => "malformed_sender_key",
            Self::Signature(ReceiptError::MalformedSignerKey) => "malformed_signer_key",
            Self::Signature(ReceiptError::MalformedSignature) => "malformed_signature",
            Self::Signature(ReceiptError::BadSignature) => "bad_signature",
        }
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed receipt: {why}"),
            Self::WrongSender => f.write_str("sender_pk is not the reporter's registered key"),
            Self::SelfSigned => f.write_str("receipt signed by the reporter's own key"),
            Self::UnregisteredSigner => {
                f.write_str("receiver_public_key is not a registered user's key")
            }
            Self::UnregisteredTorrent => f.write_str("torrent not registered"),
            Self::Piece(e) => write!(f, "{e}"),
            Self::WrongPieceHash => {
                f.write_str("piece_hash is not the torrent's hash for this piece_index")
            }
            Self::Ledger(e) => write!(f, "{e}"),
            Self::Signature(e) => write!(f, "{e}"),
        }
    }
}

/// A receipt's fate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Credited: this many bytes to the uploader's verified upload and the signer's verified
    /// download.
    Credited {
        /// Bytes.
        bytes: u64,
    },
    /// Not credited.
    Rejected(Rejected),
}

/// Why a whole report could not be processed (no receipt was credited).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The reporter has no public key, so no receipt can name it as sender.
    #[error("no public key registered for this user: POST /register first")]
    NoKey,
    /// Too many receipts are being verified already.
    #[error("verifier busy: {in_flight} receipts are being verified (limit {limit}); retry later")]
    Busy {
        /// Receipts in flight when this report arrived.
        in_flight: u64,
        /// `receipts.max_pending_receipts`.
        limit: usize,
    },
    /// The store or the verifier threads are gone (shutting down) or a commit failed.
    #[error("{0}")]
    Unavailable(String),
}

/// The verdicts of a report, in input order.
#[derive(Debug)]
pub struct ReportOutcome {
    /// One per receipt.
    pub verdicts: Vec<Verdict>,
    /// Receipts credited.
    pub accepted: usize,
    /// Bytes credited in all.
    pub credited_bytes: u64,
}

/// A receipt that passed the prechecks.
struct Candidate {
    position: usize,
    receipt: Receipt,
    torrent: InfoHash,
    signer: UserId,
    bytes: u64,
}

/// Processes one report by `reporter`: every receipt gets a verdict, the credited ones are
/// durable before this returns.
///
/// `receipts` are the decoded receipts in report order (`Err` carries the decoder's message).
///
/// # Errors
/// [`ReportError`] when nothing could be decided; no receipt is credited then.
pub async fn report(
    state: &State,
    reporter: &User,
    receipts: Vec<Result<Receipt, String>>,
) -> Result<ReportOutcome, ReportError> {
    let sender_pk = *reporter.public_key.get().ok_or(ReportError::NoKey)?;
    let mut verdicts: Vec<Option<Verdict>> = vec![None; receipts.len()];
    let mut candidates = Vec::with_capacity(receipts.len());
    for (position, decoded) in receipts.into_iter().enumerate() {
        match precheck(state, &sender_pk, decoded) {
            Ok((receipt, torrent, signer, bytes)) => {
                candidates.push(Candidate { position, receipt, torrent, signer, bytes });
            }
            Err(why) => verdicts[position] = Some(Verdict::Rejected(why)),
        }
    }
    if !candidates.is_empty() {
        let _slot = InFlight::acquire(state, candidates.len())?;
        verify_and_credit(state, reporter.id, candidates, &mut verdicts).await?;
    }
    let verdicts: Vec<Verdict> = verdicts
        .into_iter()
        .map(|v| v.expect("every receipt gets a verdict in precheck or verify_and_credit"))
        .collect();
    let (mut accepted, mut credited_bytes) = (0, 0u64);
    for v in &verdicts {
        if let Verdict::Credited { bytes } = v {
            accepted += 1;
            credited_bytes = credited_bytes.saturating_add(*bytes);
        }
    }
    let stats = &state.receipt_stats;
    stats.reports.fetch_add(1, Ordering::Relaxed);
    stats.accepted.fetch_add(accepted as u64, Ordering::Relaxed);
    stats.rejected.fetch_add((verdicts.len() - accepted) as u64, Ordering::Relaxed);
    crate::store::saturating_add_to(&stats.credited_bytes, credited_bytes);
    Ok(ReportOutcome { verdicts, accepted, credited_bytes })
}

/// The checks that need no cryptography and no ledger: who signed, for what torrent (its
/// canonical hash), worth how much.
fn precheck(
    state: &State,
    sender_pk: &PublicKeyBytes,
    decoded: Result<Receipt, String>,
) -> Result<(Receipt, InfoHash, UserId, u64), Rejected> {
    let r = decoded.map_err(Rejected::Malformed)?;
    if r.sender_pk != *sender_pk {
        return Err(Rejected::WrongSender);
    }
    if r.receiver_pk == *sender_pk {
        return Err(Rejected::SelfSigned);
    }
    let signer = state.accounts.by_key(&r.receiver_pk).ok_or(Rejected::UnregisteredSigner)?;
    let info =
        state.registered.get(&r.info_hash).map(|e| *e).ok_or(Rejected::UnregisteredTorrent)?;
    let bytes = info.piece_bytes(r.piece_index).map_err(Rejected::Piece)?;
    Ok((r, info.canonical, signer.id, bytes))
}

/// Reserve, verify, credit; fills the verdicts of `candidates`.
async fn verify_and_credit(
    state: &State,
    uploader: UserId,
    candidates: Vec<Candidate>,
    verdicts: &mut [Option<Verdict>],
) -> Result<(), ReportError> {
    let gone = || ReportError::Unavailable("store is shutting down".to_owned());
    let (tx, rx) = flume::bounded(1);
    let items =
        candidates.iter().map(|c| ReserveItem { receipt: c.receipt, torrent: c.torrent }).collect();
    let cmd = StoreCmd::ReserveReceipts { items, now: unix_now(), reply: tx };
    state.store_tx.send(cmd).map_err(|_| gone())?;
    let reserved = rx
        .recv_async()
        .await
        .map_err(|_| gone())?
        .map_err(|e| ReportError::Unavailable(format!("ledger unavailable: {e}")))?;

    let mut pending = Vec::with_capacity(candidates.len());
    for (c, r) in candidates.into_iter().zip(reserved) {
        let why = match r {
            Ok(claim) => {
                pending.push((c, claim));
                continue;
            }
            Err(ReserveError::WrongPieceHash) => Rejected::WrongPieceHash,
            Err(ReserveError::Ledger(why)) => Rejected::Ledger(why),
        };
        verdicts[c.position] = Some(Verdict::Rejected(why));
    }
    if pending.is_empty() {
        return Ok(());
    }
    let mut reservation =
        Reservation { state, claims: pending.iter().map(|(_, claim)| *claim).collect() };

    let batch: Vec<Receipt> = pending.iter().map(|(c, _)| c.receipt).collect();
    let checked = state
        .verifier
        .verify(batch)
        .recv_async()
        .await
        .map_err(|_| ReportError::Unavailable("receipt verification failed".to_owned()))?;

    let mut credits = Vec::new();
    let mut release = Vec::new();
    let mut credited = Vec::new();
    for ((c, claim), ok) in pending.into_iter().zip(checked) {
        match ok {
            Ok(()) => {
                credits.push(ReceiptCredit { claim, uploader, signer: c.signer, bytes: c.bytes });
                credited.push((c.position, c.bytes));
            }
            Err(e) => {
                release.push(claim);
                verdicts[c.position] = Some(Verdict::Rejected(Rejected::Signature(e)));
            }
        }
    }
    let (tx, rx) = flume::bounded(1);
    state
        .store_tx
        .send(StoreCmd::CreditReceipts { credits, release, reply: tx })
        .map_err(|_| gone())?;
    // The store now owns the reservations: it commits or releases every one of them.
    reservation.claims.clear();
    match rx.recv_async().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ReportError::Unavailable(format!("credit not stored: {e}"))),
        Err(_) => return Err(gone()),
    }
    for (position, bytes) in credited {
        verdicts[position] = Some(Verdict::Credited { bytes });
    }
    Ok(())
}

/// Pieces reserved by a report that has not handed them to the store yet; released if the
/// report is dropped half way (a cancelled task), so they are not "in flight" forever.
struct Reservation<'a> {
    state: &'a State,
    claims: Vec<PieceClaim>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.claims.is_empty() {
            let release = std::mem::take(&mut self.claims);
            let (reply, _) = flume::bounded(1);
            let _ = self.state.store_tx.send(StoreCmd::CreditReceipts {
                credits: Vec::new(),
                release,
                reply,
            });
        }
    }
}

/// A share of `receipts.max_pending_receipts`, returned on drop.
struct InFlight<'a> {
    stats: &'a ReceiptStats,
    n: u64,
}

impl<'a> InFlight<'a> {
    fn acquire(state: &'a State, n: usize) -> Result<Self, ReportError> {
        let limit = state.config.receipts.max_pending_receipts;
        let stats = &*state.receipt_stats;
        let n = n as u64;
        let before = stats.in_flight.fetch_add(n, Ordering::AcqRel);
        if before + n > limit as u64 {
            stats.in_flight.fetch_sub(n, Ordering::AcqRel);
            return Err(ReportError::Busy { in_flight: before, limit });
        }
        Ok(Self { stats, n })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(self.n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_a_distinct_code() {
        use credit::Rejection as L;
        let all = [
            Rejected::Malformed("x".into()),
            Rejected::WrongSender,
            Rejected::SelfSigned,
            Rejected::UnregisteredSigner,
            Rejected::UnregisteredTorrent,
            Rejected::Piece(PieceError::NoPieceLength),
            Rejected::Piece(PieceError::OutOfRange { index: 9, pieces: 3 }),
            Rejected::WrongPieceHash,
            Rejected::Ledger(L::Stale { age_secs: 1 }),
            Rejected::Ledger(L::Future { ahead_secs: 1 }),
            Rejected::Ledger(L::AlreadyCredited),
            Rejected::Ledger(L::DuplicateInBatch),
            Rejected::Ledger(L::InFlight),
            Rejected::Signature(ReceiptError::MalformedSenderKey),
            Rejected::Signature(ReceiptError::MalformedSignerKey),
            Rejected::Signature(ReceiptError::MalformedSignature),
            Rejected::Signature(ReceiptError::BadSignature),
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(Rejected::code).collect();
        assert_eq!(codes.len(), all.len());
        assert_eq!(
            Rejected::Piece(PieceError::OutOfRange { index: 9, pieces: 3 }).to_string(),
            "piece_index 9 out of range (the torrent has 3 pieces)"
        );
        assert_eq!(
            Rejected::Malformed("missing timestamp".into()).to_string(),
            "malformed receipt: missing timestamp"
        );
        assert_eq!(
            Rejected::Ledger(L::Stale { age_secs: 7 }).to_string(),
            "stale receipt (age 7 s)"
        );
    }
}
