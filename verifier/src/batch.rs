//! Batched verification of receipts: one verdict per receipt, at a fraction of the cost of
//! verifying them one by one.
//!
//! # Algorithm
//!
//! For a batch of `n` receipts `(pk_i, m_i, σ_i)`:
//!
//! 1. **Decode once.** Each distinct key (signer `receiver_pk` or credited `sender_pk`) is
//!    decompressed and validated once per batch (`KeyValidate`: on the curve, in the
//!    subgroup, not the identity). Each signature is decompressed and subgroup-checked. A
//!    receipt that fails here gets its own verdict ([`ReceiptError::MalformedSignerKey`],
//!    [`ReceiptError::MalformedSenderKey`], [`ReceiptError::MalformedSignature`], checked in
//!    that order) and leaves the batch. An identity signature is well formed but can never
//!    verify (keys and hashes are never the identity), so it is a
//!    [`ReceiptError::BadSignature`] without further work. Every remaining message is hashed
//!    to G2 exactly once: `H_i = H(m_i)`.
//! 2. **Randomise.** Each receipt gets its own secret random scalar `r_i` in `[1, 2^64)`, drawn
//!    after the batch is fixed, and the receipts are grouped by signer.
//! 3. **One equation.** The batch passes if
//!
//!    ```text
//!    e(g1, Σ_i r_i·σ_i) == Π_j e(pk_j, Σ_{i ∈ S_j} r_i·H_i)        (S_j: receipts signed by j)
//!    ```
//!
//!    The left sum is one multi-scalar multiplication (Pippenger, 64-bit scalars) over all
//!    signatures; each right sum is one multi-scalar multiplication over that signer's hashes.
//!    A signer with a single receipt scales its key instead (`e(r_i·pk_j, H_i)`: a 64-bit
//!    multiplication in G1 is cheaper than one in G2). The projective sums are made affine in
//!    one batched inversion per group. That is one Miller loop per distinct signer, one for the
//!    signature side, and one final exponentiation for the whole batch (blst's `finalverify`
//!    exponentiates `conj(lhs)·rhs` once).
//! 4. **Bisect on failure.** A failing set is split in halves, reusing the decoded points,
//!    hashes and scalars (nothing is decoded or hashed twice). If the left half passes, the
//!    right half must contain a bad receipt, so it is split without being checked whole; a
//!    single receipt is checked alone with the plain, unrandomised equation
//!    `e(g1, σ) == e(pk, H(m))`. Once bad receipts turn out to be dense (at least one in
//!    eight of those resolved so far), sets known to fail are checked receipt by
//!    receipt instead, which bounds the cost of a batch of invalid receipts (the bench
//!    `verify_batch_all_bad`). Every receipt ends with its own verdict: a bad receipt never
//!    voids good ones.
//!
//! An empty batch is [`BatchError::Empty`], never a pass.
//!
//! # Why random 64-bit scalars, one per receipt
//!
//! All points are in prime-order groups (step 1 checks this; that is why the subgroup checks
//! are not optional), so write `δ_i = e(g1, σ_i) / e(pk_i, H_i)`, an element of the order-`q`
//! group `GT`; receipt `i` is valid exactly when `δ_i = 1`. The batch passes exactly when
//! `Π δ_i^{r_i} = 1`, i.e. `Σ r_i·log δ_i ≡ 0 (mod q)`. A batch of valid receipts always passes
//! (for any scalars), so a failing batch always contains an invalid receipt. If some `δ_k ≠ 1`,
//! then for any fixed choice of the other scalars exactly one residue of `r_k` mod `q` makes the
//! sum vanish, and `r_k` is uniform over `2^64 - 1` values below `q`: an invalid receipt slips
//! through with probability at most `2^-64` per check. Bisection performs at most `2n` checks
//! whose sets are fixed by the input alone, so by the union bound a batch accepts any invalid
//! receipt (or, through the "left passed, so right failed" shortcut, rejects a valid one) with
//! probability below `2n·2^-64`. The scalars come from the caller's CSPRNG after the receipts
//! are fixed and never leave the verifier, so an attacker cannot search for a lucky batch
//! offline: each try costs a submission.
//!
//! Without scalars (plain aggregate verification), or with one scalar per *signer*, errors
//! cancel: anyone holding two valid receipts of one signer can submit `(m_a, σ_a + Δ)` and
//! `(m_b, σ_b − Δ)` for any point `Δ`. Both are invalid, and both carry signature bytes never
//! seen before, yet `e(g1, r·(σ_a+Δ) + r·(σ_b−Δ)) = e(pk, r·(H_a+H_b))` holds. With one scalar
//! per receipt the `Δ` terms survive as `(r_a − r_b)·Δ`. (Across signers, plain aggregation has
//! the same hole.) The tests include both attacks.
//!
//! # Hashing to G2
//!
//! Grouping by signer needs `H(m)` as a point, and blst's safe Rust API hashes to the curve only
//! inside signing, `Pairing::aggregate` and the verify functions. [`crate::sys::hash_to_g2`]
//! makes the one `unsafe` call this crate has (`blst_hash_to_g2`, then `blst_p2_to_affine`);
//! a test checks it against signing with secret key 1, which is `H(m)` by definition. (A safe
//! alternative, signing with key 1 in production, costs ~205 µs more per receipt because
//! blst multiplies by the key in constant time.)
//!
//! # Measured costs
//!
//! `cargo bench -p pbts-benches --bench verifier_batch`, one thread, per receipt, on the
//! shared 2-core development VM (AMD EPYC, blst 0.3.17 default build):
//!
//! ```text
//!                                                     per receipt  vs verify_one
//! verify_one (both keys, signature, verify)             1426 µs     1.00
//! blst verify alone (key already decoded)               1290 µs     0.90
//! blst verify_multiple, 1024 receipts, 16 signers        645 µs     0.45
//! verify_batch,         1024 receipts, 16 signers        347 µs     0.24
//! verify_batch,           64 receipts, 16 signers        459 µs     0.32
//! verify_batch,           32 receipts, 1 signer          395 µs     0.28  (2026-12-04)
//! verify_batch,          256 receipts, 1 signer          359 µs     0.25  (2026-12-04)
//! blst verify_multiple, 1024 receipts, 1024 signers      713 µs     0.50
//! verify_batch,         1024 receipts, 1024 signers      629 µs     0.44
//! verify_batch,         1024 receipts, 16, all invalid  1601 µs     1.12
//! VerifierPool, 1 thread,  1024 receipts, 16 signers     349 µs     0.24
//! VerifierPool, 2 threads, 1024 receipts, 16 signers     177 µs     0.12  (1.98× the throughput)
//! ```
//!
//! The parts: hash to G2 210 µs; signature decompression 35 µs and subgroup check 59 µs; key
//! validation 68 µs per distinct key; each extra Miller-loop pair ~190 µs; the final
//! exponentiation ~400 µs per check; G2 multi-scalar multiplication with 64-bit scalars 12 µs
//! per point at 1024 points, 21 µs at 64; the read-back ~3 µs. With 16 signers the pipeline is
//! within ~10% of its floor (hashing plus signature decoding, ~305 µs). With a signer per
//! receipt each receipt pays a key validation and a Miller-loop pair, as blst's batch does,
//! but the signature side is one multi-scalar multiplication instead of a 64-bit
//! multiplication per signature.

