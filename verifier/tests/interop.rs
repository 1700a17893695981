//! Interoperability with another implementation of the same ciphersuite: Python's `py_ecc`
//! (`G2ProofOfPossession`, the library the original tracker used).
//!
//! **Requires `python3` with `py_ecc`** (`python3 -m pip install py_ecc`). The test fails, with
//! that instruction, if either is missing: a silent skip would hide a broken interop check.
//! It takes a few seconds: py_ecc needs 0.2–0.5 s per signature or verification.

#![allow(clippy::unwrap_used)]

use pbts_proto::InfoHash;
use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::{PieceHash, Receipt, SignatureBytes};
use std::collections::HashMap;
use std::process::Command;

fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

fn unhex(s: &str) -> Vec<u8> {
    const_hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// Runs the helper script and returns its `name=value` lines.
fn py_ecc(args: &[String]) -> HashMap<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py_ecc_interop.py");
    let out = Command::new("python3").arg(script).args(args).output().unwrap_or_else(|e| {
        panic!("interop test needs python3 with py_ecc (python3 -m pip install py_ecc): {e}")
    });
    assert!(
        out.status.success(),
        "interop test needs python3 with py_ecc (python3 -m pip install py_ecc); the helper \
         failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn py_ecc_agrees_byte_for_byte() {
    // The golden receipt of `keys::tests::golden_vectors`.
    let ikm = [0x02; 32];
    let uploader = SecretKey::from_ikm(&[0x01; 32]).unwrap();
    let downloader = SecretKey::from_ikm(&ikm).unwrap();
    let pk = downloader.public_key();
    let mut r = Receipt {
        info_hash: InfoHash(*b"pbts-golden-infohash"),
        sender_pk: uploader.public_key().to_bytes(),
        receiver_pk: pk.to_bytes(),
        piece_hash: PieceHash::from_slice(b"pbts-golden-piece-h1").unwrap(),
        piece_index: 7,
        timestamp: 1_700_000_000,
        signature: SignatureBytes([0; 96]),
    };
    downloader.sign_receipt(&mut r);
    let msg = r.message();
    let pop = downloader.prove_possession();

    let py = py_ecc(&[
        hex(&ikm),
        hex(downloader.to_bytes().as_ref()),
        hex(&pk.to_bytes().0),
        hex(&msg),
        hex(&r.signature.0),
        hex(&pop.0),
    ]);
    let get = |k: &str| py.get(k).unwrap_or_else(|| panic!("helper printed no {k}: {py:?}"));

    // Same KeyGen, same key encoding.
    assert_eq!(get("keygen_sk"), &hex(downloader.to_bytes().as_ref()));
    assert_eq!(get("sk_to_pk"), &hex(&pk.to_bytes().0));
    // py_ecc's signature is ours, byte for byte, and verifies with our code.
    assert_eq!(get("sign"), &hex(&r.signature.0));
    let theirs = SignatureBytes(unhex(get("sign")).try_into().unwrap());
    assert_eq!(pk.verify(&msg, &theirs), Ok(()));
    // Same proof of possession, and it verifies here.
    assert_eq!(get("pop_prove"), &hex(&pop.0));
    let their_pop = SignatureBytes(unhex(get("pop_prove")).try_into().unwrap());
    assert_eq!(pk.verify_possession(&their_pop), Ok(()));
    // py_ecc accepts our signature and proof, and rejects a tampered message.
    assert_eq!(get("verify"), "true");
    assert_eq!(get("pop_verify"), "true");
    assert_eq!(get("verify_tampered"), "false");
}
