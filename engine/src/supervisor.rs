//! Every worker thread runs under one supervisor: when a role ends — by returning, failing or
//! panicking — the supervisor hears of it by name. A role that ends while the server is not
//! shutting down is fatal: the server stops and the process exits non-zero, so systemd or
//! Docker restarts it. Never a half-alive tracker (a dead serving core leaves its share of the
//! SO_REUSEPORT traffic queued forever).
//!
//! ```text
//!  socket-NN ─┐
//!  store-01  ─┤  ExitNotice (drop guard: sent on return *and* during unwinding)
//!  cleaner-01 ┼──────────────────────────────────────────────▶ events ──▶ Server::supervise
//!  outbox-01 ─┤                                                  ▲
//!  verifier-NN┘                         ShutdownHandle::shutdown ┘ (SIGTERM, SIGINT)
//! ```
//!
//! # Fault injection
//!
//! `PBTS_FAULT_PANIC=<role>` (for example `cleaner-01` or `socket-02`) makes that role panic
//! shortly after it starts, and `PBTS_FAULT_PANIC=request` makes `GET /fault/panic` and a UDP
//! datagram starting with [`FAULT_DATAGRAM`] panic inside their handlers. The tests of the
//! supervisor and of the per-request panic guard use it; it is off unless the variable is set.
//!
//! `PBTS_FAULT_COMMIT=<n>` makes the first `n` store commits that carry announce accounting fail
//! as a full or broken disk would, so the test of the store's retry sees real lost-then-retried
//! commits.

use std::time::Duration;

/// The environment variable of the fault injection hooks.
pub const FAULT_ENV: &str = "PBTS_FAULT_PANIC";

/// A UDP datagram starting with these bytes panics in its handler under
/// `PBTS_FAULT_PANIC=request`.
pub const FAULT_DATAGRAM: &[u8] = b"pbts-fault-panic";

/// How long an injected role fault waits before panicking (so the server is up and serving).
pub const FAULT_DELAY: Duration = Duration::from_millis(300);

/// The environment variable that makes store commits fail (see the module docs).
pub const FAULT_COMMIT_ENV: &str = "PBTS_FAULT_COMMIT";

/// How many accounting commits `PBTS_FAULT_COMMIT` makes fail (0 when unset or not a number).
pub fn commit_faults() -> u32 {
    std::env::var(FAULT_COMMIT_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Whether `PBTS_FAULT_PANIC` names `what` (a role, or `request`).
pub fn fault_injected(what: &str) -> bool {
    std::env::var(FAULT_ENV).is_ok_and(|v| v.split(',').any(|w| w.trim() == what))
}

/// How a role ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It returned normally.
    Returned,
    /// It returned an error (the text).
    Failed(String),
    /// It panicked (the panic message went to the log through the panic hook).
    Panicked,
}

/// What the supervisor hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Shutdown was requested (a signal or [`crate::ShutdownHandle::shutdown`]).
    ShutdownRequested,
    /// A role's thread ended.
    Exit {
        /// The role's thread name, e.g. `store-01`.
        role: String,
        /// How.
        ending: Ending,
    },
}

/// Sends [`Event::Exit`] for its role when dropped: when the role returns, and also while its
/// thread unwinds from a panic (drop guards run during unwinding), which catches panics outside
/// any code we could wrap, such as an executor failing to set up its ring.
#[derive(Debug)]
pub(crate) struct ExitNotice {
    role: String,
    events: flume::Sender<Event>,
    failure: Option<String>,
}

impl ExitNotice {
    pub(crate) fn new(role: impl Into<String>, events: flume::Sender<Event>) -> Self {
        Self { role: role.into(), events, failure: None }
    }

    /// Records that the role returned an error.
    pub(crate) fn failed(&mut self, why: String) {
        self.failure = Some(why);
    }
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let ending = if std::thread::panicking() {
            Ending::Panicked
        } else {
            self.failure.take().map_or(Ending::Returned, Ending::Failed)
        };
        // The supervisor may be gone already (the server was dropped): nothing to tell.
        let _ = self.events.send(Event::Exit { role: std::mem::take(&mut self.role), ending });
    }
}

/// Spawns a plain thread for `role` that reports its end. `body` returns an error to fail the
/// role with a message.
///
/// # Errors
/// If the operating system cannot spawn the thread.
pub(crate) fn spawn_role<F>(
    role: &str,
    events: &flume::Sender<Event>,
    body: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> anyhow::Result<()> + Send + 'static,
{
    let mut notice = ExitNotice::new(role, events.clone());
    let name = role.to_owned();
    std::thread::Builder::new().name(role.to_owned()).spawn(move || {
        if fault_injected(&name) {
            std::thread::sleep(FAULT_DELAY);
            panic!("injected fault: {FAULT_ENV}={name}");
        }
        if let Err(e) = body() {
            tracing::error!("{name} failed: {e:#}");
            notice.failed(format!("{e:#}"));
        }
        drop(notice);
    })
}

/// A one-line description of an exit, for the log and the process's error.
pub(crate) fn describe(role: &str, ending: &Ending) -> String {
    match ending {
        Ending::Returned => format!("worker {role} stopped unexpectedly"),
        Ending::Failed(why) => format!("worker {role} failed: {why}"),
        Ending::Panicked => format!("worker {role} panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reports_return_failure_and_panic() {
        let (tx, rx) = flume::unbounded();
        spawn_role("ok-01", &tx, || Ok(())).unwrap().join().unwrap();
        spawn_role("err-01", &tx, || anyhow::bail!("disk full")).unwrap().join().unwrap();
        let h = spawn_role("boom-01", &tx, || panic!("expected in this test")).unwrap();
        assert!(h.join().is_err());
        let got: Vec<Event> = rx.try_iter().collect();
        assert_eq!(
            got,
            vec![
                Event::Exit { role: "ok-01".into(), ending: Ending::Returned },
                Event::Exit { role: "err-01".into(), ending: Ending::Failed("disk full".into()) },
                Event::Exit { role: "boom-01".into(), ending: Ending::Panicked },
            ]
        );
        assert_eq!(describe("store-01", &Ending::Panicked), "worker store-01 panicked");
    }
}
