//! `vs-aquatic`: pbts against the fastest trackers there are, side by side on this machine,
//! each tracker pinned to one CPU and the load generator to another, one tracker at a time.
//!
//! Three series, each a list of contenders under the same load:
//!
//! - `udp`: pbts, aquatic_udp and the ceiling (`pbts serve --udp-ceiling`: the same socket loop
//!   and connection ids with no swarm) under `aquatic_udp_load_test`, announce-heavy by
//!   default (1M torrents, no connect weight) or aquatic's own mixed default (`--udp-mix`).
//! - `http`: keep-alive HTTP announces from `wrk` (128 connections, one Lua-scripted request
//!   per random torrent of a fixed set, so opentracker's whitelist can list them): pbts,
//!   aquatic_http and opentracker (Debian's build closes every connection after its response,
//!   so its keep-alive numbers are connection-per-request numbers).
//! - `http-close`: the same with `Connection: close`: a connection per request, as clients
//!   that do not keep connections alive announce.
//!
//! A round runs every contender of every series once, the order rotating between rounds so no
//! tracker always runs first; comparisons are the median (and range) of per-round ratios of
//! responses per tracker CPU-second (the load generator, on its own core, is the bottleneck
//! for some trackers: CPU-normalised numbers compare the trackers, not the generator).

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};

use crate::procs::{Killed, cpu_seconds, cpu_split};
use crate::report::{Cell, Table};

/// Torrents in the HTTP load (the whitelist opentracker needs).
const HTTP_TORRENTS: usize = 10_000;
/// Open connections of the HTTP load.
const HTTP_CONNECTIONS: usize = 128;

/// What to run.
#[derive(Debug, clap::Args)]
pub struct Plan {
    /// Seconds of load per tracker and series.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Output directory.
    #[arg(long, default_value = "experiments/results")]
    pub out: PathBuf,
    /// The pbts binary.
    #[arg(long, default_value = "target/release/pbts")]
    pub pbts: PathBuf,
    /// CPU for the tracker.
    #[arg(long, default_value_t = 0)]
    pub tracker_cpu: usize,
    /// CPU(s) for the load generator (taskset list).
    #[arg(long, default_value = "1")]
    pub load_cpus: String,
    /// Rounds (each runs every contender of every series once; 0 with `--flamegraphs`: only
    /// those).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Only these series (comma-separated: udp, http, http-close).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// UDP load: `announce` (announce-heavy: no connect weight) or `mixed` (aquatic's default).
    #[arg(long, default_value = "announce")]
    pub udp_mix: String,
    /// Seconds of discarded warm-up per contender before the first round.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// After the rounds, one more (unmeasured) run per contender under `perf record` (kernel
    /// and user stacks): `flame_<series>_<tracker>.svg` and the user/kernel split in
    /// `flame_split.csv`. Needs perf and inferno (`cargo install inferno`).
    #[arg(long)]
    pub flamegraphs: bool,
}

/// A tracker under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracker {
    Pbts,
    Ceiling,
    AquaticUdp,
    AquaticHttp,
    Opentracker,
    /// The connection-per-request floor: [`http_floor`], a blocking accept, read, write and
    /// close with no tracker behind it.
    HttpFloor,
}

impl Tracker {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Pbts => "pbts",
            Self::Ceiling => "ceiling",
            Self::AquaticUdp => "aquatic_udp",
            Self::AquaticHttp => "aquatic_http",
            Self::Opentracker => "opentracker",
            Self::HttpFloor => "floor",
        }
    }
}

/// A series: a load and the trackers that take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    Udp,
    Http,
    HttpClose,
}

impl Series {
    const ALL: [Self; 3] = [Self::Udp, Self::Http, Self::HttpClose];

    fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Http => "http",
            Self::HttpClose => "http-close",
        }
    }

    fn contenders(self) -> &'static [Tracker] {
        match self {
            Self::Udp => &[Tracker::Pbts, Tracker::AquaticUdp, Tracker::Ceiling],
            Self::Http => &[Tracker::Pbts, Tracker::AquaticHttp, Tracker::Opentracker],
            Self::HttpClose => {
                &[Tracker::Pbts, Tracker::AquaticHttp, Tracker::Opentracker, Tracker::HttpFloor]
            }
        }
    }

    /// (numerator, denominator) of the ratios reported.
    fn comparisons(self) -> &'static [(Tracker, Tracker)] {
        match self {
            Self::Udp => &[
                (Tracker::Pbts, Tracker::AquaticUdp),
                (Tracker::Pbts, Tracker::Ceiling),
                (Tracker::AquaticUdp, Tracker::Ceiling),
            ],
            Self::Http => &[
                (Tracker::Pbts, Tracker::AquaticHttp),
                (Tracker::Pbts, Tracker::Opentracker),
                (Tracker::AquaticHttp, Tracker::Opentracker),
            ],
            Self::HttpClose => &[
                (Tracker::Pbts, Tracker::AquaticHttp),
                (Tracker::Pbts, Tracker::Opentracker),
                (Tracker::AquaticHttp, Tracker::Opentracker),
                (Tracker::Pbts, Tracker::HttpFloor),
                (Tracker::Opentracker, Tracker::HttpFloor),
            ],
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
struct Sample {
    series: Series,
    round: usize,
    tracker: Tracker,
    /// Responses over the load window.
    responses: f64,
    seconds: f64,
    tracker_cpu: f64,
    /// Failed requests the load generator counted (connection errors, non-2xx, timeouts).
    errors: u64,
}

impl Sample {
    fn per_cpu_sec(&self) -> f64 {
        self.responses / self.tracker_cpu.max(1e-9)
    }
}

/// Runs the series and writes `aquatic_comparison.csv`, `aquatic_summary.txt`,
/// `aquatic_comparison.tex` and `aquatic_env.json` into `plan.out`.
///
/// # Errors
/// A tracker or load generator missing or failing, I/O.
pub fn run(plan: &Plan) -> anyhow::Result<()> {
    let series: Vec<Series> = if plan.only.is_empty() {
        Series::ALL.to_vec()
    } else {
        plan.only
            .iter()
            .map(|s| {
                Series::ALL
                    .into_iter()
                    .find(|x| x.name() == s)
                    .with_context(|| format!("unknown series {s} (udp, http, http-close)"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    if !matches!(plan.udp_mix.as_str(), "announce" | "mixed") {
        bail!("--udp-mix must be announce or mixed, not {}", plan.udp_mix);
    }
    let tools = Tools::find(plan, &series)?;
    if plan.flamegraphs {
        for bin in ["perf", "inferno-collapse-perf", "inferno-flamegraph"] {
            which(bin).with_context(|| {
                format!("--flamegraphs needs {bin} (perf from Debian, cargo install inferno)")
            })?;
        }
    }
    let dir = tempfile::tempdir()?;
    let hashes = http_hashes(7);
    std::fs::write(dir.path().join("whitelist"), whitelist(&hashes))?;
    std::fs::write(dir.path().join("announce.lua"), wrk_script(&hashes, false))?;
    std::fs::write(dir.path().join("announce-close.lua"), wrk_script(&hashes, true))?;
    let bench = Bench { plan, tools: &tools, dir: dir.path() };
    if plan.warmup > 0 {
        eprintln!("warm-up: {} s per contender, discarded", plan.warmup);
        for &s in &series {
            for &t in s.contenders() {
                bench.one(s, t, 0, plan.warmup)?;
            }
        }
    }
    let mut samples = Vec::new();
    for round in 0..plan.runs {
        for &s in &series {
            let c = s.contenders();
            for k in 0..c.len() {
                let t = c[(k + round) % c.len()];
                let sample = bench.one(s, t, round, plan.duration)?;
                eprintln!(
                    "round {round} {:<10} {:<12} {:>9.0} responses/s {:>6.2} CPU-s {:>9.0} per CPU-s{}",
                    s.name(),
                    t.name(),
                    sample.responses / sample.seconds,
                    sample.tracker_cpu,
                    sample.per_cpu_sec(),
                    if sample.errors > 0 {
                        format!(" ({} errors)", sample.errors)
                    } else {
                        String::new()
                    }
                );
                samples.push(sample);
            }
        }
    }
    if plan.runs > 0 {
        write(plan, &series, &samples)?;
    } else if !plan.flamegraphs {
        bail!("--runs 0 measures nothing: it is for --flamegraphs alone");
    }
    if plan.flamegraphs {
        std::fs::create_dir_all(&plan.out)?;
        let mut csv = String::from("series,tracker,user_s,kernel_s,kernel_share\n");
        for &s in &series {
            for &t in s.contenders() {
                let (user, kernel) = bench.profile(s, t, plan.duration)?;
                let share = kernel / (user + kernel);
                eprintln!(
                    "profiled {:<10} {:<12} user {user:.2} s, kernel {kernel:.2} s ({:.0} % kernel)",
                    s.name(),
                    t.name(),
                    share * 100.0
                );
                csv.push_str(&format!(
                    "{},{},{user:.2},{kernel:.2},{share:.3}\n",
                    s.name(),
                    t.name()
                ));
            }
        }
        std::fs::write(plan.out.join("flame_split.csv"), csv)?;
    }
    Ok(())
}

/// The binaries.
pub(crate) struct Tools {
    pub(crate) aquatic_udp: Option<PathBuf>,
    pub(crate) aquatic_udp_load: Option<PathBuf>,
    pub(crate) aquatic_http: Option<PathBuf>,
    pub(crate) opentracker: Option<PathBuf>,
    pub(crate) wrk: Option<PathBuf>,
}

impl Tools {
    fn find(plan: &Plan, series: &[Series]) -> anyhow::Result<Self> {
        if !plan.pbts.is_file() {
            bail!("{} not found (cargo build --release -p pbts-engine)", plan.pbts.display());
        }
        let udp = series.contains(&Series::Udp);
        let http = series.iter().any(|s| *s != Series::Udp);
        let need = |want: bool, bin: &str, how: &str| -> anyhow::Result<Option<PathBuf>> {
            if !want {
                return Ok(None);
            }
            which(bin).map(Some).with_context(|| format!("{bin} not found: {how}"))
        };
        let cargo = "cargo install aquatic_udp aquatic_udp_load_test aquatic_http";
        Ok(Self {
            aquatic_udp: need(udp, "aquatic_udp", cargo)?,
            aquatic_udp_load: need(udp, "aquatic_udp_load_test", cargo)?,
            aquatic_http: need(http, "aquatic_http", cargo)?,
            opentracker: need(http, "opentracker", "apt-get install opentracker")?,
            wrk: need(http, "wrk", "apt-get install wrk")?,
        })
    }
}

/// The `http-floor` subcommand: answers every HTTP request on 127.0.0.1:`port` with one fixed
/// announce response and closes the connection, one connection at a time with blocking calls
/// (accept, read until the head ends, write, close): the least a server can do per connection,
/// so what the kernel's TCP set-up and tear-down cost by themselves.
///
/// # Errors
/// The port cannot be bound.
pub fn http_floor(port: u16) -> anyhow::Result<()> {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let body = b"d8:completei1e10:incompletei0e8:intervali1800e5:peers6:\x7f\0\0\x01\x1a\xe1e";
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    let mut buf = [0u8; 8192];
    loop {
        let Ok((mut stream, _)) = listener.accept() else { continue };
        let mut n = 0;
        while n < buf.len() {
            match stream.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                let _ = stream.write_all(&response);
                break;
            }
        }
    }
}

/// `input` through `bin`'s standard input; its standard output.
fn pipe(bin: &str, args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new(which(bin).with_context(|| format!("{bin} not found"))?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_vec();
    // Written from a thread: the child's output must be read while it is fed.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    if !out.status.success() {
        bail!("{bin} failed");
    }
    Ok(out.stdout)
}

/// The path of `bin` on PATH.
pub(crate) fn which(bin: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {bin}")).output()?;
    if !out.status.success() {
        bail!("not on PATH");
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn required(p: &Option<PathBuf>) -> anyhow::Result<&Path> {
    p.as_deref().context("a tool this series needs was not looked up")
}

struct Bench<'a> {
    plan: &'a Plan,
    tools: &'a Tools,
    dir: &'a Path,
}

impl Bench<'_> {
    /// Starts `tracker`, loads it for `secs` with `series`' load, stops it.
    fn one(
        &self,
        series: Series,
        tracker: Tracker,
        round: usize,
        secs: u64,
    ) -> anyhow::Result<Sample> {
        let (handle, port) = self.started(series, tracker)?;
        let pid = handle.0.id();
        let cpu0 = cpu_seconds(pid)?;
        let (responses, seconds, errors) = self.load(series, port, secs)?;
        let tracker_cpu = cpu_seconds(pid)? - cpu0;
        drop(handle);
        Ok(Sample { series, round, tracker, responses, seconds, tracker_cpu, errors })
    }

    /// `tracker` started on a free port and answering `series`' protocol there.
    fn started(&self, series: Series, tracker: Tracker) -> anyhow::Result<(Killed, u16)> {
        let port = free_port()?;
        let handle = self.start(tracker, port)?;
        match series {
            Series::Udp => wait_for_udp(port)?,
            _ => wait_for_tcp(port)?,
        }
        Ok((handle, port))
    }

    /// `series`' load against `port` for `secs`: (responses, seconds, errors).
    fn load(&self, series: Series, port: u16, secs: u64) -> anyhow::Result<(f64, f64, u64)> {
        match series {
            Series::Udp => self.udp_load(port, secs),
            Series::Http => self.http_load(port, secs, false),
            Series::HttpClose => self.http_load(port, secs, true),
        }
    }

    /// One unmeasured run of `tracker` under `series`' load with `perf record` attached: writes
    /// its flamegraph and returns its (user, kernel) CPU-seconds.
    fn profile(&self, series: Series, tracker: Tracker, secs: u64) -> anyhow::Result<(f64, f64)> {
        let (handle, port) = self.started(series, tracker)?;
        let pid = handle.0.id();
        let data = self.dir.join(format!("perf-{}-{}.data", series.name(), tracker.name()));
        let mut perf = Killed(
            Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-p", &pid.to_string()])
                .arg("-o")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start perf record")?,
        );
        let (user0, sys0) = cpu_split(pid)?;
        self.load(series, port, secs)?;
        let (user1, sys1) = cpu_split(pid)?;
        // perf writes its file when interrupted.
        Command::new("kill").args(["-INT", &perf.0.id().to_string()]).status()?;
        perf.0.wait()?;
        drop(handle);
        let script = Command::new("perf").arg("script").arg("-i").arg(&data).output()?;
        let folded = pipe("inferno-collapse-perf", &[], &script.stdout)?;
        let title = format!("{} under the {} load", tracker.name(), series.name());
        let svg = pipe("inferno-flamegraph", &["--title", &title], &folded)?;
        let name = format!("flame_{}_{}.svg", series.name(), tracker.name());
        std::fs::write(self.plan.out.join(name), svg)?;
        Ok((user1 - user0, sys1 - sys0))
    }

    fn start(&self, tracker: Tracker, port: u16) -> anyhow::Result<Killed> {
        start(tracker, port, self.plan.tracker_cpu, &self.plan.pbts, self.tools, self.dir)
    }

    /// aquatic's UDP load tester: (responses, seconds, errors).
    fn udp_load(&self, port: u16, secs: u64) -> anyhow::Result<(f64, f64, u64)> {
        let bin = required(&self.tools.aquatic_udp_load)?;
        let cfg = self.dir.join("udp-load.toml");
        let mut replace = vec![
            ("server_address", format!("\"127.0.0.1:{port}\"")),
            ("duration", secs.to_string()),
        ];
        if self.plan.udp_mix == "announce" {
            replace.push(("weight_connect", "0".to_owned()));
            replace.push(("weight_announce", "100".to_owned()));
        }
        std::fs::write(&cfg, config_from(bin, &replace)?)?;
        let out = Command::new("taskset")
            .args(["-c", &self.plan.load_cpus])
            .arg(bin)
            .arg("-c")
            .arg(&cfg)
            .stderr(Stdio::inherit())
            .output()
            .context("run aquatic_udp_load_test")?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_udp_load(&text).with_context(|| format!("aquatic_udp_load_test said:\n{text}"))
    }

    /// wrk with the announce script: (responses, seconds, errors).
    fn http_load(&self, port: u16, secs: u64, close: bool) -> anyhow::Result<(f64, f64, u64)> {
        let bin = required(&self.tools.wrk)?;
        let script = self.dir.join(if close { "announce-close.lua" } else { "announce.lua" });
        let out = Command::new("taskset")
            .args(["-c", &self.plan.load_cpus])
            .arg(bin)
            .args(["-t1", &format!("-c{HTTP_CONNECTIONS}"), &format!("-d{secs}s"), "-s"])
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .context("run wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_wrk(&text).with_context(|| format!("wrk said:\n{text}"))
    }
}

/// aquatic_udp_load_test's report: (responses, seconds, 0). It runs a little longer than its
/// configured duration, and averages over the time it ran.
/// Starts `tracker` on 127.0.0.1:`port` (UDP and TCP), pinned to `cpu`, with its files in
/// `dir`; pbts and the ceiling answer once they print their first line.
pub(crate) fn start(
    tracker: Tracker,
    port: u16,
    cpu: usize,
    pbts: &Path,
    tools: &Tools,
    dir: &Path,
) -> anyhow::Result<Killed> {
    let addr = format!("\"127.0.0.1:{port}\"");
    let path = |p: &Path| p.to_str().map(str::to_owned).context("a non-UTF-8 path");
    match tracker {
        Tracker::Pbts | Tracker::Ceiling => {
            let cfg = dir.join(format!("pbts-{port}.toml"));
            let data = dir.join(format!("data-{port}"));
            std::fs::write(
                &cfg,
                format!(
                    "[network]\nlisten = [\"127.0.0.1:{port}\"]\ncores = 1\nfirst_cpu = {cpu}\n\
                     [tracker]\nmode = \"open\"\n[ratio]\nenabled = false\n\
                     [limits]\nmax_peers_per_ip_per_swarm = 0\n\
                     [storage]\ndata_dir = \"{}\"\nswarm_snapshot = false\n",
                    data.display()
                ),
            )?;
            let mut args = vec!["serve".to_owned(), "-c".to_owned(), path(&cfg)?];
            if tracker == Tracker::Ceiling {
                args.push("--udp-ceiling".to_owned());
            }
            let mut h = spawn_pinned(cpu, pbts, &args, Stdio::piped())?;
            let mut line = String::new();
            BufReader::new(h.0.stdout.take().context("stdout")?).read_line(&mut line)?;
            if line.is_empty() {
                bail!("pbts did not start (run it by hand with {} to see why)", cfg.display());
            }
            Ok(h)
        }
        Tracker::AquaticUdp | Tracker::AquaticHttp => {
            let bin = required(if tracker == Tracker::AquaticUdp {
                &tools.aquatic_udp
            } else {
                &tools.aquatic_http
            })?;
            let cfg = dir.join(format!("{}-{port}.toml", tracker.name()));
            std::fs::write(&cfg, config_from(bin, &[("address", addr)])?)?;
            spawn_pinned(cpu, bin, &["-c".to_owned(), path(&cfg)?], Stdio::null())
        }
        Tracker::HttpFloor => {
            let me = std::env::current_exe().context("this binary's path")?;
            let args = ["http-floor".to_owned(), "--port".to_owned(), port.to_string()];
            spawn_pinned(cpu, &me, &args, Stdio::null())
        }
        Tracker::Opentracker => {
            let bin = required(&tools.opentracker)?;
            // It chroots into -d, so the whitelist path is inside it.
            let args = [
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-P",
                &port.to_string(),
                "-d",
                &path(dir)?,
                "-w",
                "/whitelist",
            ]
            .map(str::to_owned);
            spawn_pinned(cpu, bin, &args, Stdio::null())
        }
    }
}

fn parse_udp_load(text: &str) -> anyhow::Result<(f64, f64, u64)> {
    let value = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .and_then(|v| v.trim().trim_end_matches("seconds").trim().parse::<f64>().ok())
        })
    };
    let rps = value("Average responses per second:").context("no average")?;
    let secs = value("Test ran for").context("no 'Test ran for N seconds'")?;
    Ok((rps * secs, secs, 0))
}

/// The script's `done()` line: `pbts-wrk requests=N errors=E duration_us=D`.
fn parse_wrk(text: &str) -> anyhow::Result<(f64, f64, u64)> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("pbts-wrk "))
        .context("no pbts-wrk line (did the script run?)")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("no {name}"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    let (requests, errors, micros) = (field("requests")?, field("errors")?, field("duration_us")?);
    // Responses with a non-2xx status are complete responses too, but not answers.
    Ok(((requests - errors.min(requests)) as f64, micros as f64 / 1e6, errors))
}

/// `n` fixed info-hashes for the HTTP load.
fn http_hashes(seed: u64) -> Vec<[u8; 20]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..HTTP_TORRENTS).map(|_| rng.random()).collect()
}

