//! `client-download-measured`: what receipts cost a real download. One pbts-peer seeder and one
//! pbts-peer leecher on 127.0.0.1, the data on tmpfs, both registered with a pbts tracker in
//! this process (private mode, the torrent registered from its `.torrent`): receipts off
//! (`--receipts off`) against on (the default), alternating in the same series, at the seeder's
//! full speed and capped at 100 MB/s (10^8 bytes/s). Reports throughput, CPU-seconds per GiB on
//! each side, the seeder's extra CPU per receipt (verification, the durable store, reporting),
//! and the original's analytic model at the same speed and piece size (one signature per piece
//! at the measured signing cost).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pbts_engine::config::TrackerMode;

use crate::exp::Tracker;
use crate::procs::{Killed, children_cpu, cpu_seconds};
use crate::report::{Cell, Raw, Table};
use crate::vs_libtorrent::{PYTHON, Plan, await_seeder, seeders, write_payload};

/// One transfer.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    leecher_cpu: f64,
    seeder_cpu: f64,
    /// Receipts the leecher signed in the run.
    signed: u64,
    /// The seeder's BLS verification time per receipt, ms (receipts on).
    verify_ms: Option<f64>,
}

/// A registered pbts-peer user: its configuration and state directories and its torrent.
struct User {
    home: PathBuf,
    torrent: PathBuf,
}

impl User {
    /// Registers `name` with `pbts-peer register` and makes its torrent of `data`.
    fn register(
        plan: &Plan,
        tracker: &Tracker,
        name: &str,
        work: &Path,
        data: &Path,
    ) -> anyhow::Result<Self> {
        let home = work.join(name);
        std::fs::create_dir_all(&home)?;
        let out = Command::new(&plan.peer)
            .args(["register", "--tracker", &format!("http://{}", tracker.addr), "--user", name])
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .output()
            .with_context(|| {
                format!("{} (cargo build --release -p pbts-peer)", plan.peer.display())
            })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("pbts-peer register: {text}{}", String::from_utf8_lossy(&out.stderr));
        }
        let passkey = text
            .lines()
            .find_map(|l| l.strip_prefix("passkey: "))
            .context("no passkey in pbts-peer register's output")?;
        let torrent = home.join("t.torrent");
        let url = format!("http://{}/{passkey}/announce", tracker.addr);
        let o = Command::new(PYTHON)
            .arg(pbts_testkit::LT_CLIENT)
            .arg("make")
            .arg(data)
            .arg(&torrent)
            .arg(&url)
            .arg((plan.piece_kib * 1024).to_string())
            .output()
            .context("python3-libtorrent is required (apt-get install python3-libtorrent)")?;
        if !o.status.success() {
            bail!("making the torrent: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(Self { home, torrent })
    }

    /// `pbts-peer ARGS` as this user.
    fn cmd(&self, plan: &Plan, args: &[&str]) -> Command {
        let mut c = Command::new(&plan.peer);
        c.args(args)
            .args(["--bind", "127.0.0.1", "--port", "0", "--quiet"])
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env("XDG_STATE_HOME", self.home.join("state"));
        c
    }
}

/// Speeds of the series: the seeder's full speed, and capped at 100 MB/s (10^8 bytes/s).
const SPEEDS: [(&str, Option<&str>); 2] = [("full", None), ("100 MB/s", Some("100000000"))];

/// One transfer of the series.
#[derive(Debug, Clone, Copy)]
struct Row {
    speed: &'static str,
    run: usize,
    receipts: &'static str,
    sample: Sample,
}

/// A measured series: every transfer, in the order run.
#[derive(Debug)]
pub struct Series {
    size: u64,
    piece_kib: u32,
    runs: usize,
    /// Mean ms to sign one receipt here (the model's input).
    t_sign: f64,
    rows: Vec<Row>,
}

/// Runs the transfers: per speed, `plan.runs` pairs of receipts off then on.
///
/// # Errors
/// pbts-peer or libtorrent's Python module missing, a failed transfer, I/O.
pub fn measure(plan: &Plan) -> anyhow::Result<Series> {
    if !plan.peer.is_file() {
        bail!(
            "{} not found: build it first (cargo build [--release] -p pbts-peer)",
            plan.peer.display()
        );
    }
    let work = tempfile::Builder::new().prefix("pbts-receipt-cost-").tempdir_in(&plan.dir)?;
    let size = plan.size_mib << 20;
    let seed_dir = work.path().join("seed");
    std::fs::create_dir_all(&seed_dir)?;
    let data = seed_dir.join("payload.bin");
    write_payload(&data, size)?;
    // The same leecher account downloads the torrent again and again, uploading nothing.
    let tracker = Tracker::start(TrackerMode::Private, 1, |c| c.ratio.enabled = false)?;
    let seeder = User::register(plan, &tracker, "seeder", work.path(), &data)?;
    let leecher = User::register(plan, &tracker, "leecher", work.path(), &data)?;
    let bytes = std::fs::read(&seeder.torrent)?;
    let (status, _, body) = pbts_testkit::http::http_request_with(
        tracker.addr,
        "POST",
        "/admin/torrents",
        &[("Content-Type", "application/x-bittorrent")],
        &bytes,
    );
    if status != 201 && status != 200 {
        bail!("registering the torrent: {status} {}", String::from_utf8_lossy(&body));
    }
    let t_sign = signing_ms();
    let mut rows = Vec::new();
    for (speed, cap) in SPEEDS {
        for run in 0..plan.runs.max(1) {
            for receipts in ["off", "on"] {
                let leech = work.path().join(format!("leech-{run}"));
                let sample =
                    pair(plan, &tracker, &seeder, &leecher, &seed_dir, &leech, receipts, cap)?;
                eprintln!(
                    "{speed}, run {run}, receipts {receipts}: {:.0} MB/s, {} receipts",
                    size as f64 / 1e6 / sample.seconds,
                    sample.signed
                );
                rows.push(Row { speed, run, receipts, sample });
                std::fs::remove_dir_all(&leech)?;
            }
        }
    }
    Ok(Series { size, piece_kib: plan.piece_kib, runs: plan.runs.max(1), t_sign, rows })
}

impl Series {
    fn gib(&self) -> f64 {
        self.size as f64 / f64::from(1u32 << 30)
    }

