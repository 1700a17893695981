//! Request-target path segments: percent-decoding as RFC 3986 defines it for paths.
//!
//! Routes such as `/user/<name>` take a parameter from the path. Clients escape bytes there
//! (`alice%20smith`, or `%61lice` for `alice`), so the parameter is decoded before it is looked
//! up, exactly once, and anything that does not decode is an error rather than a silent
//! "not found". Unlike query values, `+` in a path is a plus sign, not a space.

use core::fmt;
use std::borrow::Cow;

use memchr::memchr;

use crate::util::hex_val;

/// Why a path segment could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// The `%` at byte `at` of the segment is not followed by two hex digits.
    InvalidPercentEncoding {
        /// Offset of the `%` in the raw segment.
        at: usize,
    },
    /// The decoded bytes are not UTF-8.
    NotUtf8 {
        /// Length of the valid UTF-8 prefix of the decoded bytes.
        valid_up_to: usize,
    },
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidPercentEncoding { at } => write!(
                f,
                "invalid percent-encoding at byte {at}: '%' must be followed by two hex digits"
            ),
            Self::NotUtf8 { valid_up_to } => {
                write!(f, "not UTF-8 after percent-decoding (invalid byte at offset {valid_up_to})")
            }
        }
    }
}

impl std::error::Error for PathError {}

/// Percent-decodes one path segment into bytes (binary-safe: `%00` is a zero byte). Borrows
/// when there is nothing to decode.
///
/// # Errors
///
/// [`PathError::InvalidPercentEncoding`] for a `%` not followed by two hex digits.
pub fn decode_segment_bytes(raw: &[u8]) -> Result<Cow<'_, [u8]>, PathError> {
    let Some(first) = memchr(b'%', raw) else { return Ok(Cow::Borrowed(raw)) };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(raw.get(..first).unwrap_or_default());
    let mut at = first;
    while let Some(rest) = raw.get(at..).filter(|r| !r.is_empty()) {
        match rest {
            [b'%', hi, lo, ..] => match (hex_val(*hi), hex_val(*lo)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    at += 3;
                }
                _ => return Err(PathError::InvalidPercentEncoding { at }),
            },
            [b'%', ..] => return Err(PathError::InvalidPercentEncoding { at }),
            _ => {
                // Copy the run up to the next `%` at once.
                let run = memchr(b'%', rest).unwrap_or(rest.len());
                out.extend_from_slice(rest.get(..run).unwrap_or_default());
                at += run;
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Percent-decodes one path segment and checks that it is UTF-8 (names, not bytes).
///
/// # Errors
///
/// [`PathError::InvalidPercentEncoding`] for a bad escape, [`PathError::NotUtf8`] when the
/// decoded bytes are not UTF-8.
pub fn decode_segment(raw: &[u8]) -> Result<Cow<'_, str>, PathError> {
    match decode_segment_bytes(raw)? {
        Cow::Borrowed(b) => std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|e| PathError::NotUtf8 { valid_up_to: e.valid_up_to() }),
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|e| PathError::NotUtf8 { valid_up_to: e.utf8_error().valid_up_to() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    macro_rules! case {
        ($name:ident, $raw:expr, Ok($want:expr)) => {
            #[test]
            fn $name() {
                assert_eq!(decode_segment($raw).as_deref(), Ok($want));
            }
        };
        ($name:ident, $raw:expr, Err($err:expr, $text:expr)) => {
            #[test]
            fn $name() {
                let err = decode_segment($raw).unwrap_err();
                assert_eq!(err, $err);
                assert_eq!(err.to_string(), $text);
            }
        };
    }

    case!(plain, b"alice", Ok("alice"));
    case!(escaped_letter, b"%61lice", Ok("alice"));
    case!(space, b"alice%20smith", Ok("alice smith"));
    case!(plus_is_a_plus, b"a+b", Ok("a+b"));
    case!(lower_and_upper_hex, b"%c3%A9t%C3%a9", Ok("été"));
    case!(escape_at_the_end, b"ab%2F", Ok("ab/"));
    case!(empty, b"", Ok(""));
    case!(
        bad_hex,
        b"%zz",
        Err(
            PathError::InvalidPercentEncoding { at: 0 },
            "invalid percent-encoding at byte 0: '%' must be followed by two hex digits"
        )
    );
    case!(
        truncated,
        b"abc%4",
        Err(
            PathError::InvalidPercentEncoding { at: 3 },
            "invalid percent-encoding at byte 3: '%' must be followed by two hex digits"
        )
    );
    case!(
        bad_after_good,
        b"%41%g1",
        Err(
            PathError::InvalidPercentEncoding { at: 3 },
            "invalid percent-encoding at byte 3: '%' must be followed by two hex digits"
        )
    );
    case!(
        not_utf8,
        b"ab%C3%28",
        Err(
            PathError::NotUtf8 { valid_up_to: 2 },
            "not UTF-8 after percent-decoding (invalid byte at offset 2)"
        )
    );
    case!(
        raw_not_utf8,
        b"\xff",
        Err(
            PathError::NotUtf8 { valid_up_to: 0 },
            "not UTF-8 after percent-decoding (invalid byte at offset 0)"
        )
    );

    #[test]
    fn bytes_are_binary_safe_and_borrowed_when_plain() {
        assert_eq!(decode_segment_bytes(b"%00%ff").unwrap(), &[0u8, 0xff][..]);
        assert!(matches!(decode_segment_bytes(b"plain").unwrap(), Cow::Borrowed(b"plain")));
    }

    proptest! {
        #[test]
        fn decodes_what_percent_encode_writes(bytes in vec(any::<u8>(), 0..64)) {
            let mut encoded = Vec::new();
            crate::query::percent_encode_into(&bytes, &mut encoded);
            let decoded = decode_segment_bytes(&encoded).unwrap();
            prop_assert_eq!(decoded.as_ref(), &bytes[..]);
        }

        #[test]
        fn never_panics_never_grows(raw in vec(any::<u8>(), 0..64)) {
            if let Ok(decoded) = decode_segment_bytes(&raw) {
                prop_assert!(decoded.len() <= raw.len());
            }
        }
    }
}
