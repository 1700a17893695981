//! The Dockerfile, compose.yaml and the seccomp profile, run as operators run them: a Docker
//! daemon of the test's own (its socket, state and bridge-less networking in a temporary
//! directory), a `debian:bookworm-slim` base image made with debootstrap (this machine has no
//! image registry), the images built from the binaries the test build made, and the compose
//! project driven from the host through its published ports.
//!
//! Where `dockerd` cannot start (not installed, or a sandbox without the privileges), the test
//! says so and skips; every other failure fails it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Udp, announce_query, http_request_with};

/// The Docker client that matches Debian's daemon (another one earlier on PATH may be newer
/// and need the buildx plugin for `docker build`).
fn docker_client() -> &'static str {
    if Path::new("/usr/bin/docker").exists() { "/usr/bin/docker" } else { "docker" }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `cmd` to completion with its output captured, killing it after `limit`: a stalled
/// mirror or daemon fails the test instead of hanging it.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    // A group of its own, so a timeout ends debootstrap's or compose's children too.
    let mut child = std::os::unix::process::CommandExt::process_group(cmd, 0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Drained on threads of their own: a full pipe would stall the command.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// How long one docker, compose or debootstrap command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// A `dockerd` of this test's own; stopped (and its state removed) on drop.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon and waits until it answers; `Err` is why it cannot run here.
    fn start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", dir.path().join("docker.sock").display()))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            // No default bridge, no iptables rules and containerd namespaces of its own:
            // nothing shared with a daemon the machine may run already (a system containerd is
            // used if one runs). Compose makes its own network; published ports go through
            // docker-proxy.
            .args(["--storage-driver", "overlay2", "--iptables=false", "--bridge", "none"])
            .args(["--containerd-namespace", "pbts-test"])
            .args(["--containerd-plugins-namespace", "pbts-test-plugins"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "dockerd cannot be run ({e}): Debian's docker.io (scripts/test.sh installs it)"
                )
            })?;
        let mut daemon = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if output_within(daemon.docker().arg("version"), Duration::from_secs(10))
                .status
                .success()
            {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("dockerd exited ({status}): {}", daemon.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd did not answer in 60 s: {}", daemon.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn docker(&self) -> Command {
        let mut cmd = Command::new(docker_client());
        cmd.env("DOCKER_HOST", format!("unix://{}", self.dir.path().join("docker.sock").display()))
            .env("DOCKER_BUILDKIT", "1")
            .current_dir(repo_root());
        cmd
    }

    /// Runs a docker command that must succeed; its output.
    fn run(&self, args: &[&str]) -> String {
        let out = output_within(self.docker().args(args), COMMAND_LIMIT);
        assert!(out.status.success(), "docker {}: {}", args.join(" "), text(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `debian:bookworm-slim`, made as the registry's is (debootstrap's minbase without docs, man
/// pages, locales and package lists) and kept as a tarball under the target dir for the next
/// run.
fn import_base_image(daemon: &Daemon) {
    if output_within(
        daemon.docker().args(["image", "inspect", "debian:bookworm-slim"]),
        COMMAND_LIMIT,
    )
    .status
    .success()
    {
        return;
    }
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-slim.tar");
    if !cache.exists() {
        let root = tempfile::tempdir().unwrap();
        let rootfs = root.path().join("rootfs");
        let out = output_within(
            Command::new("debootstrap")
                .args(["--variant=minbase", "bookworm"])
                .arg(&rootfs)
                .arg("http://deb.debian.org/debian"),
            COMMAND_LIMIT,
        );
        assert!(out.status.success(), "debootstrap: {}", text(&out));
        for dir in [
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "var/lib/apt/lists",
            "var/cache/apt",
        ] {
            let path = rootfs.join(dir);
            std::fs::remove_dir_all(&path).unwrap();
            std::fs::create_dir_all(&path).unwrap();
        }
        let partial = cache.with_extension("tar.partial");
        let out = output_within(
            Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&partial).arg("."),
            COMMAND_LIMIT,
        );
        assert!(out.status.success(), "tar: {}", text(&out));
        std::fs::rename(&partial, &cache).unwrap();
    }
    let out = output_within(
        daemon.docker().arg("import").arg(&cache).arg("debian:bookworm-slim"),
        COMMAND_LIMIT,
    );
    assert!(out.status.success(), "docker import: {}", text(&out));
}

/// A limit's hard value from /proc/self/limits, as Docker's ulimits take it (-1: unlimited).
fn hard_limit(name: &str) -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
    let hard = line[name.len()..].split_whitespace().nth(1).unwrap();
    if hard == "unlimited" { "-1".to_owned() } else { hard.to_owned() }
}

fn free_port() -> u16 {
    // Both protocols on one port: the tracker is published as tcp and udp together.
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `docker compose` for one project, with the settings compose.yaml documents.
struct Project<'a> {
    daemon: &'a Daemon,
    name: String,
    env: Vec<(&'static str, String)>,
}

impl Project<'_> {
    fn compose(&self, args: &[&str]) -> Output {
        let mut cmd = self.daemon.docker();
        cmd.args(["compose", "--ansi", "never", "-p", &self.name]).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        output_within(&mut cmd, COMMAND_LIMIT)
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(out.status.success(), "docker compose {}: {}", args.join(" "), text(&out));
        text(&out)
    }

    fn container(&self, service: &str) -> String {
        self.run(&["ps", "-a", "-q", service]).trim().to_owned()
    }

    /// The service's output (stdout and stderr), through `docker logs`: compose's own command
    /// adds terminal escapes.
    fn logs(&self, service: &str) -> String {
        let out = output_within(
            self.daemon.docker().args(["logs", &self.container(service)]),
            COMMAND_LIMIT,
        );
        assert!(out.status.success(), "docker logs {service}: {}", text(&out));
        text(&out)
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--timeout", "20"]);
    }
}

const ADMIN_TOKEN: &str = "container-test-token";

#[test]
fn the_images_and_the_compose_project_serve_as_documented() {
    let started = Instant::now();
    let daemon = match Daemon::start() {
        Ok(daemon) => daemon,
        Err(why) => {
            common::skipped("containers (it needs a Docker daemon)", &why);
            return;
        }
    };
    eprintln!("[{:?}] dockerd answers", started.elapsed());
    import_base_image(&daemon);
    eprintln!("[{:?}] base image", started.elapsed());

    // The images, from the binaries this test build made (BINARIES=prebuilt). RUN steps use the
    // host's network: this daemon has no bridge to give them one.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_pbts"), ctx.path().join("pbts")).unwrap();
    let anvil = pbts_testkit::anvil::ensure_installed().unwrap();
    std::fs::copy(anvil, ctx.path().join("anvil")).unwrap();
    let tag = format!("pbts-it-{}", std::process::id());
    let anvil_tag = format!("{tag}-anvil");
    let dockerfile = repo_root().join("Dockerfile");
    let dockerfile = dockerfile.to_str().unwrap();
    let context = ctx.path().to_str().unwrap();
    for (image, target) in [(&tag, "pbts"), (&anvil_tag, "anvil")] {
        daemon.run(&[
            "build",
            "--quiet",
            "--network",
            "host",
            "--build-arg",
            "BINARIES=prebuilt",
            "--target",
            target,
            "-f",
            dockerfile,
            "-t",
            image,
            context,
        ]);
    }
    let config = daemon.run(&["image", "inspect", "--format", "{{json .Config}}", &tag]);
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["User"], "pbts");
    assert_eq!(config["Healthcheck"]["Test"], serde_json::json!(["CMD", "pbts", "health"]));
    let exposed: Vec<&String> = config["ExposedPorts"].as_object().unwrap().keys().collect();
    assert_eq!(exposed, ["8000/tcp", "8000/udp"]);
    eprintln!("[{:?}] images built", started.elapsed());

    // The compose project: anvil, the factory one-shot, pbts with the seccomp profile.
    let port = free_port();
    let anvil_port = pbts_testkit::anvil::free_port().unwrap();
    let project = Project {
        daemon: &daemon,
        name: tag.clone(),
        env: vec![
            ("PBTS_IMAGE", tag.clone()),
            ("PBTS_ANVIL_IMAGE", anvil_tag),
            ("PBTS_BIND", "127.0.0.1".to_owned()),
            ("PBTS_PORT", port.to_string()),
            ("ANVIL_PORT", anvil_port.to_string()),
            ("PBTS_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            // Within this machine's hard limits (a sandbox may not let dockerd raise them).
            ("PBTS_MEMLOCK", hard_limit("Max locked memory")),
            ("PBTS_NOFILE", hard_limit("Max open files")),
        ],
    };
    project.run(&["up", "--detach", "--no-build"]);
    let pbts = project.container("pbts");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let health = daemon.run(&["inspect", "--format", "{{.State.Health.Status}}", &pbts]);
        if health.trim() == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pbts not healthy in 90 s ({}): {}",
            health.trim(),
            project.logs("pbts")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("[{:?}] compose project healthy", started.elapsed());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // /health and a UDP connect through the published ports.
    let (status, _, body) = http_request_with(addr, "GET", "/health", &[], b"");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["mode"], "private");
    Udp::new(addr).connect();

    // The factory was deployed through the service name `anvil`, and pbts uses it: it makes
    // this tracker's Reputation contract through it.
    let deployed = project.logs("deploy-factory");
    let factory = deployed
        .lines()
        .find_map(|l| l.strip_prefix("ReputationFactory deployed at "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("deploy-factory said: {deployed}"))
        .to_owned();
    let (status, _, body) = http_request_with(addr, "GET", "/contract/status", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let chain: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(chain["connected"], true, "{chain}");
    assert_eq!(chain["rpc_url"], "http://anvil:8545");
    assert_eq!(chain["factory_address"], factory.as_str());
    assert_eq!(chain["chain_id"], 31337);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = [("Authorization", bearer.as_str()), ("Content-Type", "application/json")];
    let (status, _, body) = http_request_with(addr, "POST", "/contract/init", &admin, b"");
    let init: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{init}");
    assert_eq!(init["factory_address"], factory.as_str());

    // Admin access from outside the container needs the token (clients arrive through Docker's
    // proxy, never from loopback); a user it creates announces with its passkey.
    let (status, _, body) =
        http_request_with(addr, "POST", "/admin/users", &admin[1..], br#"{"name":"alice"}"#);
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"],
        "admin access requires a loopback client or the admin token"
    );
    let (status, _, body) =
        http_request_with(addr, "POST", "/admin/users", &admin, br#"{"name":"alice"}"#);
    let user: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 201, "{user}");
    let passkey = user["passkey"].as_str().unwrap();
    let query = announce_query(&[7; 20], &[8; 20], 6881, "&left=0&compact=1");
    let (status, _, body) =
        http_request_with(addr, "GET", &format!("/{passkey}/announce?{query}"), &[], b"");
    assert_eq!(status, 200);
    assert!(body.starts_with(b"d8:complete"), "{}", String::from_utf8_lossy(&body));
    let (_, _, body) = http_request_with(addr, "GET", &format!("/announce?{query}"), &[], b"");
    assert!(
        body.starts_with(b"d14:failure reason"),
        "an announce without a passkey: {}",
        String::from_utf8_lossy(&body)
    );

    // `up` again (an upgrade, a reboot): the one-shot keeps the factory it made.
    project.run(&["up", "--detach", "--no-build"]);
    let again = project.logs("deploy-factory");
    assert!(
        again.contains(&format!("ReputationFactory at {factory} is deployed: kept")),
        "{again}"
    );

    // `docker stop`: SIGTERM, the swarm snapshot, exit status 0.
    project.run(&["stop", "pbts"]);
    let exit = daemon.run(&["inspect", "--format", "{{.State.ExitCode}}", &pbts]);
    assert_eq!(exit.trim(), "0");
    let logs = project.logs("pbts");
    assert!(logs.contains("wrote 1 peers in 1 swarms to /var/lib/pbts/swarms.snapshot"), "{logs}");
    assert!(logs.trim_end().ends_with("pbts stopped"), "{logs}");
    eprintln!("[{:?}] compose checks done", started.elapsed());

    // Docker 25 and later refuse io_uring in their default profile: with such a profile (ours
    // without the three io_uring calls) pbts must refuse to start and say why, never run
    // "healthy" while serving nothing.
    let profile = std::fs::read_to_string(repo_root().join("deploy/docker/seccomp.json")).unwrap();
    let mut profile: serde_json::Value = serde_json::from_str(&profile).unwrap();
    let names = profile["syscalls"][0]["names"].as_array_mut().unwrap();
    let before = names.len();
    names.retain(|n| !n.as_str().unwrap().starts_with("io_uring_"));
    assert_eq!(names.len(), before - 3);
    let blocking = ctx.path().join("no-io-uring.json");
    std::fs::write(&blocking, profile.to_string()).unwrap();
    let out = output_within(
        daemon
            .docker()
            .args(["run", "--rm", "--network", "none", "--security-opt"])
            .arg(format!("seccomp={}", blocking.display()))
            .arg(&tag),
        COMMAND_LIMIT,
    );
    common::assert_io_uring_refused(&out);
    eprintln!("[{:?}] done", started.elapsed());
}
