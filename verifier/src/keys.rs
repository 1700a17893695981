//! BLS12-381 min-pk keys: 32-byte secret scalars, 48-byte compressed G1 public keys, 96-byte
//! compressed G2 signatures, ciphersuite `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`
//! (`py_ecc`'s `G2ProofOfPossession`, so keys and signatures made by PBTS clients work
//! unchanged; see the interop test).
//!
//! - Secret keys come from the IETF `KeyGen` (HKDF over at least 32 bytes of input key
//!   material) or from their 32-byte big-endian encoding. They are wiped on drop and never
//!   printed.
//! - A [`PublicKey`] exists only after `KeyValidate`: the bytes decode to a point on the curve,
//!   in the prime-order subgroup, and not the identity. Wire keys stay [`PublicKeyBytes`] until
//!   then.
//! - Signatures are verified with the subgroup check on the signature.
//! - Proofs of possession (`PopProve`/`PopVerify`) sign the compressed public key under
//!   [`POP_DST`]. Registering a key requires one, so that nobody can register a key derived
//!   from someone else's (rogue-key attacks on any future same-message aggregation).
//!
//! ```
//! use pbts_verifier::keys::SecretKey;
//!
//! let sk = SecretKey::from_ikm(&[7; 32]).unwrap();
//! let pk = sk.public_key();
//! let sig = sk.sign(b"hello");
//! assert!(pk.verify(b"hello", &sig).is_ok());
//! assert!(pk.verify(b"hullo", &sig).is_err());
//! assert!(pk.verify_possession(&sk.prove_possession()).is_ok());
//! ```

use crate::receipt::{PUBLIC_KEY_LEN, PublicKeyBytes, Receipt, SignatureBytes};
use blst::BLST_ERROR;
use blst::min_pk;
use zeroize::{Zeroize, Zeroizing};

/// Domain separation tag of receipt signatures (the IETF proof-of-possession suite's signing
/// tag, which `py_ecc`'s `G2ProofOfPossession` uses).
pub const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Domain separation tag of proofs of possession (IETF `PopProve`/`PopVerify`).
pub const POP_DST: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Shortest input key material `KeyGen` accepts, in bytes.
pub const MIN_IKM_LEN: usize = 32;

/// A key could not be made or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// `KeyGen` needs at least [`MIN_IKM_LEN`] bytes of input key material.
    IkmTooShort {
        /// Bytes supplied.
        got: usize,
    },
    /// The 32 bytes are not a scalar in `[1, r)`.
    InvalidSecretKey,
    /// The 48 bytes are not a compressed point on the curve (bad flags, `x >= p`, or no `y`).
    InvalidPublicKey,
    /// The point is on the curve but outside the prime-order subgroup.
    PublicKeyNotInSubgroup,
    /// The point is the identity, which verifies anything under some signatures.
    IdentityPublicKey,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::IkmTooShort { got } => {
                write!(f, "input key material too short: {got} bytes, need {MIN_IKM_LEN}")
            }
            Self::InvalidSecretKey => f.write_str("secret key is not a scalar in [1, r)"),
            Self::InvalidPublicKey => f.write_str("public key is not a compressed curve point"),
            Self::PublicKeyNotInSubgroup => f.write_str("public key is not in the G1 subgroup"),
            Self::IdentityPublicKey => f.write_str("public key is the identity"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A signature did not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The 96 bytes are not a compressed point on the curve.
    MalformedSignature,
    /// The point is on the curve but outside the prime-order subgroup.
    SignatureNotInSubgroup,
    /// A well-formed signature, but not by this key over this message.
    BadSignature,
}

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::MalformedSignature => "signature is not a compressed curve point",
            Self::SignatureNotInSubgroup => "signature is not in the G2 subgroup",
            Self::BadSignature => "bad signature",
        })
    }
}

impl std::error::Error for VerifyError {}

