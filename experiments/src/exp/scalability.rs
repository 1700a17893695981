//! Scalability (the original's 7.5, on correct paths): reports per second and report latency
//! against the number of concurrent reporters and the swarm size, with fresh valid receipts in
//! every report (the original's timestamps put most of its reports outside the window, so it
//! measured early exits). The harness checks that every receipt of every report was credited.

use std::time::Instant;

use anyhow::bail;
use pbts_engine::config::TrackerMode;

use super::{Http, Settings, Tracker, ms};
use crate::report::{Cell, Outcome, Raw, Stats, Table};

const RECEIPTS_PER_REPORT: u32 = 10;

/// Fills the swarm with `size` peers (pipelined announces on one connection).
fn fill_swarm(http: &mut Http, passkey: &str, size: usize) -> anyhow::Result<()> {
    const DEPTH: usize = 64;
    let mut sent = 0;
    while sent < size {
        let batch = DEPTH.min(size - sent);
        for i in sent..sent + batch {
            let mut peer = *b"-PB0100-000000000000";
            peer[8..16].copy_from_slice(&(i as u64).to_be_bytes());
            let port = 1024 + (i % 60000) as u16;
            let target = format!(
                "/{passkey}/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=0&event=started",
                super::pct(&super::INFO_HASH),
                super::pct(&peer)
            );
            http.send("GET", &target, None)?;
        }
        for _ in 0..batch {
            let (status, body) = http.recv()?;
            if status != 200 || !body.starts_with(b"d8:complete") {
                bail!("announce failed: {}", String::from_utf8_lossy(&body));
            }
        }
        sent += batch;
    }
    Ok(())
}

/// Runs the experiment.
pub fn run(s: &Settings) -> anyhow::Result<Outcome> {
    let reports = s.iterations.max(2);
    let swarms: &[usize] = if s.quick { &[100, 1000] } else { &[100, 1000, 10_000] };
    let reporters: &[usize] = if s.quick { &[1, 2] } else { &[1, 2, 4, 8] };
    let mut raw = Raw::default();
    let mut t = Table::new(
        "scalability",
        "Report throughput and latency",
        &format!(
            "Concurrent reporters, each on its own keep-alive connection, sending {reports} reports \
             of {RECEIPTS_PER_REPORT} fresh receipts; the swarm holds the given number of peers; \
             pbts with 2 serving cores and the default verifier threads; every receipt credited"
        ),
        &[
            "swarm peers",
            "reporters",
            "reports",
            "reports/s",
            "receipts/s",
            "p50 (ms)",
            "p95 (ms)",
            "p99 (ms)",
            "announce p50 (ms)",
        ],
    );
    for &size in swarms {
        let tracker = Tracker::start(TrackerMode::Private, 2, |_| {})?;
        let mut http = Http::connect(tracker.addr)?;
        let up = super::register(&mut http, "uploader", 11)?;
        let down = super::register(&mut http, "downloader", 12)?;
        super::register_torrent(&mut http)?;
        fill_swarm(&mut http, &up.passkey, size)?;
        // Announce latency at this swarm size (a re-announce of an existing peer).
        let mut ann = Vec::new();
        for i in 0..reports.max(20) {
            let mut peer = *b"-PB0100-000000000000";
            peer[8..16].copy_from_slice(&((i % size) as u64).to_be_bytes());
            let target = format!(
                "/{}/announce?info_hash={}&peer_id={}&port=7000&uploaded=0&downloaded=0&left=0&compact=1",
                up.passkey,
                super::pct(&super::INFO_HASH),
                super::pct(&peer)
            );
            let t0 = Instant::now();
            let (status, _) = http.call("GET", &target, None)?;
            ann.push(ms(t0));
            if status != 200 {
                bail!("announce failed with {status}");
            }
        }
        raw.add("announce", &size.to_string(), &ann, "ms");
        let ann_p50 = Stats::of(&ann).median;
        let mut next = 0u32;
        for &c in reporters {
            // Every receipt unique (its own piece), signed before the clock starts.
            let work: Vec<Vec<Vec<u8>>> = (0..c)
                .map(|_| {
                    (0..reports)
                        .map(|_| {
                            let b = super::report_body(&up, &down, next, RECEIPTS_PER_REPORT);
                            next += RECEIPTS_PER_REPORT;
                            b
                        })
                        .collect()
                })
                .collect();
            let addr = tracker.addr;
            let start = Instant::now();
            let results: Vec<anyhow::Result<Vec<f64>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = work
                    .iter()
                    .map(|bodies| {
                        scope.spawn(move || {
                            let mut h = Http::connect(addr)?;
                            let mut lat = Vec::with_capacity(bodies.len());
                            for b in bodies {
                                let t0 = Instant::now();
                                let (status, resp) = h.call("POST", "/report", Some(b))?;
                                lat.push(ms(t0));
                                super::check_report(status, &resp, RECEIPTS_PER_REPORT)?;
                            }
                            Ok(lat)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("reporter thread")).collect()
            });
            let wall = start.elapsed().as_secs_f64();
            let mut all = Vec::new();
            for r in results {
                all.extend(r?);
            }
            raw.add("report", &format!("{size} peers, {c} reporters"), &all, "ms");
            let st = Stats::of(&all);
            let rps = all.len() as f64 / wall;
            t.row(vec![
                size.into(),
                c.into(),
                all.len().into(),
                Cell::num(rps, 1),
                Cell::num(rps * f64::from(RECEIPTS_PER_REPORT), 0),
                Cell::num(st.median, 2),
                Cell::num(st.p95, 2),
                Cell::num(st.p99, 2),
                Cell::num(ann_p50, 3),
            ]);
        }
    }
    Ok(Outcome { name: "scalability", tables: vec![t], raw })
}
