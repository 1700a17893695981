//! A receipt is credited at most once, ever.
//!
//! Each receipt has a [`Nullifier`]: SHA-256 over a domain tag, the signer's key and the
//! canonical signed message. The [`Ledger`] remembers the nullifier of every credited receipt
//! until that receipt could no longer be accepted anyway (its timestamp has left the freshness
//! window), and reserves nullifiers while their batch is being verified.
//!
//! ```text
//!             reserve (fresh, unseen)           commit (signature verified)
//!  receipt ───────────────────────────▶ reserved ───────────────────────────▶ credited
//!                                          │                                     │
//!                                          │ release (signature failed)          │ prune (timestamp
//!                                          ▼                                     ▼  out of the window)
//!                                      forgotten                         forgotten; the receipt
//!                                                                        is rejected as Stale
//! ```
//!
//! # Why the nullifier covers the timestamp
//!
//! The original's Python tracker hashed everything but the timestamp, so a downloader could
//! never sign a second receipt for the same piece from the same uploader, and its ids were
//! forgotten on a timer unrelated to the acceptance rule. Here a receipt signed again later is
//! a new statement and gets a new nullifier; a replay of the same bytes has the same nullifier
//! and is refused. Once the timestamp is outside the window the receipt is refused as stale
//! before the nullifier is even looked at, which is what makes pruning safe.
//!
//! The signature is *not* covered: BLS signatures are unique per key and message, and leaving
//! it out means a copy with a corrupted signature cannot be used to credit the same statement
//! twice. Such a copy only holds a reservation until its batch fails; [`Ledger::release`]
//! then lets the genuine receipt through.
//!
//! # Persistence
//!
//! The ledger is pure data. The engine writes each committed nullifier (32 bytes) with its
//! timestamp to disk, restores them at start-up with [`Ledger::load`], deletes what
//! [`Ledger::prune`] returns, and may persist [`Ledger::prune_floor`] to restore it with
//! [`Ledger::restore_prune_floor`] (closing the replay hole that raising the window across a
//! restart would otherwise open; the original's `/config` had exactly that hole).
//!
//! # Memory bound
//!
//! One entry (the 32-byte nullifier and an 8-byte timestamp in a hash map, plus 32 bytes in a
//! per-second index: roughly 100 bytes with overhead) per receipt credited within the last
//! `window_secs + 2 · max_future_secs` seconds, provided the engine calls [`Ledger::prune`]
//! regularly; plus one entry per receipt in batches currently being verified. The ledger never
//! evicts early: eviction would reopen replays. The absolute bound is therefore the engine's
//! verified-receipt rate limit times the window.
//!
//! # Example
//!
//! ```
//! use pbts_http::InfoHash;
//! use pbts_verifier::nullifier::{Freshness, Ledger, Rejection};
//! use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
//!
//! let receipt = Receipt {
//!     info_hash: InfoHash([1; 20]),
//!     sender_pk: PublicKeyBytes([2; 48]),
//!     receiver_pk: PublicKeyBytes([3; 48]),
//!     piece_hash: PieceHash::from_slice(&[4; 20]).expect("20 bytes"),
//!     piece_index: 7,
//!     timestamp: 1_000_000,
//!     signature: SignatureBytes([5; 96]),
//! };
//! let mut ledger = Ledger::new(Freshness::default());
//! let now = 1_000_010;
//!
//! // Reserve before verifying signatures, then commit what verified.
//! let verdicts = ledger.reserve(&[receipt], now);
//! let n = verdicts[0].expect("fresh and unseen");
//! ledger.commit(&n, receipt.timestamp);
//!
//! // The same receipt again is refused.
//! assert_eq!(ledger.reserve(&[receipt], now + 5), vec![Err(Rejection::AlreadyCredited)]);
//! ```

use core::fmt;
use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::receipt::Receipt;

/// Domain tag hashed before the signer's key and message, so a nullifier can never equal any
/// other SHA-256 value the system computes over the same bytes.
pub const NULLIFIER_DOMAIN: &[u8] = b"pbts/nullifier/v1";

/// The once-only identity of a receipt:
/// `SHA-256(NULLIFIER_DOMAIN ‖ receiver_pk ‖ Receipt::message())`.
///
/// Stored as raw bytes on disk; the field is public for that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nullifier(pub [u8; 32]);

