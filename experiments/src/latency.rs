//! `latency`: UDP announce latency at fixed fractions of the maximum load, pbts against
//! aquatic_udp and the stateless ceiling (the floor of this harness), for the paper.
//!
//! Each tracker runs pinned to one CPU and this process to another. Per tracker and round:
//! the peers are announced once (the swarms are full before anything is measured), then a
//! closed loop (a window of requests in flight) measures the highest answer rate this load
//! reaches, then an open loop offers announces at a fixed rate for each fraction of that
//! maximum. The open loop is coordinated-omission free: request `i` is due at
//! `start + i / rate` and carries `i` as its transaction id, so its latency is counted from when
//! it was due, not from when a late sender got round to it. Unanswered requests are counted
//! lost, not timed. The tracker's CPU use during each phase is reported beside it: if the
//! closed loop does not keep the tracker's CPU busy, the "maximum" is this generator's, and the
//! summary says so.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use pbts_proto::udp::{self, AnnounceRequest, ConnectionId, TransactionId};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

use crate::memory::udp_connect;
use crate::procs::{Killed, cpu_split};
use crate::report::{Cell, Table};
use crate::vs_aquatic::{Tools, Tracker, free_port, spread, start, wait_for_udp, which};

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// Seconds of open-loop load per fraction (and of the closed loop that finds the maximum).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Rounds (each tracker once per round, the order rotating).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Fractions of the maximum load to measure at.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.9")]
    pub fractions: Vec<f64>,
    /// Distinct peers announcing (each announce re-announces one of them).
    #[arg(long, default_value_t = 100_000)]
    pub peers: u32,
    /// Torrents they are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub torrents: u32,
    /// The pbts binary.
    #[arg(long, default_value = "target/release/pbts")]
    pub pbts: PathBuf,
    /// CPU for the tracker.
    #[arg(long, default_value_t = 0)]
    pub tracker_cpu: usize,
    /// CPU for this process (the load generator).
    #[arg(long, default_value_t = 1)]
    pub load_cpu: usize,
    /// Output directory.
    #[arg(long, default_value = "experiments/results")]
    pub out: PathBuf,
}

/// The contenders: the ceiling (pbts's UDP loop with no swarm) shows what this harness, the
/// kernel and the machine cost by themselves.
const TRACKERS: [Tracker; 3] = [Tracker::Pbts, Tracker::AquaticUdp, Tracker::Ceiling];
/// Requests in flight in the closed loop.
const WINDOW: u64 = 128;
/// Peers returned per announce.
const NUM_WANT: u32 = 20;
/// The generator's socket receive buffer: the kernel charges about 1 KiB per queued datagram,
/// so this holds a few thousand replies.
const RECV_BUFFER: usize = 4 << 20;
/// How long an answer may take before its request counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(1);

/// One phase of one round against one tracker.
#[derive(Debug)]
struct Sample {
    tracker: Tracker,
    round: usize,
    /// `None` for the closed loop (the maximum), else the fraction of it offered.
    fraction: Option<f64>,
    offered_per_s: f64,
    answered_per_s: f64,
    /// Tracker CPU-seconds per second of the phase.
    tracker_busy: f64,
    /// The share of that CPU time spent in the kernel.
    kernel_share: f64,
    sent: u64,
    answered: u64,
    errors: u64,
    /// Microseconds: p50, p99, p99.9, max.
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// Runs the rounds and writes `latency.csv`, `latency_summary.txt`, `latency.tex` and
/// `latency_env.json`.
///
/// # Errors
/// A tracker missing or failing, a phase with no answers, I/O.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    if plan.torrents == 0 || plan.peers < plan.torrents {
        bail!("--peers must be at least --torrents, and --torrents at least 1");
    }
    if plan.fractions.iter().any(|f| !(0.0..=1.0).contains(f) || *f == 0.0) {
        bail!("--fractions are fractions of the maximum load: each in (0, 1]");
    }
    if !plan.pbts.is_file() {
        bail!("{} not found (cargo build --release -p pbts-engine)", plan.pbts.display());
    }
    let tools = Tools {
        aquatic_udp: Some(
            which("aquatic_udp").context("aquatic_udp not found: cargo install aquatic_udp")?,
        ),
        aquatic_udp_load: None,
        aquatic_http: None,
        opentracker: None,
        wrk: None,
    };
    // Every thread of this process (there is one) on the generator's CPU.
    let pinned = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &plan.load_cpu.to_string(), &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !pinned.success() {
        bail!("taskset could not pin the generator to CPU {}", plan.load_cpu);
    }
    let dir = tempfile::Builder::new().prefix("pbts-latency-").tempdir()?;
    let mut samples = Vec::new();
    for round in 0..plan.runs.max(1) {
        let mut order = TRACKERS;
        order.rotate_left(round % TRACKERS.len());
        for tracker in order {
            let port = free_port()?;
            let handle = start(tracker, port, plan.tracker_cpu, &plan.pbts, &tools, dir.path())?;
            wait_for_udp(port)?;
            let got = phases(plan, tracker, round, &handle, port)?;
            drop(handle);
            for s in &got {
                eprintln!(
                    "round {round} {:<12} {:>5}: offered {:>8.0}/s answered {:>8.0}/s, tracker \
                     CPU {:>3.0} %, p50 {:>7.1} us p99 {:>8.1} us p99.9 {:>8.1} us ({} of {} lost)",
                    tracker.name(),
                    s.fraction.map_or("max".to_owned(), |f| format!("{:.0}%", f * 100.0)),
                    s.offered_per_s,
                    s.answered_per_s,
                    s.tracker_busy * 100.0,
                    s.p50,
                    s.p99,
                    s.p999,
                    s.sent - s.answered - s.errors,
                    s.sent
                );
            }
            samples.extend(got);
        }
    }
    write(plan, &samples)
}