use crate::keys::{self, DST, PublicKey, VerifyError};
use crate::receipt::{MAX_MESSAGE_LEN, PublicKeyBytes, Receipt};
use blst::min_pk;
use blst::{
    BLST_ERROR, MultiPoint, blst_fp12, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine,
    blst_scalar, p1_affines, p2_affines,
};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Bits of each random batch scalar.
pub const RAND_BITS: usize = 64;

/// Why a receipt failed cryptographic verification. Freshness and duplicates are
/// [`crate::nullifier`]'s concern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptError {
    /// `sender_pk` is not a valid key: the credit would go to nobody.
    MalformedSenderKey,
    /// `receiver_pk` (the signer) is not a valid key.
    MalformedSignerKey,
    /// The signature is not a compressed G2 point in the subgroup.
    MalformedSignature,
    /// A well-formed signature that does not verify.
    BadSignature,
}

impl ReceiptError {
    /// A short reason for a failure response.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedSenderKey => "malformed sender key",
            Self::MalformedSignerKey => "malformed signer key",
            Self::MalformedSignature => "malformed signature",
            Self::BadSignature => "bad signature",
        }
    }
}

impl core::fmt::Display for ReceiptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ReceiptError {}

/// A batch could not be verified at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// No receipts: an empty batch proves nothing and is not a pass.
    Empty,
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty batch",
        })
    }
}

impl std::error::Error for BatchError {}

