//! Small allocation-free formatting helpers shared by the writers.

use core::fmt;

/// Appends the decimal form of `v` (no `fmt` machinery: this runs for every response).
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    // u64::MAX has 20 decimal digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        start -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Appends the decimal form of `v`, with a leading `-` when negative.
pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for (v, s) in [(0u64, "0"), (7, "7"), (10, "10"), (u64::MAX, "18446744073709551615")] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(out, s.as_bytes());
        }
        for (v, s) in [(0i64, "0"), (-1, "-1"), (i64::MIN, "-9223372036854775808")] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(out, s.as_bytes());
        }
    }

    #[test]
    fn longest_ip_fits() {
        let ip: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        let text = ip_text(ip);
        assert_eq!(text.as_bytes(), ip.to_string().as_bytes());
        assert!(!text.as_bytes().is_empty());
    }
}
