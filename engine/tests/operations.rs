//! What operators deploy beside the binary: the Grafana dashboard must query only metrics the
//! tracker serves, a real Prometheus with the example configuration and alert rules must scrape
//! a live tracker and answer every panel's query, and the systemd unit and Docker's seccomp
//! profile must allow what pbts does.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::{TestServer, get_body};
use pbts_engine::config::TrackerMode;

fn deploy(path: &str) -> String {
    let at = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path);
    std::fs::read_to_string(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()))
}

/// Every `expr` string anywhere in the dashboard.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `pbts_*` metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pbts_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(&tail[..end]);
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_metrics_the_tracker_serves() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/pbts-dashboard.json")).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard["panels"], &mut all);
    assert!(all.len() >= 20, "{} queries", all.len());
    let wanted: BTreeSet<&str> = all.iter().flat_map(|e| metric_names(e)).collect();

    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let text = String::from_utf8(get_body(srv.v4, "/metrics")).unwrap();
    let served: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let missing: Vec<&&str> = wanted.difference(&served).collect();
    assert!(missing.is_empty(), "the dashboard queries {missing:?}, /metrics serves {served:?}");
    // And nothing served goes unwatched.
    let unwatched: Vec<&&str> = served.difference(&wanted).collect();
    assert!(unwatched.is_empty(), "no panel shows {unwatched:?}");

    // Panels: unique ids, inside Grafana's 24-column grid, all on the dashboard's data source.
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    for p in panels {
        let grid = &p["gridPos"];
        let right = grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap();
        assert!(right <= 24, "{} ends at column {right}", p["title"]);
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            // Counters are read as rates or increases, never raw.
            let e = t["expr"].as_str().unwrap();
            for name in metric_names(e).into_iter().filter(|n| n.ends_with("_total")) {
                assert!(
                    e.contains(&format!("rate({name}")) || e.contains(&format!("increase({name}")),
                    "{e}: {name} is a counter"
                );
            }
        }
    }
}

/// Percent-encodes a PromQL query for a URL.
fn query_param(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP/1.0 GET (Go's server then sends the body whole, never chunked); status and body.
fn get_http10(addr: std::net::SocketAddr, target: &str) -> (u16, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// GET on Prometheus's HTTP API; its JSON answer.
fn prometheus_api(addr: std::net::SocketAddr, target: &str) -> serde_json::Value {
    let (status, body) = get_http10(addr, target);
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{target}: {status} {}", String::from_utf8_lossy(&body)));
    assert_eq!(status, 200, "{target}: {json}");
    json
}

/// A real Prometheus (Debian's package) with the example configuration and alert rules scrapes
/// a live tracker: the exposition is accepted (a family split over two TYPE lines once made
/// Prometheus refuse every scrape), every dashboard query returns data, every rule evaluates.
#[test]
fn prometheus_scrapes_a_live_tracker_and_every_panel_and_rule_evaluates() {
    let config = deploy("prometheus/prometheus.yml");
    assert!(config.contains("metrics_path: /metrics\n"), "{config}");
    // The example points at the tracker's default port.
    assert!(config.contains("\"127.0.0.1:8000\""), "{config}");
    assert_eq!(pbts_engine::config::Config::default().network.listen[0].port(), 8000);

    let srv = TestServer::start(TrackerMode::Open, |_| {});
    let q = common::announce_query(&[1; 20], &[2; 20], 6881, "&left=0");
    assert!(get_body(srv.v4, &format!("/announce?{q}")).starts_with(b"d8:complete"));

    // The committed files with the target, the intervals and the listen address made local.
    let dir = tempfile::tempdir().unwrap();
    let instance = srv.v4.to_string();
    let local = config
        .replace("\"127.0.0.1:8000\"", &format!("\"{instance}\""))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    assert_ne!(local, config);
    std::fs::write(dir.path().join("prometheus.yml"), &local).unwrap();
    std::fs::write(dir.path().join("pbts-alerts.yml"), deploy("prometheus/pbts-alerts.yml"))
        .unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml"))
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    let port = pbts_testkit::anvil::free_port().unwrap();
    let api: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut prometheus = Kill(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={api}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's prometheus package; scripts/test.sh installs it)"),
    );
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let eventually = |what: &str, ok: &mut dyn FnMut() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what} within 60 s; log:\n{}", log());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    eventually("Prometheus ready", &mut || {
        // Still ours: another process that took the port in between must not answer for it.
        let exited = prometheus.0.try_wait().unwrap();
        assert!(exited.is_none(), "prometheus exited ({exited:?}): {}", log());
        std::net::TcpStream::connect(api).is_ok() && get_http10(api, "/-/ready").0 == 200
    });

    // The target is up, with no scrape error; then three more scrapes, so rates have points.
    let mut target = serde_json::Value::Null;
    eventually("the pbts target scraped", &mut || {
        target = prometheus_api(api, "/api/v1/targets")["data"]["activeTargets"][0].clone();
        target["health"] == "up"
    });
    assert_eq!(target["lastError"], "", "{target}");
    assert_eq!(target["labels"]["job"], "pbts");
    assert_eq!(target["labels"]["instance"], instance.as_str());
    let scrapes = |api| {
        let q = query_param("count_over_time(up{job=\"pbts\"}[1m])");
        let r = prometheus_api(api, &format!("/api/v1/query?query={q}"));
        r["data"]["result"][0]["value"][1].as_str().unwrap_or("0").parse::<u32>().unwrap()
    };
    eventually("four scrapes", &mut || scrapes(api) >= 4);

    // Every dashboard query, with Grafana's variables filled in, returns data.
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy("grafana/pbts-dashboard.json")).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard["panels"], &mut all);
    for expr in &all {
        let promql = expr.replace("$instance", &instance).replace("$__rate_interval", "1m");
        assert!(!promql.contains('$'), "a variable left in {promql}");
        let r = prometheus_api(api, &format!("/api/v1/query?query={}", query_param(&promql)));
        assert_eq!(r["status"], "success", "{promql}: {r}");
        let result = r["data"]["result"].as_array().unwrap();
        assert!(!result.is_empty(), "no data for the panel query {promql}");
    }
    let peers = query_param(&format!("sum(pbts_peers_v4{{instance=\"{instance}\"}})"));
    let r = prometheus_api(api, &format!("/api/v1/query?query={peers}"));
    assert_eq!(r["data"]["result"][0]["value"][1], "1", "{r}");

    // Every alert rule reads metrics the tracker serves (an empty result of a misspelt name would
    // evaluate "ok" and never fire), evaluates, and none fires against a healthy tracker.
    let served = String::from_utf8(get_body(srv.v4, "/metrics")).unwrap();
    let alerts = deploy("prometheus/pbts-alerts.yml");
    let read = metric_names(&alerts);
    assert!(read.len() >= 5, "{read:?}");
    for name in read {
        assert!(served.contains(&format!("# TYPE {name} ")), "the alert rules read {name}");
    }
    let mut rules = Vec::new();
    eventually("rules evaluated", &mut || {
        let r = prometheus_api(api, "/api/v1/rules");
        rules = r["data"]["groups"][0]["rules"].as_array().cloned().unwrap_or_default();
        !rules.is_empty() && rules.iter().all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z")
    });
    let names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "PbtsDown",
            "PbtsPanicked",
            "PbtsStoreFailing",
            "PbtsConnectionsRefused",
            "PbtsErrorsHigh"
        ]
    );
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["state"], "inactive", "{rule}");
    }
}

