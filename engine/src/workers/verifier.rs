//! Verifier threads fed by a channel, so that no serving core ever runs a pairing.
//!
//! ```text
//!  caller ── verify(receipts) ──► split by signer into ≤ N chunks ──► jobs (flume, unbounded)
//!     ▲                                                                  │
//!     │                                             verifier-01 … verifier-NN: verify_batch
//!     │                                                                  │
//!     └──── Receiver<verdicts> ◄── the last chunk to finish assembles ◄──┘
//!                                  the verdicts in input order
//! ```
//!
//! - `verify` never blocks (the job channel is unbounded): a glommio core can call it and
//!   await `recv_async` on the returned receiver. Bounding the queue is the caller's job; a
//!   1024-receipt batch takes ~0.4 s of one core.
//! - A large batch is split into up to one chunk per thread, each at least [`MIN_CHUNK`]
//!   receipts. The receipts are first ordered by signer so that each signer's receipts mostly
//!   stay in one chunk: a signer split across chunks costs one extra Miller loop and key
//!   decoding per extra chunk.
//! - Each thread draws its batch scalars from its own `rand::rng()` (a CSPRNG seeded by the
//!   operating system).
//! - A panic inside verification is caught; the batch's receiver then reports disconnection and
//!   the thread keeps serving.

use pbts_verifier::batch::{self, ReceiptError};
use pbts_verifier::receipt::Receipt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Fewest receipts worth a chunk of their own: below this, the per-chunk fixed costs (one
/// final exponentiation, per-signer Miller loops, key decoding) outweigh the parallelism.
pub const MIN_CHUNK: usize = 64;

type Verdicts = Vec<Result<(), ReceiptError>>;

/// A pool of verifier threads. Dropping it lets the threads finish the queued batches, then
/// joins them.
pub struct VerifierPool {
    jobs: Option<flume::Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for VerifierPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VerifierPool").field("threads", &self.handles.len()).finish()
    }
}

impl VerifierPool {
    /// Starts `threads` verifier threads named `verifier-01`, `verifier-02`, …; 0 means 1.
    ///
    /// # Panics
    ///
    /// If the operating system cannot spawn a thread.
    pub fn new(threads: usize) -> Self {
        Self::with_spawner(threads, |name, work| {
            std::thread::Builder::new().name(name).spawn(move || {
                if let Err(e) = work() {
                    tracing::error!("verifier thread failed: {e:#}");
                }
            })
        })
        .expect("spawning a verifier thread")
    }

    /// Like [`VerifierPool::new`], with the threads started by `spawn(name, work)`, which must
    /// run `work` on a new thread named `name` (a server wraps it to supervise the threads).
    ///
    /// # Errors
    ///
    /// The first error `spawn` returns (threads already started finish with the pool).
    pub fn with_spawner<S>(threads: usize, mut spawn: S) -> std::io::Result<Self>
    where
        S: FnMut(String, super::WorkerBody) -> std::io::Result<JoinHandle<()>>,
    {
        let threads = threads.max(1);
        let (tx, rx) = flume::unbounded::<Job>();
        let mut pool = Self { jobs: Some(tx), handles: Vec::with_capacity(threads) };
        for i in 1..=threads {
            let rx = rx.clone();
            pool.handles.push(spawn(
                format!("verifier-{i:02}"),
                Box::new(move || run_verifier_worker(&rx)),
            )?);
        }
        Ok(pool)
    }

    /// Number of verifier threads.
    pub fn threads(&self) -> usize {
        self.handles.len()
    }

    /// Queues `receipts` and returns at once. The receiver yields one `Vec` with a verdict per
    /// receipt, in input order (an empty input yields an empty `Vec`), or reports
    /// disconnection if verification panicked.
    pub fn verify(&self, receipts: Vec<Receipt>) -> flume::Receiver<Vec<Result<(), ReceiptError>>> {
        let (reply, verdicts) = flume::bounded(1);
        let n = receipts.len();
        if n == 0 {
            // Cannot fail: the channel has room and we hold the receiver.
            let _ = reply.send(Vec::new());
            return verdicts;
        }
        let chunks = self.threads().min(n.div_ceil(MIN_CHUNK));
        let gather = Arc::new(Gather {
            verdicts: Mutex::new(vec![Ok(()); n]),
            remaining: AtomicUsize::new(chunks),
            reply,
        });
        let mut jobs = Vec::with_capacity(chunks);
        if chunks == 1 {
            jobs.push(Job { receipts, positions: None, gather });
        } else {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| receipts[i].receiver_pk);
            let (base, extra) = (n / chunks, n % chunks);
            let mut start = 0;
            for c in 0..chunks {
                let len = base + usize::from(c < extra);
                let positions = order[start..start + len].to_vec();
                let chunk = positions.iter().map(|&i| receipts[i]).collect();
                jobs.push(Job {
                    receipts: chunk,
                    positions: Some(positions),
                    gather: gather.clone(),
                });
                start += len;
            }
        }
        if let Some(tx) = &self.jobs {
            for job in jobs {
                // Fails only if every thread is gone; the dropped job then disconnects the
                // caller's receiver.
                let _ = tx.send(job);
            }
        }
        verdicts
    }

    /// [`VerifierPool::verify`], waiting for the verdicts. Not for engine cores.
    ///
    /// # Panics
    ///
    /// If verification panicked (a bug).
    pub fn verify_blocking(&self, receipts: Vec<Receipt>) -> Vec<Result<(), ReceiptError>> {
        self.verify(receipts).recv().expect("a verifier thread panicked while verifying this batch")
    }
}

