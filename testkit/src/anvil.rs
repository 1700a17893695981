//! A local development chain: `anvil` (npm `@foundry-rs/anvil`, installed under
//! `chain/node_modules` by the test script) on a free 127.0.0.1 port, for tests and the gas
//! table. Killed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbts_chain::{ChainError, SigningKey};

/// anvil's well-known development keys (accounts 0, 1 and 2 of its default mnemonic), funded
/// with 10 000 ETH each on every fresh anvil. Never use them anywhere else.
pub const DEV_KEYS: [&str; 3] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];

/// The signer of development account `i` (0..3).
///
/// # Panics
/// For `i >= 3`.
pub fn dev_key(i: usize) -> SigningKey {
    SigningKey::from_hex(DEV_KEYS[i]).expect("anvil's development keys are valid")
}

/// Where the anvil binary is: `$PBTS_ANVIL`, else the npm package's platform binary under
/// `chain/node_modules`, else `anvil` on `PATH`.
pub fn anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PBTS_ANVIL") {
        return PathBuf::from(p);
    }
    let npm = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if npm.exists() { npm } else { PathBuf::from("anvil") }
}

/// The repository's `chain/` directory (its npm lock file pins anvil).
pub fn chain_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../chain");
    dir.canonicalize().unwrap_or(dir)
}

/// Makes sure an anvil binary exists: `$PBTS_ANVIL`, `chain/node_modules`, or `anvil` on
/// `PATH`; otherwise installs it from `chain/`'s lock file with `npm ci` (as the test script
/// does), saying so on standard error.
///
/// # Errors
/// Neither anvil nor npm is there, or `npm ci` failed: one line saying what to do.
pub fn ensure_installed() -> Result<PathBuf, ChainError> {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let path = anvil_path();
    if runs(&path) {
        return Ok(path);
    }
    if std::env::var_os("PBTS_ANVIL").is_some() {
        return Err(ChainError::Config(format!(
            "PBTS_ANVIL is {}, which does not run",
            path.display()
        )));
    }
    let chain = chain_dir();
    eprintln!("anvil not found: installing it from {}/package-lock.json (npm ci)", chain.display());
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&chain)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| {
            ChainError::Config(format!(
                "anvil is not installed and npm cannot run ({e}): install Node.js and npm, or set \
                 PBTS_ANVIL to an anvil binary"
            ))
        })?;
    if !npm.success() {
        return Err(ChainError::Config(format!(
            "npm ci in {} failed ({npm}): run it by hand to see why, or set PBTS_ANVIL",
            chain.display()
        )));
    }
    let path = anvil_path();
    if runs(&path) {
        Ok(path)
    } else {
        Err(ChainError::Config(format!(
            "npm ci installed no runnable anvil at {} (is this linux-amd64?): set PBTS_ANVIL",
            path.display()
        )))
    }
}

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    addr: SocketAddr,
    state: Option<PathBuf>,
}

impl Anvil {
    /// Starts anvil on a free loopback port, with instant mining.
    ///
    /// # Errors
    /// The binary is missing or did not start answering within 10 s.
    pub fn start() -> Result<Self, ChainError> {
        Self::start_on(free_port()?, None)
    }

    /// Starts anvil on `port`, loading and saving its chain in `state` (a file) when given:
    /// stopping it with [`Anvil::stop`] and starting it again on the same file and port resumes
    /// the same chain.
    ///
    /// # Errors
    /// As [`Anvil::start`].
    pub fn start_on(port: u16, state: Option<&Path>) -> Result<Self, ChainError> {
        let mut cmd = Command::new(anvil_path());
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"]);
        if let Some(s) = state {
            cmd.arg("--state").arg(s);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(
                |e| {
                    ChainError::Config(format!(
                        "start {} (npm install in chain/, or set PBTS_ANVIL): {e}",
                        anvil_path().display()
                    ))
                },
            )?;
        let mut anvil = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            state: state.map(Path::to_owned),
        };
        // Ready means answering JSON-RPC, not merely accepting connections: a listening socket
        // can precede a working RPC server, and on a loaded machine that gap made the first
        // request of a test fail.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers_chain_id(anvil.addr) {
            if Instant::now() > deadline || anvil.child.try_wait().ok().flatten().is_some() {
                anvil.kill();
                return Err(ChainError::Rpc(format!(
                    "anvil did not answer eth_chainId on {} within 30 s",
                    anvil.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(anvil)
    }

    /// Its JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The state file, if any.
    pub fn state(&self) -> Option<&Path> {
        self.state.as_deref()
    }

    /// Stops it gracefully (SIGTERM: anvil writes its state file) and waits for it.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `addr` answers `eth_chainId` with anvil's development chain id (31337, `0x7a69`).
fn answers_chain_id(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.take(64 << 10).read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200") && resp.windows(8).any(|w| w == b"\"0x7a69\"")
}

/// A loopback port that was free a moment ago.
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> Result<u16, ChainError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| ChainError::Rpc(format!("bind: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| ChainError::Rpc(format!("bind: {e}")))
}
