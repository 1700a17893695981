//! The cleaner worker (`cleaner-01`): every `tracker.cleanup_interval_secs`, removes peers
//! that stopped announcing, and frees their owners' slots in the per-user torrent cap.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// Sweeps until shutdown.
///
/// # Errors
/// None: the sweep cannot fail. The signature is the workers' common one.
pub fn run_cleaner_worker(state: &Arc<State>) -> anyhow::Result<()> {
    let every = Duration::from_secs(state.config.tracker.cleanup_interval_secs.into());
    let mut owners = Vec::new();
    while !state.shutdown.wait(every) {
        owners.clear();
        let removed = state.swarms.expire(state.now(), &mut owners);
        crate::tracker::release_expired(state, &owners);
        tracing::debug!("expired {removed} peers");
    }
    Ok(())
}