impl Drop for VerifierPool {
    fn drop(&mut self) {
        // Closing the channel ends each thread's loop once the queue is empty.
        drop(self.jobs.take());
        for handle in self.handles.drain(..) {
            // A thread only ends by returning: verification panics are caught inside.
            let _ = handle.join();
        }
    }
}

/// A chunk of one caller's batch.
struct Job {
    receipts: Vec<Receipt>,
    /// Where each receipt sits in the caller's batch; `None`: the whole batch, in order.
    positions: Option<Vec<usize>>,
    gather: Arc<Gather>,
}

/// One caller's batch, being assembled from its chunks.
struct Gather {
    verdicts: Mutex<Verdicts>,
    /// Chunks still running.
    remaining: AtomicUsize,
    reply: flume::Sender<Verdicts>,
}

impl Gather {
    fn finish(&self, positions: Option<&[usize]>, chunk: Verdicts) {
        // The lock is uncontended but for the few threads of one batch, and never held long.
        let mut all = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        match positions {
            Some(positions) => {
                for (&at, verdict) in positions.iter().zip(chunk) {
                    all[at] = verdict;
                }
            }
            None => *all = chunk,
        }
        // The last chunk sends. Every other chunk wrote under the lock before its decrement.
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The caller may have dropped its receiver: nothing to do then.
            let _ = self.reply.send(std::mem::take(&mut *all));
        }
    }
}

/// The loop of one `verifier-NN` thread: verifies batches until the pool is dropped.
///
/// # Errors
/// None: a batch that panics costs its callers' replies, not the thread.
fn run_verifier_worker(jobs: &flume::Receiver<Job>) -> anyhow::Result<()> {
    let mut rng = rand::rng();
    while let Ok(job) = jobs.recv() {
        let result =
            catch_unwind(AssertUnwindSafe(|| batch::verify_batch(&job.receipts, &mut rng)));
        // Chunks are never empty; on a panic the job drops, and with it the caller's reply.
        if let Ok(Ok(verdicts)) = result {
            job.gather.finish(job.positions.as_deref(), verdicts);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbts_testkit::receipts::{key, signed_receipts};
    use pbts_verifier::batch::{verify_batch, verify_one};
    use pbts_verifier::receipt::SignatureBytes;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// 200 receipts from 5 signers with bad receipts of several kinds spread through them.
    fn mixed_batch() -> (Vec<Receipt>, Verdicts) {
        let mut batch = signed_receipts(200, 5, 0x5a);
        batch[3].signature = SignatureBytes([0xff; 96]);
        key(0x77).sign_receipt(&mut batch[20]);
        batch[37].piece_index ^= 1;
        batch[54].receiver_pk.0[0] &= 0x7f;
        batch[71].timestamp += 1;
        batch[199].signature = batch[198].signature;
        let expected: Verdicts = batch.iter().map(verify_one).collect();
        assert_eq!(expected.iter().filter(|v| v.is_err()).count(), 6);
        (batch, expected)
    }

    #[test]
    fn pool_matches_batch_and_keeps_order() {
        let (batch, expected) = mixed_batch();
        let direct = verify_batch(&batch, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(direct, expected);
        for threads in [1, 2, 3] {
            let pool = VerifierPool::new(threads);
            assert_eq!(pool.threads(), threads);
            assert_eq!(pool.verify_blocking(batch.clone()), expected, "{threads} threads");
            // Small batches stay in one chunk.
            assert_eq!(pool.verify_blocking(batch[..5].to_vec()), expected[..5], "{threads}");
        }
    }

    #[test]
    fn pool_serves_concurrent_batches() {
        let (batch, expected) = mixed_batch();
        let pool = VerifierPool::new(2);
        let pending: Vec<_> = (0..4)
            .map(|i| {
                let part = batch[i * 50..(i + 1) * 50].to_vec();
                (i, pool.verify(part))
            })
            .collect();
        for (i, rx) in pending {
            assert_eq!(rx.recv().unwrap(), expected[i * 50..(i + 1) * 50]);
        }
    }

    #[test]
    fn empty_input_gives_empty_verdicts() {
        let pool = VerifierPool::new(2);
        assert_eq!(pool.verify_blocking(Vec::new()), Vec::new());
        assert_eq!(VerifierPool::new(0).threads(), 1);
    }

    #[test]
    fn drop_joins_after_queued_work() {
        let batch = signed_receipts(3, 1, 0x5a);
        let pool = VerifierPool::new(2);
        let rx = pool.verify(batch);
        drop(pool);
        assert_eq!(rx.recv().unwrap(), vec![Ok(()); 3]);
    }

    #[test]
    fn layout() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<VerifierPool>();
        assert_eq!(format!("{:?}", VerifierPool::new(1)), "VerifierPool { threads: 1 }");
    }
}
