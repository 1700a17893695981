//! Each (downloader, torrent, piece index) is credited at most once, ever.
//!
//! # The credit invariant
//!
//! A receipt proves that its signer (the downloader) received one piece of one torrent. What it
//! can earn is therefore bounded by what the downloader could have received: each piece once.
//! So the identity of a credit is a [`PieceClaim`] — (downloader key, torrent, piece index) —
//! and not the signed statement: the same downloader re-signing piece 0 with ten timestamps, or
//! with ten invented piece hashes, or for ten uploaders, is one claim, credited the first time
//! and refused ([`Rejection::AlreadyCredited`]) every other time. With each piece priced at the
//! torrent's registered piece length (the remainder for the last piece), a downloader's verified
//! download for a torrent never exceeds the torrent's size, and the uploaders it credits share
//! exactly that much.
//!
//! An earlier design identified receipts by a hash of the signed message, timestamp included.
//! Every re-signature was then a fresh receipt: a pair of colluding accounts turned one 64 MiB
//! torrent into 368 MiB of verified upload with twenty signatures over piece 0. Leaving the
//! timestamp out of the hash does not help while the piece hash is in it: every invented piece
//! hash makes a fresh receipt (see docs/COMPATIBILITY.md).
//!
//! The freshness window ([`Freshness`]) still refuses stale and far-future receipts, so that
//! uploaders report promptly and a receipt cannot sit unused for months, but it no longer
//! decides what "already credited" means, and nothing is ever forgotten: credited claims are
//! kept for good, compactly, as one [`PieceSet`] (a roaring bitmap of piece indices) per
//! (downloader, torrent).
//!
//! ```text
//!              reserve (fresh, not credited,          finish (after the commit, or when
//!               not reserved by another batch)          the signature failed)
//!  claim ─────────────────────────────────▶ reserved ────────────────────────────▶ free
//!                                              │
//!                                              └─ the engine adds the index to the
//!                                                 downloader's PieceSet in the same
//!                                                 transaction that credits both users
//! ```
//!
//! # Division of work
//!
//! This module is pure. The [`Ledger`] holds the freshness rule and the reservations of batches
//! being verified; the engine owns the persisted piece sets and tells [`Ledger::reserve`]
//! whether a claim was credited before. One thread (the engine's store thread) owns both, so
//! reserving, crediting and persisting never race.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use pbts_proto::InfoHash;
//! use pbts_verifier::credit::{Freshness, Ledger, PieceClaim, PieceSet, Rejection};
//! use pbts_verifier::receipt::PublicKeyBytes;
//!
//! let claim = PieceClaim {
//!     downloader: PublicKeyBytes([3; 48]),
//!     torrent: InfoHash([1; 20]),
//!     piece_index: 7,
//! };
//! let mut sets: HashMap<_, PieceSet> = HashMap::new();
//! let mut ledger = Ledger::new(Freshness::default());
//! let now = 1_000_010;
//!
//! // Reserve before verifying signatures; on success, record the piece and finish.
//! let credited = |c: &PieceClaim, sets: &HashMap<_, PieceSet>| {
//!     sets.get(&c.set_key()).is_some_and(|s| s.contains(c.piece_index))
//! };
//! let v = ledger.reserve(&[(claim, 1_000_000)], now, |c| Ok::<_, ()>(credited(c, &sets)));
//! assert_eq!(v, Ok(vec![Ok(())]));
//! sets.entry(claim.set_key()).or_default().insert(claim.piece_index);
//! ledger.finish(&claim);
//!
//! // The same piece again — re-signed later, by the same downloader — is refused.
//! let v = ledger.reserve(&[(claim, 1_000_005)], now, |c| Ok::<_, ()>(credited(c, &sets)));
//! assert_eq!(v, Ok(vec![Err(Rejection::AlreadyCredited)]));
//! ```

use core::fmt;
use std::collections::HashSet;

