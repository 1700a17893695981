//! Receipts as the JSON API spells them (PBTS's field names and their aliases; see
//! docs/COMPATIBILITY.md), decoded with a precise error per field.

use pbts_proto::InfoHash;
use pbts_verifier::receipt::{PieceHash, PublicKeyBytes, Receipt, SignatureBytes};
use serde::Deserialize;

/// One receipt in a JSON body. Each field accepts its PBTS name and its alias.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiptJson {
    /// Hex, 20 bytes.
    #[serde(alias = "info_hash")]
    infohash: Option<String>,
    /// Base64, 48 bytes: the uploader's key.
    #[serde(alias = "sender_public_key")]
    sender_pk: Option<String>,
    /// Base64, 48 bytes: the downloader's key (the signer).
    #[serde(alias = "receiver_pk")]
    receiver_public_key: Option<String>,
    /// Hex, 20 or 32 bytes.
    piece_hash: Option<String>,
    piece_index: Option<u32>,
    /// Unix seconds.
    timestamp: Option<u64>,
    /// Base64, 96 bytes. `/verify-receipt` calls it `receipt`.
    #[serde(alias = "receipt")]
    signature: Option<String>,
    /// A client-chosen credit: accepted and ignored (credit is the registered piece length).
    #[serde(default, rename = "piece_size")]
    _piece_size: Option<serde::de::IgnoredAny>,
    /// PBTS's BEP 10 form signs `timestamp / 3600` under this name; such receipts cannot
    /// verify, and saying so beats "missing timestamp".
    #[serde(default)]
    t_epoch: Option<serde::de::IgnoredAny>,
}

/// Decodes hex (either case), naming `field` on failure.
pub(crate) fn hex_bytes(field: &str, value: &str) -> Result<Vec<u8>, String> {
    crate::encoding::unhex(value).ok_or_else(|| format!("{field} is not valid hex"))
}

/// Decodes standard base64, naming `field` on failure.
pub(crate) fn b64_bytes(field: &str, value: &str) -> Result<Vec<u8>, String> {
    crate::encoding::unb64(value).ok_or_else(|| format!("{field} is not valid base64"))
}

fn sized<const N: usize>(field: &str, raw: Vec<u8>) -> Result<[u8; N], String> {
    let got = raw.len();
    raw.try_into().map_err(|_| format!("{field} must be {N} bytes, got {got}"))
}

impl ReceiptJson {
    /// The receipt, or what is missing or malformed.
    pub(crate) fn to_receipt(&self) -> Result<Receipt, String> {
        fn need<'a, T>(field: &str, v: &'a Option<T>) -> Result<&'a T, String> {
            v.as_ref().ok_or_else(|| format!("missing {field}"))
        }
        if self.timestamp.is_none() && self.t_epoch.is_some() {
            return Err("t_epoch receipts (the original BEP 10 form) cannot verify: sign and \
                        send the timestamp"
                .to_owned());
        }
        let ih = hex_bytes("infohash", need("infohash", &self.infohash)?)?;
        let sender = b64_bytes("sender_pk", need("sender_pk", &self.sender_pk)?)?;
        let receiver = b64_bytes(
            "receiver_public_key",
            need("receiver_public_key", &self.receiver_public_key)?,
        )?;
        let piece_hash = hex_bytes("piece_hash", need("piece_hash", &self.piece_hash)?)?;
        let signature = b64_bytes("signature", need("signature", &self.signature)?)?;
        Ok(Receipt {
            info_hash: InfoHash(sized("infohash", ih)?),
            sender_pk: PublicKeyBytes(sized("sender_pk", sender)?),
            receiver_pk: PublicKeyBytes(sized("receiver_public_key", receiver)?),
            piece_hash: PieceHash::from_slice(&piece_hash).ok_or_else(|| {
                format!("piece_hash must be 20 or 32 bytes, got {}", piece_hash.len())
            })?,
            piece_index: *need("piece_index", &self.piece_index)?,
            timestamp: *need("timestamp", &self.timestamp)?,
            signature: SignatureBytes(sized("signature", signature)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(extra: &str) -> ReceiptJson {
        let base = format!(
            r#"{{"infohash":"{}","sender_pk":"{}","receiver_public_key":"{}","piece_hash":"{}","piece_index":3,"timestamp":9,"signature":"{}"{extra}}}"#,
            "ab".repeat(20),
            "A".repeat(64),
            "B".repeat(64),
            "cd".repeat(20),
            "C".repeat(128),
        );
        serde_json::from_str(&base).unwrap()
    }

    #[test]
    fn decodes_and_names_the_bad_field() {
        let r = json("").to_receipt().unwrap();
        assert_eq!(r.info_hash, InfoHash([0xab; 20]));
        assert_eq!((r.piece_index, r.timestamp), (3, 9));
        let mut j = json("");
        j.piece_hash = Some("abc".into());
        assert_eq!(j.to_receipt().unwrap_err(), "piece_hash is not valid hex");
        j.piece_hash = Some("ab".repeat(21));
        assert_eq!(j.to_receipt().unwrap_err(), "piece_hash must be 20 or 32 bytes, got 21");
        let mut j = json("");
        j.sender_pk = Some("AAAA".into());
        assert_eq!(j.to_receipt().unwrap_err(), "sender_pk must be 48 bytes, got 3");
        let mut j = json("");
        j.timestamp = None;
        assert_eq!(j.to_receipt().unwrap_err(), "missing timestamp");
        assert!(serde_json::from_str::<ReceiptJson>(r#"{"bogus":1}"#).is_err());
        let mut j = json(r#","piece_size":"lots""#);
        assert!(j.to_receipt().is_ok());
        j.timestamp = None;
        j.t_epoch = Some(serde::de::IgnoredAny);
        assert!(j.to_receipt().unwrap_err().starts_with("t_epoch receipts"));
    }
}
