//! The serving cores: one glommio executor per core, pinned, each with a UDP socket and a TCP
//! listener per listen address (SO_REUSEPORT spreads clients over the cores). [`udp`] and
//! [`http`] are the serving loops; what requests mean is [`crate::tracker`]'s and
//! [`crate::api`]'s business.

pub(crate) mod http;
pub(crate) mod http_input;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::state::{Core, State};

fn new_socket(addr: SocketAddr, ty: Type, recv_buffer: Option<usize>) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let proto = if ty == Type::DGRAM { Protocol::UDP } else { Protocol::TCP };
    let s = Socket::new(domain, ty, Some(proto))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if let Some(size) = recv_buffer {
        // The kernel caps this at net.core.rmem_max; a smaller buffer is not fatal.
        let _ = s.set_recv_buffer_size(size);
    }
    s.bind(&addr.into())?;
    if ty == Type::STREAM {
        s.listen(1024)?;
    }
    Ok(s)
}

/// The sockets of one core: (udp, tcp) per listen address.
pub(crate) type CoreSockets = Vec<(Socket, Socket)>;

/// Binds every socket for every core up front (so a bad address fails start-up, and port 0
/// resolves to one port shared by UDP, TCP and all cores).
pub(crate) fn bind_all(
    config: &Config,
    cores: usize,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<CoreSockets>)> {
    let rcvbuf = Some(config.network.udp_recv_buffer_bytes);
    let mut per_core: Vec<CoreSockets> = (0..cores).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for &wanted in &config.network.listen {
        let mut attempt = 0;
        let (addr, first) = loop {
            attempt += 1;
            let tcp = new_socket(wanted, Type::STREAM, None)
                .with_context(|| format!("bind TCP {wanted}"))?;
            let local = tcp.local_addr()?.as_socket().context("local address")?;
            match new_socket(local, Type::DGRAM, rcvbuf) {
                Ok(udp) => break (local, (udp, tcp)),
                // Port 0 picked a TCP port whose UDP twin is taken: pick again.
                Err(_) if wanted.port() == 0 && attempt < 20 => continue,
                Err(e) => return Err(e).with_context(|| format!("bind UDP {local}")),
            }
        };
        per_core[0].push(first);
        for sockets in per_core.iter_mut().skip(1) {
            let udp = new_socket(addr, Type::DGRAM, rcvbuf)
                .with_context(|| format!("bind UDP {addr}"))?;
            let tcp =
                new_socket(addr, Type::STREAM, None).with_context(|| format!("bind TCP {addr}"))?;
            sockets.push((udp, tcp));
        }
        addrs.push(addr);
    }
    Ok((addrs, per_core))
}

/// Serves core `index`'s sockets until shutdown, flushing its accounting to the store on the
/// configured interval and once more at the end.
pub(crate) async fn run_socket_worker(
    state: Arc<State>,
    index: usize,
    sockets: CoreSockets,
) -> anyhow::Result<()> {
    let core = Rc::new(Core::new(state, index));
    let batch = core.state.config.network.udp_batch_size;
    let mut tasks = Vec::new();
    for (udp, tcp) in sockets {
        let udp = glommio::net::UdpSocket::from(udp);
        tasks.push(glommio::spawn_local(udp::run_udp_worker(core.clone(), udp, batch)));
        // Queued connections are taken with plain non-blocking accept4 calls on a duplicate
        // (O_NONBLOCK is shared by both descriptors); glommio's listener waits when none is.
        let plain = tcp.try_clone().context("duplicate the TCP listener")?;
        plain.set_nonblocking(true).context("make the TCP listener non-blocking")?;
        let listener = crate::sys::adopt_listener(tcp);
        let worker = http::run_http_worker(core.clone(), plain, listener);
        tasks.push(glommio::spawn_local(worker));
    }
    let flush_every = Duration::from_millis(core.state.config.storage.flush_interval_ms);
    let mut last_flush = Instant::now();
    // Poll for shutdown and flush accounting on the same timer.
    while !core.state.is_shutting_down() {
        glommio::timer::sleep(Duration::from_millis(50).min(flush_every)).await;
        if last_flush.elapsed() >= flush_every {
            core.flush();
            last_flush = Instant::now();
        }
    }
    // Dropping the task handles cancels the serving loops; connection tasks end with the
    // executor.
    drop(tasks);
    core.flush();
    Ok(())
}