use pbts_proto::InfoHash;
use roaring::RoaringBitmap;

use crate::receipt::{PublicKeyBytes, Receipt};

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

impl Freshness {
    /// Whether a receipt signed at `timestamp` may be credited at `now` (both Unix seconds).
    /// Both edges are inclusive: age exactly `window_secs`, or exactly `max_future_secs` ahead,
    /// is fresh.
    ///
    /// # Errors
    ///
    /// [`Rejection::Stale`] or [`Rejection::Future`].
    pub fn check(&self, timestamp: u64, now: u64) -> Result<(), Rejection> {
        if timestamp > now {
            let ahead_secs = timestamp - now;
            if ahead_secs > self.max_future_secs {
                return Err(Rejection::Future { ahead_secs });
            }
        } else {
            let age_secs = now - timestamp;
            if age_secs > self.window_secs {
                return Err(Rejection::Stale { age_secs });
            }
        }
        Ok(())
    }
}

/// Why a receipt is not credited (before any signature check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The timestamp is older than the freshness window.
    Stale {
        /// `now - timestamp`.
        age_secs: u64,
    },
    /// The timestamp is further in the future than the clock-skew allowance.
    Future {
        /// `timestamp - now`.
        ahead_secs: u64,
    },
    /// This downloader's receipt for this piece of this torrent was credited before (to this
    /// or another uploader, with this or another timestamp).
    AlreadyCredited,
    /// An earlier receipt in the same batch claims the same piece; the first one wins, even if
    /// a later one carries the valid signature (it can be submitted again once the first is
    /// refused).
    DuplicateInBatch,
    /// Another batch claiming this piece is being verified right now. If that receipt fails
    /// its signature check the reservation is dropped and this one may be submitted again.
    InFlight,
}

impl Rejection {
    /// A short fixed reason, suitable for a failure response.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale { .. } => "stale receipt",
            Self::Future { .. } => "timestamp in the future",
            Self::AlreadyCredited => "piece already credited for this downloader",
            Self::DuplicateInBatch => "another receipt in this report claims the same piece",
            Self::InFlight => "a receipt for this piece is already being verified",
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

/// The identity of one credit: this downloader received this piece of this torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceClaim {
    /// The signer's public key.
    pub downloader: PublicKeyBytes,
    /// The torrent, by its canonical info-hash: a hybrid torrent announced under its v1 and its
    /// truncated v2 hash is one torrent, and the engine maps both to the same hash here.
    pub torrent: InfoHash,
    /// The piece.
    pub piece_index: u32,
}

impl PieceClaim {
    /// The claim of `r` for the torrent whose canonical hash is `torrent`.
    pub fn of(r: &Receipt, torrent: InfoHash) -> Self {
        Self { downloader: r.receiver_pk, torrent, piece_index: r.piece_index }
    }

    /// The key of the [`PieceSet`] this claim belongs to: `downloader (48) ‖ torrent (20)`.
    pub fn set_key(&self) -> SetKey {
        let mut k = [0u8; SET_KEY_LEN];
        k[..48].copy_from_slice(&self.downloader.0);
        k[48..].copy_from_slice(&self.torrent.0);
        SetKey(k)
    }
}

/// Length of a [`SetKey`].
pub const SET_KEY_LEN: usize = 68;

/// `downloader public key (48 bytes) ‖ canonical info-hash (20 bytes)`: the database key of a
/// [`PieceSet`], ordered so that one downloader's sets are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetKey(pub [u8; SET_KEY_LEN]);

/// Why stored [`PieceSet`] bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PieceSetError(String);

impl fmt::Display for PieceSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt piece set: {}", self.0)
    }
}

impl std::error::Error for PieceSetError {}

/// The piece indices credited for one (downloader, torrent): a roaring bitmap, a few bytes for
/// a handful of pieces, about one bit per piece for a whole torrent.
#[derive(Clone, Default, PartialEq)]
pub struct PieceSet(RoaringBitmap);

