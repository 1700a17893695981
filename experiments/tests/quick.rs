//! `pbts-experiments run --quick` end to end: every file of a run is written, every CSV parses,
//! every table has rows whose numeric columns hold numbers, and the LaTeX includes every table.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

/// The tables a run must produce.
const TABLES: [&str; 11] = [
    "receipts_operations",
    "receipts_aggregation",
    "receipts_batches",
    "tee_operations",
    "client_download",
    "client_download_model",
    "tracker_overhead",
    "scalability",
    "gas_operations",
    "gas_projection",
    "announce",
];

/// The figures a run must draw beside the tables (SVG and PNG).
const FIGURES: [&str; 4] = [
    "fig_announce_throughput",
    "fig_announce_latency",
    "fig_receipt_verification",
    "fig_client_download",
];

/// Splits one CSV line (quoted fields may hold commas and doubled quotes).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn check_table(dir: &Path, id: &str) {
    let text = std::fs::read_to_string(dir.join(format!("{id}.csv"))).unwrap();
    let mut lines = text.lines();
    let head = fields(lines.next().unwrap());
    let rows: Vec<Vec<String>> = lines.map(fields).collect();
    assert!(!rows.is_empty(), "{id} has no rows");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), head.len(), "{id} row {i}");
        // Every column but the first (a label) is numeric in every table of the harness, except
        // the label columns named here.
        for (c, v) in head.iter().zip(r).skip(1) {
            if matches!(c.as_str(), "protocol" | "operation" | "schedule") {
                continue;
            }
            let x: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("{id} row {i} column {c:?}: {v:?} is not a number"));
            assert!(x.is_finite(), "{id} {c} = {v}");
        }
    }
    let tex = std::fs::read_to_string(dir.join("tables").join(format!("{id}.tex"))).unwrap();
    assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"), "{id}.tex");
    assert_eq!(tex.matches(" \\\\\n").count(), rows.len() + 1, "{id}.tex rows");
}

#[test]
fn quick_run_writes_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pbts-experiments"))
        .args(["run", "--quick", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = dir.path();
    for id in TABLES {
        check_table(d, id);
    }
    let all = std::fs::read_to_string(d.join("tables/all.tex")).unwrap();
    for id in TABLES {
        assert!(all.contains(&format!("\\input{{{id}.tex}}")), "all.tex includes {id}");
    }
    for id in FIGURES {
        let svg = std::fs::read_to_string(d.join(format!("tables/{id}.svg"))).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{id}.svg");
        assert!(svg.ends_with("</svg>\n") && svg.contains("<polyline") | svg.contains("<rect x="));
        let png = std::fs::read(d.join(format!("tables/{id}.png"))).unwrap();
        // The signature, then IHDR with the figure's 720 x 420 pixels.
        assert_eq!(&png[..16], b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", "{id}.png");
        assert_eq!(&png[16..24], &[0, 0, 2, 208, 0, 0, 1, 164], "{id}.png size");
        assert!(all.contains(&format!("\\includegraphics[width=\\linewidth]{{{id}.png}}")));
    }
    assert!(all.contains("\\usepackage{booktabs}"));
    for raw in
        ["receipts", "tee", "client_download", "tracker_overhead", "scalability", "gas", "announce"]
    {
        let text = std::fs::read_to_string(d.join(format!("{raw}_raw.csv"))).unwrap();
        assert!(text.starts_with("case,param,iteration,value,unit\n"), "{raw}_raw.csv");
        assert!(text.lines().count() > 1, "{raw}_raw.csv has samples");
    }
    let summary = std::fs::read_to_string(d.join("summary.csv")).unwrap();
    for id in TABLES {
        assert!(summary.contains(&format!("\n{id},0,")), "summary.csv has {id}");
    }
    let env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("env.json")).unwrap()).unwrap();
    for key in ["commit", "dirty", "rustc", "kernel", "cpu_model", "cores", "seed", "settings"] {
        assert!(env.get(key).is_some(), "env.json has {key}");
    }
    assert_eq!(env["settings"]["quick"], true);
    // The LaTeX compiles (pdflatex from Debian's texlive-latex-base and -recommended, which
    // scripts/test.sh installs).
    let tex = std::process::Command::new("pdflatex")
        .args(["-interaction=nonstopmode", "-halt-on-error", "all.tex"])
        .current_dir(d.join("tables"))
        .output()
        .expect(
            "pdflatex is needed (apt-get install texlive-latex-base texlive-latex-recommended)",
        );
    assert!(tex.status.success(), "{}", String::from_utf8_lossy(&tex.stdout));
    assert!(std::fs::metadata(d.join("tables/all.pdf")).unwrap().len() > 10_000);
    let report = std::fs::read_to_string(d.join("report.txt")).unwrap();
    assert!(report.contains("Batch verification") && report.contains("Announce throughput"));
}

/// A configuration mistake ends the run with one line naming it: no backtrace, even with
/// RUST_BACKTRACE set, and exit status 1.
#[test]
fn configuration_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    /// Arguments, environment, the line expected.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 3] = [
        (
            &["vs-aquatic", "--pbts", "/nonexistent/pbts"],
            &[],
            "/nonexistent/pbts not found (cargo build --release -p pbts-engine)",
        ),
        (
            &["gas", "--quick", "--out"],
            &[("PBTS_ANVIL", "/nonexistent/anvil")],
            "configuration: PBTS_ANVIL is /nonexistent/anvil, which does not run",
        ),
        (
            &["latency", "--fractions", "2"],
            &[],
            "--fractions are fractions of the maximum load: each in (0, 1]",
        ),
    ];
    for (args, env, said) in cases {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pbts-experiments"));
        cmd.args(args).env("RUST_BACKTRACE", "1").envs(env.iter().copied());
        if args.last() == Some(&"--out") {
            cmd.arg(dir.path());
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("pbts-experiments: {said}\n"));
    }
}