/// Verifies one receipt on its own with blst's `verify` (an implementation independent of the
/// batch equation; the tests use it as the oracle).
///
/// # Errors
///
/// The receipt's [`ReceiptError`]; the checks run in the batch's order (signer key, sender key,
/// signature), so both give the same verdict.
pub fn verify_one(r: &Receipt) -> Result<(), ReceiptError> {
    let signer =
        PublicKey::from_bytes(&r.receiver_pk).map_err(|_| ReceiptError::MalformedSignerKey)?;
    PublicKey::from_bytes(&r.sender_pk).map_err(|_| ReceiptError::MalformedSenderKey)?;
    signer.verify(&r.message(), &r.signature).map_err(|e| match e {
        VerifyError::MalformedSignature | VerifyError::SignatureNotInSubgroup => {
            ReceiptError::MalformedSignature
        }
        VerifyError::BadSignature => ReceiptError::BadSignature,
    })
}

/// Verifies a batch: one verdict per receipt, in input order (see the module docs).
/// `rng` must be a cryptographically secure generator (`rand::rng()`, `StdRng`): the scalars it
/// draws are what makes the batch sound, hence the `CryptoRng` bound.
///
/// # Errors
///
/// [`BatchError::Empty`] for no receipts.
pub fn verify_batch(
    receipts: &[Receipt],
    rng: &mut impl rand::CryptoRng,
) -> Result<Vec<Result<(), ReceiptError>>, BatchError> {
    if receipts.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut verdicts = vec![Ok(()); receipts.len()];
    let mut keys = KeyCache::default();
    let mut msg = Vec::with_capacity(MAX_MESSAGE_LEN);
    let mut items = Vec::with_capacity(receipts.len());
    for (input, r) in receipts.iter().enumerate() {
        let Some(signer) = keys.index_of(&r.receiver_pk) else {
            verdicts[input] = Err(ReceiptError::MalformedSignerKey);
            continue;
        };
        if keys.index_of(&r.sender_pk).is_none() {
            verdicts[input] = Err(ReceiptError::MalformedSenderKey);
            continue;
        }
        let sig = match keys::decode_signature(&r.signature) {
            Ok(sig) => blst_p2_affine::from(sig),
            Err(_) => {
                verdicts[input] = Err(ReceiptError::MalformedSignature);
                continue;
            }
        };
        if sig == blst_p2_affine::default() {
            verdicts[input] = Err(ReceiptError::BadSignature);
            continue;
        }
        msg.clear();
        r.write_message(&mut msg);
        let hash = crate::sys::hash_to_g2(&msg, DST);
        items.push(Item { input, signer, sig, hash, scalar: nonzero_scalar(rng) });
    }
    // Stable: within a signer the input order is kept, which keeps bisection deterministic.
    items.sort_by_key(|it| it.signer);
    let mut checker = Checker { keys: &keys.points, g1: generator_g1(), resolved: 0, bad: 0 };
    checker.resolve(&items, false, &mut verdicts);
    Ok(verdicts)
}

/// The baseline: blst's own `verify_multiple_aggregate_signatures` (random 64-bit scalars, one
/// Miller loop per receipt) over the whole batch, after the same key checks as
/// [`verify_batch`] (each distinct key validated once). All or nothing: `true` only if every
/// receipt is valid. For benches and comparison; an empty batch is `false`.
pub fn blst_batch_verify(receipts: &[Receipt], rng: &mut impl rand::CryptoRng) -> bool {
    if receipts.is_empty() {
        return false;
    }
    let mut cache: HashMap<PublicKeyBytes, Option<min_pk::PublicKey>> = HashMap::new();
    let mut key = |b: &PublicKeyBytes| {
        *cache.entry(*b).or_insert_with(|| PublicKey::from_bytes(b).ok().map(|k| *k.as_blst()))
    };
    let mut pks = Vec::with_capacity(receipts.len());
    let mut sigs = Vec::with_capacity(receipts.len());
    let mut msgs = Vec::with_capacity(receipts.len());
    let mut rands = Vec::with_capacity(receipts.len());
    for r in receipts {
        let (Some(signer), Some(_)) = (key(&r.receiver_pk), key(&r.sender_pk)) else {
            return false;
        };
        let Ok(sig) = min_pk::Signature::uncompress(&r.signature.0) else {
            return false;
        };
        pks.push(signer);
        sigs.push(sig);
        msgs.push(r.message());
        let mut scalar = blst_scalar::default();
        scalar.b[..8].copy_from_slice(&nonzero_scalar(rng));
        rands.push(scalar);
    }
    let pks: Vec<&min_pk::PublicKey> = pks.iter().collect();
    let sigs: Vec<&min_pk::Signature> = sigs.iter().collect();
    let msgs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    min_pk::Signature::verify_multiple_aggregate_signatures(
        &msgs, DST, &pks, false, &sigs, true, &rands, RAND_BITS,
    ) == BLST_ERROR::BLST_SUCCESS
}

