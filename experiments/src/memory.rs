//! `memory`: resident memory per peer. Each tracker (pbts, aquatic_udp) is started pinned to
//! one CPU, and this process announces exactly `peers` distinct peers in `torrents` torrents
//! over UDP (BEP 15: a connect, then announces, each answered before the window moves on;
//! unanswered ones are sent again). Then a sample of torrents is scraped to check every peer
//! is held, and the tracker's RSS growth (`VmRSS` of `/proc/PID/status`, after against
//! before) is divided by the peers. Same run, same load, alternating rounds.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pbts_proto::udp::{self, AnnounceRequest, ConnectionId, TransactionId};
use pbts_proto::{AnnounceEvent, InfoHash, PeerId};

use crate::procs::Killed;
use crate::vs_aquatic::which;

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// Peers to announce.
    #[arg(long, default_value_t = 1_000_000)]
    pub peers: u32,
    /// Torrents they are spread over (evenly).
    #[arg(long, default_value_t = 100_000)]
    pub torrents: u32,
    /// Rounds (pbts then aquatic_udp, the order alternating).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The pbts binary.
    #[arg(long, default_value = "target/release/pbts")]
    pub pbts: PathBuf,
    /// CPU for the tracker.
    #[arg(long, default_value_t = 0)]
    pub tracker_cpu: usize,
    /// Output directory.
    #[arg(long, default_value = "experiments/results")]
    pub out: PathBuf,
}

/// Requests in flight per window (the replies must fit the default socket receive buffer,
/// ~200 KiB, at about 1 KiB of kernel accounting per small datagram).
const WINDOW: usize = 128;
/// Source addresses the peers come from (127.0.0.1 to 127.0.0.N): each torrent's peers differ
/// by address and port.
const SOURCES: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracker {
    Pbts,
    AquaticUdp,
}

impl Tracker {
    fn name(self) -> &'static str {
        match self {
            Self::Pbts => "pbts",
            Self::AquaticUdp => "aquatic_udp",
        }
    }
}

#[derive(Debug)]
struct Sample {
    tracker: Tracker,
    round: usize,
    rss_before: u64,
    rss_after: u64,
    peers: u64,
    load_secs: f64,
}

impl Sample {
    fn bytes_per_peer(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.peers as f64
    }
}

/// Runs the rounds and writes `memory.csv`, `memory_summary.txt` and `memory_env.json`.
///
/// # Errors
/// A tracker missing or failing, a peer never answered, I/O.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    if plan.torrents == 0 || plan.peers < plan.torrents {
        bail!("--peers must be at least --torrents, and --torrents at least 1");
    }
    let aquatic =
        which("aquatic_udp").context("aquatic_udp not found: cargo install aquatic_udp")?;
    let dir = tempfile::Builder::new().prefix("pbts-memory-").tempdir()?;
    let mut samples = Vec::new();
    for round in 0..plan.runs.max(1) {
        let order = if round % 2 == 0 {
            [Tracker::Pbts, Tracker::AquaticUdp]
        } else {
            [Tracker::AquaticUdp, Tracker::Pbts]
        };
        for tracker in order {
            let s = one(plan, tracker, &aquatic, dir.path(), round)?;
            eprintln!(
                "round {round} {:<12} RSS {:.1} -> {:.1} MiB for {} peers: {:.1} bytes per peer ({:.1} s to load)",
                tracker.name(),
                s.rss_before as f64 / 1048576.0,
                s.rss_after as f64 / 1048576.0,
                s.peers,
                s.bytes_per_peer(),
                s.load_secs
            );
            samples.push(s);
        }
    }
    write(plan, &samples)
}