impl Nullifier {
    /// The nullifier of `r`. Independent of the signature bytes.
    pub fn of(r: &Receipt) -> Self {
        let mut h = Sha256::new();
        h.update(NULLIFIER_DOMAIN);
        h.update(r.receiver_pk.0);
        // The message ends the input, so its variable length (20- or 32-byte piece hash)
        // cannot make two different inputs concatenate to the same bytes.
        h.update(r.message());
        Self(h.finalize().into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }
}

impl fmt::Debug for Nullifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nullifier(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Which receipt timestamps are acceptable relative to the verifier's clock.
///
/// A receipt is fresh when `now - window_secs <= timestamp <= now + max_future_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// Oldest acceptable age in seconds (inclusive). Default 3600.
    pub window_secs: u64,
    /// How far ahead of the verifier's clock a timestamp may be (clock skew between the
    /// downloader and the verifier), inclusive. Default 300.
    pub max_future_secs: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self { window_secs: 3600, max_future_secs: 300 }
    }
}

/// Why a receipt is not credited (before any signature check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The timestamp is older than the freshness window (or below the prune floor).
    Stale {
        /// `now - timestamp` (0 if the clock is behind the timestamp).
        age_secs: u64,
    },
    /// The timestamp is further in the future than the clock-skew allowance.
    Future {
        /// `timestamp - now`.
        ahead_secs: u64,
    },
    /// This receipt (same signer and message) was credited before.
    AlreadyCredited,
    /// An earlier copy in the same batch was accepted for verification; the first copy wins.
    DuplicateInBatch,
    /// Another batch holding this receipt is being verified right now. If that copy fails its
    /// signature check the reservation is released and this receipt may be submitted again.
    InFlight,
}

impl Rejection {
    /// A short fixed reason, suitable for a failure response.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale { .. } => "stale receipt",
            Self::Future { .. } => "timestamp in the future",
            Self::AlreadyCredited => "receipt already credited",
            Self::DuplicateInBatch => "duplicate receipt in batch",
            Self::InFlight => "receipt already being verified",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match *self {
            Self::Stale { age_secs } => write!(f, " (age {age_secs} s)"),
            Self::Future { ahead_secs } => write!(f, " ({ahead_secs} s ahead)"),
            Self::AlreadyCredited | Self::DuplicateInBatch | Self::InFlight => Ok(()),
        }
    }
}

impl std::error::Error for Rejection {}

/// Credited and reserved nullifiers, in memory.
///
/// ```text
/// credited: Nullifier → timestamp         lookups on reserve
/// by_time:  timestamp → [Nullifier]       prune removes whole seconds in order
/// reserved: {Nullifier}                   batches between reserve and commit/release
/// floor:    every credited receipt with a timestamp below it may have been pruned
/// ```
///
/// Not synchronised: the engine owns it on one thread or behind a lock, and calls
/// [`Ledger::reserve`] atomically per batch (the original's check-then-mark raced).
#[derive(Clone)]
pub struct Ledger {
    freshness: Freshness,
    credited: HashMap<Nullifier, u64>,
    by_time: BTreeMap<u64, Vec<Nullifier>>,
    reserved: HashSet<Nullifier>,
    floor: u64,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("freshness", &self.freshness)
            .field("credited", &self.credited.len())
            .field("reserved", &self.reserved.len())
            .field("floor", &self.floor)
            .finish()
    }
}

impl Ledger {
    /// An empty ledger.
    pub fn new(freshness: Freshness) -> Self {
        Self {
            freshness,
            credited: HashMap::new(),
            by_time: BTreeMap::new(),
            reserved: HashSet::new(),
            floor: 0,
        }
    }

    /// The freshness rule in force.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// Changes the freshness rule (an operator raising or lowering the window at run time).
    ///
    /// The original reopened replays this way: it forgot receipt ids on a timer tied to the
    /// old window, so raising the window made forgotten receipts acceptable again. Here that
    /// cannot happen: every forgotten nullifier belongs to a receipt below
    /// [`Ledger::prune_floor`], and the floor keeps such receipts stale under any window, while
    /// every receipt above the floor that was credited is still held. Lowering the window only
    /// refuses more.
    pub fn set_freshness(&mut self, freshness: Freshness) {
        self.freshness = freshness;
    }