/// A little-endian scalar in `[1, 2^64)`.
fn nonzero_scalar(rng: &mut impl rand::RngCore) -> [u8; 8] {
    loop {
        let r = rng.next_u64();
        if r != 0 {
            return r.to_le_bytes();
        }
    }
}

/// A receipt that survived decoding.
#[derive(Clone, Copy)]
struct Item {
    /// Position in the caller's slice.
    input: usize,
    /// Index of the signer's key in [`KeyCache::points`].
    signer: u32,
    sig: blst_p2_affine,
    /// `H(message)`.
    hash: blst_p2_affine,
    /// `r_i`, little-endian.
    scalar: [u8; 8],
}

/// Each distinct key decoded and validated once per batch.
#[derive(Default)]
struct KeyCache {
    index: HashMap<PublicKeyBytes, Option<u32>>,
    points: Vec<blst_p1_affine>,
}

impl KeyCache {
    /// The key's index in `points`, or `None` if it is not a valid key.
    fn index_of(&mut self, bytes: &PublicKeyBytes) -> Option<u32> {
        if let Some(known) = self.index.get(bytes) {
            return *known;
        }
        let found = PublicKey::from_bytes(bytes).ok().map(|pk| {
            self.points.push(blst_p1_affine::from(*pk.as_blst()));
            u32::try_from(self.points.len() - 1).expect("a batch holds fewer than 2^32 keys")
        });
        self.index.insert(*bytes, found);
        found
    }
}

/// Bisection switches to checking receipt by receipt once at least one in this many of the
/// receipts resolved so far was bad. Bisecting a set where bad receipts are dense costs about
/// twice as much as verifying each receipt alone (the many small checks each pay a final
/// exponentiation and Miller loops while saving little). With the switch, no arrangement of
/// bad receipts in a cost-model simulation (random, periodic, clustered; 1 to 1024 of 1024)
/// came out above ~1.3× single checks, and an all-invalid batch measures 1.12× `verify_one`
/// per receipt (1.64 s for 1024 receipts, against 3.0 s without the switch).
const DENSE_ONE_IN: usize = 8;

struct Checker<'a> {
    keys: &'a [blst_p1_affine],
    g1: &'a blst_p1_affine,
    /// Receipts given a verdict so far, and how many of them were bad.
    resolved: usize,
    bad: usize,
}

impl Checker<'_> {
    /// Gives every receipt in `items` a verdict. `known_failed`: the set is known to contain a
    /// bad receipt, so checking it whole would be wasted.
    fn resolve(
        &mut self,
        items: &[Item],
        known_failed: bool,
        verdicts: &mut [Result<(), ReceiptError>],
    ) {
        if let ([one], true) = (items, known_failed) {
            self.settle(one, false, verdicts);
            return;
        }
        if known_failed && self.bad * DENSE_ONE_IN >= self.resolved.max(1) {
            for it in items {
                let good = self.check(core::slice::from_ref(it));
                self.settle(it, good, verdicts);
            }
            return;
        }
        if !known_failed && self.check(items) {
            self.resolved += items.len();
            return;
        }
        if let [one] = items {
            self.settle(one, false, verdicts);
            return;
        }
        let (left, right) = items.split_at(items.len() / 2);
        if self.check(left) {
            self.resolved += left.len();
            // The whole failed and the left is good, so the right holds a bad receipt.
            self.resolve(right, true, verdicts);
        } else {
            self.resolve(left, true, verdicts);
            self.resolve(right, false, verdicts);
        }
    }

    fn settle(&mut self, it: &Item, good: bool, verdicts: &mut [Result<(), ReceiptError>]) {
        self.resolved += 1;
        if !good {
            self.bad += 1;
            verdicts[it.input] = Err(ReceiptError::BadSignature);
        }
    }

    /// Whether the set's equation holds. `items` is grouped by signer.
    fn check(&self, items: &[Item]) -> bool {
        match items {
            [] => true,
            [one] => {
                // A single receipt: the plain equation, no scalar needed.
                let lhs = miller_loop(&[one.sig], &[*self.g1]);
                let rhs = miller_loop(&[one.hash], &[self.keys[one.signer as usize]]);
                blst_fp12::finalverify(&lhs, &rhs)
            }
            _ => self.check_randomised(items),
        }
    }

    fn check_randomised(&self, items: &[Item]) -> bool {
        let scalars: Vec<u8> = items.iter().flat_map(|it| it.scalar).collect();
        let sigs: Vec<blst_p2_affine> = items.iter().map(|it| it.sig).collect();
        // G2 sums: [Σ r_i σ_i, then Σ r_i H_i per signer with several receipts].
        let mut g2_sums: Vec<blst_p2> = vec![sigs.mult(&scalars, RAND_BITS)];
        let mut g2_keys: Vec<blst_p1_affine> = Vec::new();
        // Signers with one receipt: r_i·pk in G1, paired with H_i.
        let mut g1_scaled: Vec<blst_p1> = Vec::new();
        let mut g1_hashes: Vec<blst_p2_affine> = Vec::new();
        let mut start = 0;
        for run in items.chunk_by(|a, b| a.signer == b.signer) {
            let pk = self.keys[run[0].signer as usize];
            let run_scalars = &scalars[start * 8..(start + run.len()) * 8];
            if let [one] = run {
                g1_scaled.push([pk].mult(run_scalars, RAND_BITS));
                g1_hashes.push(one.hash);
            } else {
                let hashes: Vec<blst_p2_affine> = run.iter().map(|it| it.hash).collect();
                g2_sums.push(hashes.mult(run_scalars, RAND_BITS));
                g2_keys.push(pk);
            }
            start += run.len();
        }
        // One batched inversion per group turns the sums affine.
        let g2_sums = p2_affines::from(&g2_sums);
        let g2_sums = g2_sums.as_slice();
        let mut qs: Vec<blst_p2_affine> = Vec::with_capacity(g2_keys.len() + g1_hashes.len());
        let mut ps: Vec<blst_p1_affine> = Vec::with_capacity(qs.capacity());
        qs.extend_from_slice(&g2_sums[1..]);
        ps.extend_from_slice(&g2_keys);
        if !g1_scaled.is_empty() {
            let scaled = p1_affines::from(&g1_scaled);
            qs.extend_from_slice(&g1_hashes);
            ps.extend_from_slice(scaled.as_slice());
        }
        let lhs = miller_loop(&g2_sums[..1], &[*self.g1]);
        let rhs = miller_loop(&qs, &ps);
        blst_fp12::finalverify(&lhs, &rhs)
    }
}