fn one(
    plan: &Plan,
    tracker: Tracker,
    aquatic: &Path,
    dir: &Path,
    round: usize,
) -> anyhow::Result<Sample> {
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.local_addr()?.port()
    };
    let cpu = plan.tracker_cpu.to_string();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu]);
    match tracker {
        Tracker::Pbts => {
            let cfg = dir.join(format!("pbts-{port}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[network]\nlisten = [\"127.0.0.1:{port}\"]\ncores = 1\nfirst_cpu = {cpu}\n\
                     [tracker]\nmode = \"open\"\n[limits]\nmax_peers_per_ip_per_swarm = 0\n\
                     [storage]\ndata_dir = \"{}\"\nswarm_snapshot = false\n",
                    dir.join(format!("data-{port}")).display()
                ),
            )?;
            cmd.arg(&plan.pbts).args(["serve", "-c"]).arg(&cfg);
        }
        Tracker::AquaticUdp => {
            let cfg = dir.join(format!("aquatic-{port}.toml"));
            let text = String::from_utf8(Command::new(aquatic).arg("-p").output()?.stdout)?;
            let text: String = text
                .lines()
                .map(|l| {
                    if l.starts_with("address =") {
                        format!("address = \"127.0.0.1:{port}\"\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(&cfg, text)?;
            cmd.arg(aquatic).arg("-c").arg(&cfg);
        }
    }
    let log = std::fs::File::create(dir.join(format!("{}-{port}.log", tracker.name())))?;
    let mut child = Killed(cmd.stdout(Stdio::piped()).stderr(log).spawn()?);
    if tracker == Tracker::Pbts {
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().context("stdout")?).read_line(&mut line)?;
    }
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let sockets: Vec<Source> = (1..=SOURCES)
        .map(|i| Source::new(Ipv4Addr::new(127, 0, 0, i), target))
        .collect::<Result<_, _>>()?;
    // Settled after start-up: what the tracker holds before any peer.
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.0.id();
    let rss_before = rss(pid)?;
    let started = Instant::now();
    load(plan, &sockets)?;
    let load_secs = started.elapsed().as_secs_f64();
    let held = check(plan, &sockets[0])?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss(pid)?;
    drop(child);
    Ok(Sample { tracker, round, rss_before, rss_after, peers: held, load_secs })
}

/// One source address with its connection id.
struct Source {
    socket: UdpSocket,
    conn: ConnectionId,
}

impl Source {
    fn new(ip: Ipv4Addr, target: SocketAddr) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind((ip, 0))?;
        socket.connect(target)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let conn = udp_connect(&socket, ip)?;
        Ok(Self { socket, conn })
    }
}

/// A BEP 15 connect on `socket` (connected, with a read timeout), sent until answered, up to
/// 50 times: the connection id. `from` names the sender in the error.
///
/// # Errors
/// No answer, or I/O.
pub(crate) fn udp_connect(
    socket: &UdpSocket,
    from: impl std::fmt::Display,
) -> anyhow::Result<ConnectionId> {
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        let mut req = Vec::new();
        udp::write_connect_request(&mut req, TransactionId(1));
        socket.send(&req)?;
        if let Ok(n) = socket.recv(&mut buf)
            && n == 16
            && buf[..4] == [0, 0, 0, 0]
        {
            return Ok(ConnectionId(u64::from_be_bytes(buf[8..16].try_into()?)));
        }
        // Refused at once (ICMP) while the tracker is still starting: give it time.
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no answer to a UDP connect from {from}")
}

fn info_hash(t: u32) -> InfoHash {
    let mut ih = [0x5au8; 20];
    ih[..4].copy_from_slice(&t.to_be_bytes());
    InfoHash(ih)
}

/// Peer `n`: torrent `n % torrents`, source `(n / torrents) % SOURCES`, port from the rest.
fn announce(plan: &Plan, n: u32, conn: ConnectionId, out: &mut Vec<u8>) {
    let k = n / plan.torrents;
    let mut pid = *b"-LD0001-000000000000";
    pid[8..].copy_from_slice(format!("{n:012}").as_bytes());
    udp::write_announce_request(
        out,
        &AnnounceRequest {
            connection_id: conn,
            transaction_id: TransactionId(n),
            info_hash: info_hash(n % plan.torrents),
            peer_id: PeerId(pid),
            downloaded: 0,
            left: if n.is_multiple_of(4) { 0 } else { 1000 },
            uploaded: 0,
            event: AnnounceEvent::Started,
            ip: Ipv4Addr::UNSPECIFIED,
            key: n,
            num_want: Some(0),
            port: 10_000 + (k / u32::from(SOURCES)) as u16,
            url_data: b"",
        },
    );
}

/// Announces every peer, a window at a time per source, until each was answered.
fn load(plan: &Plan, sources: &[Source]) -> anyhow::Result<()> {
    let mut pending: Vec<Vec<u32>> = vec![Vec::new(); sources.len()];
    for n in 0..plan.peers {
        let k = n / plan.torrents;
        pending[(k % u32::from(SOURCES)) as usize].push(n);
    }
    let mut req = Vec::with_capacity(128);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(600);
    for (src, todo) in sources.iter().zip(pending) {
        let mut todo = todo;
        let mut retries = 0;
        while !todo.is_empty() {
            if Instant::now() > deadline {
                bail!("loading took more than 10 minutes");
            }
            let mut missing = Vec::new();
            for chunk in todo.chunks(WINDOW) {
                for &n in chunk {
                    req.clear();
                    announce(plan, n, src.conn, &mut req);
                    src.socket.send(&req)?;
                }
                let mut answered = std::collections::HashSet::with_capacity(chunk.len());
                while answered.len() < chunk.len() {
                    match src.socket.recv(&mut buf) {
                        Ok(len) if len >= 8 && buf[..4] == [0, 0, 0, 1] => {
                            answered.insert(u32::from_be_bytes(buf[4..8].try_into()?));
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                missing.extend(chunk.iter().filter(|n| !answered.contains(n)));
            }
            todo = missing;
            retries += 1;
            if retries > 20 {
                bail!("{} announces never answered after 20 tries", todo.len());
            }
        }
    }
    Ok(())
}

/// Scrapes up to 1000 torrents spread over the range: every one must hold its share of the
/// peers. Returns the peers the tracker holds (by that check, extrapolated exactly: the share
/// is fixed).
fn check(plan: &Plan, src: &Source) -> anyhow::Result<u64> {
    let per = plan.peers / plan.torrents;
    let step = (plan.torrents / 1000).max(1);
    let mut buf = [0u8; 2048];
    for chunk in (0..plan.torrents).step_by(step as usize).collect::<Vec<_>>().chunks(50) {
        let hashes: Vec<InfoHash> = chunk.iter().map(|&t| info_hash(t)).collect();
        let mut req = Vec::new();
        udp::write_scrape_request(&mut req, src.conn, TransactionId(7), &hashes);
        let mut got = None;
        for _ in 0..10 {
            src.socket.send(&req)?;
            if let Ok(len) = src.socket.recv(&mut buf)
                && len == 8 + 12 * hashes.len()
                && buf[..4] == [0, 0, 0, 2]
            {
                got = Some(len);
                break;
            }
        }
        got.context("a scrape went unanswered")?;
        for (i, &t) in chunk.iter().enumerate() {
            let at = 8 + 12 * i;
            let word = |o: usize| {
                u32::from_be_bytes([buf[at + o], buf[at + o + 1], buf[at + o + 2], buf[at + o + 3]])
            };
            // seeders, completed, leechers
            let held = word(0) + word(8);
            let want = per + u32::from(t < plan.peers % plan.torrents);
            if held != want {
                bail!("torrent {t} holds {held} peers, {want} were announced");
            }
        }
    }
    Ok(u64::from(plan.peers))
}

fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

fn write(plan: &Plan, samples: &[Sample]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&plan.out)?;
    let mut csv =
        String::from("round,tracker,peers,torrents,rss_before,rss_after,bytes_per_peer,load_s\n");
    for s in samples {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{:.1},{:.1}\n",
            s.round,
            s.tracker.name(),
            s.peers,
            plan.torrents,
            s.rss_before,
            s.rss_after,
            s.bytes_per_peer(),
            s.load_secs
        ));
    }
    std::fs::write(plan.out.join("memory.csv"), csv)?;
    let median = |t: Tracker| {
        let mut v: Vec<f64> =
            samples.iter().filter(|s| s.tracker == t).map(Sample::bytes_per_peer).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (p, plo, phi) = median(Tracker::Pbts);
    let (a, alo, ahi) = median(Tracker::AquaticUdp);
    let summary = format!(
        "{} peers in {} torrents over UDP, {} rounds: RSS growth per peer (median, min to max): \
         pbts {p:.1} bytes ({plo:.1} to {phi:.1}), aquatic_udp {a:.1} bytes ({alo:.1} to \
         {ahi:.1}); pbts / aquatic_udp {:.2}\n",
        plan.peers,
        plan.torrents,
        plan.runs.max(1),
        p / a
    );
    std::fs::write(plan.out.join("memory_summary.txt"), &summary)?;
    crate::env::write(
        &plan.out.join("memory_env.json"),
        serde_json::json!({
            "series": "memory", "peers": plan.peers, "torrents": plan.torrents,
            "rounds": plan.runs, "tracker_cpu": plan.tracker_cpu,
            "aquatic": "aquatic_udp 0.9.0 (crates.io)",
        }),
    )?;
    print!("{summary}");
    Ok(())
}
