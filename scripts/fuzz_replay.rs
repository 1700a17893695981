//! Stable replay of the fuzz corpora, shared by the `tests/fuzz_corpus.rs` of every crate with
//! a `fuzz/` crate (`#[path]`-included, so there is one copy).
//!
//! For each target it runs the target body over every file of `fuzz/seeds/<target>/` (which
//! must exist and hold at least one input, so a target cannot silently lose its seeds) and of
//! `fuzz/regressions/<target>/` (crash inputs, kept once fixed; absent while a target has never
//! crashed). It fails if the list of targets differs from the `[[bin]]` entries of
//! `fuzz/Cargo.toml`, or if `seeds/` or `regressions/` holds a directory no target owns.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// A target: its `[[bin]]` name and its body.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// The names of the `[[bin]]` entries of a fuzz crate's manifest, in order.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=').unwrap_or(value).trim();
            names.push(value.trim_matches('"').to_owned());
        }
    }
    names
}

/// The regular, non-hidden files of `dir`, sorted (empty if `dir` does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    files.sort();
    files
}

/// Fails if `dir` holds a subdirectory that names no target (a renamed or removed target).
fn no_strays(dir: &Path, targets: &[Target]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.expect("read a corpus directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        assert!(
            !path.is_dir() || targets.iter().any(|(t, _)| *t == name),
            "{} belongs to no fuzz target",
            path.display()
        );
    }
}

/// Replays every seed and regression input of the fuzz crate at `fuzz` through `targets`.
pub(crate) fn replay(fuzz: &Path, targets: &[Target]) {
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("read {}: {e}", fuzz.join("Cargo.toml").display()));
    let bins = bin_names(&manifest);
    assert_eq!(
        bins.len(),
        manifest.lines().filter(|l| l.trim() == "[[bin]]").count(),
        "a [[bin]] entry without a name"
    );
    assert_eq!(
        targets.len(),
        bins.len(),
        "fuzz/Cargo.toml has targets {bins:?}; the replay knows {:?}",
        targets.iter().map(|(t, _)| *t).collect::<Vec<_>>()
    );
    for (name, _) in targets {
        assert!(bins.iter().any(|b| b == name), "{name} is not a [[bin]] of fuzz/Cargo.toml");
    }
    no_strays(&fuzz.join("seeds"), targets);
    no_strays(&fuzz.join("regressions"), targets);

    let mut failures = Vec::new();
    for &(name, body) in targets {
        let seeds = inputs(&fuzz.join("seeds").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ is missing or empty");
        let regressions = inputs(&fuzz.join("regressions").join(name));
        for file in seeds.iter().chain(&regressions) {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
        println!("{name}: {} seeds, {} regressions", seeds.len(), regressions.len());
    }
    assert!(
        failures.is_empty(),
        "fuzz inputs that fail their target:\n  {}",
        failures.join("\n  ")
    );
}
