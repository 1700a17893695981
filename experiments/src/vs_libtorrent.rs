//! `vs-libtorrent`: one seeder to one leecher on 127.0.0.1, the data on tmpfs, pbts-peer →
//! pbts-peer against libtorrent → libtorrent (Debian's python3-libtorrent 2.0), alternating
//! runs in the same series. Reports the leecher's throughput and the CPU-seconds each side
//! spent per GiB.
//!
//! pbts-peer finds its seeder through an open pbts tracker in this process; the libtorrent
//! leecher is handed its seeder's address directly (`connect_peer`). Each client times its own
//! download (pbts-peer from its session's start, which includes its first announce, to the
//! last piece verified; libtorrent from the connect to the last piece), so process start-up and
//! shutdown are left out of both.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pbts_engine::config::TrackerMode;

use crate::exp::Tracker;
use crate::procs::{Killed, children_cpu, cpu_seconds};

/// What to run: one seeder → one leecher series (this one and `client-download-measured`).
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// Torrent size, MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Piece length, KiB.
    #[arg(long, default_value_t = 1024)]
    pub piece_kib: u32,
    /// Pairs of runs (one of each kind per pair; 0 runs one).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The pbts-peer binary.
    #[arg(long, default_value = "target/release/pbts-peer")]
    pub peer: PathBuf,
    /// Directory for the data (tmpfs, so the disk is not what is measured).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Output directory for the CSV, the summary and the environment.
    #[arg(long, default_value = "experiments/results")]
    pub out: PathBuf,
}

pub(crate) const PYTHON: &str = "/usr/bin/python3";

/// One measured transfer.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    leecher_cpu: f64,
    seeder_cpu: f64,
}