/// A secret key. Wiped on drop (blst zeroizes its scalar); `Debug` prints no key material.
#[derive(Clone)]
pub struct SecretKey(min_pk::SecretKey);

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// IETF `KeyGen(ikm)` with an empty `key_info` (draft-irtf-cfrg-bls-signature-05 §2.3, as
    /// `py_ecc` and blst implement it).
    ///
    /// # Errors
    ///
    /// [`KeyError::IkmTooShort`] below [`MIN_IKM_LEN`] bytes.
    pub fn from_ikm(ikm: &[u8]) -> Result<Self, KeyError> {
        if ikm.len() < MIN_IKM_LEN {
            return Err(KeyError::IkmTooShort { got: ikm.len() });
        }
        min_pk::SecretKey::key_gen(ikm, &[])
            .map(Self)
            .map_err(|_| KeyError::IkmTooShort { got: ikm.len() })
    }

    /// A fresh key from 32 bytes of operating-system randomness.
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails (`getrandom`), which leaves no safe way
    /// to make a key.
    pub fn random() -> Self {
        use rand::TryRngCore;
        let mut ikm = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng
            .try_fill_bytes(ikm.as_mut())
            .expect("the operating system's random source must work to generate a key");
        Self::from_ikm(ikm.as_ref()).expect("32 bytes is enough input key material")
    }

    /// Decodes a 32-byte big-endian scalar.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidSecretKey`] if it is zero or not below the group order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        min_pk::SecretKey::from_bytes(bytes).map(Self).map_err(|_| KeyError::InvalidSecretKey)
    }

    /// The 32-byte big-endian scalar, wiped when the returned buffer drops.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut bytes = self.0.to_bytes();
        let out = Zeroizing::new(bytes);
        bytes.zeroize();
        out
    }

    /// The public key (`SkToPk`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.sk_to_pk())
    }

    /// Signs `msg` under [`DST`].
    pub fn sign(&self, msg: &[u8]) -> SignatureBytes {
        SignatureBytes(self.0.sign(msg, DST, &[]).compress())
    }

    /// `PopProve`: signs the compressed public key under [`POP_DST`].
    pub fn prove_possession(&self) -> SignatureBytes {
        let pk = self.0.sk_to_pk().compress();
        SignatureBytes(self.0.sign(&pk, POP_DST, &[]).compress())
    }

    /// Sets `r.signature` to this key's signature over [`Receipt::message`]. Only the
    /// signature changes: `r.receiver_pk` must already be this key's public key for the receipt
    /// to verify.
    pub fn sign_receipt(&self, r: &mut Receipt) {
        r.signature = self.sign(&r.message());
    }
}

/// A decompressed, validated public key: on the curve, in the subgroup, not the identity.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(min_pk::PublicKey);

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.to_bytes(), f)
    }
}

impl PublicKey {
    /// `KeyValidate`: decompresses and checks subgroup membership and non-identity.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidPublicKey`], [`KeyError::PublicKeyNotInSubgroup`] or
    /// [`KeyError::IdentityPublicKey`].
    pub fn from_bytes(bytes: &PublicKeyBytes) -> Result<Self, KeyError> {
        min_pk::PublicKey::key_validate(&bytes.0).map(Self).map_err(|e| match e {
            BLST_ERROR::BLST_PK_IS_INFINITY => KeyError::IdentityPublicKey,
            BLST_ERROR::BLST_POINT_NOT_IN_GROUP => KeyError::PublicKeyNotInSubgroup,
            _ => KeyError::InvalidPublicKey,
        })
    }

    /// The 48-byte compressed encoding.
    pub fn to_bytes(&self) -> PublicKeyBytes {
        let bytes: [u8; PUBLIC_KEY_LEN] = self.0.compress();
        PublicKeyBytes(bytes)
    }

    /// `Verify(pk, msg, sig)` under [`DST`], with the signature subgroup check.
    ///
    /// # Errors
    ///
    /// [`VerifyError::MalformedSignature`], [`VerifyError::SignatureNotInSubgroup`] or
    /// [`VerifyError::BadSignature`].
    pub fn verify(&self, msg: &[u8], sig: &SignatureBytes) -> Result<(), VerifyError> {
        self.verify_with(msg, DST, sig)
    }

    /// `PopVerify(pk, proof)`: the proof signs this key's compressed encoding under
    /// [`POP_DST`].
    ///
    /// # Errors
    ///
    /// As [`PublicKey::verify`].
    pub fn verify_possession(&self, proof: &SignatureBytes) -> Result<(), VerifyError> {
        self.verify_with(&self.0.compress(), POP_DST, proof)
    }

    fn verify_with(&self, msg: &[u8], dst: &[u8], sig: &SignatureBytes) -> Result<(), VerifyError> {
        let sig = decode_signature(sig)?;
        // Key and signature are already validated: no second subgroup check inside blst.
        match sig.verify(false, msg, dst, &[], &self.0, false) {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(VerifyError::BadSignature),
        }
    }