/// `Π e(p_k, q_k)` before the final exponentiation, skipping pairs with an identity point
/// (their pairing is 1; blst's Miller loop is not meant for them).
fn miller_loop(qs: &[blst_p2_affine], ps: &[blst_p1_affine]) -> blst_fp12 {
    debug_assert_eq!(qs.len(), ps.len());
    let inf_q = blst_p2_affine::default();
    let inf_p = blst_p1_affine::default();
    if qs.iter().zip(ps).all(|(q, p)| *q != inf_q && *p != inf_p) {
        return match qs.len() {
            0 => blst_fp12::default(),
            _ => blst_fp12::miller_loop_n(qs, ps),
        };
    }
    let (qs, ps): (Vec<_>, Vec<_>) =
        qs.iter().zip(ps).filter(|(q, p)| **q != inf_q && **p != inf_p).unzip();
    match qs.len() {
        0 => blst_fp12::default(),
        _ => blst_fp12::miller_loop_n(&qs, &ps),
    }
}

/// Secret key 1: its signature on `m` is `H(m)`, and its public key is the G1 generator.
fn secret_key_one() -> &'static min_pk::SecretKey {
    static ONE: OnceLock<min_pk::SecretKey> = OnceLock::new();
    ONE.get_or_init(|| {
        let mut one = [0u8; 32];
        one[31] = 1;
        min_pk::SecretKey::from_bytes(&one).expect("1 is a valid scalar")
    })
}

/// The G1 generator, affine.
fn generator_g1() -> &'static blst_p1_affine {
    static G1: OnceLock<blst_p1_affine> = OnceLock::new();
    G1.get_or_init(|| blst_p1_affine::from(secret_key_one().sk_to_pk()))
}

