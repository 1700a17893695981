//! Request decoding every endpoint shares: JSON bodies, path parameters, sized base64. Each
//! error is the text of a 400 naming what is wrong.

use pbts_http::request::Request;
use serde::Deserialize;

/// The route parameter after `prefix` in `path`, percent-decoded (`/user/%61lice` names
/// `alice`; `+` stays a plus sign). Routing matched the raw path, so the parameter is decoded
/// exactly once, here.
///
/// # Errors
/// The text of a 400 naming `what` and the bad escape or the invalid UTF-8.
pub(crate) fn path_param<'a>(
    path: &'a [u8],
    prefix: &[u8],
    what: &str,
) -> Result<std::borrow::Cow<'a, str>, String> {
    let raw = path.strip_prefix(prefix).unwrap_or_default();
    pbts_http::path::decode_segment(raw).map_err(|e| format!("{what} in the path: {e}"))
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Decodes a JSON body. The content type is not enforced: `curl -d` sends
/// `application/x-www-form-urlencoded`, and refusing it would only break the documented
/// commands (see docs/COMPATIBILITY.md).
pub(crate) fn json_body<'de, T: Deserialize<'de>>(req: &Request<'de>) -> Result<T, String> {
    parse_json(req.body)
}

/// Decodes JSON bytes, with the message every endpoint answers for a body that does not decode.
pub(crate) fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Decodes base64 of exactly `N` bytes, naming `field` on failure.
pub(crate) fn b64_array<const N: usize>(field: &str, value: &str) -> Result<[u8; N], String> {
    let raw = super::receipt_json::b64_bytes(field, value)?;
    let got = raw.len();
    raw.try_into().map_err(|_| format!("{field} must decode to {N} bytes, got {got}"))
}