    /// Whether a receipt signed at `timestamp` may be credited at `now` (both Unix seconds).
    /// Both edges are inclusive: age exactly `window_secs`, or exactly `max_future_secs` ahead,
    /// is fresh. A timestamp below [`Ledger::prune_floor`] is stale whatever the clock says.
    ///
    /// # Errors
    ///
    /// [`Rejection::Stale`] or [`Rejection::Future`].
    pub fn check_fresh(&self, timestamp: u64, now: u64) -> Result<(), Rejection> {
        if timestamp > now {
            let ahead_secs = timestamp - now;
            if ahead_secs > self.freshness.max_future_secs {
                return Err(Rejection::Future { ahead_secs });
            }
        } else {
            let age_secs = now - timestamp;
            if age_secs > self.freshness.window_secs {
                return Err(Rejection::Stale { age_secs });
            }
        }
        if timestamp < self.floor {
            return Err(Rejection::Stale { age_secs: now.saturating_sub(timestamp) });
        }
        Ok(())
    }

    /// Checks a batch about to be verified, one verdict per receipt in order, and reserves the
    /// nullifiers of the accepted ones.
    ///
    /// A receipt is accepted when it is fresh, not credited, not reserved by another batch
    /// ([`Rejection::InFlight`]) and not a copy of an earlier accepted receipt in `receipts`
    /// ([`Rejection::DuplicateInBatch`]: the first copy wins, even if a later copy carries the
    /// valid signature; the genuine one can be submitted again once the first is released).
    ///
    /// Every `Ok` must later be passed to [`Ledger::commit`] or [`Ledger::release`]; until
    /// then a concurrent batch with the same receipt is told `InFlight`.
    pub fn reserve(&mut self, receipts: &[Receipt], now: u64) -> Vec<Result<Nullifier, Rejection>> {
        let mut this_batch = HashSet::new();
        let mut verdicts = Vec::with_capacity(receipts.len());
        for r in receipts {
            verdicts.push(self.reserve_one(r, now, &mut this_batch));
        }
        verdicts
    }

    fn reserve_one(
        &mut self,
        r: &Receipt,
        now: u64,
        this_batch: &mut HashSet<Nullifier>,
    ) -> Result<Nullifier, Rejection> {
        self.check_fresh(r.timestamp, now)?;
        let n = Nullifier::of(r);
        if self.credited.contains_key(&n) {
            return Err(Rejection::AlreadyCredited);
        }
        if this_batch.contains(&n) {
            return Err(Rejection::DuplicateInBatch);
        }
        if !self.reserved.insert(n) {
            return Err(Rejection::InFlight);
        }
        this_batch.insert(n);
        Ok(n)
    }

    /// Credits `n` (its signature verified): drops its reservation and remembers it until
    /// pruned. `timestamp` must be the receipt's timestamp; it decides when pruning may forget
    /// `n`. Committing an already credited nullifier changes nothing.
    pub fn commit(&mut self, n: &Nullifier, timestamp: u64) {
        self.reserved.remove(n);
        self.insert_credited(*n, timestamp);
    }

    /// Drops the reservation of `n` (its signature failed), so a correctly signed copy can be
    /// credited later. Does nothing to a credited nullifier.
    pub fn release(&mut self, n: &Nullifier) {
        self.reserved.remove(n);
    }

    /// Restores a credited nullifier persisted earlier, at start-up. Loading one twice keeps
    /// the first timestamp.
    pub fn load(&mut self, n: Nullifier, timestamp: u64) {
        self.insert_credited(n, timestamp);
    }