impl fmt::Debug for PieceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PieceSet({} pieces)", self.0.len())
    }
}

impl PieceSet {
    /// Whether `index` was credited.
    pub fn contains(&self, index: u32) -> bool {
        self.0.contains(index)
    }

    /// Records `index`; `false` if it was already there.
    pub fn insert(&mut self, index: u32) -> bool {
        self.0.insert(index)
    }

    /// Pieces recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// No piece recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of [`PieceSet::to_bytes`].
    pub fn serialized_size(&self) -> usize {
        self.compact().serialized_size()
    }

    /// The portable roaring serialization (the format other roaring libraries read), with runs
    /// of consecutive pieces stored as runs: a torrent downloaded whole costs a few bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let compact = self.compact();
        let mut out = Vec::with_capacity(compact.serialized_size());
        compact.serialize_into(&mut out).expect("writing into a Vec cannot fail");
        out
    }

    /// The bitmap with each container in its smallest form (array, bitmap or runs).
    fn compact(&self) -> RoaringBitmap {
        let mut b = self.0.clone();
        b.optimize();
        b
    }

    /// Decodes [`PieceSet::to_bytes`]'s output, checking it fully.
    ///
    /// # Errors
    ///
    /// [`PieceSetError`] for bytes that are not a valid serialization.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PieceSetError> {
        RoaringBitmap::deserialize_from(bytes).map(Self).map_err(|e| PieceSetError(e.to_string()))
    }
}

/// The freshness rule and the claims reserved by batches being verified.
///
/// Not synchronised: the engine owns it on one thread and calls [`Ledger::reserve`] atomically
/// per batch, so no other batch can claim a piece between the check and the mark.
#[derive(Clone, Debug)]
pub struct Ledger {
    freshness: Freshness,
    reserved: HashSet<PieceClaim>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(freshness: Freshness) -> Self {
        Self { freshness, reserved: HashSet::new() }
    }

    /// The freshness rule in force.
    pub fn freshness(&self) -> Freshness {
        self.freshness
    }

    /// Changes the freshness rule (an operator raising or lowering the window at run time).
    /// Raising it reopens nothing: credited claims are kept for good, whatever the window.
    pub fn set_freshness(&mut self, freshness: Freshness) {
        self.freshness = freshness;
    }

    /// Checks a batch about to be verified — each claim with its receipt's timestamp — and
    /// reserves the accepted claims. One verdict per claim, in order. `credited(claim)` says
    /// whether the claim was credited before (the engine reads its persisted piece sets); it
    /// is asked only for fresh claims.
    ///
    /// A claim is accepted when its timestamp is fresh, it was never credited, no other batch
    /// holds it ([`Rejection::InFlight`]) and no earlier claim of `claims` is the same
    /// ([`Rejection::DuplicateInBatch`]). Every `Ok` must later be [`Ledger::finish`]ed; until
    /// then a concurrent batch with the same claim is told `InFlight`.
    ///
    /// # Errors
    ///
    /// The first error of `credited`; nothing is reserved then.
    pub fn reserve<E>(
        &mut self,
        claims: &[(PieceClaim, u64)],
        now: u64,
        mut credited: impl FnMut(&PieceClaim) -> Result<bool, E>,
    ) -> Result<Vec<Result<(), Rejection>>, E> {
        let mut verdicts = Vec::with_capacity(claims.len());
        let mut this_batch = HashSet::with_capacity(claims.len());
        for (claim, timestamp) in claims {
            let verdict = match self.freshness.check(*timestamp, now) {
                Err(e) => Err(e),
                Ok(()) if this_batch.contains(claim) => Err(Rejection::DuplicateInBatch),
                Ok(()) if self.reserved.contains(claim) => Err(Rejection::InFlight),
                Ok(()) => match credited(claim) {
                    Ok(true) => Err(Rejection::AlreadyCredited),
                    Ok(false) => {
                        this_batch.insert(*claim);
                        Ok(())
                    }
                    Err(e) => return Err(e),
                },
            };
            verdicts.push(verdict);
        }
        self.reserved.extend(this_batch);
        Ok(verdicts)
    }