/// opentracker's whitelist: one hex info-hash per line.
fn whitelist(hashes: &[[u8; 20]]) -> String {
    hashes.iter().map(|h| const_hex::encode(h) + "\n").collect()
}

/// The wrk script: each request announces a random peer (random peer id and port, a quarter of
/// them seeders) into a random torrent of `hashes`, compact, 30 peers wanted.
fn wrk_script(hashes: &[[u8; 20]], close: bool) -> String {
    let mut s = String::from("local hashes = {\n");
    for h in hashes {
        s.push('"');
        for b in h {
            s.push_str(&format!("%{b:02x}"));
        }
        s.push_str("\",\n");
    }
    s.push_str("}\n");
    if close {
        s.push_str("wrk.headers[\"Connection\"] = \"close\"\n");
    }
    s.push_str(
        r#"math.randomseed(7)
request = function()
  local h = hashes[math.random(#hashes)]
  local left = 1000
  if math.random() < 0.25 then left = 0 end
  local path = "/announce?info_hash=" .. h
    .. string.format("&peer_id=-WK0001-%06d%06d", math.random(0, 999999), math.random(0, 999999))
    .. "&port=" .. math.random(1025, 65535)
    .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=30"
  return wrk.format("GET", path)
end
-- `requests` counts complete responses. A read error is a connection the server closed
-- (opentracker closes after every response without saying so); wrk reconnects.
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.write + e.status + e.timeout
  io.write(string.format("pbts-wrk requests=%d errors=%d duration_us=%d\n",
    summary.requests, errors, summary.duration))
end
"#,
    );
    s
}

fn spawn_pinned(cpu: usize, bin: &Path, args: &[String], stdout: Stdio) -> anyhow::Result<Killed> {
    let child = Command::new("taskset")
        .args(["-c", &cpu.to_string()])
        .arg(bin)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    Ok(Killed(child))
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
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
                if !found && line.trim_start().starts_with(&format!("{key} =")) {
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

fn wait_for_tcp(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the tracker did not open TCP port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until a BEP 15 connect request on `port` is answered.
pub(crate) fn wait_for_udp(port: u16) -> anyhow::Result<()> {
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
            bail!("the UDP tracker on port {port} never answered");
        }
    }
}

/// Median, min and max.
pub(crate) fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn write(plan: &Plan, series: &[Series], samples: &[Sample]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&plan.out)?;
    let mut csv = String::from(
        "series,round,tracker,seconds,responses,responses_per_s,tracker_cpu_s,responses_per_cpu_s,errors\n",
    );
    for s in samples {
        csv.push_str(&format!(
            "{},{},{},{:.2},{:.0},{:.0},{:.2},{:.0},{}\n",
            s.series.name(),
            s.round,
            s.tracker.name(),
            s.seconds,
            s.responses,
            s.responses / s.seconds,
            s.tracker_cpu,
            s.per_cpu_sec(),
            s.errors
        ));
    }
    std::fs::write(plan.out.join("aquatic_comparison.csv"), &csv)?;
    let rounds = plan.runs.max(1);
    let mut summary = format!(
        "{rounds} rounds, {} s of load per tracker; tracker on CPU {}, load on CPU {}; UDP load: \
         aquatic_udp_load_test ({}); HTTP load: wrk, {HTTP_CONNECTIONS} connections, \
         {HTTP_TORRENTS} torrents. Ratios of responses per tracker CPU-second: median of \
         per-round ratios (min to max).\n",
        plan.duration,
        plan.tracker_cpu,
        plan.load_cpus,
        if plan.udp_mix == "announce" {
            "announce-heavy: 1M torrents, no connect weight"
        } else {
            "aquatic's mixed default"
        }
    );
    let mut table = Table::new(
        "aquatic_comparison",
        "Announce throughput against other trackers",
        &format!(
            "Responses per tracker CPU-second, one core each, medians of {rounds} rounds; ratios \
             are medians of per-round ratios (min-max)"
        ),
        &["series", "tracker", "responses/s", "per CPU-s", "vs", "ratio", "min", "max"],
    );
    for &s in series {
        let of = |t: Tracker| -> Vec<&Sample> {
            samples.iter().filter(|x| x.series == s && x.tracker == t).collect()
        };
        summary.push_str(&format!("{}:\n", s.name()));
        for &t in s.contenders() {
            let v = of(t);
            let (rate, _, _) = spread(v.iter().map(|x| x.responses / x.seconds).collect());
            let (per_cpu, lo, hi) = spread(v.iter().map(|x| x.per_cpu_sec()).collect());
            let errors: u64 = v.iter().map(|x| x.errors).sum();
            summary.push_str(&format!(
                "  {:<12} {rate:>9.0} responses/s, {per_cpu:>9.0} per CPU-s (median; {lo:.0} to \
                 {hi:.0}){}\n",
                t.name(),
                if errors > 0 { format!(", {errors} failed requests") } else { String::new() }
            ));
        }
        for &(a, b) in s.comparisons() {
            let ratios: Vec<f64> = (0..rounds)
                .filter_map(|r| {
                    let pick = |t: Tracker| {
                        samples.iter().find(|x| x.series == s && x.tracker == t && x.round == r)
                    };
                    Some(pick(a)?.per_cpu_sec() / pick(b)?.per_cpu_sec())
                })
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let (med, lo, hi) = spread(ratios);
            summary.push_str(&format!(
                "  {} / {}: {med:.2}x ({lo:.2} to {hi:.2})\n",
                a.name(),
                b.name()
            ));
            let (rate, _, _) = spread(of(a).iter().map(|x| x.responses / x.seconds).collect());
            let (per_cpu, _, _) = spread(of(a).iter().map(|x| x.per_cpu_sec()).collect());
            table.row(vec![
                Cell::from(s.name()),
                Cell::from(a.name()),
                Cell::num(rate, 0),
                Cell::num(per_cpu, 0),
                Cell::from(b.name()),
                Cell::num(med, 2),
                Cell::num(lo, 2),
                Cell::num(hi, 2),
            ]);
        }
    }
    std::fs::write(plan.out.join("aquatic_summary.txt"), &summary)?;
    std::fs::write(plan.out.join("aquatic_comparison.tex"), table.latex())?;
    crate::env::write(
        &plan.out.join("aquatic_env.json"),
        serde_json::json!({
            "series": "vs-aquatic",
            "rounds": rounds,
            "duration_secs": plan.duration,
            "tracker_cpu": plan.tracker_cpu,
            "load_cpus": plan.load_cpus,
            "udp_mix": plan.udp_mix,
            "http_connections": HTTP_CONNECTIONS,
            "http_torrents": HTTP_TORRENTS,
            "aquatic": "aquatic_udp / aquatic_http / aquatic_udp_load_test 0.9.0 (crates.io)",
            "opentracker": "Debian bookworm 0.0~git20210823.110868e-3 (whitelist build)",
        }),
    )?;
    print!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_load_report_parses() {
        let text = "# aquatic load test report\n\nTest ran for 5 seconds \nAverage responses per second: 131145.65\n";
        let (responses, secs, _) = parse_udp_load(text).unwrap();
        assert_eq!(secs, 5.0);
        assert!((responses - 655_728.25).abs() < 1e-6);
        assert!(parse_udp_load("Average responses per second: 1\n").is_err());
    }

    #[test]
    fn wrk_summary_line_parses() {
        let text = "Running 1s test\npbts-wrk requests=1200 errors=3 duration_us=1000500\n";
        assert_eq!(parse_wrk(text).unwrap(), (1197.0, 1.0005, 3));
        assert!(parse_wrk("Running\n").is_err());
    }

    #[test]
    fn script_and_whitelist_name_the_same_torrents() {
        let hashes = http_hashes(7);
        assert_eq!(hashes.len(), HTTP_TORRENTS);
        let wl = whitelist(&hashes[..2]);
        assert_eq!(wl.lines().count(), 2);
        assert_eq!(wl.lines().next().unwrap(), const_hex::encode(hashes[0]));
        let script = wrk_script(&hashes[..1], true);
        let pct: String = hashes[0].iter().map(|b| format!("%{b:02x}")).collect();
        assert!(script.contains(&format!("\"{pct}\"")));
        assert!(script.contains("wrk.headers[\"Connection\"] = \"close\""));
        assert!(!wrk_script(&hashes[..1], false).contains("Connection"));
    }
}
