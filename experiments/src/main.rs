//! # pbts-experiments
//!
//! Every table of the paper from one command, measured on correct code paths:
//!
//! ```text
//! cargo build --release -p pbts-experiments
//! target/release/pbts-experiments run --iterations 30 --duration 5 --out experiments/results/paper
//! target/release/pbts-experiments run --quick --out /tmp/pbts-quick          # CI-sized
//! target/release/pbts-experiments announce --flamegraph flame.svg            # one experiment
//! ```
//!
//! Experiments: `receipts`, `tee`, `client-download`, `tracker-overhead`, `scalability`, `gas`,
//! `announce` (see `exp/`). Each writes `<name>_raw.csv` (every sample), one CSV per summary
//! table, `tables/<table>.tex` (booktabs) and `tables/all.tex` (a document including them all:
//! `pdflatex all.tex`), `summary.csv` (all tables, long form), `report.txt`, and `env.json`
//! (commit and dirty flag, rustc, kernel, CPU model, cores, settings, seed).
//!
//! `client-download` needs the `pbts-peer` binary beside this one (`cargo build --release -p
//! pbts-peer`). `vs-aquatic` runs pbts and aquatic side by side in separate pinned processes.

#![forbid(unsafe_code)]
// A binary: `pub` marks each module's interface to the others, not a crate API.
#![allow(unreachable_pub)]

mod env;
mod exp;
mod procs;
mod receipt_cost;
mod report;
mod vs_libtorrent;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use procs::{Killed, cpu_seconds};

/// pbts experiments harness.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// UDP and HTTP announce throughput of pbts vs aquatic_udp / aquatic_http, side by side.
    VsAquatic {
        /// Seconds of load per tracker and protocol.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Output directory for the CSV.
        #[arg(long, default_value = "experiments/results")]
        out: PathBuf,
        /// The pbts binary.
        #[arg(long, default_value = "target/release/pbts")]
        pbts: PathBuf,
        /// CPU for the tracker.
        #[arg(long, default_value_t = 0)]
        tracker_cpu: usize,
        /// CPU(s) for the load generator (taskset list).
        #[arg(long, default_value = "1")]
        load_cpus: String,
        /// Repetitions of each run (results are reported per run).
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Only UDP or only HTTP.
        #[arg(long)]
        only: Option<String>,
        /// Seconds of a discarded warm-up run of each tracker and protocol before measuring.
        #[arg(long, default_value_t = 5)]
        warmup: u64,
    },
    /// pbts-peer → pbts-peer against libtorrent → libtorrent: one seeder, one leecher, on
    /// 127.0.0.1 with the data on tmpfs; throughput and CPU-seconds per GiB, alternating runs.
    VsLibtorrent(vs_libtorrent::Plan),
    /// What receipts cost a real download: pbts-peer → pbts-peer with receipts off against
    /// on, alternating, at full speed and at 100 MB/s; beside the original's analytic model.
    ClientDownloadMeasured(vs_libtorrent::Plan),
    /// Every experiment, in one run.
    Run(Common),
    /// Receipt keygen, signing, verification, aggregation, batches.
    Receipts(Common),
    /// Baseline vs TEE-derived keys, attestation generation and verification.
    Tee(Common),
    /// Receipts off against on in real pbts-peer transfers (needs `pbts-peer` next to this
    /// binary; `--quick`: 16 MiB), and the original's model with the measured signing cost.
    ClientDownload(Common),
    /// End-to-end latency of tracker operations against pbts and anvil.
    TrackerOverhead(Common),
    /// Report throughput vs concurrent reporters and swarm sizes.
    Scalability(Common),
    /// Gas per contract operation and the annual cost projection.
    Gas(Common),
    /// UDP and HTTP announce throughput and latency vs serving threads.
    Announce(Common),
}

/// Options shared by the experiments.
#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Repetitions of each measured operation.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Seconds of load per point of the throughput experiments.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Output directory.
    #[arg(long, default_value = "experiments/results/latest")]
    out: PathBuf,
    /// CI-sized run: fewer points and repetitions (a minute or two).
    #[arg(long)]
    quick: bool,
    /// Seed of the harness's random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Write a flamegraph (SVG) of the tracker under UDP load to this file.
    #[arg(long)]
    flamegraph: Option<PathBuf>,
}

