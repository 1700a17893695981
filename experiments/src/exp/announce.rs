//! Announce throughput and latency, UDP and HTTP, with 1, 2, 4 and 8 serving threads, from a
//! built-in load generator (many requests in flight, latency per request in an hdrhistogram),
//! and the scaling efficiency `rps(t) / (t · rps(1))`.
//!
//! The generator and the tracker share this machine: with more serving threads than cores the
//! numbers show oversubscription, not scaling; the table says how many cores there were. For
//! tracker-only figures against aquatic use `vs-aquatic` (separate processes, pinned CPUs).
//!
//! `--flamegraph` samples this process (tracker threads and generator alike, thread names at the
//! root of each stack) at 997 Hz with pprof during the UDP run with the most threads, and writes
//! an SVG: in-process sampling needs neither perf nor kernel symbols.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pbts_engine::config::TrackerMode;
use pbts_proto::udp::{self, AnnounceRequest, ConnectionId, TransactionId};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

use super::{Http, Settings, Tracker};
use crate::report::{Cell, Outcome, Raw, Table};

/// Requests each UDP generator thread keeps in flight.
const UDP_WINDOW: usize = 64;
/// Generator threads per protocol.
const GENERATORS: usize = 2;
/// HTTP connections per generator thread, each pipelining [`HTTP_DEPTH`] requests.
const HTTP_CONNECTIONS: usize = 8;
const HTTP_DEPTH: usize = 4;
/// Distinct torrents announced.
const TORRENTS: u64 = 1000;

struct Load {
    responses: u64,
    hist: Histogram<u64>,
}

fn info_hash(i: u64) -> InfoHash {
    let mut ih = [0u8; 20];
    ih[..8].copy_from_slice(&(i % TORRENTS).to_be_bytes());
    ih[8] = 0x5a;
    InfoHash(ih)
}

fn udp_generator(
    tracker: std::net::SocketAddr,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<Load> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = Vec::with_capacity(128);
    udp::write_connect_request(&mut buf, TransactionId(1));
    sock.send_to(&buf, tracker)?;
    let mut rx = [0u8; 2048];
    let n = sock.recv(&mut rx)?;
    anyhow::ensure!(n == 16, "connect answer of {n} bytes");
    let conn = ConnectionId(u64::from_be_bytes(rx[8..16].try_into().expect("8 bytes")));
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let mut sent_at = vec![None::<Instant>; UDP_WINDOW];
    let mut next: u64 = seed << 32;
    let send = |slot: usize, sock: &UdpSocket, next: &mut u64| -> anyhow::Result<Instant> {
        *next += 1;
        let mut peer = [0u8; 20];
        peer[..8].copy_from_slice(&next.to_be_bytes());
        let r = AnnounceRequest {
            connection_id: conn,
            transaction_id: TransactionId(slot as u32),
            info_hash: info_hash(*next),
            peer_id: PeerId(peer),
            downloaded: 0,
            left: 0,
            uploaded: 0,
            event: AnnounceEvent::None,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            key: 0,
            num_want: Some(50),
            port: 6881,
            url_data: &[],
        };
        let mut out = Vec::with_capacity(100);
        udp::write_announce_request(&mut out, &r);
        sock.send_to(&out, tracker)?;
        Ok(Instant::now())
    };
    for (slot, at) in sent_at.iter_mut().enumerate() {
        *at = Some(send(slot, &sock, &mut next)?);
    }
    let end = Instant::now() + duration;
    let mut responses = 0;
    while Instant::now() < end {
        match sock.recv(&mut rx) {
            Ok(n) if n >= 20 && rx[..4] == 1u32.to_be_bytes() => {
                let slot = u32::from_be_bytes(rx[4..8].try_into().expect("4 bytes")) as usize;
                if let Some(t) = sent_at.get_mut(slot).and_then(Option::take) {
                    hist.record((t.elapsed().as_micros() as u64).max(1))?;
                    responses += 1;
                    sent_at[slot] = Some(send(slot, &sock, &mut next)?);
                }
            }
            Ok(_) => {}
            Err(_) => {
                // Timed out: datagrams were lost; resend every slot.
                for (slot, at) in sent_at.iter_mut().enumerate() {
                    *at = Some(send(slot, &sock, &mut next)?);
                }
            }
        }
    }
    Ok(Load { responses, hist })
}

