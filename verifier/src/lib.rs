//! # pbts-verifier
//!
//! Upload credit proven by downloaders' signatures. Pure: no threads, no async runtime and no
//! I/O; the engine runs [`batch::verify_batch`] on its verifier workers and persists the piece
//! sets [`credit`] reads.
//!
//! - [`keys`]: BLS12-381 min-pk keys (48-byte public keys, 96-byte signatures), ciphersuite
//!   `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`, IETF KeyGen, proofs of possession.
//! - [`receipt`]: the receipt a downloader signs and its canonical message
//!   `infohash ‖ sender_pk ‖ piece_hash ‖ u32be(piece_index) ‖ u64be(timestamp)`.
//! - [`batch`]: batched aggregate verification (grouping by signer, random scalars, one final
//!   exponentiation per batch, bisection on failure: a verdict per receipt).
//! - [`credit`]: each (downloader, torrent, piece index) is credited at most once, ever;
//!   freshness window; roaring piece sets.
//! - [`bep10`]: peer-to-peer receipt exchange over the BEP 10 extension protocol.

#![deny(unsafe_code)]

pub mod batch;
pub mod bep10;
pub mod credit;
pub mod fuzzing;
pub mod keys;
pub mod receipt;

#[allow(unsafe_code)]
mod sys;
