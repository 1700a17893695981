//! What every output file of a run is stamped with: the commit (and whether the tree was
//! dirty), rustc, kernel, CPU model, core count, the run's settings and seeds.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(cmd).args(args).current_dir(repo).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The environment of this run, with `settings` (the experiment options) and `seed`.
pub fn capture(settings: serde_json::Value, seed: u64) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let dirty = run("git", &["status", "--porcelain"]).map(|s| !s.is_empty());
    serde_json::json!({
        "commit": run("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
        "dirty": dirty,
        "rustc": run("rustc", &["-V"]).unwrap_or_else(|| "unknown".to_owned()),
        "kernel": kernel,
        "cpu_model": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "started_unix": pbts_engine::clock::unix_now(),
        "seed": seed,
        "settings": settings,
    })
}

/// Writes a side series' environment (`settings`, no seed) as pretty JSON to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &std::path::Path, settings: serde_json::Value) -> anyhow::Result<()> {
    let env = capture(settings, 0);
    std::fs::write(path, serde_json::to_string_pretty(&env)? + "\n")?;
    Ok(())
}
