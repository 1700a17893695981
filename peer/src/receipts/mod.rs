//! Receipts over BEP 10 (docs/PBTS-EXTENSION.md): a downloader signs one receipt per verified
//! piece for the peer that delivered it, and sends it; the uploader verifies it, stores it
//! durably and reports it to the tracker, and chokes pbts peers that fall behind in receipts.
//!
//! ```text
//!  downloader: piece verified ─▶ signer thread ─▶ outbox per peer ─▶ pbts_receipt_batch
//!  uploader:   pbts_receipt_batch ─▶ checks ─▶ verify (BLS batch) + store (fsync), off the
//!              network path ─▶ counted ─▶ reporter ─▶ POST /<passkey>/report ─▶ settled
//! ```

pub mod ledger;
pub mod report;
pub mod signer;
pub mod state;
pub mod store;

use std::time::Duration;

/// Whether receipts are exchanged, and whether peers without them are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// No receipts: a plain BitTorrent peer (the extension is not advertised).
    Off,
    /// Receipts with pbts peers; peers without the extension are served after them.
    #[default]
    Prefer,
    /// Only pbts peers that keep up with their receipts are served.
    Require,
}

/// Receipt settings of a session.
#[derive(Clone, Debug)]
pub struct Config {
    /// See [`Mode`].
    pub mode: Mode,
    /// Pieces a pbts peer may be behind in receipts before we choke it.
    pub slack: usize,
    /// Receipts per `pbts_receipt_batch` message.
    pub batch: usize,
    /// Longest a signed receipt waits for others before its batch is sent.
    pub batch_delay: Duration,
    /// Test-only: sign nothing, send nothing (a peer that withholds receipts).
    pub withhold: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Prefer,
            slack: DEFAULT_SLACK,
            batch: 8,
            batch_delay: Duration::from_millis(200),
            withhold: false,
        }
    }
}

/// Default of [`Config::slack`]: room for a batch in flight and the signer's queue at a few
/// hundred pieces per second, small enough that a peer that pays nothing gets little.
pub const DEFAULT_SLACK: usize = 32;
