//! The store worker (`store-01`): owns the database and the double-spend ledger, applies
//! commands from every other thread in batched transactions, and answers each only after its
//! commit ([`crate::store::Db::run`]).

use std::sync::Arc;

use crate::store::{Accounts, Db, StoreCmd};

/// Serves store commands until every sender is gone (after the serving cores stopped and
/// flushed their accounting).
///
/// # Errors
/// None today: a failed commit is answered to its callers and its accounting retried, so the
/// database never stops the thread. The signature is the workers' common one.
pub fn run_store_worker(
    db: Db,
    commands: flume::Receiver<StoreCmd>,
    accounts: Arc<Accounts>,
) -> anyhow::Result<()> {
    db.run(commands, accounts);
    Ok(())
}
