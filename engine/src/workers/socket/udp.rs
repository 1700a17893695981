//! The UDP serving loop of one core and socket.
//!
//! Datagrams are drained with one non-blocking `recvmmsg` per batch and answered with one
//! `sendmmsg`, so a loaded core makes two system calls per `udp_batch_size` requests instead of
//! two per request. When nothing is queued the loop polls for `network.udp_poll_before_park_us`
//! (the next datagram of a loaded socket is that close), then waits in the io_uring ring (a
//! 1-byte `MSG_PEEK` receive that leaves the datagram queued), so an idle core sleeps. What each
//! datagram means is [`crate::tracker::udp`]'s business.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::UdpSocket;
use pbts_proto::udp as wire;

use crate::metrics::Counter;
use crate::state::Core;
use crate::sys::{RecvBatch, SendBatch};
use crate::tracker::udp::{handle, handle_stateless};

/// Serves `socket` until the executor stops.
pub(crate) async fn run_udp_worker(core: Rc<Core>, socket: UdpSocket, batch: usize) {
    let fd = socket.as_raw_fd();
    let mut rx = RecvBatch::new(batch, wire::MAX_REQUEST_BYTES);
    let mut tx = SendBatch::new(batch);
    let mut out = Vec::with_capacity(batch * 512);
    let mut replies = Vec::with_capacity(batch);
    let mut peek = [0u8; 1];
    let handle = if core.state.config.network.udp_ceiling { handle_stateless } else { handle };
    let poll_before_park = Duration::from_micros(core.state.config.network.udp_poll_before_park_us);
    let mut idle_since: Option<Instant> = None;
    loop {
        let n = match rx.recv(fd) {
            Ok(n) => n,
            Err(e) => {
                // Typically a queued ICMP error from an earlier send; reading it cleared it.
                tracing::debug!("udp recvmmsg: {e:#}");
                continue;
            }
        };
        if n == 0 {
            // Under load the next datagram is microseconds away: polling for it costs less than
            // parking (a peek, an io_uring submission and wait, a task wake-up), which at a
            // steady half of the maximum load doubled the CPU per datagram. Only a socket quiet
            // for `network.udp_poll_before_park_us` parks.
            let quiet = *idle_since.get_or_insert_with(Instant::now);
            if quiet.elapsed() < poll_before_park {
                continue;
            }
            idle_since = None;
            if let Err(e) = socket.peek_from(&mut peek).await {
                tracing::debug!("udp wait: {e:#}");
            }
            continue;
        }
        idle_since = None;
        out.clear();
        replies.clear();
        // One clock read per batch: a batch is served within microseconds.
        let now = core.state.now();
        for i in 0..n {
            let (bytes, src) = rx.datagram(i);
            let Some(src) = src else { continue };
            let start = out.len();
            match bytes {
                Some(bytes) => {
                    // A panic costs this datagram (no reply), never the core.
                    let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handle(&core, bytes, src, now, &mut out);
                    }));
                    if answered.is_err() {
                        core.metrics().inc(Counter::UdpPanics);
                        tracing::error!("panic while handling a UDP datagram: dropped");
                        out.truncate(start);
                    }
                }
                None => core.metrics().inc(Counter::UdpDropped),
            }
            if out.len() > start {
                replies.push((start..out.len(), src));
            }
        }
        let mut sent = 0;
        while sent < replies.len() {
            match tx.send(fd, &out, &replies[sent..]) {
                Ok(k) if k > 0 => sent += k,
                other => {
                    if let Err(e) = other {
                        tracing::debug!("udp sendmmsg: {e:#}");
                    }
                    // Send buffer full (or an error for this destination): send one through
                    // the ring, which waits for room, then try the batch again.
                    let (range, to) = &replies[sent];
                    let _ = socket.send_to(&out[range.clone()], *to).await;
                    sent += 1;
                }
            }
        }
        // A busy socket (a full batch, or one polled instead of parked) must let this core's
        // HTTP tasks run too.
        glommio::yield_if_needed().await;
    }
}
