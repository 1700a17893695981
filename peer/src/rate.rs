//! Transfer rates: a meter of recent throughput (for the unchoker and the progress line) and a
//! token-bucket limiter shared by every connection of a direction (`--max-up`, `--max-down`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds a [`RateMeter`] averages over.
pub const WINDOW_SECS: usize = 10;

/// Bytes moved per second over the last [`WINDOW_SECS`] seconds, in one-second buckets.
#[derive(Clone, Debug)]
pub struct RateMeter {
    start: Instant,
    /// Bytes per second, indexed by `second % WINDOW_SECS`.
    buckets: [u64; WINDOW_SECS],
    /// The second (since `start`) that `buckets` last held.
    current: u64,
    total: u64,
}

impl RateMeter {
    /// A meter whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self { start: now, buckets: [0; WINDOW_SECS], current: 0, total: 0 }
    }

    /// Counts `bytes` moved at `now`.
    pub fn add(&mut self, now: Instant, bytes: u64) {
        self.advance(now);
        self.buckets[(self.current % WINDOW_SECS as u64) as usize] += bytes;
        self.total += bytes;
    }

    /// Average bytes per second over the window that ends at `now` (a meter younger than the
    /// window averages over its age, at least one second).
    pub fn rate(&mut self, now: Instant) -> u64 {
        self.advance(now);
        let age = self.current + 1;
        let span = age.min(WINDOW_SECS as u64);
        self.buckets.iter().sum::<u64>() / span
    }

    /// Every byte ever counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Clears the buckets of seconds that passed since the last call.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let passed = second.saturating_sub(self.current);
        for s in 1..=passed.min(WINDOW_SECS as u64) {
            self.buckets[((self.current + s) % WINDOW_SECS as u64) as usize] = 0;
        }
        self.current = self.current.max(second);
    }
}

/// A token bucket in bytes shared by every connection of one direction. `None` rate: no limit.
#[derive(Debug)]
pub struct RateLimiter {
    /// Bytes per second; `None` means unlimited.
    rate: Option<u64>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: a block larger than the tokens at hand is sent and paid back by
    /// waiting, so a rate below one block per second still moves blocks.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` bytes per second (`None`: unlimited) with a burst of a quarter
    /// second, at least one 16 KiB block.
    pub fn new(rate: Option<u64>) -> Self {
        Self { rate, bucket: Mutex::new(Bucket { tokens: 0.0, last: Instant::now() }) }
    }

    /// Whether there is a limit at all.
    pub fn is_limited(&self) -> bool {
        self.rate.is_some()
    }

    /// Takes `bytes` from the bucket; returns how long the caller must wait before moving them.
    pub fn reserve(&self, now: Instant, bytes: u64) -> Duration {
        let Some(rate) = self.rate.filter(|&r| r > 0) else { return Duration::ZERO };
        let rate = rate as f64;
        let burst = (rate / 4.0).max(16_384.0);
        let mut b = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-b.tokens / rate) }
    }

    /// Waits until `bytes` may move.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.reserve(Instant::now(), bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_averages_over_its_window_and_forgets_old_seconds() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(t0);
        m.add(t0, 1000);
        // Younger than a second: the whole count is this second's rate.
        assert_eq!(m.rate(t0), 1000);
        m.add(t0 + Duration::from_millis(1500), 3000);
        // Two seconds of age.
        assert_eq!(m.rate(t0 + Duration::from_millis(1900)), 2000);
        // Ten seconds later both buckets have left the window.
        assert_eq!(m.rate(t0 + Duration::from_secs(12)), 0);
        assert_eq!(m.total(), 4000);
        // A full window of 100 bytes per second.
        let mut m = RateMeter::new(t0);
        for s in 0..30 {
            m.add(t0 + Duration::from_secs(s), 100);
        }
        assert_eq!(m.rate(t0 + Duration::from_secs(29)), 100);
        // A clock that goes backwards does not panic or corrupt.
        m.add(t0, 5);
        assert_eq!(m.total(), 3005);
    }

    #[test]
    fn the_limiter_lets_a_burst_through_then_spaces_blocks_at_the_rate() {
        let t0 = Instant::now();
        let l = RateLimiter::new(Some(64 * 1024));
        // The bucket starts empty: the first block waits its own time.
        assert_eq!(l.reserve(t0, 16384), Duration::from_millis(250));
        // After a second the bucket holds its burst (16 KiB, a quarter of 64 KiB).
        let t1 = t0 + Duration::from_secs(1);
        // It first pays back the debt of 16 KiB, then fills 16 KiB: one block passes.
        assert_eq!(l.reserve(t1 + Duration::from_millis(250), 16384), Duration::ZERO);
        assert_eq!(l.reserve(t1 + Duration::from_millis(250), 16384), Duration::from_millis(250));
        assert!(!RateLimiter::new(None).is_limited());
        assert_eq!(RateLimiter::new(None).reserve(t0, u64::MAX), Duration::ZERO);
    }
}
