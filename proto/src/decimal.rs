//! Allocation-free decimal formatting for the writers (no `fmt` machinery: this runs for
//! every response and every bencoded integer).

/// Appends the decimal form of `v` (no `fmt` machinery: this runs for every response).
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
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
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
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
}
