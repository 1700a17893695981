//! What operators deploy beside the binary: the Grafana dashboard must query only metrics the
//! tracker serves, and the Prometheus example must scrape where it serves them.

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

#[test]
fn the_prometheus_example_scrapes_the_metrics_path() {
    let config = deploy("prometheus/prometheus.yml");
    assert!(config.contains("metrics_path: /metrics\n"), "{config}");
    assert!(config.contains("job_name: pbts\n"), "{config}");
    // The default listen port of the tracker.
    assert!(config.contains("\"127.0.0.1:8000\""), "{config}");
    assert_eq!(pbts_engine::config::Config::default().network.listen[0].port(), 8000);
}
