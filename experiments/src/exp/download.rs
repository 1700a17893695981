//! Client download overhead (the original's 7.3), measured and modelled.
//!
//! `client_download`: real transfers, pbts-peer to pbts-peer on 127.0.0.1 with the data on
//! tmpfs, receipts off against on (the `client-download-measured` series, CI-sized with
//! `--quick`). `pbts-peer` is the binary next to this one (`cargo build [--release] -p
//! pbts-peer`).
//!
//! `client_download_model`: the original's analytic model of a download at a given speed with
//! one receipt signed per piece, fed with the measured cost of signing a receipt:
//! download time = size / speed; receipt time = pieces × t_sign (the downloader hashes each
//! piece anyway to check it, so only the signature is extra); overhead = receipt / download;
//! throughput = size / (download + receipt).

use std::time::Instant;

use super::{Settings, ms};
use crate::report::{Cell, Outcome, Raw, Stats, Table};
use crate::vs_libtorrent::Plan;

/// Runs the experiment: the measured series, then the model.
///
/// # Errors
/// pbts-peer or libtorrent's Python module missing, a failed transfer, I/O.
pub fn run(s: &Settings) -> anyhow::Result<Outcome> {
    let (size_mib, piece_kib, runs) = if s.quick { (16, 256, 1) } else { (1024, 1024, 3) };
    let exe = std::env::current_exe()?;
    let peer = exe.with_file_name("pbts-peer");
    let shm = std::path::Path::new("/dev/shm");
    let plan = Plan {
        size_mib,
        piece_kib,
        runs,
        peer,
        dir: if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() },
        out: std::env::temp_dir(),
    };
    let series = crate::receipt_cost::measure(&plan)?;
    let (measured, _) = series.table("client_download");
    let mut outcome = model(s);
    outcome.tables.insert(0, measured);
    let mut raw = series.raw();
    raw.append(outcome.raw);
    outcome.raw = raw;
    Ok(outcome)
}

/// The analytic model.
fn model(s: &Settings) -> Outcome {
    let n = s.iterations.max(2);
    let base = super::receipts::signed_receipts(1, 1, 3)[0];
    let sk = pbts_verifier::keys::SecretKey::from_ikm(&[3; 32]).expect("32 bytes");
    let samples: Vec<f64> = (0..n)
        .map(|i| {
            let mut r = pbts_verifier::receipt::Receipt { piece_index: i as u32, ..base };
            let t = Instant::now();
            sk.sign_receipt(&mut r);
            ms(t)
        })
        .collect();
    let mut raw = Raw::default();
    raw.add("receipt signing", "", &samples, "ms");
    let t_sign = Stats::of(&samples).mean;
    let file_mb = 1000.0;
    let speeds: &[f64] =
        if s.quick { &[1.0, 10.0, 100.0] } else { &[1.0, 5.0, 10.0, 20.0, 50.0, 100.0] };
    let pieces_kb: &[u64] = if s.quick { &[256, 4096] } else { &[256, 512, 1024, 2048, 4096] };
    let mut t = Table::new(
        "client_download_model",
        "Client download overhead, the original's model",
        &format!(
            "A {file_mb:.0} MB download, one receipt signed per piece at the measured {t_sign:.3} ms \
             per signature (mean of {n})"
        ),
        &[
            "speed (MB/s)",
            "piece (KB)",
            "receipts",
            "signing time (s)",
            "overhead (%)",
            "throughput (MB/s)",
        ],
    );
    for &speed in speeds {
        for &kb in pieces_kb {
            let pieces = (file_mb * 1024.0 / kb as f64).ceil();
            let download = file_mb / speed;
            let signing = pieces * t_sign / 1000.0;
            t.row(vec![
                Cell::num(speed, 0),
                Cell::Int(kb),
                Cell::Int(pieces as u64),
                Cell::num(signing, 3),
                Cell::num(signing / download * 100.0, 4),
                Cell::num(file_mb / (download + signing), 3),
            ]);
        }
    }
    Outcome { name: "client_download", tables: vec![t], raw }
}
