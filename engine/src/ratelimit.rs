//! Per-client token buckets for endpoints that do expensive work (BLS pairings, quote checks)
//! for clients that have not authenticated: `/register`, `/verify-receipt`,
//! `/verify-attestation`.
//!
//! A client is an IPv4 address or an IPv6 /64 (one subscriber's allocation: counting single
//! IPv6 addresses would give each attacker 2^64 buckets). The buckets live in one lock-sharded
//! map shared by every core, because SO_REUSEPORT spreads one client's connections over all
//! cores. The map is bounded: past [`MAX_CLIENTS`] entries, buckets that have refilled
//! completely (clients that are not being limited) are dropped, which forgets nothing a
//! limited client could gain from.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Most clients tracked before full buckets are swept.
pub const MAX_CLIENTS: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by client.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: DashMap<u128, Bucket, ahash::RandomState>,
    burst: f64,
    per_sec: f64,
}

/// The key of `ip`: the IPv4 address, or the IPv6 /64 prefix (IPv4-mapped addresses count as
/// IPv4).
fn client_key(ip: IpAddr) -> u128 {
    match crate::addr::canonical_ip(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64 << 64) | 1,
    }
}

impl RateLimiter {
    /// Buckets of `burst` tokens refilled at `per_minute` tokens a minute.
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            buckets: DashMap::with_hasher(ahash::RandomState::new()),
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute.max(1)) / 60.0,
        }
    }

    /// Takes a token for `ip` at `now`.
    ///
    /// # Errors
    /// How long until a token is there, when the bucket is empty.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_CLIENTS {
            self.sweep(now);
        }
        let mut entry =
            self.buckets.entry(client_key(ip)).or_insert(Bucket { tokens: self.burst, at: now });
        let b = entry.value_mut();
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    /// Drops the buckets that are full again; if that is not enough (a flood of distinct
    /// clients, all limited), drops everything rather than grow without bound.
    fn sweep(&self, now: Instant) {
        let refill = self.burst / self.per_sec;
        self.buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < refill);
        if self.buckets.len() >= MAX_CLIENTS {
            self.buckets.clear();
        }
    }

    /// Clients tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No client tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let l = RateLimiter::new(3, 60);
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.check(ip, t), Ok(()));
        }
        assert_eq!(l.check(ip, t), Err(Duration::from_secs(1)));
        // Another client has its own bucket.
        assert_eq!(l.check("192.0.2.2".parse().unwrap(), t), Ok(()));
        // One token a second.
        assert_eq!(l.check(ip, t + Duration::from_millis(1000)), Ok(()));
        let wait = l.check(ip, t + Duration::from_millis(1500)).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let l = RateLimiter::new(1, 1);
        let t = Instant::now();
        assert_eq!(l.check("2001:db8:1:2::1".parse().unwrap(), t), Ok(()));
        assert!(l.check("2001:db8:1:2:ffff::9".parse().unwrap(), t).is_err());
        assert_eq!(l.check("2001:db8:1:3::1".parse().unwrap(), t), Ok(()));
        // A mapped IPv4 address is that IPv4 client.
        assert_eq!(l.check("10.0.0.1".parse().unwrap(), t), Ok(()));
        assert!(l.check("::ffff:10.0.0.1".parse().unwrap(), t).is_err());
    }

    #[test]
    fn the_map_stays_bounded() {
        let l = RateLimiter::new(1, 60);
        let t = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let _ = l.check(IpAddr::V4(i.into()), t);
        }
        assert!(l.len() <= MAX_CLIENTS, "{}", l.len());
    }
}