fn run_experiments(names: &[&str], c: &Common) -> anyhow::Result<()> {
    let (iterations, duration) = if c.quick {
        (c.iterations.min(5), c.duration.min(1.0))
    } else {
        (c.iterations, c.duration)
    };
    let settings = exp::Settings {
        iterations,
        duration: Duration::from_secs_f64(duration.max(0.1)),
        quick: c.quick,
        seed: c.seed,
        flamegraph: c.flamegraph.clone(),
    };
    let env = env::capture(
        serde_json::json!({
            "experiments": names, "iterations": iterations, "duration_secs": duration,
            "quick": c.quick, "flamegraph": c.flamegraph,
        }),
        c.seed,
    );
    std::fs::create_dir_all(&c.out).with_context(|| format!("create {}", c.out.display()))?;
    let bar = indicatif::ProgressBar::new(names.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ({elapsed})")
            .expect("a valid template"),
    );
    let mut outcomes = Vec::new();
    for name in names {
        bar.set_message(name.to_string());
        let started = Instant::now();
        let outcome = match *name {
            "receipts" => exp::receipts::run(&settings),
            "tee" => exp::tee::run(&settings)?,
            "client-download" => exp::download::run(&settings)?,
            "tracker-overhead" => exp::overhead::run(&settings)?,
            "scalability" => exp::scalability::run(&settings)?,
            "gas" => exp::gas::run(&settings, &c.out)?,
            "announce" => exp::announce::run(&settings)?,
            other => bail!("unknown experiment {other}"),
        };
        bar.println(format!("{name}: {:.1}s", started.elapsed().as_secs_f64()));
        bar.inc(1);
        outcomes.push(outcome);
    }
    bar.finish_and_clear();
    report::write_run(&c.out, &outcomes, &env)?;
    eprintln!(
        "wrote {} tables to {}",
        outcomes.iter().map(|o| o.tables.len()).sum::<usize>(),
        c.out.display()
    );
    Ok(())
}

/// Every experiment, in the order `run` runs them.
const ALL: [&str; 7] =
    ["receipts", "tee", "client-download", "tracker-overhead", "scalability", "gas", "announce"];

fn which(bin: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output()?;
    if !out.status.success() {
        bail!(
            "{bin} not found: cargo install aquatic_udp aquatic_udp_load_test aquatic_http aquatic_http_load_test"
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let u = std::net::UdpSocket::bind(l.local_addr()?)?;
    Ok(u.local_addr()?.port())
}

/// Prints a binary's default config (`-p`) and applies `key = value` replacements.
fn config_from(bin: &Path, replace: &[(&str, String)]) -> anyhow::Result<String> {
    let out = Command::new(bin).arg("-p").output().context("print config")?;
    let mut text = String::from_utf8(out.stdout)?;
    for (key, value) in replace {
        let mut found = false;
        text = text
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                if !found && trimmed.starts_with(&format!("{key} =")) {
                    found = true;
                    format!("{key} = {value}")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        if !found {
            bail!("{}: no key {key} in its printed config", bin.display());
        }
    }
    Ok(text)
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("tracker did not open port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until a BEP 15 connect request on `port` is answered.
fn wait_for_udp(port: u16) -> anyhow::Result<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut req = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    req.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        sock.send_to(&req, ("127.0.0.1", port))?;
        if sock.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("UDP tracker on port {port} never answered");
        }
    }
}

struct RunResult {
    tracker: &'static str,
    protocol: &'static str,
    responses_per_sec: f64,
    tracker_cpu_secs: f64,
    duration: f64,
}

impl RunResult {
    /// Responses over the load window (the load tester's average × its configured duration)
    /// per second of tracker CPU time.
    fn per_cpu_sec(&self) -> f64 {
        self.responses_per_sec * self.duration / self.tracker_cpu_secs.max(1e-9)
    }
}

/// Runs a load tester against a started tracker and measures.
fn measure(
    tracker: &Killed,
    load_bin: &Path,
    load_cfg: &Path,
    load_cpus: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    let pid = tracker.0.id();
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", load_cpus])
        .arg(load_bin)
        .arg("-c")
        .arg(load_cfg)
        .stderr(Stdio::inherit())
        .output()
        .context("run load tester")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Average responses per second:")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .with_context(|| {
            format!("no 'Average responses per second' in load tester output:\n{text}")
        })?;
    Ok((rps, cpu1 - cpu0, elapsed))
}

