//! The command line (clap): `pbts [serve]`, `pbts keygen`, `pbts chain deploy-factory`, with
//! `-c FILE` for the configuration anywhere and `--print-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

const ENVIRONMENT: &str = "\
Environment overrides: PBTS_MODE, PBTS_CORES, PBTS_DATA_DIR, PBTS_LISTEN, PORT, MIN_RATIO,
MAX_PEERS, PBTS_PUBLIC_URL, RPC, FACTORY, REPUTATION_ADDRESS, TEE_MODE; the chain key is read
from PK0 (chain.key_env) or chain.key_file; RUST_LOG sets the log filter (default info).";

/// pbts: a private BitTorrent tracker (UDP and HTTP, thread-per-core io_uring) with
/// cryptographic receipts and on-chain reputation.
#[derive(Debug, Parser)]
#[command(name = "pbts", version, after_help = ENVIRONMENT)]
struct Cli {
    /// Configuration file (TOML); what it leaves out takes the defaults (`--print-config`).
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print the default configuration as commented TOML and exit.
    #[arg(short, long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the tracker (the default command).
    Serve {
        /// Benchmarks only: answer UDP with no swarm state (connection ids checked, every
        /// announce answered with no peers): the ceiling `pbts-experiments vs-aquatic`
        /// measures the tracker against.
        #[arg(long, hide = true)]
        udp_ceiling: bool,
    },
    /// Make a BLS12-381 key pair on this machine for POST /register: prints private_key,
    /// public_key and proof_of_possession as JSON.
    Keygen {
        /// Write the key pair to FILE instead (mode 0600, never overwritten) and print only its
        /// public part.
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// On-chain reputation.
    #[command(subcommand)]
    Chain(ChainCommand),
}

#[derive(Debug, Subcommand)]
enum ChainCommand {
    /// Deploy a ReputationFactory through chain.rpc_url (RPC) with the tracker's key (PK0);
    /// with -c, write its address into FILE as chain.factory_address (comments kept).
    DeployFactory,
}

/// Entry point of the `pbts` binary.
pub fn main() -> ExitCode {
    // Usage errors exit 2 with clap's message; --help and --version exit 0.
    let cli = Cli::parse();
    if cli.print_config {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let (name, result) = match cli.command.unwrap_or(Command::Serve { udp_ceiling: false }) {
        Command::Serve { udp_ceiling } => ("pbts", serve(cli.config, udp_ceiling)),
        Command::Keygen { out } => ("pbts keygen", keygen(out)),
        Command::Chain(ChainCommand::DeployFactory) => {
            ("pbts chain deploy-factory", deploy_factory(cli.config))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pbts keygen`: makes the key pair on the client, so the private key never crosses a network
/// (`POST /keygen` sends it from the server).
fn keygen(out: Option<PathBuf>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let b64 = crate::encoding::b64;
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

/// `pbts chain deploy-factory`: replaces PBTS's `deploy_factory.sh` (forge create and a `.env`
/// rewrite) with one command that needs neither forge nor jq.
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

fn serve(path: Option<PathBuf>, udp_ceiling: bool) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald, Docker and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = Config::load(path.as_deref())?;
    config.network.udp_ceiling = udp_ceiling;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_documented() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("pbts").chain(args.iter().copied()))
        };
        let c = parse(&[]).unwrap();
        assert!(c.command.is_none() && c.config.is_none() && !c.print_config);
        let c = parse(&["-c", "a.toml"]).unwrap();
        assert_eq!(c.config, Some(PathBuf::from("a.toml")));
        let c = parse(&["serve", "--config", "b.toml"]).unwrap();
        assert!(matches!(c.command, Some(Command::Serve { udp_ceiling: false })));
        assert_eq!(c.config, Some(PathBuf::from("b.toml")));
        let c = parse(&["keygen", "-o", "k.json"]).unwrap();
        assert!(
            matches!(c.command, Some(Command::Keygen { out: Some(ref p) }) if p.as_os_str() == "k.json")
        );
        let c = parse(&["chain", "deploy-factory", "-c", "c.toml"]).unwrap();
        assert!(matches!(c.command, Some(Command::Chain(ChainCommand::DeployFactory))));
        assert_eq!(c.config, Some(PathBuf::from("c.toml")));
        assert!(parse(&["--print-config"]).unwrap().print_config);
        let e = parse(&["--bogus"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
        assert!(parse(&["chain"]).is_err());
        // clap's own consistency checks (conflicting names, missing help).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
