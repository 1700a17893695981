//! The downloader's signer: one thread that signs receipts in order, so signing (about a
//! millisecond of BLS work each) never runs on the network tasks and never takes more than one
//! core.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::Receipt;
use tokio::sync::mpsc;

use crate::picker::PeerKey;

/// A receipt to sign for the peer `for_peer` (the one that delivered the piece).
#[derive(Debug)]
pub struct Job {
    /// The peer to send it to once signed.
    pub for_peer: PeerKey,
    /// The receipt, its signature still empty.
    pub receipt: Receipt,
}

/// Handle to the signer thread; it ends when the handle and its clones are dropped.
#[derive(Debug, Clone)]
pub struct Signer {
    jobs: std_mpsc::Sender<Job>,
}

impl Signer {
    /// Starts the thread; signed receipts come out of `done` in the order they went in.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn spawn(key: Arc<SecretKey>, done: mpsc::UnboundedSender<Job>) -> std::io::Result<Self> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new().name("peer-signer".into()).spawn(move || {
            while let Ok(mut job) = rx.recv() {
                key.sign_receipt(&mut job.receipt);
                if done.send(job).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs })
    }

    /// Queues a receipt; `false` if the thread is gone.
    pub fn sign(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}