    fn pieces(&self) -> u64 {
        self.size.div_ceil(u64::from(self.piece_kib) * 1024)
    }

    /// One line per transfer.
    fn csv(&self) -> String {
        let mut csv = String::from(
            "speed,run,receipts,bytes,seconds,mb_per_s,leecher_cpu_s_per_gib,\
             seeder_cpu_s_per_gib,receipts_signed,seeder_verify_ms_per_receipt\n",
        );
        for Row { speed, run, receipts, sample: s } in &self.rows {
            csv.push_str(&format!(
                "{speed},{run},{receipts},{},{:.3},{:.1},{:.3},{:.3},{},{}\n",
                self.size,
                s.seconds,
                self.size as f64 / 1e6 / s.seconds,
                s.leecher_cpu / self.gib(),
                s.seeder_cpu / self.gib(),
                s.signed,
                s.verify_ms.map_or(String::new(), |v| format!("{v:.4}")),
            ));
        }
        csv
    }

    /// The raw samples, for `pbts-experiments run`'s `client_download_raw.csv`.
    pub fn raw(&self) -> Raw {
        let mut raw = Raw::default();
        for (speed, _) in SPEEDS {
            for receipts in ["off", "on"] {
                let of = |f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
                    self.rows
                        .iter()
                        .filter(|r| r.speed == speed && r.receipts == receipts)
                        .map(|r| f(&r.sample))
                        .collect()
                };
                let param = format!("{speed}, receipts {receipts}");
                let size = self.size as f64;
                raw.add("throughput", &param, &of(&|s| size / 1e6 / s.seconds), "MB/s");
                raw.add("leecher CPU", &param, &of(&|s| s.leecher_cpu), "s");
                raw.add("seeder CPU", &param, &of(&|s| s.seeder_cpu), "s");
            }
        }
        raw
    }