/// `systemd-analyze syscall-filter` for `set`, groups expanded: the system calls it names.
fn syscall_set(set: &str, out: &mut BTreeSet<String>) {
    let listed = std::process::Command::new("systemd-analyze")
        .args(["syscall-filter", set])
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    assert!(listed.status.success(), "systemd-analyze syscall-filter {set}");
    for line in String::from_utf8(listed.stdout).unwrap().lines() {
        // Members are indented; headers and comments are not.
        let member = line.trim();
        if !line.starts_with(' ') || member.is_empty() || member.starts_with('#') {
            continue;
        }
        if member.starts_with('@') {
            syscall_set(member, out);
        } else {
            out.insert(member.to_owned());
        }
    }
}

/// The unit passes `systemd-analyze verify` without a warning, and its system call filter and
/// Docker's seccomp profile (which allows nothing the unit refuses) allow every call pbts makes
/// while it starts, serves UDP and HTTP (plain and through the ring), writes its database and
/// stops on SIGTERM with a swarm snapshot (traced with strace: this machine's PID 1 is not
/// systemd, so the unit cannot be started for real; the container test runs the profile).
#[test]
fn the_systemd_unit_verifies_and_its_filter_and_the_seccomp_profile_allow_every_call_pbts_makes() {
    let unit = deploy("systemd/pbts.service");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbts.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/pbts", env!("CARGO_BIN_EXE_pbts"))).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    // The filter, as the unit states it.
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for line in unit.lines() {
        let Some(rule) = line.strip_prefix("SystemCallFilter=") else { continue };
        let (set, words) = match rule.strip_prefix('~') {
            Some(rest) => (&mut denied, rest),
            None => (&mut allowed, rule),
        };
        for word in words.split_whitespace() {
            if word.starts_with('@') {
                syscall_set(word, set);
            } else {
                set.insert(word.to_owned());
            }
        }
    }
    assert!(allowed.contains("io_uring_setup") && allowed.contains("recvmmsg"));

    // Docker's profile allows the same set: nothing the unit refuses, and io_uring.
    let profile: serde_json::Value = serde_json::from_str(&deploy("docker/seccomp.json")).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(profile["defaultErrnoRet"], libc::EPERM);
    let rules = profile["syscalls"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "one allow list, no argument filters");
    assert_eq!(rules[0]["action"], "SCMP_ACT_ALLOW");
    let docker: BTreeSet<String> = rules[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let unit: BTreeSet<String> = allowed.difference(&denied).cloned().collect();
    let beyond: Vec<&String> = docker.difference(&unit).collect();
    assert!(beyond.is_empty(), "seccomp.json allows what the unit refuses: {beyond:?}");
    for needed in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(docker.contains(needed), "seccomp.json must allow {needed}");
    }

    // pbts under strace, through everything it does. A machine that forbids ptrace (some
    // container sandboxes) cannot run this half: said plainly, not failed.
    let probe = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output()
        .expect("strace (Debian's strace package; scripts/test.sh installs it)");
    if !probe.status.success() {
        common::skipped(
            "operations::the_systemd_unit (the strace half)",
            &format!(
                "strace cannot trace here ({})",
                String::from_utf8_lossy(&probe.stderr).trim()
            ),
        );
        return;
    }
    let config = dir.path().join("pbts.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nlisten = [\"127.0.0.1:0\"]\ncores = 1\nfirst_cpu = -1\n\
             io_memory_kib = 256\n[tracker]\nmode = \"open\"\n\
             [storage]\ndata_dir = \"{}\"\nflush_interval_ms = 50\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let trace = dir.path().join("trace");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_pbts"))
        .args(["serve", "-c"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace (Debian's strace package; scripts/test.sh installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(strace.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .strip_prefix("pbts listening on udp://")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("pbts under strace said {line:?}"))
        .parse()
        .unwrap();
    // UDP connect and announce; HTTP on a new connection each, and twice on one (the second
    // read waits in the ring); an admin write that the store commits.
    let udp = common::Udp::new(addr);
    let conn = udp.connect();
    let mut req = Vec::new();
    pbts_proto::udp::write_announce_request(
        &mut req,
        &pbts_proto::udp::AnnounceRequest {
            connection_id: conn,
            transaction_id: pbts_proto::udp::TransactionId(1),
            info_hash: pbts_proto::InfoHash([3; 20]),
            peer_id: pbts_proto::PeerId([4; 20]),
            downloaded: 0,
            left: 0,
            uploaded: 0,
            event: pbts_proto::AnnounceEvent::Started,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            key: 0,
            num_want: None,
            port: 6881,
            url_data: b"",
        },
    );
    assert_eq!(udp.exchange(&req)[..4], [0, 0, 0, 1]);
    let q = common::announce_query(&[5; 20], &[6; 20], 6881, "&left=0");
    assert!(get_body(addr, &format!("/announce?{q}")).starts_with(b"d8:complete"));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    for close in ["", "Connection: close\r\n"] {
        let req = format!("GET /health HTTP/1.1\r\nHost: x\r\n{close}\r\n");
        std::io::Write::write_all(&mut stream, req.as_bytes()).unwrap();
        let resp = common::read_response(&mut stream, &mut buf);
        assert_eq!(common::split_response(&resp).0, 200);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, _, _) =
        common::http_request(addr, "POST", "/admin/users", Some(r#"{"name":"ops"}"#));
    assert_eq!(status, 201);
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SIGTERM to pbts (the traced process: the first pid in the trace), then strace ends.
    let text = std::fs::read_to_string(&trace).unwrap();
    let pid = text.split_whitespace().next().unwrap();
    let killed = std::process::Command::new("kill").args(["-TERM", pid]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while strace.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "pbts did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(dir.path().join("data/swarms.snapshot").exists(), "no swarm snapshot written");

    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    for line in text.lines() {
        // "<pid> name(...", "<pid> <... name resumed>...", or signal and exit lines.
        let rest = line.split_once(' ').map_or("", |(_, r)| r.trim_start());
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let follows = rest[name.len()..].chars().next();
        if !name.is_empty() && matches!(follows, Some('(' | ' ')) {
            used.insert(name);
        }
    }
    for needed in
        ["io_uring_setup", "io_uring_enter", "recvmmsg", "sendmmsg", "accept4", "fdatasync"]
    {
        assert!(used.contains(needed), "the workload never called {needed}: {used:?}");
    }
    // `exit` and `resumed` fragments are not calls a filter sees differently; execve is the
    // exec of pbts itself (allowed by @system-service as well).
    let refused: Vec<&String> = used.difference(&unit).collect();
    assert!(refused.is_empty(), "the unit's filter refuses {refused:?}");
    let refused: Vec<&String> = used.difference(&docker).collect();
    assert!(refused.is_empty(), "seccomp.json refuses {refused:?}");
}
