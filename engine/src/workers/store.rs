//! The store worker (`store-01`): owns the database ([`crate::store::Db`]) and the double-spend
//! ledger, and applies the commands of every other thread in batched transactions, answering
//! each only after its commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::store::{Accounts, Db, StoreCmd};

/// How soon announce accounting from a failed commit is retried when nothing else arrives.
const FLUSH_RETRY: Duration = Duration::from_secs(1);

/// Failed accounting batches kept for retry (about 8 minutes of flushes from 16 cores at the
/// default interval) before the oldest are dropped, so a broken disk cannot exhaust memory.
const MAX_RETRY_FLUSHES: usize = 4096;

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 4096;

/// Serves store commands until every sender is gone (after the serving cores stopped and
/// flushed their accounting). Commands that arrive together are committed in one transaction;
/// replies go out after the commit.
///
/// Announce accounting (`Flush`) has no one to tell when a commit fails, so it is kept and
/// retried with the next batch, or after [`FLUSH_RETRY`] when nothing else arrives: claimed
/// totals already counted in memory are never silently dropped from disk. What a crash can
/// still lose is bounded: the deltas of the last `storage.flush_interval_ms` on each core, plus
/// a failed batch waiting for its retry.
///
/// # Errors
/// None today: a failed commit is answered to its callers and its accounting retried, so the
/// database never stops the thread. The signature is the workers' common one.
pub fn run_store_worker(
    mut db: Db,
    commands: flume::Receiver<StoreCmd>,
    accounts: Arc<Accounts>,
) -> anyhow::Result<()> {
    let mut retry: Vec<StoreCmd> = Vec::new();
    loop {
        let first = if retry.is_empty() {
            commands.recv().ok()
        } else {
            match commands.recv_timeout(FLUSH_RETRY) {
                Ok(cmd) => Some(cmd),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    // Last chance before the thread ends.
                    db.apply(std::mem::take(&mut retry), &accounts);
                    break;
                }
            }
        };
        if first.is_none() && retry.is_empty() {
            break;
        }
        let mut batch = std::mem::take(&mut retry);
        batch.extend(first);
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        retry = db.apply(batch, &accounts);
        if retry.len() > MAX_RETRY_FLUSHES {
            let dropped = retry.len() - MAX_RETRY_FLUSHES;
            retry.drain(..dropped);
            tracing::error!("database unwritable: dropped {dropped} batches of accounting");
        }
        db.health().accounting_retrying.store(retry.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}
