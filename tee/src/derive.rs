//! Deterministic key derivation: the same root key material and path give the same keys, every
//! time, on every machine; different paths give unrelated keys.
//!
//! ```text
//! root (provider: dstack GetKey, or a root secret file) ──HKDF-SHA256──▶ 32-byte IKM
//!     salt = DERIVE_SALT, info = "pbts/<kind>/v1/" ‖ path
//!       ├─ BLS:      IKM → IETF KeyGen (BLS12-381)
//!       └─ Ethereum: IKM → secp256k1 scalar (a counter is appended to the info until the
//!                    scalar is in [1, n): fails with probability ~2^-128 per try)
//! ```
//!
//! The path is the caller's, never random: a restart gives the same keys, and a key can always
//! be derived again (see docs/COMPATIBILITY.md).

use hkdf::Hkdf;
use pbts_verifier::keys::SecretKey;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::TeeError;

/// HKDF salt: a fixed domain tag, so these keys never collide with another use of the root.
pub const DERIVE_SALT: &[u8] = b"pbts-tee-derive-v1";

/// The default path of the tracker's BLS key.
pub const BLS_PATH: &str = "tracker";
/// The default path of the tracker's Ethereum account (PBTS's path; see docs/COMPATIBILITY.md).
pub const ETHEREUM_PATH: &str = "ethereum/pbts";

/// Order of secp256k1's group (big-endian).
const SECP256K1_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// Least root key material accepted, bytes.
pub const MIN_ROOT_LEN: usize = 32;

fn expand(root: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, TeeError> {
    if root.len() < MIN_ROOT_LEN {
        return Err(TeeError::Derivation(format!(
            "root key material is {} bytes, at least {MIN_ROOT_LEN} needed",
            root.len()
        )));
    }
    let hk = Hkdf::<Sha256>::new(Some(DERIVE_SALT), root);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(info, okm.as_mut())
        .map_err(|_| TeeError::Derivation("HKDF output length".to_owned()))?;
    Ok(okm)
}

/// The BLS12-381 key for `path` under `root`.
///
/// # Errors
/// Root material shorter than [`MIN_ROOT_LEN`].
pub fn bls_key(root: &[u8], path: &str) -> Result<SecretKey, TeeError> {
    let info = [b"pbts/bls/v1/".as_slice(), path.as_bytes()].concat();
    let ikm = expand(root, &info)?;
    SecretKey::from_ikm(ikm.as_ref()).map_err(|e| TeeError::Derivation(e.to_string()))
}

/// The secp256k1 secret scalar (big-endian) of the Ethereum account for `path` under `root`.
///
/// # Errors
/// Root material shorter than [`MIN_ROOT_LEN`].
pub fn ethereum_key(root: &[u8], path: &str) -> Result<Zeroizing<[u8; 32]>, TeeError> {
    for counter in 0u32.. {
        let mut info = [b"pbts/ethereum/v1/".as_slice(), path.as_bytes()].concat();
        if counter > 0 {
            info.extend_from_slice(&counter.to_be_bytes());
        }
        let k = expand(root, &info)?;
        if *k != [0u8; 32] && *k < SECP256K1_N {
            return Ok(k);
        }
    }
    unreachable!("a scalar in range is found with overwhelming probability")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 32] = [7; 32];

    #[test]
    fn deterministic_and_separated_by_path_and_root() {
        let a = bls_key(&ROOT, "tracker").unwrap().public_key().to_bytes();
        assert_eq!(a, bls_key(&ROOT, "tracker").unwrap().public_key().to_bytes());
        assert_ne!(a, bls_key(&ROOT, "tracker2").unwrap().public_key().to_bytes());
        assert_ne!(a, bls_key(&[8; 32], "tracker").unwrap().public_key().to_bytes());
        let e = ethereum_key(&ROOT, ETHEREUM_PATH).unwrap();
        assert_eq!(*e, *ethereum_key(&ROOT, ETHEREUM_PATH).unwrap());
        assert_ne!(*e, *ethereum_key(&ROOT, "ethereum/other").unwrap());
        // BLS and Ethereum derivations of the same path are unrelated.
        assert_ne!(
            bls_key(&ROOT, "x").unwrap().to_bytes().as_ref(),
            ethereum_key(&ROOT, "x").unwrap().as_ref()
        );
    }

    #[test]
    fn golden_vectors() {
        // Frozen: a change here changes every deployed tracker's keys.
        let pk = bls_key(&ROOT, "tracker").unwrap().public_key().to_bytes();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let e = ethereum_key(&ROOT, ETHEREUM_PATH).unwrap();
        assert_eq!(hex(&pk.0[..8]), GOLDEN_BLS_PREFIX);
        assert_eq!(hex(&e[..8]), GOLDEN_ETH_PREFIX);
    }

    // Computed independently: Python's hmac/hashlib HKDF-SHA256 and py_ecc's KeyGen and SkToPk.
    const GOLDEN_BLS_PREFIX: &str = "99d7701fe9cdd43e";
    const GOLDEN_ETH_PREFIX: &str = "407770a4412da7a1";

    #[test]
    fn short_roots_are_refused() {
        let err = bls_key(&[1; 16], "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key derivation: root key material is 16 bytes, at least 32 needed"
        );
        assert!(ethereum_key(&[], "x").is_err());
    }

    #[test]
    fn scalar_range_is_the_curve_order() {
        let hex: String = SECP256K1_N.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141");
    }
}
