//! The engine's two clocks, as distinct types so one is never read as the other:
//!
//! - [`Uptime`]: whole seconds since this process started, monotonic. Swarm peers expire by it
//!   and UDP connection ids are bucketed by it; it means nothing after a restart.
//! - [`unix_now`]: wall-clock Unix seconds. Receipt timestamps, record creation times and the
//!   chain outbox use it; it survives restarts and may jump with the system clock.

use std::time::Instant;

/// Whole seconds since the process started (u32: 136 years).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uptime(pub u32);

impl Uptime {
    /// The seconds elapsed since `start` (saturating at the end of the u32 range).
    pub fn since(start: Instant) -> Self {
        Self(u32::try_from(start.elapsed().as_secs()).unwrap_or(u32::MAX))
    }

    /// The seconds.
    pub fn secs(self) -> u32 {
        self.0
    }

    /// `secs` later (saturating).
    #[must_use]
    pub fn after(self, secs: u32) -> Self {
        Self(self.0.saturating_add(secs))
    }
}

/// Unix seconds now (0 if the system clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_saturates() {
        assert_eq!(Uptime(u32::MAX - 1).after(5), Uptime(u32::MAX));
        assert_eq!(Uptime(7).after(3).secs(), 10);
        assert_eq!(Uptime::since(Instant::now()), Uptime(0));
        assert!(unix_now() > 1_700_000_000);
    }
}