/// `H(m)` by signing with secret key 1 (the test oracle for [`crate::sys::hash_to_g2`]).
#[cfg(test)]
fn sign_with_one(msg: &[u8]) -> blst_p2_affine {
    blst_p2_affine::from(secret_key_one().sign(msg, DST, &[]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::keys::tests::{g1_point_outside_subgroup, g2_point_outside_subgroup};
    use crate::receipt::{PieceHash, SignatureBytes};
    use pbts_proto::InfoHash;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// `k` signer keys from fixed seeds.
    pub(crate) fn signers(k: usize) -> Vec<SecretKey> {
        (0..k)
            .map(|i| {
                let mut ikm = [0x5a; 32];
                ikm[..8].copy_from_slice(&(i as u64).to_be_bytes());
                SecretKey::from_ikm(&ikm).unwrap()
            })
            .collect()
    }

    /// `n` valid receipts for one uploader, signed in turn by `k` signers.
    pub(crate) fn good_batch(n: usize, k: usize) -> Vec<Receipt> {
        let keys = signers(k);
        let sender = SecretKey::from_ikm(&[0xee; 32]).unwrap().public_key().to_bytes();
        (0..n)
            .map(|i| {
                let sk = &keys[i % k];
                let mut r = Receipt {
                    info_hash: InfoHash([(i % 7) as u8; 20]),
                    sender_pk: sender,
                    receiver_pk: sk.public_key().to_bytes(),
                    piece_hash: PieceHash::from_slice(&[(i % 256) as u8; 20]).unwrap(),
                    piece_index: i as u32,
                    timestamp: 1_700_000_000 + i as u64,
                    signature: SignatureBytes([0; 96]),
                };
                sk.sign_receipt(&mut r);
                r
            })
            .collect()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5eed)
    }

    /// Ways to spoil a valid receipt, and the verdict each must get.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Tamper {
        SignatureOverOtherMessage,
        SignatureByOtherKey,
        MalformedSignatureBytes,
        SignatureOutsideSubgroup,
        IdentitySignature,
        MalformedSignerKey,
        IdentitySignerKey,
        SignerKeyOutsideSubgroup,
        MalformedSenderKey,
        PieceIndexAltered,
        TimestampAltered,
        SenderAltered,
    }

    pub(crate) const TAMPERS: [Tamper; 12] = [
        Tamper::SignatureOverOtherMessage,
        Tamper::SignatureByOtherKey,
        Tamper::MalformedSignatureBytes,
        Tamper::SignatureOutsideSubgroup,
        Tamper::IdentitySignature,
        Tamper::MalformedSignerKey,
        Tamper::IdentitySignerKey,
        Tamper::SignerKeyOutsideSubgroup,
        Tamper::MalformedSenderKey,
        Tamper::PieceIndexAltered,
        Tamper::TimestampAltered,
        Tamper::SenderAltered,
    ];

    impl Tamper {
        pub(crate) fn apply(self, r: &mut Receipt) -> ReceiptError {
            let other = SecretKey::from_ikm(&[0x77; 32]).unwrap();
            let mut identity_g1 = [0u8; 48];
            identity_g1[0] = 0xc0;
            match self {
                Self::SignatureOverOtherMessage => {
                    // The right key's signature over a different message.
                    let mut copy = *r;
                    copy.piece_index ^= 0x8000_0000;
                    let sk = signer_of(&r.receiver_pk);
                    sk.sign_receipt(&mut copy);
                    r.signature = copy.signature;
                    ReceiptError::BadSignature
                }
                Self::SignatureByOtherKey => {
                    other.sign_receipt(r);
                    ReceiptError::BadSignature
                }
                Self::MalformedSignatureBytes => {
                    r.signature = SignatureBytes([0xff; 96]);
                    ReceiptError::MalformedSignature
                }
                Self::SignatureOutsideSubgroup => {
                    r.signature = g2_point_outside_subgroup();
                    ReceiptError::MalformedSignature
                }
                Self::IdentitySignature => {
                    let mut b = [0u8; 96];
                    b[0] = 0xc0;
                    r.signature = SignatureBytes(b);
                    ReceiptError::BadSignature
                }
                Self::MalformedSignerKey => {
                    r.receiver_pk.0[0] &= 0x7f;
                    ReceiptError::MalformedSignerKey
                }
                Self::IdentitySignerKey => {
                    r.receiver_pk = PublicKeyBytes(identity_g1);
                    ReceiptError::MalformedSignerKey
                }
                Self::SignerKeyOutsideSubgroup => {
                    r.receiver_pk = g1_point_outside_subgroup();
                    ReceiptError::MalformedSignerKey
                }
                Self::MalformedSenderKey => {
                    r.sender_pk = PublicKeyBytes([0xff; 48]);
                    ReceiptError::MalformedSenderKey
                }
                Self::PieceIndexAltered => {
                    r.piece_index = r.piece_index.wrapping_add(1);
                    ReceiptError::BadSignature
                }
                Self::TimestampAltered => {
                    r.timestamp += 1;
                    ReceiptError::BadSignature
                }
                Self::SenderAltered => {
                    r.sender_pk = other.public_key().to_bytes();
                    ReceiptError::BadSignature
                }
            }
        }
    }

    /// The fixed-seed key behind `pk` (searches the first 64 signers).
    fn signer_of(pk: &PublicKeyBytes) -> SecretKey {
        signers(64).into_iter().find(|sk| sk.public_key().to_bytes() == *pk).unwrap()
    }

    fn oracle(receipts: &[Receipt]) -> Vec<Result<(), ReceiptError>> {
        receipts.iter().map(verify_one).collect()
    }

    #[test]
    fn hash_to_g2_equals_signing_with_key_one() {
        for msg in [&b""[..], b"a", &[0u8; 112], &[0xff; 1000]] {
            assert!(crate::sys::hash_to_g2(msg, DST) == sign_with_one(msg));
        }
        assert!(crate::sys::hash_to_g2(b"a", DST) != crate::sys::hash_to_g2(b"b", DST));
    }

    #[test]
    fn empty_batch_is_an_error() {
        assert_eq!(verify_batch(&[], &mut rng()), Err(BatchError::Empty));
        assert!(!blst_batch_verify(&[], &mut rng()));
        assert_eq!(BatchError::Empty.to_string(), "empty batch");
    }

    #[test]
    fn all_good_batches_pass() {
        for (n, k) in [(1, 1), (2, 1), (2, 2), (3, 2), (7, 3), (33, 4), (64, 1), (64, 64)] {
            let batch = good_batch(n, k);
            let verdicts = verify_batch(&batch, &mut rng()).unwrap();
            assert_eq!(verdicts, vec![Ok(()); n], "n={n} k={k}");
            assert!(blst_batch_verify(&batch, &mut rng()), "n={n} k={k}");
        }
        let (_, _, golden) = crate::keys::tests::golden_receipt();
        assert_eq!(verify_batch(&[golden], &mut rng()), Ok(vec![Ok(())]));
        assert_eq!(verify_one(&golden), Ok(()));
    }

    #[test]
    fn duplicates_verify_independently() {
        // Crypto does not judge duplicates; the nullifier does.
        let r = good_batch(1, 1)[0];
        assert_eq!(verify_batch(&[r, r, r], &mut rng()), Ok(vec![Ok(()); 3]));
    }

    #[test]
    fn each_kind_of_bad_receipt_gets_its_own_verdict() {
        let mut batch = good_batch(40, 5);
        let mut expected = vec![Ok(()); batch.len()];
        for (k, tamper) in TAMPERS.iter().enumerate() {
            let at = 3 * k + 1;
            expected[at] = Err(tamper.apply(&mut batch[at]));
        }
        assert_eq!(oracle(&batch), expected);
        assert_eq!(verify_batch(&batch, &mut rng()).unwrap(), expected);
        assert!(!blst_batch_verify(&batch, &mut rng()));
        // Each alone, and each alone among good ones.
        for tamper in TAMPERS {
            let mut one = good_batch(1, 1);
            let want = Err(tamper.apply(&mut one[0]));
            assert_eq!(verify_batch(&one, &mut rng()).unwrap(), vec![want], "{tamper:?}");
            let mut few = good_batch(3, 2);
            let want = Err(tamper.apply(&mut few[2]));
            assert_eq!(
                verify_batch(&few, &mut rng()).unwrap(),
                vec![Ok(()), Ok(()), want],
                "{tamper:?}"
            );
        }
    }

    #[test]
    fn all_bad_batch_bisects_to_every_receipt() {
        let mut batch = good_batch(16, 3);
        for r in &mut batch {
            r.timestamp += 1;
        }
        assert_eq!(
            verify_batch(&batch, &mut rng()).unwrap(),
            vec![Err(ReceiptError::BadSignature); 16]
        );
    }

    #[test]
    fn dense_and_sparse_bad_receipts() {
        // Alternating, clustered and isolated bad receipts: the dense-mode switch must not
        // change any verdict.
        let patterns: [fn(usize) -> bool; 4] =
            [|i| i % 2 == 1, |i| (20..40).contains(&i), |i| i == 63, |i| i % 9 == 0 || i > 56];
        for bad in patterns {
            let mut batch = fixture().to_vec();
            let mut expected = vec![Ok(()); batch.len()];
            for (i, r) in batch.iter_mut().enumerate() {
                if bad(i) {
                    r.piece_index ^= 1;
                    expected[i] = Err(ReceiptError::BadSignature);
                }
            }
            assert_eq!(verify_batch(&batch, &mut rng()).unwrap(), expected);
        }
    }

    /// `σ_a + Δ` and `σ_b − Δ`: both invalid, but their sum is the valid sum, so plain
    /// aggregate verification (or one scalar per signer) accepts them.
    fn cancelling_pair(a: &mut Receipt, b: &mut Receipt) {
        let delta = SecretKey::from_ikm(&[0x42; 32]).unwrap().sign(b"delta");
        let mut minus_delta = delta;
        minus_delta.0[0] ^= 0x20; // the sign bit of y: the negated point
        let add = |s: &SignatureBytes, d: &SignatureBytes| {
            let s = min_pk::Signature::uncompress(&s.0).unwrap();
            let d = min_pk::Signature::uncompress(&d.0).unwrap();
            let sum = min_pk::AggregateSignature::aggregate(&[&s, &d], true).unwrap();
            SignatureBytes(sum.to_signature().compress())
        };
        let (sa, sb) = (a.signature, b.signature);
        a.signature = add(&sa, &delta);
        b.signature = add(&sb, &minus_delta);
        // The attack is real: the sums agree.
        assert_eq!(add(&a.signature, &b.signature), add(&sa, &sb));
    }

    #[test]
    fn cancelling_invalid_signatures_are_both_rejected() {
        // Same signer (receipts 0 and 4 of 4 signers), and different signers (1 and 2).
        let mut batch = good_batch(12, 4);
        let (head, tail) = batch.split_at_mut(4);
        cancelling_pair(&mut head[0], &mut tail[0]);
        let (head, tail) = batch.split_at_mut(2);
        cancelling_pair(&mut head[1], &mut tail[0]);
        let mut expected = vec![Ok(()); 12];
        for i in [0, 1, 2, 4] {
            expected[i] = Err(ReceiptError::BadSignature);
        }
        assert_eq!(oracle(&batch), expected);
        for seed in 0..4 {
            let verdicts = verify_batch(&batch, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!(verdicts, expected, "seed {seed}");
        }
        // Just the pair, alone.
        let pair = [batch[0], batch[4]];
        assert_eq!(
            verify_batch(&pair, &mut rng()).unwrap(),
            vec![Err(ReceiptError::BadSignature); 2]
        );
        assert!(!blst_batch_verify(&pair, &mut rng()));
    }

    /// Returns zero a few times before real values: zero scalars must be skipped.
    struct ZerosFirst(u32, StdRng);

    // Test only: the zeros are the point.
    impl rand::CryptoRng for ZerosFirst {}

    impl rand::RngCore for ZerosFirst {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            if self.0 > 0 {
                self.0 -= 1;
                0
            } else {
                self.1.next_u64()
            }
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            self.1.fill_bytes(dst);
        }
    }

    #[test]
    fn zero_scalars_are_never_used() {
        let mut rng = ZerosFirst(5, rng());
        assert_eq!(
            nonzero_scalar(&mut rng),
            nonzero_scalar(&mut ZerosFirst(0, super::tests::rng()))
        );
        // With zero scalars an invalid receipt would vanish from the equation.
        let mut batch = good_batch(4, 2);
        batch[0].timestamp += 1;
        let verdicts = verify_batch(&batch, &mut ZerosFirst(2, super::tests::rng())).unwrap();
        assert_eq!(verdicts[0], Err(ReceiptError::BadSignature));
        assert_eq!(&verdicts[1..], &[Ok(()); 3]);
    }

    #[test]
    fn error_texts() {
        assert_eq!(ReceiptError::BadSignature.as_str(), "bad signature");
        assert_eq!(ReceiptError::MalformedSenderKey.to_string(), "malformed sender key");
        assert_eq!(ReceiptError::MalformedSignerKey.as_str(), "malformed signer key");
        assert_eq!(ReceiptError::MalformedSignature.as_str(), "malformed signature");
    }

    /// 64 valid receipts from 8 signers, signed once for all cases.
    fn fixture() -> &'static [Receipt] {
        static FIXTURE: OnceLock<Vec<Receipt>> = OnceLock::new();
        FIXTURE.get_or_init(|| good_batch(64, 8))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

        /// Any subset of bad receipts, of any kinds, in a batch of 64: the batch gives exactly
        /// the per-receipt verdicts of `verify_one`.
        #[test]
        fn batch_equals_one_by_one(
            tampers in proptest::collection::vec(
                proptest::option::weighted(0.2, 0..TAMPERS.len()),
                64,
            ),
            seed in any::<u64>(),
        ) {
            let mut batch = fixture().to_vec();
            let mut expected = vec![Ok(()); 64];
            for (i, t) in tampers.iter().enumerate() {
                if let Some(t) = t {
                    expected[i] = Err(TAMPERS[*t].apply(&mut batch[i]));
                }
            }
            prop_assert_eq!(&oracle(&batch), &expected);
            let verdicts = verify_batch(&batch, &mut StdRng::seed_from_u64(seed)).unwrap();
            prop_assert_eq!(verdicts, expected);
        }
    }
}