/// Fills the swarms, finds the maximum, then measures each fraction of it.
fn phases(
    plan: &Plan,
    tracker: Tracker,
    round: usize,
    handle: &Killed,
    port: u16,
) -> anyhow::Result<Vec<Sample>> {
    let load = Generator::connect(plan, ([127, 0, 0, 1], port).into())?;
    load.fill()?;
    let pid = handle.0.id();
    let secs = Duration::from_secs(plan.duration);
    let cpu0 = cpu_split(pid)?;
    let max = load.closed_loop(secs)?;
    let cpu = Cpu::since(cpu0, cpu_split(pid)?, max.seconds);
    let rate = max.answered as f64 / max.seconds;
    let mut out = vec![max.sample(tracker, round, None, rate, cpu)];
    for &f in &plan.fractions {
        std::thread::sleep(Duration::from_millis(500));
        let cpu0 = cpu_split(pid)?;
        let m = load.open_loop(rate * f, secs)?;
        let cpu = Cpu::since(cpu0, cpu_split(pid)?, m.seconds);
        out.push(m.sample(tracker, round, Some(f), rate * f, cpu));
    }
    Ok(out)
}

/// A tracker's CPU use over a phase.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// CPU-seconds per second.
    busy: f64,
    /// The kernel's share of them.
    kernel_share: f64,
}

impl Cpu {
    fn since((user0, sys0): (f64, f64), (user1, sys1): (f64, f64), seconds: f64) -> Self {
        let (user, sys) = (user1 - user0, sys1 - sys0);
        let total = user + sys;
        Self {
            busy: total / seconds,
            kernel_share: if total > 0.0 { sys / total } else { f64::NAN },
        }
    }
}

/// What one phase measured.
struct Measured {
    seconds: f64,
    sent: u64,
    answered: u64,
    errors: u64,
    hist: Histogram<u64>,
}

impl Measured {
    fn sample(
        &self,
        tracker: Tracker,
        round: usize,
        fraction: Option<f64>,
        offered: f64,
        cpu: Cpu,
    ) -> Sample {
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        Sample {
            tracker,
            round,
            fraction,
            offered_per_s: if fraction.is_some() { offered } else { f64::NAN },
            answered_per_s: self.answered as f64 / self.seconds,
            tracker_busy: cpu.busy,
            kernel_share: cpu.kernel_share,
            sent: self.sent,
            answered: self.answered,
            errors: self.errors,
            p50: us(0.5),
            p99: us(0.99),
            p999: us(0.999),
            max: self.hist.max() as f64 / 1000.0,
        }
    }
}

/// The load generator: one connected, non-blocking socket, busy-polled by this one thread (so
/// a reply is read within microseconds of its arrival, and nothing else competes for the CPU).
struct Generator<'a> {
    plan: &'a Plan,
    socket: UdpSocket,
    conn: ConnectionId,
}

/// An answer: its transaction id and whether it is an announce answer (else an error).
enum Reply {
    Announce(u32),
    Error(u32),
    Other,
}

