//! The command line (clap): `pbts [serve]`, `pbts health`, `pbts keygen`,
//! `pbts chain deploy-factory`, with `-c FILE` for the configuration anywhere and
//! `--print-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

const ENVIRONMENT: &str = "\
PBTS_CONFIG names the configuration file when -c does not.
Environment overrides: PBTS_MODE, PBTS_CORES, PBTS_DATA_DIR, PBTS_LISTEN, PORT, MIN_RATIO,
MAX_PEERS, PBTS_PUBLIC_URL, RPC, FACTORY, REPUTATION_ADDRESS, TEE_MODE; the chain key is read
from PK0 (chain.key_env) or chain.key_file; RUST_LOG sets the log filter (default info).";

/// pbts: a private BitTorrent tracker (UDP and HTTP, thread-per-core io_uring) with
/// cryptographic receipts and on-chain reputation.
#[derive(Debug, Parser)]
#[command(name = "pbts", version, after_help = ENVIRONMENT)]
struct Cli {
    /// Configuration file (TOML); what it leaves out takes the defaults (`--print-config`).
    #[arg(short, long, value_name = "FILE", global = true, env = "PBTS_CONFIG")]
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
    /// Check a running tracker (a container's HEALTHCHECK, with no curl): `GET /health` must
    /// answer 200 with status "healthy" and a UDP connect must be answered; exits 1 with the
    /// reason otherwise.
    Health {
        /// Where to check (ip:port); default: the first `network.listen` address, with an
        /// unspecified ip (0.0.0.0, ::) taken as loopback.
        #[arg(value_name = "ADDR")]
        addr: Option<std::net::SocketAddr>,
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
    /// with -c, write its address into FILE as chain.factory_address (comments kept; FILE is
    /// made from the defaults if it does not exist).
    DeployFactory {
        /// Deploy only if chain.factory_address (or FACTORY) names no contract on the chain:
        /// running it again (a compose one-shot on every `up`) keeps the factory it made.
        #[arg(long)]
        keep_existing: bool,
    },
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
        Command::Health { addr } => ("pbts health", health(cli.config, addr)),
        Command::Keygen { out } => ("pbts keygen", keygen(out)),
        Command::Chain(ChainCommand::DeployFactory { keep_existing }) => {
            ("pbts chain deploy-factory", deploy_factory(cli.config, keep_existing))
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
fn deploy_factory(path: Option<PathBuf>, keep_existing: bool) -> anyhow::Result<()> {
    // A named file that does not exist yet is made from the defaults (a fresh volume).
    let exists = path.as_deref().is_some_and(std::path::Path::exists);
    let config = Config::load(path.as_deref().filter(|_| exists))?;
    let chain = &config.chain;
    anyhow::ensure!(chain.is_enabled(), "no RPC endpoint: set chain.rpc_url or RPC");
    let key = chain.load_key(|name| std::env::var(name).ok())?;
    let handle = pbts_chain::ChainHandle::start(chain.clone(), key)?;
    if keep_existing && !chain.factory_address.is_empty() {
        let configured = pbts_chain::config::parse_address(&chain.factory_address)?;
        let code = pbts_chain::worker::wait(&handle.code_at(configured))?;
        if !code.is_empty() {
            // Named by FACTORY with no file yet: the file the server will read must say it too.
            if let Some(path) = path.filter(|_| !exists) {
                write_factory_address(&path, false, &configured.to_string())?;
            }
            println!("{configured}");
            eprintln!("ReputationFactory at {configured} is deployed: kept");
            return Ok(());
        }
        eprintln!("no contract at chain.factory_address {configured}: deploying one");
    }
    let deployed = pbts_chain::worker::wait(&handle.deploy_factory())?;
    let address = deployed.address.to_string();
    if let Some(path) = path {
        write_factory_address(&path, exists, &address)?;
    }
    println!("{address}");
    eprintln!(
        "ReputationFactory deployed at {address} (tx {}, {} gas)",
        deployed.tx.tx_hash, deployed.tx.gas_used
    );
    Ok(())
}

/// Sets `chain.factory_address` in the TOML file at `path` (comments and layout kept, an inline
/// `chain = { ... }` table too), or writes the default configuration with it if the file does
/// not exist.
fn write_factory_address(
    path: &std::path::Path,
    exists: bool,
    address: &str,
) -> anyhow::Result<()> {
    let text = if exists {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    } else {
        Config::default_toml()
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse().with_context(|| format!("parse {}", path.display()))?;
    match doc.get_mut("chain").and_then(toml_edit::Item::as_table_like_mut) {
        Some(chain) => {
            // The old value's spacing and trailing comment stay with the new one.
            let mut value = toml_edit::Value::from(address);
            if let Some(old) = chain.get("factory_address").and_then(toml_edit::Item::as_value) {
                *value.decor_mut() = old.decor().clone();
            }
            chain.insert("factory_address", toml_edit::Item::Value(value));
        }
        None => {
            let mut chain = toml_edit::Table::new();
            chain.insert("factory_address", toml_edit::value(address));
            doc.insert("chain", toml_edit::Item::Table(chain));
        }
    }
    // Write beside and rename: a crash never leaves a half-written config.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    eprintln!("wrote chain.factory_address to {}", path.display());
    Ok(())
}

/// `pbts health`: a client of the tracker's own two protocols, so a container image needs no
/// curl and "healthy" means both answer (HTTP alone could hide a UDP side that serves nothing).
fn health(path: Option<PathBuf>, addr: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    let addr = match addr {
        Some(addr) => addr,
        None => {
            let config = Config::load(path.as_deref())?;
            let mut addr =
                *config.network.listen.first().context("network.listen names no address")?;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                });
            }
            addr
        }
    };

    let url = format!("http://{addr}/health");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connect to {url}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("send to {url}"))?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response).with_context(|| format!("read {url}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) =
        text.split_once("\r\n\r\n").with_context(|| format!("{url}: incomplete response"))?;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(status.starts_with("HTTP/1.1 200 "), "{url} answered {status:?}");
    let said: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("{url} answered {body:?}"))?;
    anyhow::ensure!(said["status"] == "healthy", "{url} says status {}", said["status"]);

    let udp = std::net::UdpSocket::bind(match addr {
        std::net::SocketAddr::V4(_) => (IpAddr::from(Ipv4Addr::UNSPECIFIED), 0),
        std::net::SocketAddr::V6(_) => (IpAddr::from(Ipv6Addr::UNSPECIFIED), 0),
    })
    .context("bind a UDP socket")?;
    udp.connect(addr).with_context(|| format!("udp://{addr}"))?;
    udp.set_read_timeout(Some(TIMEOUT / 3))?;
    let family = match addr {
        std::net::SocketAddr::V4(_) => pbts_proto::udp::AddressFamily::V4,
        std::net::SocketAddr::V6(_) => pbts_proto::udp::AddressFamily::V6,
    };
    let tx = pbts_proto::udp::TransactionId(std::process::id() ^ 0x7062_7473);
    let mut request = Vec::new();
    pbts_proto::udp::write_connect_request(&mut request, tx);
    let mut buf = [0u8; 2048];
    // Three tries: a datagram may be lost; an answer to another transaction is not ours.
    let answered = (0..3).any(|_| {
        udp.send(&request).is_ok()
            && udp.recv(&mut buf).is_ok_and(|n| {
                matches!(
                    pbts_proto::udp::parse_response(&buf[..n], family),
                    Ok(pbts_proto::udp::Response::Connect { transaction_id, .. })
                        if transaction_id == tx
                )
            })
    });
    anyhow::ensure!(answered, "udp://{addr} did not answer a connect");
    println!("healthy: {url} and udp://{addr} answer");
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
    fn the_factory_address_is_written_into_any_chain_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pbts.toml");
        let a = "0x00000000000000000000000000000000000000aa";
        for (before, after) in [
            (
                "# mine\nchain = { rpc_url = \"http://x\" } # inline\n",
                // toml_edit keeps the old value's trailing space before the new comma.
                "# mine\nchain = { rpc_url = \"http://x\" , factory_address = \"0x00000000000000000000000000000000000000aa\" } # inline\n",
            ),
            (
                "[chain]\nrpc_url = \"http://x\"\nfactory_address = \"0x1\" # old\n",
                "[chain]\nrpc_url = \"http://x\"\nfactory_address = \"0x00000000000000000000000000000000000000aa\" # old\n",
            ),
            (
                "[tracker]\nmode = \"open\"\n",
                "[tracker]\nmode = \"open\"\n\n[chain]\nfactory_address = \"0x00000000000000000000000000000000000000aa\"\n",
            ),
        ] {
            std::fs::write(&path, before).unwrap();
            write_factory_address(&path, true, a).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
        }
        // No file yet: the defaults, with the address, and still a valid configuration.
        std::fs::remove_file(&path).unwrap();
        write_factory_address(&path, false, a).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap().chain.factory_address, a);
        assert!(!dir.path().join("pbts.toml.tmp").exists());
    }

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
        assert!(matches!(
            c.command,
            Some(Command::Chain(ChainCommand::DeployFactory { keep_existing: false }))
        ));
        assert_eq!(c.config, Some(PathBuf::from("c.toml")));
        let c = parse(&["chain", "deploy-factory", "--keep-existing"]).unwrap();
        assert!(matches!(
            c.command,
            Some(Command::Chain(ChainCommand::DeployFactory { keep_existing: true }))
        ));
        let c = parse(&["health", "127.0.0.1:9"]).unwrap();
        assert!(matches!(c.command, Some(Command::Health { addr: Some(a) }) if a.port() == 9));
        assert!(matches!(
            parse(&["health"]).unwrap().command,
            Some(Command::Health { addr: None })
        ));
        assert!(parse(&["--print-config"]).unwrap().print_config);
        let e = parse(&["--bogus"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
        assert!(parse(&["chain"]).is_err());
        // clap's own consistency checks (conflicting names, missing help).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
