//! `pbts-peer`: download and seed torrents.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pbts_peer::identity::{self, Identity};
use pbts_peer::receipts::{self, Mode};
use pbts_peer::session::{Options, Session, Stats, TorrentConfig};
use pbts_peer::storage::Allocation;
use pbts_peer::units::{parse_duration, parse_rate, show_bytes, show_rate};

/// A BitTorrent peer for pbts trackers (and any other): downloads and seeds with every client.
#[derive(Debug, Parser)]
#[command(name = "pbts-peer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Makes a key pair on this machine and registers it with a pbts tracker; every torrent
    /// of that tracker then earns and gives receipts under it.
    Register {
        /// The tracker: http://host:port (or any of its announce URLs).
        #[arg(long)]
        tracker: String,
        /// The account name to register.
        #[arg(long)]
        user: String,
        /// An invite code, if the tracker registers by invite.
        #[arg(long)]
        invite: Option<String>,
    },
    /// Downloads a torrent, then seeds it until a seeding limit or Ctrl-C.
    Download {
        /// The .torrent file.
        torrent: PathBuf,
        /// Directory to download into (the torrent's name is created inside it).
        #[arg(short, long, default_value = ".")]
        output: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Seeds a torrent from data already in DIR (checked first; anything missing is
    /// downloaded).
    Seed {
        /// The .torrent file.
        torrent: PathBuf,
        /// Directory holding the torrent's data (the torrent's name inside it).
        dir: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// TCP port to accept peers on (0: any free port).
    #[arg(long, default_value_t = 6881)]
    port: u16,
    /// Address to accept peers on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Most connected peers.
    #[arg(long, default_value_t = 50)]
    max_peers: usize,
    /// Peers uploaded to at once (one of them chosen at random, rotating).
    #[arg(long, default_value_t = 4)]
    upload_slots: usize,
    /// Upload limit in bytes per second, e.g. 500K or 2M (0: none).
    #[arg(long, value_parser = parse_rate, default_value = "0")]
    max_up: u64,
    /// Download limit in bytes per second, e.g. 500K or 2M (0: none).
    #[arg(long, value_parser = parse_rate, default_value = "0")]
    max_down: u64,
    /// Drop a peer that takes none of the data we send for this long, e.g. 60s or 2m.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    stall_timeout: Duration,
    /// Stop seeding once uploaded / torrent size reaches this ratio.
    #[arg(long)]
    seed_ratio: Option<f64>,
    /// Stop seeding after this long, e.g. 0, 90s, 30m, 2h (0: stop when the download completes).
    #[arg(long, value_parser = parse_duration)]
    seed_time: Option<Duration>,
    /// How files are created: full (allocated up front, no fragmentation, no surprise
    /// "disk full" half way) or sparse.
    #[arg(long, value_enum, default_value_t = AllocationArg::Full)]
    allocation: AllocationArg,
    /// No progress output, only the final summary and errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print the final summary as one JSON object (exact byte counts), for scripts.
    #[arg(long)]
    json: bool,
    /// Receipts with pbts peers (when this machine is registered with one of the torrent's
    /// trackers): off; prefer (peers without them are served after pbts peers); require
    /// (only pbts peers that keep up with their receipts are served).
    #[arg(long, value_enum, default_value_t = ReceiptsArg::Prefer)]
    receipts: ReceiptsArg,
    /// Pieces a pbts peer may be behind in receipts before it is choked.
    #[arg(long, default_value_t = receipts::DEFAULT_SLACK)]
    receipt_slack: usize,
    /// Append one JSON line per verified piece (who delivered it, whom its receipt credits).
    #[arg(long)]
    transfer_log: Option<PathBuf>,
    /// Test only: sign and send no receipts (a peer that withholds them).
    #[arg(long, hide = true)]
    withhold_receipts: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ReceiptsArg {
    Off,
    Prefer,
    Require,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AllocationArg {
    Full,
    Sparse,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pbts_peer=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (torrent, dir, common) = match cli.command {
        Command::Download { torrent, output, common } => (torrent, output, common),
        Command::Seed { torrent, dir, common } => (torrent, dir, common),
        Command::Register { tracker, user, invite } => {
            let dir = identity::config_dir()?;
            let config = pbts_peer::tracker::Config::default();
            let id = Identity::register(&dir, &tracker, &user, invite.as_deref(), &config).await?;
            println!("registered {} with {}", id.user, id.tracker.host_header());
            println!("passkey: {}", id.passkey);
            println!("announce: {}", id.announce_url);
            println!("announce (udp): {}", id.udp_announce_url);
            println!("identity: {}", Identity::path_for(&dir, &id.tracker).display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    let meta = read_torrent(&torrent)?;
    let mode = match common.receipts {
        ReceiptsArg::Off => Mode::Off,
        ReceiptsArg::Prefer => Mode::Prefer,
        ReceiptsArg::Require => Mode::Require,
    };
    let identity = match mode {
        Mode::Off => None,
        _ => Identity::find(&identity::config_dir()?, &meta.trackers)?.map(std::sync::Arc::new),
    };
    anyhow::ensure!(
        identity.is_some() || mode != Mode::Require,
        "--receipts require needs an identity with one of the torrent's trackers: run \
         pbts-peer register --tracker http://HOST:PORT --user NAME"
    );
    let options = Options {
        listen: SocketAddr::new(common.bind, common.port),
        torrent: TorrentConfig {
            max_peers: common.max_peers.max(1),
            upload_slots: common.upload_slots.max(1),
            max_up: (common.max_up > 0).then_some(common.max_up),
            max_down: (common.max_down > 0).then_some(common.max_down),
            stall_timeout: common.stall_timeout.max(Duration::from_secs(1)),
            ..Options::default().torrent
        },
        receipts: receipts::Config {
            mode,
            slack: common.receipt_slack,
            withhold: common.withhold_receipts,
            ..receipts::Config::default()
        },
        transfer_log: common.transfer_log.clone(),
        allocation: match common.allocation {
            AllocationArg::Full => Allocation::Full,
            AllocationArg::Sparse => Allocation::Sparse,
        },
        ..Options::default()
    };
    let name = meta.name.clone().unwrap_or_else(|| "torrent".to_owned());
    let total = meta.total_size;
    let ui = Ui::new(common.quiet, total);
    ui.checking(&name);
    let check_bar = ui.bar.clone();
    let session = Session::start(&meta, &dir, options, identity, move |done, all| {
        if let Some(b) = &check_bar {
            b.set_message(format!("checking {done}/{all} pieces"));
        }
    })
    .await
    .with_context(|| format!("starting {}", torrent.display()))?;
    ui.started(&name, &session);

    let started = Instant::now();
    let mut completion = session.completion();
    let mut completed_at = (*completion.borrow()).then_some(started);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let interrupted = loop {
        tokio::select! {
            _ = every.tick() => {}
            r = completion.changed(), if completed_at.is_none() => {
                if r.is_ok() && *completion.borrow() {
                    completed_at = Some(Instant::now());
                    ui.completed(started.elapsed());
                }
            }
            s = shutdown_signal() => {
                s.context("waiting for Ctrl-C")?;
                break true;
            }
        }
        let stats = session.stats();
        ui.progress(&stats, completed_at.is_some());
        if let Some(at) = completed_at {
            let ratio_met =
                common.seed_ratio.is_some_and(|r| stats.uploaded as f64 >= r * total as f64);
            let time_met = common.seed_time.is_some_and(|t| at.elapsed() >= t);
            if ratio_met || time_met {
                break false;
            }
        }
    };
    let had = session.had_at_start();
    let reported = session.report_stats();
    let stats = session.stop().await;
    let (credited, credited_bytes, refused) = reported.map_or((0, 0, 0), |r| {
        use std::sync::atomic::Ordering::Relaxed;
        (r.credited.load(Relaxed), r.credited_bytes.load(Relaxed), r.refused.load(Relaxed))
    });
    ui.finish();
    let complete = stats.left == 0;
    let seconds = started.elapsed().as_secs_f64();
    if common.json {
        let summary = serde_json::json!({
            "name": name,
            "complete": complete,
            "total": total,
            "had": had,
            "downloaded": stats.downloaded,
            "uploaded": stats.uploaded,
            "wasted": stats.wasted,
            "failed_pieces": stats.failed_pieces,
            "seconds": seconds,
            "download_seconds": completed_at.map(|at| at.duration_since(started).as_secs_f64()),
            "interrupted": interrupted,
            "receipts": {
                "signed": stats.receipts.signed,
                "sent": stats.receipts.sent,
                "earned": stats.receipts.stored,
                "bad": stats.receipts.bad,
                "verified": stats.receipts.verified,
                "verify_ms_per_receipt": (stats.receipts.verified > 0).then(|| {
                    stats.receipts.verify_micros as f64 / 1e3 / stats.receipts.verified as f64
                }),
                "credited": credited,
                "credited_bytes": credited_bytes,
                "refused": refused,
            },
        });
        println!("{summary}");
    } else {
        println!(
            "{name}: {} of {} ({} already on disk), downloaded {}, uploaded {}, ratio {:.2}, \
             wasted {}, {} piece(s) failed, {seconds:.1} s{}",
            if complete { "complete" } else { "incomplete" },
            show_bytes(total),
            show_bytes(had),
            show_bytes(stats.downloaded),
            show_bytes(stats.uploaded),
            stats.uploaded as f64 / total.max(1) as f64,
            show_bytes(stats.wasted),
            stats.failed_pieces,
            if interrupted { ", interrupted" } else { "" },
        );
    }
    Ok(if complete { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn read_torrent(path: &Path) -> anyhow::Result<pbts_proto::metainfo::Metainfo> {
    const MAX_TORRENT_FILE: u64 = 64 << 20;
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    anyhow::ensure!(
        len <= MAX_TORRENT_FILE,
        "{} is {len} bytes; a .torrent file over {MAX_TORRENT_FILE} bytes is refused",
        path.display()
    );
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    pbts_proto::metainfo::parse_torrent(&bytes)
        .with_context(|| format!("{} is not a valid .torrent", path.display()))
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// Progress on a terminal as a bar; elsewhere a log line every ten seconds; nothing when quiet.
struct Ui {
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: std::cell::Cell<Option<Instant>>,
    total: u64,
}

impl Ui {
    fn new(quiet: bool, total: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg} ETA {eta}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Self { bar, lines: !quiet && !terminal, last_line: std::cell::Cell::new(None), total }
    }

    fn checking(&self, name: &str) {
        if self.lines {
            eprintln!("{name}: checking existing data");
        }
    }

    fn started(&self, name: &str, session: &Session) {
        let s = session.stats();
        let line = format!(
            "{name}: {} pieces, {} ({} already verified), listening on {}",
            s.pieces,
            show_bytes(self.total),
            show_bytes(session.had_at_start()),
            session.local_addr()
        );
        match &self.bar {
            Some(b) => b.println(line),
            None if self.lines => eprintln!("{line}"),
            None => {}
        }
    }

    fn completed(&self, took: Duration) {
        let line = format!(
            "download complete: {} in {:.1} s, seeding",
            show_bytes(self.total),
            took.as_secs_f64()
        );
        match &self.bar {
            Some(b) => b.println(line),
            None if self.lines => eprintln!("{line}"),
            None => {}
        }
    }

    fn progress(&self, s: &Stats, seeding: bool) {
        let text = format!(
            "↓ {} ↑ {} peers {} ({} seeds){}",
            show_rate(s.down_rate),
            show_rate(s.up_rate),
            s.peers,
            s.seeds,
            if seeding {
                format!(", seeding, uploaded {}", show_bytes(s.uploaded))
            } else {
                String::new()
            }
        );
        if let Some(b) = &self.bar {
            b.set_position(self.total - s.left.min(self.total));
            b.set_message(text);
        } else if self.lines {
            let due = self.last_line.get().is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
            if due {
                self.last_line.set(Some(Instant::now()));
                let pct = if s.pieces == 0 {
                    100.0
                } else {
                    100.0 * f64::from(s.have) / f64::from(s.pieces)
                };
                eprintln!("{pct:5.1}% {text}");
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
