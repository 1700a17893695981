//! Hex and base64: every hex and base64 text of the engine goes through these four functions
//! (one well-kept codec each, decoding from bytes, never by slicing a `str`).

/// Lowercase hex of arbitrary bytes.
pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// Decodes hex (either case, surrounding whitespace and a `0x` prefix allowed); `None` for an
/// odd length or any non-hex byte, including every byte of a multi-byte UTF-8 character.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    const_hex::decode(text.trim().as_bytes()).ok()
}

/// Standard base64 (with padding) of arbitrary bytes.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64 (surrounding whitespace allowed); `None` if it is not.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text.trim().as_bytes()).ok()
}