impl<'a> Generator<'a> {
    fn connect(plan: &'a Plan, target: SocketAddr) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        // Room for a burst of replies (the kernel caps it at net.core.rmem_max).
        let sock2 = socket2::SockRef::from(&socket);
        sock2.set_recv_buffer_size(RECV_BUFFER)?;
        let granted = sock2.recv_buffer_size()?;
        if granted < RECV_BUFFER {
            eprintln!(
                "the generator's receive buffer is {granted} bytes (asked {RECV_BUFFER}; raise \
                 net.core.rmem_max): bursts of replies may be dropped here and count as lost"
            );
        }
        socket.connect(target)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let conn = udp_connect(&socket, target)?;
        socket.set_nonblocking(true)?;
        Ok(Self { plan, socket, conn })
    }

    /// Request `i`: peer `i % peers`, its torrent `peer % torrents`; transaction id `i`.
    fn request(&self, i: u32, out: &mut Vec<u8>) {
        let peer = i % self.plan.peers;
        let k = peer / self.plan.torrents;
        let mut ih = [0x6cu8; 20];
        ih[..4].copy_from_slice(&(peer % self.plan.torrents).to_be_bytes());
        let mut pid = *b"-LT0001-000000000000";
        pid[8..].copy_from_slice(format!("{peer:012}").as_bytes());
        out.clear();
        udp::write_announce_request(
            out,
            &AnnounceRequest {
                connection_id: self.conn,
                transaction_id: TransactionId(i),
                info_hash: InfoHash(ih),
                peer_id: PeerId(pid),
                downloaded: 0,
                left: if k.is_multiple_of(2) { 0 } else { 1000 },
                uploaded: 0,
                event: AnnounceEvent::None,
                ip: std::net::Ipv4Addr::UNSPECIFIED,
                key: peer,
                num_want: Some(NUM_WANT),
                port: 10_000 + k as u16,
                url_data: b"",
            },
        );
    }

