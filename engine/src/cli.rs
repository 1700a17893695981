//! The tiny command line: `pbts [serve] [-c FILE]`, `pbts keygen [-o FILE]`,
//! `pbts --print-config`, `pbts --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;

const USAGE: &str = "\
pbts — private BitTorrent tracker (UDP + HTTP, thread-per-core)

USAGE:
    pbts [serve] [-c FILE]     run the tracker (defaults when no file is given)
    pbts keygen [-o FILE]      make a BLS12-381 key pair on this machine for POST /register:
                               prints {private_key, public_key, proof_of_possession} as JSON,
                               or writes it to FILE (mode 0600, never overwritten) and prints
                               only the public part
    pbts chain deploy-factory [-c FILE]
                               deploy a ReputationFactory through chain.rpc_url (RPC) with the
                               tracker's key (PK0); with -c, write its address into FILE as
                               chain.factory_address (comments kept)
    pbts --print-config        print the default configuration as commented TOML
    pbts --help                this text

Environment overrides: PBTS_MODE, PBTS_CORES, PBTS_DATA_DIR, PBTS_LISTEN, PORT, MIN_RATIO,
MAX_PEERS, PBTS_PUBLIC_URL, RPC, FACTORY, REPUTATION_ADDRESS, TEE_MODE; the chain key is read from PK0
(chain.key_env) or chain.key_file; RUST_LOG sets the log filter (default info).
";

enum Command {
    Serve(Option<PathBuf>),
    Keygen(Option<PathBuf>),
    DeployFactory(Option<PathBuf>),
    PrintConfig,
    Help,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut args = args.peekable();
    if args.peek().map(String::as_str) == Some("keygen") {
        args.next();
        return match (args.next().as_deref(), args.next()) {
            (None, _) => Ok(Command::Keygen(None)),
            (Some("-o" | "--out"), Some(file)) if args.next().is_none() => {
                Ok(Command::Keygen(Some(PathBuf::from(file))))
            }
            _ => Err("usage: pbts keygen [-o FILE]".to_owned()),
        };
    }
    if args.peek().map(String::as_str) == Some("chain") {
        args.next();
        if args.next().as_deref() != Some("deploy-factory") {
            return Err("usage: pbts chain deploy-factory [-c FILE]".to_owned());
        }
        return match (args.next().as_deref(), args.next()) {
            (None, _) => Ok(Command::DeployFactory(None)),
            (Some("-c" | "--config"), Some(file)) if args.next().is_none() => {
                Ok(Command::DeployFactory(Some(PathBuf::from(file))))
            }
            _ => Err("usage: pbts chain deploy-factory [-c FILE]".to_owned()),
        };
    }
    if args.peek().map(String::as_str) == Some("serve") {
        args.next();
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                config = Some(PathBuf::from(args.next().ok_or("-c needs a file")?));
            }
            "-p" | "--print-config" => return Ok(Command::PrintConfig),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Serve(config))
}

/// Entry point of the `pbts` binary.
pub fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pbts: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::PrintConfig => {
            print!("{}", Config::default_toml());
            ExitCode::SUCCESS
        }
        Command::DeployFactory(path) => match deploy_factory(path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pbts chain deploy-factory: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen(out) => match keygen(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pbts keygen: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(path) => match serve(path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pbts: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `pbts keygen`: a key made here never crosses a network (the original's `/keygen` made keys
/// on the server and sent the private key back).
fn keygen(out: Option<PathBuf>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let b64 = crate::common::b64;
    let sk = pbts_verifier::keys::SecretKey::random();
    let public = serde_json::json!({
        "public_key": b64(&sk.public_key().to_bytes().0),
        "proof_of_possession": b64(&sk.prove_possession().0),
    });
    let mut full = public.clone();
    full["private_key"] = zeroize::Zeroizing::new(b64(&sk.to_bytes()[..])).as_str().into();
    let text = zeroize::Zeroizing::new(format!("{full:#}\n"));
    match out {
        None => print!("{}", text.as_str()),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("create {}", path.display()))?;
            f.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))?;
            f.sync_all().with_context(|| format!("sync {}", path.display()))?;
            println!("{public:#}");
        }
    }
    Ok(())
}

/// `pbts chain deploy-factory`: replaces the original's `deploy_factory.sh` (forge create and a
/// `.env` rewrite) with one command that needs neither forge nor jq.
fn deploy_factory(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(path.as_deref())?;
    let chain = &config.chain;
    anyhow::ensure!(chain.is_enabled(), "no RPC endpoint: set chain.rpc_url or RPC");
    let key = chain.load_key(|name| std::env::var(name).ok())?;
    let handle = pbts_chain::ChainHandle::start(chain.clone(), key)?;
    let deployed = pbts_chain::worker::wait(&handle.deploy_factory())?;
    let address = deployed.address.to_string();
    if let Some(path) = path {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut doc: toml_edit::DocumentMut =
            text.parse().with_context(|| format!("parse {}", path.display()))?;
        if !doc.contains_table("chain") {
            doc["chain"] = toml_edit::table();
        }
        doc["chain"]["factory_address"] = toml_edit::value(address.as_str());
        // Write beside and rename: a crash never leaves a half-written config.
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, doc.to_string())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))?;
        eprintln!("wrote chain.factory_address to {}", path.display());
    }
    println!("{address}");
    eprintln!(
        "ReputationFactory deployed at {address} (tx {}, {} gas)",
        deployed.tx.tx_hash, deployed.tx.gas_used
    );
    Ok(())
}

/// How long stopping may take after SIGTERM before the process exits anyway (naming the workers
/// still running). Systemd's default `TimeoutStopSec` is 90 s and Docker's stop timeout 10 s;
/// a clean stop takes well under a second.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald, Docker and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(path.as_deref())?;
    let mode = config.tracker.mode;
    let data_dir = config.storage.data_dir.clone();
    let server = crate::start(config)?;
    let handle = server.shutdown_handle();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!("signal {sig}: shutting down");
                handle.shutdown();
            }
        })
        .context("spawn signal thread")?;
    // One line per address on stdout: scripts and tests read the bound ports from here.
    for addr in server.addrs() {
        println!("pbts listening on udp://{addr} and http://{addr}");
    }
    tracing::info!(?mode, data_dir = %data_dir.display(), "pbts started");
    server.supervise(SHUTDOWN_GRACE)?;
    tracing::info!("pbts stopped");
    Ok(())
}