    fn insert_credited(&mut self, n: Nullifier, timestamp: u64) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.credited.entry(n) {
            e.insert(timestamp);
            self.by_time.entry(timestamp).or_default().push(n);
        }
    }

    /// Forgets credited nullifiers whose receipts can no longer be accepted, those with
    /// `timestamp + window_secs + max_future_secs < now`, and returns them so the engine can
    /// delete them from disk. Reservations are never pruned.
    ///
    /// This never reopens a replay: such a receipt is already stale at `now` (the extra
    /// `max_future_secs` tolerates the clock stepping back by that much), and the prune floor
    /// rises just above the newest pruned timestamp, so every pruned receipt stays stale even
    /// if the clock steps back further or the window is raised (at run time, or after a
    /// restart that restores the floor).
    ///
    /// The floor rises only as far as receipts were actually forgotten: receipts never credited
    /// are not refused by it, so a raised window applies at once to receipts the ledger never
    /// saw. A clock that jumps far ahead prunes everything credited and raises the floor to
    /// just above the newest of those timestamps, no further.
    pub fn prune(&mut self, now: u64) -> Vec<Nullifier> {
        let cutoff = now
            .saturating_sub(self.freshness.window_secs)
            .saturating_sub(self.freshness.max_future_secs);
        let keep = self.by_time.split_off(&cutoff);
        let old = core::mem::replace(&mut self.by_time, keep);
        if let Some((&newest, _)) = old.last_key_value() {
            self.floor = self.floor.max(newest.saturating_add(1));
        }
        let mut pruned = Vec::new();
        for n in old.into_values().flatten() {
            if self.credited.remove(&n).is_some() {
                pruned.push(n);
            }
        }
        pruned
    }

    /// Timestamps below this are refused as stale: credited receipts below it may have been
    /// pruned (it is one more than the newest pruned timestamp). Rises with [`Ledger::prune`]; persist it alongside the nullifiers.
    pub fn prune_floor(&self) -> u64 {
        self.floor
    }

    /// Restores a persisted [`Ledger::prune_floor`] at start-up. The floor only rises.
    pub fn restore_prune_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// Credited nullifiers held (reservations not counted).
    pub fn len(&self) -> usize {
        self.credited.len()
    }

    /// No credited nullifiers held.
    pub fn is_empty(&self) -> bool {
        self.credited.is_empty()
    }

    /// Reservations held by batches being verified.
    pub fn reserved_len(&self) -> usize {
        self.reserved.len()
    }

    /// Whether `n` is credited (reservations not counted).
    pub fn contains(&self, n: &Nullifier) -> bool {
        self.credited.contains_key(n)
    }

    /// Whether `n` is reserved by a batch being verified.
    pub fn is_reserved(&self, n: &Nullifier) -> bool {
        self.reserved.contains(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{PieceHash, PublicKeyBytes, SignatureBytes};
    use pbts_http::InfoHash;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn receipt(seed: u8, timestamp: u64) -> Receipt {
        Receipt {
            info_hash: InfoHash([seed; 20]),
            sender_pk: PublicKeyBytes([seed.wrapping_add(1); 48]),
            receiver_pk: PublicKeyBytes([seed.wrapping_add(2); 48]),
            piece_hash: PieceHash::from_slice(&[seed.wrapping_add(3); 20]).expect("20 bytes"),
            piece_index: u32::from(seed),
            timestamp,
            signature: SignatureBytes([seed.wrapping_add(4); 96]),
        }
    }

    fn ledger() -> Ledger {
        Ledger::new(Freshness::default())
    }

    #[test]
    fn defaults() {
        assert_eq!(Freshness::default(), Freshness { window_secs: 3600, max_future_secs: 300 });
        let l = ledger();
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
        assert_eq!(l.prune_floor(), 0);
        assert_eq!(l.freshness(), Freshness::default());
        assert!(format!("{l:?}").contains("credited: 0"));
    }

    #[test]
    fn raising_the_window_after_a_prune_reopens_no_replay() {
        let mut l = ledger();
        let r = receipt(1, NOW);
        let n = l.reserve(&[r], NOW)[0].expect("fresh");
        l.commit(&n, r.timestamp);
        // Long after: the receipt is stale, pruning forgets it.
        let later = NOW + 3600 + 300 + 1;
        assert_eq!(l.prune(later), vec![n]);
        assert!(!l.contains(&n));
        // An operator raises the window so that the timestamp would be fresh again.
        l.set_freshness(Freshness { window_secs: 86_400, max_future_secs: 300 });
        assert_eq!(l.freshness().window_secs, 86_400);
        assert!(matches!(l.reserve(&[r], later)[0], Err(Rejection::Stale { .. })));
        // A receipt above the floor is accepted under the new window.
        let newer = receipt(2, NOW + 400);
        assert!(l.reserve(&[newer], later)[0].is_ok());
    }

    #[test]
    fn nullifier_golden_and_coverage() {
        let r = receipt(1, 0x1122_3344_5566_7788);
        let n = Nullifier::of(&r);
        // Frozen: changing the domain tag or the hashed fields breaks every stored ledger.
        let mut h = Sha256::new();
        h.update(b"pbts/nullifier/v1");
        h.update([3u8; 48]);
        h.update(r.message());
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(n.0, expected);
        // Computed independently (Python hashlib) and frozen.
        assert_eq!(n.to_hex(), "eb4d6f9713a97bd1362c8388e63372ef1f1db40ea9945cb73cc4098d4a87b979");
        assert_eq!(n.to_hex(), n.0.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert!(format!("{n:?}").starts_with("Nullifier("));
        assert_eq!(n.as_bytes(), &n.0);

        // The signature is not covered; everything else is.
        assert_eq!(Nullifier::of(&Receipt { signature: SignatureBytes([0; 96]), ..r }), n);
        let variants = [
            Receipt { timestamp: r.timestamp + 1, ..r },
            Receipt { receiver_pk: PublicKeyBytes([9; 48]), ..r },
            Receipt { sender_pk: PublicKeyBytes([9; 48]), ..r },
            Receipt { info_hash: InfoHash([9; 20]), ..r },
            Receipt { piece_index: 99, ..r },
            Receipt { piece_hash: PieceHash::from_slice(&[4; 32]).expect("32 bytes"), ..r },
        ];
        for v in variants {
            assert_ne!(Nullifier::of(&v), n, "{v:?}");
        }
    }

    #[test]
    fn freshness_edges() {
        let l = ledger();
        let cases: &[(&str, u64, u64, Result<(), Rejection>)] = &[
            ("now", NOW, NOW, Ok(())),
            ("exactly at window", NOW - 3600, NOW, Ok(())),
            ("one past window", NOW - 3601, NOW, Err(Rejection::Stale { age_secs: 3601 })),
            ("ancient", 0, NOW, Err(Rejection::Stale { age_secs: NOW })),
            ("future within skew", NOW + 299, NOW, Ok(())),
            ("future exactly at skew", NOW + 300, NOW, Ok(())),
            ("future over skew", NOW + 301, NOW, Err(Rejection::Future { ahead_secs: 301 })),
            ("max timestamp", u64::MAX, NOW, Err(Rejection::Future { ahead_secs: u64::MAX - NOW })),
            ("clock near zero", 0, 10, Ok(())),
            ("clock at max", u64::MAX, u64::MAX, Ok(())),
            ("clock at max, stale", 0, u64::MAX, Err(Rejection::Stale { age_secs: u64::MAX })),
        ];
        for (name, ts, now, want) in cases {
            assert_eq!(l.check_fresh(*ts, *now), *want, "{name}");
        }
        let strict = Ledger::new(Freshness { window_secs: 0, max_future_secs: 0 });
        assert_eq!(strict.check_fresh(NOW, NOW), Ok(()));
        assert_eq!(strict.check_fresh(NOW - 1, NOW), Err(Rejection::Stale { age_secs: 1 }));
        assert_eq!(strict.check_fresh(NOW + 1, NOW), Err(Rejection::Future { ahead_secs: 1 }));
    }

    #[test]
    fn rejection_texts() {
        let cases = [
            (Rejection::Stale { age_secs: 5 }, "stale receipt", "stale receipt (age 5 s)"),
            (
                Rejection::Future { ahead_secs: 7 },
                "timestamp in the future",
                "timestamp in the future (7 s ahead)",
            ),
            (Rejection::AlreadyCredited, "receipt already credited", "receipt already credited"),
            (
                Rejection::DuplicateInBatch,
                "duplicate receipt in batch",
                "duplicate receipt in batch",
            ),
            (
                Rejection::InFlight,
                "receipt already being verified",
                "receipt already being verified",
            ),
        ];
        for (r, short, long) in cases {
            assert_eq!(r.as_str(), short);
            assert_eq!(r.to_string(), long);
        }
    }

    #[test]
    fn reserve_rejects_stale_and_future_without_reserving() {
        let mut l = ledger();
        let out = l.reserve(&[receipt(1, NOW - 4000), receipt(2, NOW + 1000)], NOW);
        assert_eq!(
            out,
            vec![
                Err(Rejection::Stale { age_secs: 4000 }),
                Err(Rejection::Future { ahead_secs: 1000 })
            ]
        );
        assert_eq!(l.reserved_len(), 0);
    }

    #[test]
    fn duplicates_in_one_batch_first_wins() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let b = receipt(2, NOW);
        // A copy with another signature is the same statement.
        let a_resigned = Receipt { signature: SignatureBytes([0xee; 96]), ..a };
        let out = l.reserve(&[a, b, a, a_resigned, b], NOW);
        let na = Nullifier::of(&a);
        let nb = Nullifier::of(&b);
        assert_eq!(
            out,
            vec![
                Ok(na),
                Ok(nb),
                Err(Rejection::DuplicateInBatch),
                Err(Rejection::DuplicateInBatch),
                Err(Rejection::DuplicateInBatch),
            ]
        );
        assert_eq!(l.reserved_len(), 2);
        assert!(l.is_reserved(&na) && l.is_reserved(&nb));
    }

    #[test]
    fn replay_across_batches() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let n = l.reserve(&[a], NOW)[0].expect("fresh");
        l.commit(&n, a.timestamp);
        assert!(l.contains(&n));
        assert_eq!(l.len(), 1);
        assert_eq!(l.reserved_len(), 0);
        assert_eq!(l.reserve(&[a], NOW + 10), vec![Err(Rejection::AlreadyCredited)]);
        // Also within a batch whose first copy is the replay.
        assert_eq!(
            l.reserve(&[a, a], NOW + 10),
            vec![Err(Rejection::AlreadyCredited), Err(Rejection::AlreadyCredited)]
        );
        // A receipt signed again later is a new statement.
        let later = Receipt { timestamp: NOW + 60, ..a };
        assert!(l.reserve(&[later], NOW + 60)[0].is_ok());
    }

    #[test]
    fn concurrent_batches_and_release() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let forged = Receipt { signature: SignatureBytes([0; 96]), ..a };
        // Batch 1 (forged copy) reserves; batch 2 (genuine) arrives while 1 is verifying.
        let n1 = l.reserve(&[forged], NOW)[0].expect("fresh");
        assert_eq!(l.reserve(&[a], NOW), vec![Err(Rejection::InFlight)]);
        // Batch 1 fails verification: released, nothing credited.
        l.release(&n1);
        assert!(!l.contains(&n1) && !l.is_reserved(&n1));
        // The genuine receipt now goes through.
        let n2 = l.reserve(&[a], NOW + 1)[0].expect("released");
        assert_eq!(n1, n2);
        l.commit(&n2, a.timestamp);
        assert_eq!(l.reserve(&[forged], NOW + 2), vec![Err(Rejection::AlreadyCredited)]);
        // Releasing a credited nullifier does not uncredit it.
        l.release(&n2);
        assert!(l.contains(&n2));
        assert_eq!(l.reserve(&[a], NOW + 3), vec![Err(Rejection::AlreadyCredited)]);
    }

    #[test]
    fn commit_is_idempotent_and_load_restores() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let n = Nullifier::of(&a);
        l.commit(&n, a.timestamp);
        l.commit(&n, a.timestamp);
        l.load(n, a.timestamp + 5);
        assert_eq!(l.len(), 1);
        assert_eq!(l.prune(NOW + 3600 + 300).len(), 0);
        assert_eq!(l.prune(NOW + 3600 + 301), vec![n], "the first timestamp is kept");

        let mut restarted = ledger();
        restarted.load(n, a.timestamp);
        assert_eq!(restarted.reserve(&[a], NOW), vec![Err(Rejection::AlreadyCredited)]);
    }

    #[test]
    fn prune_boundary() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let n = Nullifier::of(&a);
        l.commit(&n, NOW);
        // timestamp + window + future allowance == now: kept.
        assert!(l.prune(NOW + 3900).is_empty());
        assert!(l.contains(&n));
        assert_eq!(l.prune_floor(), 0, "nothing was forgotten, so nothing is refused");
        assert_eq!(l.prune(NOW + 3901), vec![n]);
        assert!(!l.contains(&n));
        assert!(l.is_empty());
        assert_eq!(l.prune_floor(), NOW + 1);
        // Pruning with a clock near zero removes nothing and keeps the floor.
        assert!(l.prune(5).is_empty());
        assert_eq!(l.prune_floor(), NOW + 1);
    }

    #[test]
    fn prune_keeps_reservations() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let n = l.reserve(&[a], NOW)[0].expect("fresh");
        assert!(l.prune(NOW + 10_000).is_empty());
        assert!(l.is_reserved(&n));
        // A late commit of an already prunable receipt is forgotten at the next prune.
        l.commit(&n, a.timestamp);
        assert_eq!(l.prune(NOW + 10_000), vec![n]);
    }

    #[test]
    fn prune_never_reopens_a_replay() {
        let mut l = ledger();
        let a = receipt(1, NOW);
        let n = l.reserve(&[a], NOW)[0].expect("fresh");
        l.commit(&n, a.timestamp);
        let later = NOW + 3901;
        assert_eq!(l.prune(later), vec![n]);
        assert!(!l.contains(&n));
        // Submitted again: stale, not credited twice.
        assert_eq!(l.reserve(&[a], later), vec![Err(Rejection::Stale { age_secs: 3901 })]);
        // Even if the clock steps back past the window edge.
        assert_eq!(l.reserve(&[a], NOW + 10), vec![Err(Rejection::Stale { age_secs: 10 })]);

        // After a restart with a larger window, a restored floor still refuses it.
        let floor = l.prune_floor();
        let mut restarted = Ledger::new(Freshness { window_secs: 86_400, max_future_secs: 300 });
        restarted.restore_prune_floor(floor);
        restarted.restore_prune_floor(0); // the floor only rises
        assert_eq!(restarted.prune_floor(), floor);
        assert_eq!(restarted.reserve(&[a], later), vec![Err(Rejection::Stale { age_secs: 3901 })]);
    }

    #[test]
    fn prune_many_in_order() {
        let mut l = ledger();
        let mut all = Vec::new();
        for i in 0..100u8 {
            let r = receipt(i, NOW + u64::from(i % 10));
            let n = Nullifier::of(&r);
            l.commit(&n, r.timestamp);
            all.push((r.timestamp, n));
        }
        assert_eq!(l.len(), 100);
        let pruned = l.prune(NOW + 3900 + 5);
        assert_eq!(pruned.len(), 50);
        for (ts, n) in all {
            assert_eq!(l.contains(&n), ts >= NOW + 5);
            assert_eq!(pruned.contains(&n), ts < NOW + 5);
        }
    }

    // ---- model check ----------------------------------------------------------------------

    /// Obviously correct model: linear scans over vectors.
    #[derive(Default)]
    struct Model {
        credited: Vec<(Nullifier, u64)>,
        reserved: Vec<Nullifier>,
        floor: u64,
    }

    impl Model {
        fn reserve(
            &mut self,
            f: Freshness,
            rs: &[Receipt],
            now: u64,
        ) -> Vec<Result<Nullifier, Rejection>> {
            let mut batch: Vec<Nullifier> = Vec::new();
            let mut out = Vec::new();
            for r in rs {
                let ts = r.timestamp;
                let v = if ts > now && ts - now > f.max_future_secs {
                    Err(Rejection::Future { ahead_secs: ts - now })
                } else if ts <= now && now - ts > f.window_secs {
                    Err(Rejection::Stale { age_secs: now - ts })
                } else if ts < self.floor {
                    Err(Rejection::Stale { age_secs: now.saturating_sub(ts) })
                } else {
                    let n = Nullifier::of(r);
                    if self.credited.iter().any(|(c, _)| *c == n) {
                        Err(Rejection::AlreadyCredited)
                    } else if batch.contains(&n) {
                        Err(Rejection::DuplicateInBatch)
                    } else if self.reserved.contains(&n) {
                        Err(Rejection::InFlight)
                    } else {
                        self.reserved.push(n);
                        batch.push(n);
                        Ok(n)
                    }
                };
                out.push(v);
            }
            out
        }

        fn commit(&mut self, n: Nullifier, ts: u64) {
            self.reserved.retain(|r| *r != n);
            if !self.credited.iter().any(|(c, _)| *c == n) {
                self.credited.push((n, ts));
            }
        }

        fn release(&mut self, n: Nullifier) {
            self.reserved.retain(|r| *r != n);
        }

        fn prune(&mut self, f: Freshness, now: u64) -> Vec<Nullifier> {
            let mut out: Vec<Nullifier> = self
                .credited
                .iter()
                .filter(|(_, ts)| {
                    u128::from(*ts) + u128::from(f.window_secs) + u128::from(f.max_future_secs)
                        < u128::from(now)
                })
                .map(|(n, _)| *n)
                .collect();
            if let Some(newest) =
                self.credited.iter().filter(|(n, _)| out.contains(n)).map(|(_, ts)| *ts).max()
            {
                self.floor = self.floor.max(newest + 1);
            }
            self.credited.retain(|(n, _)| !out.contains(n));
            out.sort();
            out
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Indices into the receipt pool; a clock step (mostly forward, sometimes back).
        Reserve(Vec<usize>, i64),
        /// Commit the k-th outstanding reservation.
        Commit(usize),
        /// Release the k-th outstanding reservation.
        Release(usize),
        /// Load a pool receipt as if restored from disk.
        Load(usize),
        /// Prune after a clock step.
        Prune(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (prop::collection::vec(0..12usize, 0..6), -10..20i64)
                .prop_map(|(v, dt)| Op::Reserve(v, dt)),
            3 => (0..8usize).prop_map(Op::Commit),
            1 => (0..8usize).prop_map(Op::Release),
            1 => (0..12usize).prop_map(Op::Load),
            1 => (-10..40i64).prop_map(Op::Prune),
        ]
    }

    /// Twelve receipts: six statements, each with two signatures, timestamps in 0..200.
    fn pool() -> impl Strategy<Value = Vec<Receipt>> {
        prop::collection::vec((0..4u8, 0..200u64), 6).prop_map(|stmts| {
            let mut v = Vec::new();
            for (i, (seed, ts)) in stmts.into_iter().enumerate() {
                let r = Receipt { piece_index: i as u32, ..receipt(seed, ts) };
                v.push(r);
                v.push(Receipt { signature: SignatureBytes([0xab; 96]), ..r });
            }
            v
        })
    }

    proptest! {
        #[test]
        fn ledger_matches_model(pool in pool(), ops in prop::collection::vec(op(), 1..60)) {
            let f = Freshness { window_secs: 30, max_future_secs: 5 };
            let mut l = Ledger::new(f);
            let mut m = Model::default();
            // Outstanding reservations with their timestamps, oldest first.
            let mut outstanding: Vec<(Nullifier, u64)> = Vec::new();
            // Everything ever credited: must never be reserved again, whatever the clock does.
            let mut ever: HashSet<Nullifier> = HashSet::new();
            let mut clock = 60u64;
            for op in ops {
                match op {
                    Op::Reserve(idx, dt) => {
                        clock = clock.saturating_add_signed(dt);
                        let rs: Vec<Receipt> = idx.iter().map(|&i| pool[i]).collect();
                        let got = l.reserve(&rs, clock);
                        let want = m.reserve(f, &rs, clock);
                        prop_assert_eq!(&got, &want);
                        for (r, v) in rs.iter().zip(&got) {
                            if let Ok(n) = v {
                                prop_assert!(!ever.contains(n), "credited twice");
                                outstanding.push((*n, r.timestamp));
                            }
                        }
                    }
                    Op::Commit(k) => {
                        if !outstanding.is_empty() {
                            let (n, ts) = outstanding.remove(k % outstanding.len());
                            l.commit(&n, ts);
                            m.commit(n, ts);
                            ever.insert(n);
                        }
                    }
                    Op::Load(i) => {
                        let r = pool[i];
                        let n = Nullifier::of(&r);
                        // Only what is not outstanding: the engine persists committed ones.
                        if !outstanding.iter().any(|(o, _)| *o == n) {
                            l.load(n, r.timestamp);
                            m.commit(n, r.timestamp);
                            ever.insert(n);
                        }
                    }
                    Op::Release(k) => {
                        if !outstanding.is_empty() {
                            let (n, _) = outstanding.remove(k % outstanding.len());
                            l.release(&n);
                            m.release(n);
                        }
                    }
                    Op::Prune(dt) => {
                        clock = clock.saturating_add_signed(dt);
                        let mut got = l.prune(clock);
                        got.sort();
                        prop_assert_eq!(got, m.prune(f, clock));
                    }
                }
                prop_assert_eq!(l.len(), m.credited.len());
                prop_assert_eq!(l.reserved_len(), m.reserved.len());
                prop_assert_eq!(l.prune_floor(), m.floor);
                for r in &pool {
                    let n = Nullifier::of(r);
                    prop_assert_eq!(l.contains(&n), m.credited.iter().any(|(c, _)| *c == n));
                    prop_assert_eq!(l.is_reserved(&n), m.reserved.contains(&n));
                }
            }
        }
    }
}
