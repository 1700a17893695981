//! Receipts for tests, benches and experiments: valid, deterministic, signed by chosen keys,
//! and spelled as the JSON API takes them.

use pbts_proto::InfoHash;
use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
use serde_json::{Value, json};

/// A deterministic key from a one-byte seed (IETF KeyGen over 32 copies of it).
///
/// # Panics
/// Never: 32 bytes of key material are always enough.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_ikm(&[seed; 32]).expect("32 bytes of input key material")
}

/// The receipt `signer` signs for piece `index` of `info_hash` received from `uploader`.
pub fn sign(
    info_hash: [u8; 20],
    uploader: PublicKeyBytes,
    signer: &SecretKey,
    index: u32,
    piece_hash: [u8; 20],
    timestamp: u64,
) -> Receipt {
    let mut r = Receipt {
        info_hash: InfoHash(info_hash),
        sender_pk: uploader,
        receiver_pk: signer.public_key().to_bytes(),
        piece_hash: PieceHash::from_slice(&piece_hash).expect("20 bytes"),
        piece_index: index,
        timestamp,
        signature: SignatureBytes([0; 96]),
    };
    signer.sign_receipt(&mut r);
    r
}

/// `n` valid receipts of torrent `[0xb4; 20]` from one uploader (key seed `0xee`), signed in
/// turn by `signers` downloaders whose keys derive from `seed`; piece `i` has timestamp
/// `1_700_000_000 + i`.
///
/// # Panics
/// For `signers == 0`.
pub fn signed_receipts(n: usize, signers: usize, seed: u8) -> Vec<Receipt> {
    assert!(signers > 0, "at least one signer");
    let keys: Vec<SecretKey> = (0..signers)
        .map(|i| {
            let mut ikm = [seed; 32];
            ikm[..8].copy_from_slice(&(i as u64).to_be_bytes());
            SecretKey::from_ikm(&ikm).expect("32 bytes of input key material")
        })
        .collect();
    let sender = key(0xee).public_key().to_bytes();
    (0..n)
        .map(|i| {
            let piece = [(i % 251) as u8; 20];
            sign([0xb4; 20], sender, &keys[i % signers], i as u32, piece, 1_700_000_000 + i as u64)
        })
        .collect()
}

/// Standard base64, as the JSON API spells keys and signatures.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A receipt in `/report`'s and `/verify-receipt`'s JSON, with the original API's field names.
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "receiver_public_key": b64(&r.receiver_pk.0),
        "sender_pk": b64(&r.sender_pk.0),
        "piece_hash": const_hex::encode(r.piece_hash.as_bytes()),
        "piece_index": r.piece_index,
        "infohash": const_hex::encode(r.info_hash.0),
        "timestamp": r.timestamp,
        "signature": b64(&r.signature.0),
    })
}

/// A `/report` body: the reporter's passkey and the receipts.
pub fn report_body(passkey: &str, receipts: &[Receipt]) -> Value {
    json!({"passkey": passkey, "receipts": receipts.iter().map(receipt_json).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_verify_and_spell_as_the_api() {
        let rs = signed_receipts(4, 2, 0x5a);
        assert!(rs.iter().all(|r| pbts_verifier::batch::verify_one(r).is_ok()));
        assert_ne!(rs[0].receiver_pk, rs[1].receiver_pk);
        assert_eq!(rs[0].receiver_pk, rs[2].receiver_pk);
        let v = receipt_json(&rs[1]);
        assert_eq!(v["piece_index"], 1);
        assert_eq!(v["infohash"], "b4".repeat(20));
        assert_eq!(v["piece_hash"], "01".repeat(20));
        assert_eq!(v["timestamp"], 1_700_000_001u64);
        assert_eq!(report_body("pk", &rs[..2])["receipts"].as_array().map(Vec::len), Some(2));
    }
}
