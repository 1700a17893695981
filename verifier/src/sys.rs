//! The crate's only `unsafe`: hashing a message to G2 as a point.
//!
//! blst's safe Rust API hashes to the curve only inside signing and verification; the batched
//! pipeline needs `H(m)` itself to group receipts by signer (see `batch`).

use blst::{blst_hash_to_g2, blst_p2, blst_p2_affine, blst_p2_to_affine};

/// `H(msg)` under `dst` (hash_to_curve, expand_message_xmd with SHA-256, SSWU, random oracle),
/// as an affine G2 point.
pub(crate) fn hash_to_g2(msg: &[u8], dst: &[u8]) -> blst_p2_affine {
    let mut point = blst_p2::default();
    let mut affine = blst_p2_affine::default();
    // SAFETY: `point` and `affine` are valid, exclusively borrowed outputs; `msg` and `dst` are
    // live slices whose pointers and lengths are passed together; `aug` is empty (null with
    // length 0, which blst accepts). blst reads only within the given lengths.
    unsafe {
        blst_hash_to_g2(
            &raw mut point,
            msg.as_ptr(),
            msg.len(),
            dst.as_ptr(),
            dst.len(),
            std::ptr::null(),
            0,
        );
        blst_p2_to_affine(&raw mut affine, &raw const point);
    }
    affine
}
