//! The bodies of the fuzz targets in `tee/fuzz/`: one function per target, each taking the
//! fuzzer's bytes. They assert more than "no panic": parsed quotes have the lengths their kind
//! says, decoded hex re-encodes to its input, and every refusal has a message.
//!
//! The nightly fuzzer calls them from `fuzz/fuzz_targets/<target>.rs`; on stable,
//! `tests/fuzz_corpus.rs` replays every seed (`fuzz/seeds/<target>/`) and every crash input
//! (`fuzz/regressions/<target>/`) through them, so CI keeps what the fuzzer found.
//! `scripts/fuzz.sh` runs them all.
//!
//! Not an API: for the fuzzer and the replay test only.

use serde_json::Value;

use crate::provider::dstack::{key_from_answer, parse_response, quote_from_answer};
use crate::quote::{self, BodyKind};

/// A fuzz target: the name of its `[[bin]]` in `fuzz/Cargo.toml`, and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] =
    &[("tdx_quote", tdx_quote), ("dstack_response", dstack_response), ("unhex", unhex)];

/// TDX quote parsing: a quote that parses has a body of the length its kind says and bounds
/// that add up to the input.
pub fn tdx_quote(data: &[u8]) {
    if let Ok(q) = quote::parse(data) {
        let body = match q.report.kind {
            BodyKind::Td10 => quote::TD_REPORT10_LEN,
            BodyKind::Td15 => quote::TD_REPORT15_LEN,
            BodyKind::Td15Ex => quote::TD_REPORT15_EX_LEN,
        };
        let descriptor = if q.version == 5 { 6 } else { 0 };
        let signed = quote::HEADER_LEN + descriptor + body + 4 + q.signature_len;
        assert_eq!(signed + q.trailing_len, data.len());
        assert_eq!(q.tee_type, quote::TEE_TYPE_TDX);
    }
}

/// `text` as hex digits: trimmed, without a `0x` or `0X` prefix, lower case.
fn hex_digits(text: &str) -> String {
    let t = text.trim();
    t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t).to_ascii_lowercase()
}

/// The dstack agent's responses: a response that is accepted is a complete 200 whose body is
/// the JSON returned; keys and quotes taken from it are the hex they were sent as (keys long
/// enough, quotes checked as [`tdx_quote`] does); every refusal names the request.
pub fn dstack_response(data: &[u8]) {
    let v = match parse_response("/GetKey", data) {
        Ok(v) => v,
        Err(e) => {
            let text = e.to_string();
            return assert!(text.starts_with("TEE provider: dstack /GetKey: "), "{text}");
        }
    };
    let Ok(pbts_http::request::Status::Complete(head, _)) =
        pbts_http::request::parse_response_head(data)
    else {
        panic!("accepted a response whose head does not parse");
    };
    assert_eq!(head.status, 200);
    if let Ok(key) = key_from_answer(&v) {
        assert!(key.len() >= crate::derive::MIN_ROOT_LEN);
        assert_eq!(quote::hex(&key), hex_digits(v["key"].as_str().expect("a key string")));
    }
    if let Ok(q) = quote_from_answer(&v) {
        assert_eq!(quote::hex(&q), hex_digits(v["quote"].as_str().expect("a quote string")));
        tdx_quote(&q);
    }
    if !v.get("key").is_some_and(Value::is_string) {
        assert!(key_from_answer(&v).is_err());
    }
    if !v.get("quote").is_some_and(Value::is_string) {
        assert!(quote_from_answer(&v).is_err());
    }
}

/// Hex decoding (`quote::unhex`, used on every dstack answer and the root secret file): bytes
/// round-trip, decoded text re-encodes to its digits, refusals have a message.
pub fn unhex(data: &[u8]) {
    assert_eq!(quote::unhex(&quote::hex(data)).as_deref().ok(), Some(data));
    let Ok(text) = std::str::from_utf8(data) else { return };
    match quote::unhex(text) {
        Ok(raw) => assert_eq!(quote::hex(&raw), hex_digits(text)),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// What the fuzzer found, one named test per input in `fuzz/regressions/`.
#[cfg(test)]
mod tests {
    use super::*;

    /// `regressions/unhex/multibyte_utf8_panic`: `unhex` sliced the `str` two bytes at a time
    /// and panicked inside a multi-byte character. `POST /verify-attestation` hands it the
    /// client's `quote`, so any client could panic a serving core; dstack answers and the root
    /// secret file reach it too. It now decodes bytes (const-hex).
    #[test]
    fn unhex_multibyte_utf8_is_an_error_not_a_panic() {
        let text = "000\u{399}x";
        assert_eq!(quote::unhex(text).unwrap_err().to_string(), "quote: not valid hex");
        assert_eq!(quote::unhex("\u{e9}\u{e9}").unwrap_err().to_string(), "quote: not valid hex");
        unhex(text.as_bytes());
    }

    /// `regressions/dstack_response/get_key_signed_digit`: `u8::from_str_radix` accepts a sign,
    /// so the digit pair `+8` decoded as 0x08 and a dstack key with a `+` in it was taken as a
    /// different key instead of being refused.
    #[test]
    fn unhex_refuses_signed_digit_pairs() {
        assert!(quote::unhex("+8").is_err());
        assert!(quote::unhex("0x12+80d").is_err());
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/dstack_response/get_key_signed_digit"
        ))
        .unwrap();
        assert!(key_from_answer(&parse_response("/GetKey", &raw).unwrap()).is_err());
        dstack_response(&raw);
    }
}
