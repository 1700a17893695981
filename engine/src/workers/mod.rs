//! The engine's worker roles, each on its own named thread under the supervisor
//! ([`crate::supervisor`]).
//!
//! | role | threads | entry | what |
//! |---|---|---|---|
//! | [`socket`] | `socket-NN` | [`socket::run_socket_worker`] | one pinned glommio executor per core: UDP and HTTP |
//! | [`store`] | `store-01` | [`store::run_store_worker`] | the database and the double-spend ledger |
//! | [`verifier`] | `verifier-NN` | [`verifier::VerifierPool`] | BLS batch verification of receipts for the serving cores |
//! | [`attest`] | `attest-NN` | [`attest::AttestationPool`] | TDX quote verification and PCCS fetches, bounded |
//! | [`outbox`] | `outbox-01` | [`outbox::run_outbox_worker`] | verified credit to the Reputation contract, in batches |
//! | [`cleaner`] | `cleaner-01` | [`cleaner::run_cleaner_worker`] | expiry of peers that stopped announcing |
//!
//! Each returns `anyhow::Result<()>` on its named thread; the supervisor hears how each ended.
//! All of them stop on one [`Shutdown`] signal.

pub mod attest;
pub mod cleaner;
pub mod outbox;
pub mod socket;
pub mod store;
pub mod verifier;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The body of a worker thread, as a pool hands it to the spawner that supervises it.
pub type WorkerBody = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

/// The one shutdown signal every worker obeys. Serving cores poll [`Shutdown::is_triggered`] on
/// the timer they already wake on; the blocking workers (cleaner, outbox) sleep in
/// [`Shutdown::wait`], which returns at once when shutdown is triggered. The store and verifier
/// threads end when their last sender drops, after the cores that feed them.
#[derive(Debug, Default)]
pub struct Shutdown {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shutdown {
    /// Asks every worker to stop (idempotent).
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        // Taken so that a waiter between its check and its sleep cannot miss the wake-up.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.notify_all();
    }

    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps for `period` or until shutdown is triggered; whether it was.
    pub fn wait(&self, period: Duration) -> bool {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let _unused = self
            .wake
            .wait_timeout_while(guard, period, |()| !self.is_triggered())
            .unwrap_or_else(PoisonError::into_inner);
        self.is_triggered()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn wait_returns_at_once_on_trigger() {
        let s = Arc::new(Shutdown::default());
        assert!(!s.wait(Duration::from_millis(1)));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (s.wait(Duration::from_secs(600)), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        s.trigger();
        let (stopped, took) = waiter.join().unwrap();
        assert!(stopped && s.is_triggered());
        assert!(took < Duration::from_secs(600));
        // Once triggered, every wait returns at once.
        assert!(s.wait(Duration::from_secs(600)));
    }
}
