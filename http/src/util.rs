//! Small allocation-free helpers shared by the parsers and writers.

use core::fmt;

pub(crate) use pbts_proto::decimal::push_u64;

/// A fixed-capacity [`fmt::Write`] target on the stack, for `Display` output of known bounded
/// length (IP addresses: at most 45 bytes).
pub(crate) struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    pub(crate) fn new() -> Self {
        Self { buf: [0; N], len: 0 }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Formats an IP address into a stack buffer (45 bytes is the longest textual IPv6 form).
pub(crate) fn ip_text(ip: std::net::IpAddr) -> StackBuf<64> {
    use fmt::Write as _;
    let mut buf = StackBuf::new();
    // Cannot fail: the longest form (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`) is 45
    // bytes. Were it ever to, the address would be written truncated, never a panic.
    let _ = write!(buf, "{ip}");
    buf
}

/// Value of one ASCII hex digit (percent-decoding reads digits one at a time; whole hex strings
/// go through `const-hex`).
pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_ip_fits() {
        let ip: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        let text = ip_text(ip);
        assert_eq!(text.as_bytes(), ip.to_string().as_bytes());
        assert!(!text.as_bytes().is_empty());
    }
}