fn http_generator(
    tracker: std::net::SocketAddr,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<Load> {
    let mut conns: Vec<Http> =
        (0..HTTP_CONNECTIONS).map(|_| Http::connect(tracker)).collect::<anyhow::Result<_>>()?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let mut next: u64 = seed << 32;
    let end = Instant::now() + duration;
    let mut responses = 0;
    while Instant::now() < end {
        let mut starts = Vec::with_capacity(HTTP_CONNECTIONS);
        for c in &mut conns {
            let t = Instant::now();
            for _ in 0..HTTP_DEPTH {
                next += 1;
                let mut peer = [0u8; 20];
                peer[..8].copy_from_slice(&next.to_be_bytes());
                let target = format!(
                    "/announce?info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=0&compact=1",
                    super::pct(&info_hash(next).0),
                    super::pct(&peer)
                );
                c.send("GET", &target, None)?;
            }
            starts.push(t);
        }
        for (c, t) in conns.iter_mut().zip(starts) {
            for _ in 0..HTTP_DEPTH {
                let (status, body) = c.recv()?;
                anyhow::ensure!(
                    status == 200 && body.starts_with(b"d8:complete"),
                    "announce failed"
                );
                hist.record((t.elapsed().as_micros() as u64).max(1))?;
                responses += 1;
            }
        }
    }
    Ok(Load { responses, hist })
}

fn drive(
    proto: &str,
    tracker: std::net::SocketAddr,
    duration: Duration,
) -> anyhow::Result<(f64, Histogram<u64>)> {
    let start = Instant::now();
    let loads: Vec<anyhow::Result<Load>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..GENERATORS)
            .map(|g| {
                s.spawn(move || match proto {
                    "udp" => udp_generator(tracker, duration, g as u64 + 1),
                    _ => http_generator(tracker, duration, g as u64 + 1),
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("generator thread")).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    for l in loads {
        let l = l?;
        total += l.responses;
        hist.add(&l.hist)?;
    }
    anyhow::ensure!(total > 0, "no {proto} responses");
    Ok((total as f64 / wall, hist))
}

/// Runs the experiment.
pub fn run(s: &Settings) -> anyhow::Result<Outcome> {
    let threads: &[usize] = if s.quick { &[1, 2] } else { &[1, 2, 4, 8] };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut raw = Raw::default();
    let mut t = Table::new(
        "announce",
        "Announce throughput and latency",
        &format!(
            "Open mode, {TORRENTS} torrents, {}s per point; UDP: {GENERATORS} generator threads with \
             {UDP_WINDOW} requests in flight each; HTTP: {GENERATORS}x{HTTP_CONNECTIONS} keep-alive \
             connections pipelining {HTTP_DEPTH}; generator and tracker share {cores} cores; latency in µs",
            s.duration.as_secs_f64()
        ),
        &[
            "protocol",
            "serving threads",
            "responses/s",
            "p50 (µs)",
            "p90 (µs)",
            "p99 (µs)",
            "p99.9 (µs)",
            "efficiency",
        ],
    );
    for proto in ["udp", "http"] {
        let mut base = None;
        for &n in threads {
            let tracker = Tracker::start(TrackerMode::Open, n, |c| {
                c.network.udp_batch_size = 64;
            })?;
            // Warm up (swarms created, caches hot), then measure.
            drive(proto, tracker.addr, Duration::from_millis(300))?;
            let profile = (proto == "udp" && Some(&n) == threads.last())
                .then_some(s.flamegraph.as_ref())
                .flatten();
            let guard = match profile {
                Some(_) => Some(pprof::ProfilerGuardBuilder::default().frequency(997).build()?),
                None => None,
            };
            let (rps, hist) = drive(proto, tracker.addr, s.duration)?;
            if let (Some(g), Some(path)) = (guard, profile) {
                let report = g.report().build()?;
                let file = std::fs::File::create(path)?;
                report.flamegraph(file)?;
                eprintln!("wrote flamegraph {}", path.display());
            }
            let b = *base.get_or_insert(rps);
            let q = |p: f64| hist.value_at_quantile(p) as f64;
            raw.add(proto, &format!("{n} threads responses/s"), &[rps], "1/s");
            raw.add(
                proto,
                &format!("{n} threads latency p50,p90,p99,p99.9"),
                &[q(0.5), q(0.9), q(0.99), q(0.999)],
                "us",
            );
            t.row(vec![
                proto.to_uppercase().into(),
                n.into(),
                Cell::num(rps, 0),
                Cell::num(q(0.5), 0),
                Cell::num(q(0.9), 0),
                Cell::num(q(0.99), 0),
                Cell::num(q(0.999), 0),
                Cell::num(rps / (n as f64 * b), 2),
            ]);
        }
    }
    Ok(Outcome { name: "announce", tables: vec![t], raw })
}
