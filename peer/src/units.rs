//! Sizes, rates and durations as people type and read them: `500K`, `2M`, `30m`, `1.5 GiB`.

use std::time::Duration;

/// Bytes per second from `0`, `16384`, `500K`, `2M`, `1G` (binary multiples; an optional `B`,
/// `iB` and `/s` may follow).
///
/// # Errors
/// A text that is not such a rate, or one past `u64`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (number, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let bad = || format!("{text:?} is not a rate (examples: 0, 16384, 500K, 2M, 1G)");
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A duration from `0`, `90` (seconds), `90s`, `30m`, `2h`, `1d`.
///
/// # Errors
/// A text that is not such a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        Some((i, 'd')) => (&t[..i], 86_400),
        _ => (t, 1),
    };
    let bad = || format!("{text:?} is not a duration (examples: 0, 90s, 30m, 2h)");
    let n: u64 = number.parse().map_err(|_| bad())?;
    n.checked_mul(unit).map(Duration::from_secs).ok_or_else(bad)
}

/// `1.5 GiB`, `300.0 KiB`, `12 B`.
pub fn show_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `2.0 MiB/s`.
pub fn show_rate(bytes_per_sec: u64) -> String {
    format!("{}/s", show_bytes(bytes_per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_binary_multiples_and_refuse_nonsense() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("16384"), Ok(16384));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("2M"), Ok(2 << 20));
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("1.5g"), Ok(3 << 29));
        assert_eq!(parse_rate("10kB"), Ok(10240));
        for bad in ["", "K", "-1M", "fast", "1e30G", "NaN"] {
            assert_eq!(
                parse_rate(bad),
                Err(format!("{bad:?} is not a rate (examples: 0, 16384, 500K, 2M, 1G)"))
            );
        }
    }

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "m", "1.5h", "-3s", "99999999999999999999d", "5w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_rates_read_well() {
        assert_eq!(show_bytes(12), "12 B");
        assert_eq!(show_bytes(300 * 1024), "300.0 KiB");
        assert_eq!(show_bytes(3 << 29), "1.5 GiB");
        assert_eq!(show_bytes(u64::MAX), "16384.0 PiB");
        assert_eq!(show_rate(2 << 20), "2.0 MiB/s");
    }
}