/// Runs the series and writes `peer_throughput.csv` and a summary.
///
/// # Errors
/// A client missing or failing, I/O.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("pbts-vs-lt-").tempdir_in(&plan.dir)?;
    let size = plan.size_mib << 20;
    let seed_dir = work.path().join("seed");
    std::fs::create_dir_all(&seed_dir)?;
    write_payload(&seed_dir.join("payload.bin"), size)?;
    let tracker = Tracker::start(TrackerMode::Open, 1, |_| {})?;
    let url = format!("http://{}/announce", tracker.addr);
    let torrent = work.path().join("bench.torrent");
    let o = Command::new(PYTHON)
        .arg(pbts_testkit::LT_CLIENT)
        .arg("make")
        .arg(seed_dir.join("payload.bin"))
        .arg(&torrent)
        .arg(&url)
        .arg((plan.piece_kib * 1024).to_string())
        .output()
        .context("python3-libtorrent is required (apt-get install python3-libtorrent)")?;
    if !o.status.success() {
        bail!("making the torrent: {}", String::from_utf8_lossy(&o.stderr));
    }

    let mut pbts = Vec::new();
    let mut lt = Vec::new();
    for run in 0..plan.runs {
        let leech = work.path().join(format!("leech-{run}"));
        pbts.push(pbts_pair(plan, &tracker, &torrent, &seed_dir, &leech.join("pbts"))?);
        lt.push(lt_pair(&torrent, &seed_dir, &leech.join("lt"))?);
        let (p, l) = (pbts[run], lt[run]);
        eprintln!(
            "run {run}: pbts-peer {:.0} MB/s, libtorrent {:.0} MB/s",
            size as f64 / 1e6 / p.seconds,
            size as f64 / 1e6 / l.seconds
        );
        std::fs::remove_dir_all(&leech)?;
    }

    std::fs::create_dir_all(&plan.out)?;
    let mut csv = std::fs::File::create(plan.out.join("peer_throughput.csv"))?;
    writeln!(csv, "run,client,bytes,seconds,mb_per_s,leecher_cpu_s_per_gib,seeder_cpu_s_per_gib")?;
    let gib = size as f64 / f64::from(1u32 << 30);
    for (client, samples) in [("pbts-peer", &pbts), ("libtorrent", &lt)] {
        for (run, s) in samples.iter().enumerate() {
            writeln!(
                csv,
                "{run},{client},{size},{:.3},{:.1},{:.3},{:.3}",
                s.seconds,
                size as f64 / 1e6 / s.seconds,
                s.leecher_cpu / gib,
                s.seeder_cpu / gib
            )?;
        }
    }
    let ratios: Vec<f64> = pbts.iter().zip(&lt).map(|(p, l)| l.seconds / p.seconds).collect();
    let mut sorted = ratios;
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let summary = format!(
        "{} MiB, {} KiB pieces, {} pairs on 127.0.0.1 (tmpfs): pbts-peer/libtorrent throughput \
         ratio median {median:.2} (range {:.2}-{:.2}); pbts-peer {:.0} MB/s, leecher {:.2} and \
         seeder {:.2} CPU-s/GiB; libtorrent {:.0} MB/s, leecher {:.2} and seeder {:.2} CPU-s/GiB \
         (medians)\n",
        plan.size_mib,
        plan.piece_kib,
        plan.runs,
        sorted[0],
        sorted[sorted.len() - 1],
        median_of(&pbts, |s| size as f64 / 1e6 / s.seconds),
        median_of(&pbts, |s| s.leecher_cpu / gib),
        median_of(&pbts, |s| s.seeder_cpu / gib),
        median_of(&lt, |s| size as f64 / 1e6 / s.seconds),
        median_of(&lt, |s| s.leecher_cpu / gib),
        median_of(&lt, |s| s.seeder_cpu / gib),
    );
    std::fs::write(plan.out.join("peer_throughput_summary.txt"), &summary)?;
    let libtorrent = Command::new(PYTHON)
        .args(["-c", "import libtorrent; print(libtorrent.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    crate::env::write(
        &plan.out.join("peer_throughput_env.json"),
        serde_json::json!({
            "series": "vs-libtorrent",
            "size_mib": plan.size_mib,
            "piece_kib": plan.piece_kib,
            "pairs": plan.runs,
            "data_dir": plan.dir,
            "libtorrent": libtorrent,
        }),
    )?;
    print!("{summary}");
    Ok(())
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pseudo-random bytes (incompressible enough for a transfer test), written in 1 MiB chunks.
pub(crate) fn write_payload(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn pbts_pair(
    plan: &Plan,
    tracker: &Tracker,
    torrent: &Path,
    seed_dir: &Path,
    leech_dir: &Path,
) -> anyhow::Result<Sample> {
    std::fs::create_dir_all(leech_dir)?;
    let common = ["--bind", "127.0.0.1", "--port", "0", "--quiet"];
    let before = seeders(tracker)?;
    let seeder = Killed(
        Command::new(&plan.peer)
            .arg("seed")
            .arg(torrent)
            .arg(seed_dir)
            .args(common)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("{} (cargo build --release -p pbts-peer)", plan.peer.display())
            })?,
    );
    await_seeder(tracker, before)?;
    let seeder_cpu0 = cpu_seconds(seeder.0.id())?;
    let cpu0 = children_cpu()?;
    let out = Command::new(&plan.peer)
        .arg("download")
        .arg(torrent)
        .arg("-o")
        .arg(leech_dir)
        .args(common)
        .args(["--seed-time", "0", "--json"])
        .stderr(Stdio::null())
        .output()?;
    let leecher_cpu = children_cpu()? - cpu0;
    let seeder_cpu = cpu_seconds(seeder.0.id())? - seeder_cpu0;
    drop(seeder);
    if !out.status.success() {
        bail!("pbts-peer leecher failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let text = String::from_utf8(out.stdout)?;
    let v: serde_json::Value = serde_json::from_str(text.trim())?;
    let seconds = v["download_seconds"].as_f64().context("no download_seconds in the summary")?;
    Ok(Sample { seconds, leecher_cpu, seeder_cpu })
}

/// Seeders the tracker knows (earlier runs' killed seeders stay until they time out).
pub(crate) fn seeders(tracker: &Tracker) -> anyhow::Result<u64> {
    let stats = pbts_testkit::http::get_body(tracker.addr, "/stats");
    let v: serde_json::Value = serde_json::from_slice(&stats)?;
    v["seeders"].as_u64().context("no seeders in /stats")
}

/// Waits until the tracker has more than `before` seeders: the new seeder announced, after
/// checking its data.
pub(crate) fn await_seeder(tracker: &Tracker, before: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while seeders(tracker)? <= before {
        if Instant::now() > deadline {
            bail!("the seeder never announced");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn lt_pair(torrent: &Path, seed_dir: &Path, leech_dir: &Path) -> anyhow::Result<Sample> {
    std::fs::create_dir_all(leech_dir)?;
    let mut seeder = Killed(
        Command::new(PYTHON)
            .arg(pbts_testkit::LT_CLIENT)
            .arg("bench-seed")
            .arg(torrent)
            .arg(seed_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut line = String::new();
    BufReader::new(seeder.0.stdout.take().context("seeder stdout")?).read_line(&mut line)?;
    let port =
        line.trim().strip_prefix("seeding ").context("the libtorrent seeder did not start")?;
    let seeder_cpu0 = cpu_seconds(seeder.0.id())?;
    let cpu0 = children_cpu()?;
    let out = Command::new(PYTHON)
        .arg(pbts_testkit::LT_CLIENT)
        .arg("bench-leech")
        .arg(torrent)
        .arg(leech_dir)
        .arg(format!("127.0.0.1:{port}"))
        .arg("600")
        .stderr(Stdio::null())
        .output()?;
    let leecher_cpu = children_cpu()? - cpu0;
    let seeder_cpu = cpu_seconds(seeder.0.id())? - seeder_cpu0;
    drop(seeder);
    let text = String::from_utf8(out.stdout)?;
    let seconds: f64 = text
        .trim()
        .strip_prefix("done ")
        .with_context(|| format!("the libtorrent leecher failed: {text}"))?
        .parse()?;
    Ok(Sample { seconds, leecher_cpu, seeder_cpu })
}