    /// Drops the reservation of `claim`: after the engine committed it to its piece set, or
    /// when its signature failed (so a correctly signed receipt can claim the piece later).
    pub fn finish(&mut self, claim: &PieceClaim) {
        self.reserved.remove(claim);
    }

    /// Claims reserved by batches being verified.
    pub fn reserved_len(&self) -> usize {
        self.reserved.len()
    }

    /// Whether `claim` is reserved by a batch being verified.
    pub fn is_reserved(&self, claim: &PieceClaim) -> bool {
        self.reserved.contains(claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const NOW: u64 = 1_700_000_000;

    fn claim(downloader: u8, torrent: u8, piece_index: u32) -> PieceClaim {
        PieceClaim {
            downloader: PublicKeyBytes([downloader; 48]),
            torrent: InfoHash([torrent; 20]),
            piece_index,
        }
    }

    /// A ledger with its piece sets, as the engine keeps them.
    #[derive(Default)]
    struct Books {
        sets: HashMap<SetKey, PieceSet>,
    }

    impl Books {
        fn credited(&self, c: &PieceClaim) -> bool {
            self.sets.get(&c.set_key()).is_some_and(|s| s.contains(c.piece_index))
        }

        fn reserve(
            &self,
            l: &mut Ledger,
            claims: &[(PieceClaim, u64)],
        ) -> Vec<Result<(), Rejection>> {
            l.reserve(claims, NOW, |c| Ok::<_, ()>(self.credited(c))).unwrap()
        }

        fn commit(&mut self, l: &mut Ledger, c: &PieceClaim) {
            assert!(self.sets.entry(c.set_key()).or_default().insert(c.piece_index));
            l.finish(c);
        }
    }

    #[test]
    fn freshness_edges() {
        let f = Freshness { window_secs: 100, max_future_secs: 10 };
        assert_eq!(f.check(NOW - 100, NOW), Ok(()));
        assert_eq!(f.check(NOW - 101, NOW), Err(Rejection::Stale { age_secs: 101 }));
        assert_eq!(f.check(NOW + 10, NOW), Ok(()));
        assert_eq!(f.check(NOW + 11, NOW), Err(Rejection::Future { ahead_secs: 11 }));
        assert_eq!(f.check(NOW, NOW), Ok(()));
        assert_eq!(Freshness::default(), Freshness { window_secs: 3600, max_future_secs: 300 });
    }

    #[test]
    fn rejection_texts() {
        assert_eq!(Rejection::Stale { age_secs: 7 }.to_string(), "stale receipt (age 7 s)");
        assert_eq!(
            Rejection::Future { ahead_secs: 9 }.to_string(),
            "timestamp in the future (9 s ahead)"
        );
        assert_eq!(
            Rejection::AlreadyCredited.to_string(),
            "piece already credited for this downloader"
        );
        assert_eq!(
            Rejection::DuplicateInBatch.to_string(),
            "another receipt in this report claims the same piece"
        );
        assert_eq!(
            Rejection::InFlight.to_string(),
            "a receipt for this piece is already being verified"
        );
    }

    #[test]
    fn a_piece_is_credited_once_whatever_the_timestamp() {
        let (mut l, mut books) = (Ledger::new(Freshness::default()), Books::default());
        let c = claim(1, 1, 0);
        assert_eq!(books.reserve(&mut l, &[(c, NOW)]), vec![Ok(())]);
        books.commit(&mut l, &c);
        for ts in [NOW - 1, NOW - 3600, NOW + 300, NOW] {
            assert_eq!(books.reserve(&mut l, &[(c, ts)]), vec![Err(Rejection::AlreadyCredited)]);
        }
        // Another piece, another torrent, another downloader: separate claims.
        let others = [claim(1, 1, 1), claim(1, 2, 0), claim(2, 1, 0)];
        let batch: Vec<_> = others.iter().map(|&c| (c, NOW)).collect();
        assert_eq!(books.reserve(&mut l, &batch), vec![Ok(()), Ok(()), Ok(())]);
        assert_eq!(l.reserved_len(), 3);
    }

    #[test]
    fn stale_and_future_claims_are_refused_before_the_books_are_read() {
        let mut l = Ledger::new(Freshness { window_secs: 10, max_future_secs: 5 });
        let mut asked = 0;
        let v = l
            .reserve(&[(claim(1, 1, 0), NOW - 11), (claim(1, 1, 1), NOW + 6)], NOW, |_| {
                asked += 1;
                Ok::<_, ()>(false)
            })
            .unwrap();
        assert_eq!(
            v,
            vec![Err(Rejection::Stale { age_secs: 11 }), Err(Rejection::Future { ahead_secs: 6 })]
        );
        assert_eq!((asked, l.reserved_len()), (0, 0));
    }

    #[test]
    fn duplicates_in_one_batch_and_in_flight_across_batches() {
        let (mut l, mut books) = (Ledger::new(Freshness::default()), Books::default());
        let c = claim(1, 1, 4);
        let v = books.reserve(&mut l, &[(c, NOW), (c, NOW - 5), (claim(1, 1, 5), NOW)]);
        assert_eq!(v, vec![Ok(()), Err(Rejection::DuplicateInBatch), Ok(())]);
        // A concurrent batch is told the piece is in flight.
        assert_eq!(books.reserve(&mut l, &[(c, NOW)]), vec![Err(Rejection::InFlight)]);
        // The first copy's signature failed: released, the piece can be claimed again.
        l.finish(&c);
        assert_eq!(books.reserve(&mut l, &[(c, NOW)]), vec![Ok(())]);
        books.commit(&mut l, &c);
        assert_eq!(books.reserve(&mut l, &[(c, NOW)]), vec![Err(Rejection::AlreadyCredited)]);
    }

    #[test]
    fn a_books_error_reserves_nothing() {
        let mut l = Ledger::new(Freshness::default());
        let r = l.reserve(&[(claim(1, 1, 0), NOW), (claim(1, 1, 1), NOW)], NOW, |c| {
            if c.piece_index == 1 { Err("disk") } else { Ok(false) }
        });
        assert_eq!(r, Err("disk"));
        assert_eq!(l.reserved_len(), 0);
    }

    #[test]
    fn set_keys_group_a_downloaders_sets() {
        let c = claim(7, 9, 3);
        let k = c.set_key();
        assert_eq!(&k.0[..48], &[7; 48]);
        assert_eq!(&k.0[48..], &[9; 20]);
        assert_eq!(claim(7, 9, 4).set_key(), k, "the piece index is not part of the set key");
        assert!(claim(7, 9, 0).set_key() < claim(8, 0, 0).set_key());
    }

    #[test]
    fn piece_sets_round_trip_and_refuse_garbage() {
        let mut s = PieceSet::default();
        assert!(s.is_empty());
        for i in [0, 1, 2, 70_000, u32::MAX] {
            assert!(s.insert(i));
        }
        assert!(!s.insert(2));
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), s.serialized_size());
        assert_eq!(PieceSet::from_bytes(&bytes), Ok(s.clone()));
        assert_eq!(s.len(), 5);
        assert!(PieceSet::from_bytes(&[1, 2, 3]).is_err());
        assert!(PieceSet::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_whole_torrent_is_a_run_of_a_few_bytes() {
        let mut s = PieceSet::default();
        for i in 0..100_000 {
            s.insert(i);
        }
        assert!(s.serialized_size() < 64, "{}", s.serialized_size());
        assert_eq!(PieceSet::from_bytes(&s.to_bytes()).unwrap().len(), 100_000);
    }
}