fn spawn_tracker(cpu: usize, bin: &Path, args: &[&str]) -> anyhow::Result<Killed> {
    let child = Command::new("taskset")
        .args(["-c", &cpu.to_string()])
        .arg(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    Ok(Killed(child))
}

/// What to run.
struct Plan {
    duration: u64,
    warmup: u64,
    pbts: PathBuf,
    tracker_cpu: usize,
    load_cpus: String,
    runs: usize,
}

fn vs_aquatic(plan: &Plan, out: &Path, only: Option<&str>) -> anyhow::Result<()> {
    let protocols: Vec<&str> = match only {
        Some(p) => vec![if p == "udp" { "udp" } else { "http" }],
        None => vec!["udp", "http"],
    };
    if plan.warmup > 0 {
        eprintln!("warm-up ({} s per tracker, discarded)", plan.warmup);
        run_all(plan, plan.warmup, 1, &protocols)?;
    }
    let results = run_all(plan, plan.duration, plan.runs, &protocols)?;
    write_results(&results, out)
}

#[allow(clippy::too_many_lines)]
fn run_all(
    plan: &Plan,
    duration: u64,
    runs: usize,
    protocols: &[&str],
) -> anyhow::Result<Vec<RunResult>> {
    let Plan { pbts, tracker_cpu, load_cpus, .. } = plan;
    let (pbts, tracker_cpu, load_cpus) = (pbts.as_path(), *tracker_cpu, load_cpus.as_str());
    let dir = tempfile::tempdir()?;
    let mut results = Vec::new();
    for _ in 0..runs {
        for &proto in protocols {
            let (server_bin, load_bin) = match proto {
                "udp" => (which("aquatic_udp")?, which("aquatic_udp_load_test")?),
                _ => (which("aquatic_http")?, which("aquatic_http_load_test")?),
            };
            for tracker in ["pbts", "aquatic"] {
                let port = free_port()?;
                let addr = format!("\"127.0.0.1:{port}\"");
                let load_cfg = dir.path().join(format!("load_{proto}.toml"));
                let mut replace =
                    vec![("server_address", addr.clone()), ("duration", duration.to_string())];
                if proto == "http" {
                    replace.push(("enable_tls", "false".into()));
                }
                std::fs::write(&load_cfg, config_from(&load_bin, &replace)?)?;
                let handle = if tracker == "pbts" {
                    let cfg = dir.path().join("pbts.toml");
                    let data = dir.path().join(format!("data-{proto}-{port}"));
                    std::fs::write(
                        &cfg,
                        format!(
                            "[network]\nlisten = [\"127.0.0.1:{port}\"]\ncores = 1\nfirst_cpu = {tracker_cpu}\n\
                             [tracker]\nmode = \"open\"\n[ratio]\nenabled = false\n\
                             [limits]\nmax_peers_per_ip_per_swarm = 0\n\
                             [storage]\ndata_dir = \"{}\"\n",
                            data.display()
                        ),
                    )?;
                    let mut h = spawn_tracker(
                        tracker_cpu,
                        pbts,
                        &["serve", "-c", cfg.to_str().context("path")?],
                    )?;
                    let mut line = String::new();
                    BufReader::new(h.0.stdout.take().context("stdout")?).read_line(&mut line)?;
                    if line.is_empty() {
                        bail!(
                            "pbts did not start (run it by hand with the same config to see why)"
                        );
                    }
                    h
                } else {
                    let cfg = dir.path().join(format!("aquatic_{proto}.toml"));
                    std::fs::write(&cfg, config_from(&server_bin, &[("address", addr.clone())])?)?;
                    let h = spawn_tracker(
                        tracker_cpu,
                        &server_bin,
                        &["-c", cfg.to_str().context("path")?],
                    )?;
                    if proto == "udp" {
                        wait_for_udp(port)?
                    } else {
                        wait_for_port(port)?
                    }
                    h
                };
                let (rps, cpu, _elapsed) = measure(&handle, &load_bin, &load_cfg, load_cpus)?;
                drop(handle);
                let r = RunResult {
                    tracker: if tracker == "pbts" {
                        "pbts"
                    } else if proto == "udp" {
                        "aquatic_udp"
                    } else {
                        "aquatic_http"
                    },
                    protocol: if proto == "udp" { "udp" } else { "http" },
                    responses_per_sec: rps,
                    tracker_cpu_secs: cpu,
                    duration: duration as f64,
                };
                eprintln!(
                    "{:<13} {:<5} {:>10.0} responses/s  {:>6.2} tracker CPU-s  {:>10.0} responses per CPU-s",
                    r.tracker,
                    r.protocol,
                    r.responses_per_sec,
                    r.tracker_cpu_secs,
                    r.per_cpu_sec()
                );
                results.push(r);
            }
        }
    }
    Ok(results)
}

fn write_results(results: &[RunResult], out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let mut csv = String::from(
        "tracker,protocol,duration_s,responses_per_s,tracker_cpu_s,responses_per_cpu_s\n",
    );
    for r in results {
        csv.push_str(&format!(
            "{},{},{:.1},{:.0},{:.2},{:.0}\n",
            r.tracker,
            r.protocol,
            r.duration,
            r.responses_per_sec,
            r.tracker_cpu_secs,
            r.per_cpu_sec()
        ));
    }
    let path = out.join("aquatic_comparison.csv");
    std::fs::write(&path, &csv)?;
    println!("{csv}");
    let mut summary = String::new();
    for proto in ["udp", "http"] {
        let pick = |name: &str| -> Vec<&RunResult> {
            results.iter().filter(|r| r.protocol == proto && r.tracker.starts_with(name)).collect()
        };
        let (p, a) = (pick("pbts"), pick("aquatic"));
        if p.is_empty() || a.is_empty() {
            continue;
        }
        // Runs alternate pbts and aquatic, so each pair shares (nearly) the same machine state;
        // the median of the per-pair ratios resists the drift of a shared machine better than
        // a ratio of means.
        let mut ratios: Vec<f64> =
            p.iter().zip(&a).map(|(p, a)| p.per_cpu_sec() / a.per_cpu_sec()).collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        let mean =
            |v: &[&RunResult]| v.iter().map(|r| r.per_cpu_sec()).sum::<f64>() / v.len() as f64;
        summary.push_str(&format!(
            "{proto}: pbts {:.0} vs aquatic {:.0} responses per tracker CPU-second (mean of {} runs); \
             per-run ratios {}; median {median:.2}x\n",
            mean(&p),
            mean(&a),
            p.len(),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" "),
        ));
    }
    print!("{summary}");
    std::fs::write(out.join("aquatic_summary.txt"), &summary)?;
    eprintln!("wrote {} and aquatic_summary.txt", path.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::VsAquatic { duration, out, pbts, tracker_cpu, load_cpus, runs, only, warmup } => {
            let plan = Plan { duration, warmup, pbts, tracker_cpu, load_cpus, runs };
            vs_aquatic(&plan, &out, only.as_deref())
        }
        Cmd::VsLibtorrent(mut plan) => {
            plan.runs = plan.runs.max(1);
            vs_libtorrent::run(&plan)
        }
        Cmd::ClientDownloadMeasured(mut plan) => {
            plan.runs = plan.runs.max(1);
            receipt_cost::run(&plan)
        }
        Cmd::Run(c) => run_experiments(&ALL, &c),
        Cmd::Receipts(c) => run_experiments(&["receipts"], &c),
        Cmd::Tee(c) => run_experiments(&["tee"], &c),
        Cmd::ClientDownload(c) => run_experiments(&["client-download"], &c),
        Cmd::TrackerOverhead(c) => run_experiments(&["tracker-overhead"], &c),
        Cmd::Scalability(c) => run_experiments(&["scalability"], &c),
        Cmd::Gas(c) => run_experiments(&["gas"], &c),
        Cmd::Announce(c) => run_experiments(&["announce"], &c),
    }
}