    /// The blst key, for the batch verifier.
    pub(crate) fn as_blst(&self) -> &min_pk::PublicKey {
        &self.0
    }
}

/// `Aggregate`: the sum of signatures (each decompressed and subgroup-checked), compressed.
/// Plain aggregates let errors cancel, so the verifier checks receipts with [`crate::batch`]
/// instead; the experiments time this step as a baseline.
///
/// # Errors
/// [`VerifyError::MalformedSignature`] or [`VerifyError::SignatureNotInSubgroup`] for the first
/// bad input; an empty input is [`VerifyError::MalformedSignature`].
pub fn aggregate_signatures(sigs: &[SignatureBytes]) -> Result<SignatureBytes, VerifyError> {
    if sigs.is_empty() {
        return Err(VerifyError::MalformedSignature);
    }
    let decoded = sigs.iter().map(decode_signature).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&min_pk::Signature> = decoded.iter().collect();
    let agg = min_pk::AggregateSignature::aggregate(&refs, false)
        .map_err(|_| VerifyError::MalformedSignature)?;
    Ok(SignatureBytes(agg.to_signature().compress()))
}

/// Decompresses a signature and checks it is in the G2 subgroup. The identity passes (it is in
/// the subgroup); it then fails verification as a bad signature.
pub(crate) fn decode_signature(sig: &SignatureBytes) -> Result<min_pk::Signature, VerifyError> {
    let sig = min_pk::Signature::uncompress(&sig.0).map_err(|_| VerifyError::MalformedSignature)?;
    if !sig.subgroup_check() {
        return Err(VerifyError::SignatureNotInSubgroup);
    }
    Ok(sig)
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn aggregation_sums_signatures() {
        let a = SecretKey::from_ikm(&[1; 32]).unwrap();
        let b = SecretKey::from_ikm(&[2; 32]).unwrap();
        let (sa, sb) = (a.sign(b"m1"), b.sign(b"m2"));
        let agg = aggregate_signatures(&[sa, sb]).unwrap();
        assert_eq!(aggregate_signatures(&[sb, sa]).unwrap(), agg, "order does not matter");
        assert_ne!(agg, sa);
        // Verifies as an aggregate of both (blst's AggregateVerify).
        let sig = min_pk::Signature::uncompress(&agg.0).unwrap();
        let pks = [a.public_key().0, b.public_key().0];
        let pk_refs: Vec<&min_pk::PublicKey> = pks.iter().collect();
        let msgs: [&[u8]; 2] = [b"m1", b"m2"];
        assert_eq!(
            sig.aggregate_verify(true, &msgs, DST, &pk_refs, false),
            BLST_ERROR::BLST_SUCCESS
        );
        assert_eq!(aggregate_signatures(&[]), Err(VerifyError::MalformedSignature));
        assert_eq!(
            aggregate_signatures(&[SignatureBytes([0x11; 96])]),
            Err(VerifyError::MalformedSignature)
        );
    }

    use super::*;
    use crate::receipt::PieceHash;
    use pbts_proto::InfoHash;

    pub(crate) fn hex(bytes: &[u8]) -> String {
        const_hex::encode(bytes)
    }

    /// The golden receipt: `[0x02; 32]`'s key signs that `[0x01; 32]`'s key uploaded piece 7.
    pub(crate) fn golden_receipt() -> (SecretKey, SecretKey, Receipt) {
        let uploader = SecretKey::from_ikm(&[0x01; 32]).unwrap();
        let downloader = SecretKey::from_ikm(&[0x02; 32]).unwrap();
        let mut r = Receipt {
            info_hash: InfoHash(*b"pbts-golden-infohash"),
            sender_pk: uploader.public_key().to_bytes(),
            receiver_pk: downloader.public_key().to_bytes(),
            piece_hash: PieceHash::from_slice(b"pbts-golden-piece-h1").unwrap(),
            piece_index: 7,
            timestamp: 1_700_000_000,
            signature: SignatureBytes([0; 96]),
        };
        downloader.sign_receipt(&mut r);
        (uploader, downloader, r)
    }

    /// A compressed point on the curve but outside the subgroup: the first `x = i` (with the
    /// other coordinate half zero) that decompresses. Almost every curve point is outside the
    /// subgroup, since the cofactors are huge.
    pub(crate) fn g1_point_outside_subgroup() -> PublicKeyBytes {
        for i in 1..=255u8 {
            let mut b = [0u8; 48];
            b[0] = 0x80;
            b[47] = i;
            if let Ok(pk) = min_pk::PublicKey::uncompress(&b)
                && pk.validate() == Err(BLST_ERROR::BLST_POINT_NOT_IN_GROUP)
            {
                return PublicKeyBytes(b);
            }
        }
        unreachable!("about half of all x give a curve point")
    }

    /// As [`g1_point_outside_subgroup`], in G2.
    pub(crate) fn g2_point_outside_subgroup() -> SignatureBytes {
        for i in 1..=255u8 {
            let mut b = [0u8; 96];
            b[0] = 0x80;
            b[95] = i;
            if let Ok(sig) = min_pk::Signature::uncompress(&b)
                && !sig.subgroup_check()
            {
                return SignatureBytes(b);
            }
        }
        unreachable!("about half of all x give a curve point")
    }

    /// Frozen outputs for fixed seeds: any change to key generation, encoding, the message
    /// layout, the ciphersuite or the proof of possession fails here. Python's `py_ecc`
    /// reproduces the same bytes (`tests/interop.rs`).
    #[test]
    fn golden_vectors() {
        let (uploader, downloader, r) = golden_receipt();
        assert_eq!(
            hex(uploader.to_bytes().as_ref()),
            "144b27828e305a2d67fc7f4eea6de706b405cdd1ab8ad2daec046ccdeeec8b79"
        );
        assert_eq!(
            hex(&uploader.public_key().to_bytes().0),
            concat!(
                "95a254501b7733239ed3cec4d56737977bd09ede881d8a234560e83e5525017a",
                "dd3b1dcc3eabfb85e12a4131b19c253b",
            )
        );
        assert_eq!(
            hex(downloader.to_bytes().as_ref()),
            "1ff56eef5220c383a6522aa9a92776e3034bf1153839d54c9e3d2bcb6c04948e"
        );
        assert_eq!(
            hex(&downloader.public_key().to_bytes().0),
            concat!(
                "ac80a5e08c712d5f08f0306ad743f7d8c215d982489b84a1d6ba805733d94c00",
                "6e8938f9089a75db3ffa135af33bc69a",
            )
        );
        assert_eq!(
            hex(&r.message()),
            concat!(
                "706274732d676f6c64656e2d696e666f6861736895a254501b7733239ed3cec4",
                "d56737977bd09ede881d8a234560e83e5525017add3b1dcc3eabfb85e12a4131",
                "b19c253b706274732d676f6c64656e2d70696563652d68310000000700000000",
                "6553f100",
            )
        );
        assert_eq!(
            hex(&r.signature.0),
            concat!(
                "86014ed11196387152c6c726b0355bde4369e69963748b7c681a2534cff1f3f0",
                "ae19bf0ff1d1c77ed925515a6eafed43109340b46f08f1bd79140af1d8d591ce",
                "10c8eae895a82b900ca13f2cb0807141788773c24e759d62a5e085f16d569a09",
            )
        );
        assert_eq!(
            hex(&downloader.prove_possession().0),
            concat!(
                "b1b22261eeb641b36d4f701f7e5635c5dd0ee53102e7ad8c11594be0d785f0bb",
                "5d75bd063ec2caa415e953f85e6e18e110d7ae595d18940e60894bd0a39eb157",
                "c1f646ee0f2079d64bd7f4e3c6cbc297e74ce69f3ae4e0728f915f1aac3cdf9b",
            )
        );
        assert_eq!(
            hex(&uploader.prove_possession().0),
            concat!(
                "846aa12a4402eb67cb92a497e0716db573c817a4163783153f0ddca475f48702",
                "00049d8e9ed35087c786059c1f26fc9d0d39e3098f1bae074c062f84f2435321",
                "0666bd58c0d9be3ff76ba9dd9ce905c5b602a12e78a04350275faacce8b7137d",
            )
        );
        assert_eq!(downloader.public_key().verify(&r.message(), &r.signature), Ok(()));
    }

    #[test]
    fn secret_key_round_trip_and_errors() {
        let sk = SecretKey::from_ikm(&[0x01; 32]).unwrap();
        let again = SecretKey::from_bytes(&sk.to_bytes()).unwrap();
        assert_eq!(again.public_key(), sk.public_key());
        assert_eq!(SecretKey::from_ikm(&[1; 31]).unwrap_err(), KeyError::IkmTooShort { got: 31 });
        assert!(SecretKey::from_ikm(&[1; 64]).is_ok());
        assert_eq!(SecretKey::from_bytes(&[0; 32]).unwrap_err(), KeyError::InvalidSecretKey);
        assert_eq!(SecretKey::from_bytes(&[0xff; 32]).unwrap_err(), KeyError::InvalidSecretKey);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert!(SecretKey::from_bytes(&one).is_ok());
        // r - 1 is the largest valid scalar; r itself is not.
        let r_bytes: [u8; 32] = [
            0x73, 0xed, 0xa7, 0x53, 0x29, 0x9d, 0x7d, 0x48, 0x33, 0x39, 0xd8, 0x08, 0x09, 0xa1,
            0xd8, 0x05, 0x53, 0xbd, 0xa4, 0x02, 0xff, 0xfe, 0x5b, 0xfe, 0xff, 0xff, 0xff, 0xff,
            0x00, 0x00, 0x00, 0x01,
        ];
        assert_eq!(SecretKey::from_bytes(&r_bytes).unwrap_err(), KeyError::InvalidSecretKey);
        let mut r_minus_1 = r_bytes;
        r_minus_1[31] = 0;
        assert!(SecretKey::from_bytes(&r_minus_1).is_ok());
        assert_ne!(SecretKey::random().public_key(), SecretKey::random().public_key());
    }

    #[test]
    fn debug_redacts_secret() {
        let sk = SecretKey::from_ikm(&[0x01; 32]).unwrap();
        let printed = format!("{sk:?}");
        assert_eq!(printed, "SecretKey(<redacted>)");
        let pk = format!("{:?}", sk.public_key());
        assert!(pk.starts_with("PublicKeyBytes("), "{pk}");
    }

    #[test]
    fn public_key_validation() {
        let pk = SecretKey::from_ikm(&[0x01; 32]).unwrap().public_key();
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
        let mut identity = [0u8; 48];
        identity[0] = 0xc0;
        assert_eq!(
            PublicKey::from_bytes(&PublicKeyBytes(identity)),
            Err(KeyError::IdentityPublicKey)
        );
        assert_eq!(
            PublicKey::from_bytes(&g1_point_outside_subgroup()),
            Err(KeyError::PublicKeyNotInSubgroup)
        );
        assert_eq!(
            PublicKey::from_bytes(&PublicKeyBytes([0xff; 48])),
            Err(KeyError::InvalidPublicKey)
        );
        // Uncompressed-flag bytes are not accepted where a compressed key is expected.
        let mut flag_cleared = pk.to_bytes();
        flag_cleared.0[0] &= 0x7f;
        assert_eq!(PublicKey::from_bytes(&flag_cleared), Err(KeyError::InvalidPublicKey));
        assert_eq!(
            KeyError::IkmTooShort { got: 3 }.to_string(),
            "input key material too short: 3 bytes, need 32"
        );
    }

    #[test]
    fn verify_errors() {
        let sk = SecretKey::from_ikm(&[0x03; 32]).unwrap();
        let pk = sk.public_key();
        let sig = sk.sign(b"m");
        assert_eq!(pk.verify(b"m", &sig), Ok(()));
        assert_eq!(pk.verify(b"n", &sig), Err(VerifyError::BadSignature));
        let other = SecretKey::from_ikm(&[0x04; 32]).unwrap();
        assert_eq!(other.public_key().verify(b"m", &sig), Err(VerifyError::BadSignature));
        assert_eq!(
            pk.verify(b"m", &SignatureBytes([0xff; 96])),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            pk.verify(b"m", &g2_point_outside_subgroup()),
            Err(VerifyError::SignatureNotInSubgroup)
        );
        let mut identity = [0u8; 96];
        identity[0] = 0xc0;
        assert_eq!(pk.verify(b"m", &SignatureBytes(identity)), Err(VerifyError::BadSignature));
        // A proof of possession is not a signature over the key bytes under the signing tag,
        // and vice versa: the two tags separate the domains.
        let pop = sk.prove_possession();
        assert_eq!(pk.verify_possession(&pop), Ok(()));
        assert_eq!(pk.verify(&pk.to_bytes().0, &pop), Err(VerifyError::BadSignature));
        assert_eq!(
            pk.verify_possession(&sk.sign(&pk.to_bytes().0)),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(other.public_key().verify_possession(&pop), Err(VerifyError::BadSignature));
    }
}