    /// The table (one row per speed: medians, the per-pair cost, the model) and its summary.
    pub fn table(&self, id: &str) -> (Table, String) {
        let (size, pieces, gib, t_sign) = (self.size, self.pieces(), self.gib(), self.t_sign);
        let size_mib = size >> 20;
        let mut summary = format!(
            "{size_mib} MiB, {} KiB pieces ({pieces} receipts), {} off/on pairs per speed on \
             127.0.0.1 (tmpfs); signing {t_sign:.3} ms per receipt (mean of 50)\n",
            self.piece_kib, self.runs
        );
        let mut table = Table::new(
            id,
            "Client download with receipts, measured",
            &format!(
                "pbts-peer to pbts-peer, {size_mib} MiB in {} KiB pieces on 127.0.0.1 (tmpfs), \
                 receipts off against on in alternating pairs (medians of {}); model: the \
                 original's analytic overhead at the same speed with the measured {t_sign:.3} ms \
                 per signature",
                self.piece_kib, self.runs
            ),
            &[
                "speed",
                "off (MB/s)",
                "on (MB/s)",
                "cost (%)",
                "model (%)",
                "leecher CPU-s/GiB off",
                "leecher CPU-s/GiB on",
                "seeder CPU-s/GiB off",
                "seeder CPU-s/GiB on",
                "verify (ms/receipt)",
            ],
        );
        for (label, _) in SPEEDS {
            let of = |r: &str| -> Vec<Sample> {
                self.rows
                    .iter()
                    .filter(|x| x.speed == label && x.receipts == r)
                    .map(|x| x.sample)
                    .collect()
            };
            let (off, on) = (of("off"), of("on"));
            // Per pair: throughput on / off.
            let mut ratios: Vec<f64> =
                off.iter().zip(&on).map(|(a, b)| a.seconds / b.seconds).collect();
            ratios.sort_by(f64::total_cmp);
            let med = |v: &[Sample], f: &dyn Fn(&Sample) -> f64| {
                let mut x: Vec<f64> = v.iter().map(f).collect();
                x.sort_by(f64::total_cmp);
                x[x.len() / 2]
            };
            let mbps = |s: &Sample| size as f64 / 1e6 / s.seconds;
            // `+ 0.0` turns a negative zero into a zero.
            let cost = (1.0 - ratios[ratios.len() / 2]) * 100.0 + 0.0;
            let seeder_extra_ms =
                (med(&on, &|s| s.seeder_cpu) - med(&off, &|s| s.seeder_cpu)) * 1e3 / pieces as f64;
            let leecher_extra_ms = (med(&on, &|s| s.leecher_cpu) - med(&off, &|s| s.leecher_cpu))
                * 1e3
                / pieces as f64;
            let speed = med(&off, &mbps);
            // A run whose seeder verified nothing (it cannot be: every piece is receipted)
            // would say 0, not NaN.
            let verify = med(&on, &|s| s.verify_ms.unwrap_or(0.0));
            let model = pieces as f64 * t_sign / 1e3 / (size as f64 / 1e6 / speed) * 100.0;
            summary.push_str(&format!(
                "{label}: off {:.0} MB/s, on {:.0} MB/s; throughput cost of receipts (median of \
                 per-pair ratios) {cost:.1} % (range {:.1} to {:.1} %); CPU-s/GiB leecher {:.2} \
                 -> {:.2}, seeder {:.2} -> {:.2}; extra CPU per receipt: leecher \
                 {leecher_extra_ms:.3} ms, seeder {seeder_extra_ms:.3} ms (of which BLS \
                 verification {verify:.3} ms); the original's model at {speed:.0} MB/s: \
                 {model:.2} %\n",
                speed,
                med(&on, &mbps),
                (1.0 - ratios[ratios.len() - 1]) * 100.0,
                (1.0 - ratios[0]) * 100.0,
                med(&off, &|s| s.leecher_cpu) / gib,
                med(&on, &|s| s.leecher_cpu) / gib,
                med(&off, &|s| s.seeder_cpu) / gib,
                med(&on, &|s| s.seeder_cpu) / gib,
            ));
            table.row(vec![
                Cell::from(label),
                Cell::num(speed, 0),
                Cell::num(med(&on, &mbps), 0),
                Cell::num(cost, 1),
                Cell::num(model, 1),
                Cell::num(med(&off, &|s| s.leecher_cpu) / gib, 2),
                Cell::num(med(&on, &|s| s.leecher_cpu) / gib, 2),
                Cell::num(med(&off, &|s| s.seeder_cpu) / gib, 2),
                Cell::num(med(&on, &|s| s.seeder_cpu) / gib, 2),
                Cell::num(verify, 3),
            ]);
        }
        (table, summary)
    }
}