    fn send(&self, i: u32, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
        self.request(i, buf);
        match self.socket.send(buf) {
            Ok(_) => Ok(true),
            // The socket's send buffer is full: the request is not sent (and counts lost).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The next answer waiting, if any.
    fn poll(&self, buf: &mut [u8]) -> anyhow::Result<Option<Reply>> {
        match self.socket.recv(buf) {
            Ok(n) if n >= 20 && buf[..4] == [0, 0, 0, 1] => {
                Ok(Some(Reply::Announce(u32::from_be_bytes(buf[4..8].try_into()?))))
            }
            Ok(n) if n >= 8 && buf[..4] == [0, 0, 0, 3] => {
                Ok(Some(Reply::Error(u32::from_be_bytes(buf[4..8].try_into()?))))
            }
            Ok(_) => Ok(Some(Reply::Other)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Announces every peer once, a window at a time, until each was answered.
    fn fill(&self) -> anyhow::Result<()> {
        let mut req = Vec::with_capacity(128);
        let mut rx = [0u8; 2048];
        let mut todo: Vec<u32> = (0..self.plan.peers).collect();
        for _ in 0..20 {
            let mut missing = Vec::new();
            for chunk in todo.chunks(WINDOW as usize) {
                let mut answered = std::collections::HashSet::with_capacity(chunk.len());
                for &i in chunk {
                    self.send(i, &mut req)?;
                }
                let deadline = Instant::now() + Duration::from_millis(200);
                while answered.len() < chunk.len() && Instant::now() < deadline {
                    if let Some(Reply::Announce(t)) = self.poll(&mut rx)? {
                        answered.insert(t);
                    }
                }
                missing.extend(chunk.iter().filter(|i| !answered.contains(i)));
            }
            if missing.is_empty() {
                return Ok(());
            }
            todo = missing;
        }
        bail!("{} peers never had an announce answered", todo.len())
    }

    /// Keeps [`WINDOW`] requests in flight for `secs`: the maximum answer rate.
    fn closed_loop(&self, secs: Duration) -> anyhow::Result<Measured> {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut req = Vec::with_capacity(128);
        let mut rx = [0u8; 2048];
        // Slot `i % WINDOW` holds request `i` (its id and when it was sent) while in flight.
        let mut sent_at: Vec<Option<(u32, Instant)>> = vec![None; WINDOW as usize];
        let (mut sent, mut answered, mut errors) = (0u64, 0u64, 0u64);
        let mut in_flight = 0u64;
        let mut last_answer = Instant::now();
        let start = Instant::now();
        let end = start + secs;
        let mut next: u32 = 0;
        while Instant::now() < end {
            while in_flight < WINDOW {
                let slot = (u64::from(next) % WINDOW) as usize;
                if sent_at[slot].is_some() {
                    // Still unanswered a whole window later (answers came out of order): lost.
                    in_flight -= 1;
                }
                sent_at[slot] = None;
                if self.send(next, &mut req)? {
                    sent_at[slot] = Some((next, Instant::now()));
                    in_flight += 1;
                    sent += 1;
                }
                next = next.wrapping_add(1);
            }
            match self.poll(&mut rx)? {
                Some(Reply::Announce(t) | Reply::Error(t)) => {
                    let slot = (u64::from(t) % WINDOW) as usize;
                    if let Some((id, at)) = sent_at[slot]
                        && id == t
                    {
                        sent_at[slot] = None;
                        let now = Instant::now();
                        last_answer = now;
                        in_flight -= 1;
                        if rx[3] == 1 {
                            answered += 1;
                            hist.record((now - at).as_nanos().max(1) as u64)?;
                        } else {
                            errors += 1;
                        }
                    }
                }
                Some(Reply::Other) => {}
                None => {
                    if last_answer.elapsed() > LOST_AFTER {
                        // The window was lost (dropped datagrams): start it again.
                        sent_at.iter_mut().for_each(|s| *s = None);
                        in_flight = 0;
                        last_answer = Instant::now();
                    }
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        self.drain(&mut rx);
        Ok(Measured { seconds, sent, answered, errors, hist })
    }

    /// Offers `rate` announces per second for `secs`, each timed from when it was due.
    fn open_loop(&self, rate: f64, secs: Duration) -> anyhow::Result<Measured> {
        let total = (rate * secs.as_secs_f64()) as u64;
        if total == 0 || total > u64::from(u32::MAX) {
            bail!("a load of {rate:.0}/s for {secs:?} is out of range");
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut req = Vec::with_capacity(128);
        let mut rx = [0u8; 2048];
        let mut answered_once = vec![false; total as usize];
        let (mut answered, mut errors) = (0u64, 0u64);
        let ns_per = 1e9 / rate;
        let due = |i: u64| Duration::from_nanos((i as f64 * ns_per) as u64);
        let start = Instant::now();
        let mut next = 0u64;
        let stop = secs + LOST_AFTER;
        loop {
            let now = start.elapsed();
            while next < total && due(next) <= now {
                // One the socket refused (a full send buffer) is never answered: lost.
                self.send(next as u32, &mut req)?;
                next += 1;
            }
            if next == total && now > stop {
                break;
            }
            // Every answer waiting, then back to sending.
            while let Some(reply) = self.poll(&mut rx)? {
                let (Reply::Announce(t) | Reply::Error(t)) = reply else { continue };
                {
                    let i = u64::from(t);
                    if i < total && !answered_once[i as usize] {
                        answered_once[i as usize] = true;
                        let latency = start.elapsed().saturating_sub(due(i));
                        if latency > LOST_AFTER {
                            continue; // too late: lost
                        }
                        if matches!(reply, Reply::Announce(_)) {
                            answered += 1;
                            hist.record(latency.as_nanos().max(1) as u64)?;
                        } else {
                            errors += 1;
                        }
                    }
                }
            }
        }
        self.drain(&mut rx);
        if answered == 0 {
            bail!("no announce was answered at {rate:.0}/s");
        }
        Ok(Measured { seconds: secs.as_secs_f64(), sent: total, answered, errors, hist })
    }

    /// Reads late answers until none arrives for 100 ms.
    fn drain(&self, rx: &mut [u8]) {
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_millis(100) {
            if let Ok(Some(_)) = self.poll(rx) {
                quiet = Instant::now();
            }
        }
    }
}

fn write(plan: &Plan, samples: &[Sample]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&plan.out)?;
    let mut csv = String::from(
        "tracker,round,load,offered_per_s,answered_per_s,tracker_cpu_busy,kernel_share,sent,\
         answered,errors,lost,p50_us,p99_us,p999_us,max_us\n",
    );
    let label = |f: Option<f64>| f.map_or("max".to_owned(), |f| format!("{:.0}%", f * 100.0));
    for s in samples {
        csv.push_str(&format!(
            "{},{},{},{:.0},{:.0},{:.3},{:.3},{},{},{},{},{:.1},{:.1},{:.1},{:.1}\n",
            s.tracker.name(),
            s.round,
            label(s.fraction),
            s.offered_per_s,
            s.answered_per_s,
            s.tracker_busy,
            s.kernel_share,
            s.sent,
            s.answered,
            s.errors,
            s.sent.saturating_sub(s.answered + s.errors),
            s.p50,
            s.p99,
            s.p999,
            s.max
        ));
    }
    std::fs::write(plan.out.join("latency.csv"), &csv)?;
    let rounds = plan.runs.max(1);
    let mut summary = format!(
        "UDP announce latency, {rounds} rounds, {} s per phase; tracker on CPU {}, generator on \
         CPU {}; {} peers in {} torrents, numwant {NUM_WANT}. \"max\": closed loop, {WINDOW} \
         requests in flight (latency there is queueing); fractions: open loop at that share of \
         the round's maximum, latency from when each request was due. Medians over rounds \
         (min to max). pbts (and the ceiling) poll a busy socket for 50 us before sleeping \
         (network.udp_poll_before_park_us), so under steady load their CPU share is near 100 % \
         at any rate: that column is the share of the core each kept, not its load.\n",
        plan.duration, plan.tracker_cpu, plan.load_cpu, plan.peers, plan.torrents
    );
    let mut table = Table::new(
        "latency",
        "UDP announce latency under load",
        &format!(
            "One core per tracker; medians of {rounds} rounds. Load: the closed-loop maximum \
             and open-loop fractions of it; latency in microseconds from when a request was due"
        ),
        &["tracker", "load", "answers/s", "CPU", "kernel", "p50", "p99", "p99.9", "lost"],
    );
    let mut loads: Vec<Option<f64>> = vec![None];
    loads.extend(plan.fractions.iter().map(|&f| Some(f)));
    for tracker in TRACKERS {
        summary.push_str(&format!("{}:\n", tracker.name()));
        for &load in &loads {
            let v: Vec<&Sample> =
                samples.iter().filter(|s| s.tracker == tracker && s.fraction == load).collect();
            if v.is_empty() {
                continue;
            }
            let med = |f: fn(&Sample) -> f64| spread(v.iter().map(|s| f(s)).collect());
            let (rate, rlo, rhi) = med(|s| s.answered_per_s);
            let (busy, _, _) = med(|s| s.tracker_busy);
            let (kernel, _, _) = med(|s| s.kernel_share);
            let (p50, lo50, hi50) = med(|s| s.p50);
            let (p99, lo99, hi99) = med(|s| s.p99);
            let (p999, lo999, hi999) = med(|s| s.p999);
            let lost: u64 = v.iter().map(|s| s.sent.saturating_sub(s.answered + s.errors)).sum();
            let sent: u64 = v.iter().map(|s| s.sent).sum();
            summary.push_str(&format!(
                "  {:>4}: {rate:>8.0} answers/s ({rlo:.0} to {rhi:.0}), tracker CPU {:.0} % ({:.0} % \
                 of it in the kernel), \
                 p50 {p50:.1} us ({lo50:.1} to {hi50:.1}), p99 {p99:.1} us ({lo99:.1} to \
                 {hi99:.1}), p99.9 {p999:.1} us ({lo999:.1} to {hi999:.1}), {lost} of {sent} lost\n",
                label(load),
                busy * 100.0,
                kernel * 100.0
            ));
            if load.is_none() && busy < 0.9 {
                summary.push_str(
                    "        (the tracker's CPU was not saturated: this maximum is the \
                     generator's, not the tracker's)\n",
                );
            }
            table.row(vec![
                Cell::from(tracker.name()),
                Cell::from(label(load)),
                Cell::num(rate, 0),
                Cell::from(format!("{:.0}%", busy * 100.0)),
                Cell::from(format!("{:.0}%", kernel * 100.0)),
                Cell::num(p50, 1),
                Cell::num(p99, 1),
                Cell::num(p999, 1),
                Cell::from(lost),
            ]);
        }
    }
    std::fs::write(plan.out.join("latency_summary.txt"), &summary)?;
    std::fs::write(plan.out.join("latency.tex"), table.latex())?;
    crate::env::write(
        &plan.out.join("latency_env.json"),
        serde_json::json!({
            "series": "latency",
            "rounds": rounds,
            "duration_secs": plan.duration,
            "fractions": plan.fractions,
            "peers": plan.peers,
            "torrents": plan.torrents,
            "num_want": NUM_WANT,
            "window": WINDOW,
            "tracker_cpu": plan.tracker_cpu,
            "load_cpu": plan.load_cpu,
            "aquatic": "aquatic_udp 0.9.0 (crates.io)",
        }),
    )?;
    print!("{summary}");
    Ok(())
}
