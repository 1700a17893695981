//! Attestation threads: quote verification for `POST /verify-attestation` (the PCCS collateral
//! fetch and dcap-qvl's checks), on threads of their own.
//!
//! ```text
//!  socket-NN ── try_submit(job) ──▶ in flight < limit? ──yes──▶ jobs (flume) ──▶ attest-01 … NN
//!     ▲                                  │ no                                         │
//!     │                      503 + Retry-After at once                                │
//!     └──────────── reply (flume, 1 slot; the core awaits recv_async) ◀───────────────┘
//! ```
//!
//! Why not glommio's `spawn_blocking`: each core has one blocking thread, shared by every
//! blocking task of that core (`/register`'s BLS checks, TEE provider calls). A PCCS fetch waits
//! on the network for up to `tee.timeout_secs`, so one slow PCCS stalled all of them: a tarpit
//! held `/register` for 7.5 s. Here a slow PCCS holds at most `tee.verify_threads` threads and
//! `tee.max_pending_verifications` requests; past that, clients are told to retry at once.
//!
//! The threads end when the pool is dropped (with the server's state) and their current job
//! returns, which a PCCS fetch does within `tee.timeout_secs`. Shutdown does not wait for them:
//! they hold nothing that needs committing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One verification, boxed for the job channel.
type Job = Box<dyn FnOnce() + Send>;

/// Why a verification was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// `limit` verifications are already running or queued: answer 503 with `Retry-After`.
    #[error(
        "attestation verifier busy: {in_flight} verifications in progress (limit {limit}); \
         retry later"
    )]
    Busy {
        /// Verifications running or queued when this one arrived.
        in_flight: usize,
        /// `tee.max_pending_verifications`.
        limit: usize,
    },
    /// Every attestation thread is gone (the server is stopping).
    #[error("attestation verifier stopped")]
    Stopped,
}

/// A bounded pool of attestation threads.
#[derive(Debug)]
pub struct AttestationPool {
    jobs: flume::Sender<Job>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
    threads: usize,
}

/// Counts one admitted verification until dropped (after the job ran, or with a job that never
/// ran because the threads are gone, or while a panicking job unwinds).
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AttestationPool {
    /// Starts `threads` threads named `attest-01`, `attest-02`, …, each through
    /// `spawn(name, work)` (which must run `work` on a new thread named `name`); at most `limit`
    /// verifications may be running or queued at once. 0 threads or a 0 limit count as 1.
    ///
    /// # Errors
    /// The first error `spawn` returns.
    pub fn with_spawner<S>(threads: usize, limit: usize, mut spawn: S) -> std::io::Result<Self>
    where
        S: FnMut(String, super::WorkerBody) -> std::io::Result<std::thread::JoinHandle<()>>,
    {
        let threads = threads.max(1);
        let (tx, rx) = flume::unbounded::<Job>();
        for i in 1..=threads {
            let rx = rx.clone();
            // Detached: see the module documentation.
            drop(spawn(format!("attest-{i:02}"), Box::new(move || run_attest_worker(&rx)))?);
        }
        Ok(Self { jobs: tx, in_flight: Arc::default(), limit: limit.max(1), threads })
    }

    /// Number of attestation threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `work` unless `limit` verifications are already running or queued. Never blocks:
    /// a serving core awaits the returned receiver with `recv_async`, which yields the result,
    /// or reports disconnection if `work` panicked.
    ///
    /// # Errors
    /// [`SubmitError::Busy`] at the limit, [`SubmitError::Stopped`] without threads.
    pub fn try_submit<T, F>(&self, work: F) -> Result<flume::Receiver<T>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.in_flight.clone());
        if before >= self.limit {
            return Err(SubmitError::Busy { in_flight: before, limit: self.limit });
        }
        let (reply, result) = flume::bounded(1);
        let job: Job = Box::new(move || {
            // Dropped while unwinding if `work` panics.
            let result = work();
            // The slot is free before the answer leaves: a client that retries on the answer
            // must find it free, however loaded the machine.
            drop(admitted);
            // The caller may have gone (connection closed): nobody to tell.
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| SubmitError::Stopped)?;
        Ok(result)
    }
}

/// The loop of one `attest-NN` thread: runs jobs until the pool is dropped.
///
/// # Errors
/// None: a job that panics costs that verification (its caller sees a disconnected reply), not
/// the thread.
fn run_attest_worker(jobs: &flume::Receiver<Job>) -> anyhow::Result<()> {
    for job in jobs.iter() {
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("panic while verifying an attestation: dropped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize, limit: usize) -> AttestationPool {
        AttestationPool::with_spawner(threads, limit, |name, work| {
            std::thread::Builder::new().name(name).spawn(move || work().unwrap())
        })
        .unwrap()
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses_until_one_finishes() {
        let p = pool(1, 2);
        let (release_tx, release) = flume::bounded::<()>(0);
        let (started_tx, started) = flume::bounded::<()>(1);
        let first = p
            .try_submit(move || {
                started_tx.send(()).unwrap();
                release.recv().unwrap();
                1
            })
            .unwrap();
        started.recv().unwrap();
        // Queued behind the first (one thread).
        let second = p.try_submit(|| 2).unwrap();
        assert_eq!(p.try_submit(|| 3).unwrap_err(), SubmitError::Busy { in_flight: 2, limit: 2 });
        assert_eq!(
            SubmitError::Busy { in_flight: 2, limit: 2 }.to_string(),
            "attestation verifier busy: 2 verifications in progress (limit 2); retry later"
        );
        release_tx.send(()).unwrap();
        assert_eq!((first.recv(), second.recv()), (Ok(1), Ok(2)));
        // Both slots are free again once the jobs have returned.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while p.in_flight.load(Ordering::Acquire) != 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        assert_eq!(p.try_submit(|| 4).unwrap().recv(), Ok(4));
    }

    #[test]
    fn a_panicking_job_frees_its_slot_and_the_thread_keeps_serving() {
        let p = pool(1, 1);
        let r = p.try_submit(|| -> u8 { panic!("boom") }).unwrap();
        assert!(r.recv().is_err(), "the reply is disconnected");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match p.try_submit(|| 7) {
                Ok(r) => break assert_eq!(r.recv(), Ok(7)),
                Err(SubmitError::Busy { .. }) => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
