//! Receipts for tests, benches and experiments (feature `test-utils`): valid, deterministic, and
//! signed by a chosen number of downloaders.

use pbts_proto::InfoHash;

use crate::keys::SecretKey;
use crate::receipt::{PieceHash, Receipt, SignatureBytes};

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
    let sender = SecretKey::from_ikm(&[0xee; 32]).expect("32 bytes").public_key().to_bytes();
    (0..n)
        .map(|i| {
            let sk = &keys[i % signers];
            let mut r = Receipt {
                info_hash: InfoHash([0xb4; 20]),
                sender_pk: sender,
                receiver_pk: sk.public_key().to_bytes(),
                piece_hash: PieceHash::from_slice(&[(i % 251) as u8; 20]).expect("20 bytes"),
                piece_index: i as u32,
                timestamp: 1_700_000_000 + i as u64,
                signature: SignatureBytes([0; 96]),
            };
            sk.sign_receipt(&mut r);
            r
        })
        .collect()
}