/// Runs the series and writes `client_download_measured.csv`, a summary, the LaTeX table and
/// the environment.
///
/// # Errors
/// As [`measure`], and I/O.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    let series = measure(plan)?;
    std::fs::create_dir_all(&plan.out)?;
    std::fs::write(plan.out.join("client_download_measured.csv"), series.csv())?;
    let (table, summary) = series.table("client_download_measured");
    std::fs::write(plan.out.join("client_download_measured_summary.txt"), &summary)?;
    std::fs::write(plan.out.join("client_download_measured.tex"), table.latex())?;
    crate::env::write(
        &plan.out.join("client_download_measured_env.json"),
        serde_json::json!({
            "series": "client-download-measured",
            "size_mib": plan.size_mib,
            "piece_kib": plan.piece_kib,
            "pairs_per_speed": plan.runs,
            "data_dir": plan.dir,
        }),
    )?;
    print!("{summary}");
    Ok(())
}

/// Mean milliseconds to sign one receipt, here.
fn signing_ms() -> f64 {
    let sk = pbts_verifier::keys::SecretKey::from_ikm(&[3; 32]).expect("32 bytes");
    let mut r = pbts_testkit::receipts::signed_receipts(1, 1, 3)[0];
    let t = Instant::now();
    for i in 0..50 {
        r.piece_index = i;
        sk.sign_receipt(&mut r);
    }
    t.elapsed().as_secs_f64() * 1e3 / 50.0
}

/// One seeder → leecher transfer, receipts `off` or `on`, the seeder capped at `cap` bytes/s.
#[allow(clippy::too_many_arguments)]
fn pair(
    plan: &Plan,
    tracker: &Tracker,
    seeder: &User,
    leecher: &User,
    seed_dir: &Path,
    leech_dir: &Path,
    receipts: &str,
    cap: Option<&str>,
) -> anyhow::Result<Sample> {
    std::fs::create_dir_all(leech_dir)?;
    let mode = if receipts == "on" { "prefer" } else { "off" };
    let mut cmd = seeder.cmd(plan, &["seed"]);
    cmd.arg(&seeder.torrent).arg(seed_dir).args(["--receipts", mode]);
    if let Some(cap) = cap {
        cmd.args(["--max-up", cap]);
    }
    let before = seeders(tracker)?;
    let mut seed =
        Killed(cmd.args(["--json"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?);
    await_seeder(tracker, before)?;
    let seeder_cpu0 = cpu_seconds(seed.0.id())?;
    let cpu0 = children_cpu()?;
    let out = leecher
        .cmd(plan, &["download"])
        .arg(&leecher.torrent)
        .arg("-o")
        .arg(leech_dir)
        .args(["--receipts", mode, "--seed-time", "0", "--json"])
        .stderr(Stdio::null())
        .output()?;
    let leecher_cpu = children_cpu()? - cpu0;
    // The seeder's share includes verifying and storing the last receipts: give it the
    // moment the leecher's shutdown grace gave them to arrive.
    std::thread::sleep(Duration::from_millis(300));
    let seeder_cpu = cpu_seconds(seed.0.id())? - seeder_cpu0;
    // Stopped with SIGTERM, so it prints its summary (its verification time).
    let pid = seed.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let mut summary = String::new();
    if let Some(mut out) = seed.0.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut summary)?;
    }
    drop(seed);
    // It said `stopped`: wait until the tracker counts it out, so that the next pair's
    // `await_seeder` sees its own seeder arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seeders(tracker)? > before {
        if Instant::now() > deadline {
            bail!("the tracker still counts a stopped seeder");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let verify_ms = serde_json::from_str::<serde_json::Value>(summary.trim())
        .ok()
        .and_then(|v| v["receipts"]["verify_ms_per_receipt"].as_f64());
    if !out.status.success() {
        bail!("pbts-peer leecher failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let v: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout)?.trim())?;
    Ok(Sample {
        seconds: v["download_seconds"].as_f64().context("no download_seconds in the summary")?,
        leecher_cpu,
        seeder_cpu,
        signed: v["receipts"]["signed"].as_u64().unwrap_or(0),
        verify_ms,
    })
}
