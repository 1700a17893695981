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
mod figure;
mod latency;
mod memory;
mod procs;
mod receipt_cost;
mod report;
mod vs_aquatic;
mod vs_libtorrent;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// pbts experiments harness.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// UDP and HTTP announce throughput of pbts against aquatic_udp, aquatic_http,
    /// opentracker and a stateless ceiling, side by side in alternating rounds.
    VsAquatic(vs_aquatic::Plan),
    /// Resident memory per peer, pbts against aquatic_udp: 1M peers in 100k torrents announced
    /// over UDP, alternating rounds.
    Memory(memory::Plan),
    /// UDP announce latency (p50/p99/p99.9) at 50 % and 90 % of the maximum load, pbts against
    /// aquatic_udp and the stateless ceiling, open loop, rotating rounds.
    Latency(latency::Plan),
    /// The connection-per-request floor `vs-aquatic` runs as a contender (see
    /// `vs_aquatic::http_floor`).
    #[command(hide = true)]
    HttpFloor {
        #[arg(long)]
        port: u16,
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
    if names.iter().any(|n| NEED_ANVIL.contains(n)) {
        pbts_testkit::anvil::ensure_installed()?;
    }
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
    let tables: Vec<&report::Table> = outcomes.iter().flat_map(|o| o.tables.iter()).collect();
    let figures = figure::from_tables(&tables);
    let figures_tex = figure::write_all(&c.out.join("tables"), &figures)?;
    report::write_run(&c.out, &outcomes, &env, &figures_tex)?;
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

/// Errors end the run with one line (the cause chain joined by colons), never a backtrace.
fn main() {
    if let Err(e) = dispatch(Cli::parse().command) {
        eprintln!("pbts-experiments: {e:#}");
        std::process::exit(1);
    }
}

/// The experiments that start a dev chain.
const NEED_ANVIL: [&str; 2] = ["tracker-overhead", "gas"];

fn dispatch(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::VsAquatic(plan) => vs_aquatic::run(&plan),
        Cmd::Memory(plan) => memory::run(&plan),
        Cmd::Latency(plan) => latency::run(&plan),
        Cmd::HttpFloor { port } => vs_aquatic::http_floor(port),
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
