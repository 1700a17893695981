//! Counters, one cache-line-aligned block per serving core, rendered as Prometheus text.
//!
//! Each core increments only its own block with relaxed atomics (uncontended, no shared cache
//! line); `/metrics` and `/stats` sum the blocks when asked.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted. Names and labels are fixed here, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// UDP connect requests answered.
    UdpConnect,
    /// UDP announces answered with peers.
    UdpAnnounce,
    /// UDP scrapes answered.
    UdpScrape,
    /// UDP error packets sent (rejections, malformed requests).
    UdpError,
    /// UDP datagrams dropped (garbage, bad connection id).
    UdpDropped,
    /// HTTP announces answered with peers.
    HttpAnnounce,
    /// HTTP scrapes answered.
    HttpScrape,
    /// HTTP bencoded failures (announce/scrape rejected).
    HttpFailure,
    /// HTTP API requests (health, stats, metrics, admin).
    HttpApi,
    /// HTTP requests that did not parse (4xx/5xx sent, connection closed).
    HttpBadRequest,
    /// HTTP connections accepted.
    HttpConnectionsAccepted,
    /// HTTP connections refused by the per-core cap.
    HttpConnectionsRefused,
    /// HTTP connections closed by idle or request timeout.
    HttpTimeouts,
    /// Announces rejected by the ratio gate.
    RatioRejected,
    /// Announces rejected for a missing or unknown passkey.
    AuthRejected,
    /// HTTP requests whose handler panicked (answered 500, connection closed; the core kept
    /// serving).
    HttpPanics,
    /// UDP datagrams whose handler panicked (dropped; the core kept serving).
    UdpPanics,
}

const COUNTERS: [(Counter, &str, &str, &str); 17] = [
    (Counter::UdpConnect, "pbts_requests_total", "udp", "connect"),
    (Counter::UdpAnnounce, "pbts_requests_total", "udp", "announce"),
    (Counter::UdpScrape, "pbts_requests_total", "udp", "scrape"),
    (Counter::UdpError, "pbts_responses_error_total", "udp", "error"),
    (Counter::UdpDropped, "pbts_dropped_total", "udp", "dropped"),
    (Counter::HttpAnnounce, "pbts_requests_total", "http", "announce"),
    (Counter::HttpScrape, "pbts_requests_total", "http", "scrape"),
    (Counter::HttpFailure, "pbts_responses_error_total", "http", "failure"),
    (Counter::HttpApi, "pbts_requests_total", "http", "api"),
    (Counter::HttpBadRequest, "pbts_responses_error_total", "http", "bad_request"),
    (Counter::HttpConnectionsAccepted, "pbts_connections_total", "http", "accepted"),
    (Counter::HttpConnectionsRefused, "pbts_connections_total", "http", "refused"),
    (Counter::HttpTimeouts, "pbts_connections_total", "http", "timeout"),
    (Counter::RatioRejected, "pbts_announces_rejected_total", "any", "ratio"),
    (Counter::AuthRejected, "pbts_announces_rejected_total", "any", "passkey"),
    (Counter::HttpPanics, "pbts_panics_total", "http", "request"),
    (Counter::UdpPanics, "pbts_panics_total", "udp", "datagram"),
];

/// The counter families of [`COUNTERS`], in the order `/metrics` lists them, with their help.
const FAMILIES: [(&str, &str); 6] = [
    ("pbts_requests_total", "Requests answered, by protocol and kind"),
    ("pbts_responses_error_total", "Error responses sent, by protocol and kind"),
    ("pbts_dropped_total", "Datagrams dropped unanswered"),
    ("pbts_connections_total", "HTTP connections accepted, refused and timed out"),
    ("pbts_announces_rejected_total", "Announces rejected, by reason"),
    ("pbts_panics_total", "Requests whose handler panicked (the core kept serving)"),
];

/// Process-wide values `/metrics` reads when asked (from the swarms, the accounts, the store
/// and the receipt pipeline). Names and help texts are fixed here, once; a name ending in
/// `_total` is a counter, any other a gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Torrents in memory.
    Torrents,
    /// IPv4 peers.
    PeersV4,
    /// IPv6 peers.
    PeersV6,
    /// Seeders.
    Seeders,
    /// Leechers.
    Leechers,
    /// Registered users.
    Users,
    /// Receipts credited.
    ReceiptsAccepted,
    /// Receipts rejected.
    ReceiptsRejected,
    /// Bytes credited by receipts.
    ReceiptCreditedBytes,
    /// Pieces credited, ever.
    CreditedPieces,
    /// Failed database commits.
    StoreCommitFailures,
    /// Accounting batches waiting for a retry.
    StoreAccountingRetrying,
}

impl Stat {
    /// The metric name and its help text.
    pub fn name_help(self) -> (&'static str, &'static str) {
        match self {
            Self::Torrents => ("pbts_torrents", "Torrents in memory"),
            Self::PeersV4 => ("pbts_peers_v4", "IPv4 peers"),
            Self::PeersV6 => ("pbts_peers_v6", "IPv6 peers"),
            Self::Seeders => ("pbts_seeders", "Seeders"),
            Self::Leechers => ("pbts_leechers", "Leechers"),
            Self::Users => ("pbts_users", "Registered users"),
            Self::ReceiptsAccepted => ("pbts_receipts_accepted_total", "Receipts credited"),
            Self::ReceiptsRejected => ("pbts_receipts_rejected_total", "Receipts rejected"),
            Self::ReceiptCreditedBytes => {
                ("pbts_receipt_credited_bytes_total", "Bytes credited by receipts")
            }
            Self::CreditedPieces => (
                "pbts_credited_pieces",
                "Pieces credited by receipts, ever (one per downloader, torrent and piece)",
            ),
            Self::StoreCommitFailures => (
                "pbts_store_commit_failures_total",
                "Database commits that failed (announce accounting in them is retried)",
            ),
            Self::StoreAccountingRetrying => (
                "pbts_store_accounting_retrying",
                "Batches of announce accounting waiting to be retried",
            ),
        }
    }
}

/// One core's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CoreMetrics {
    counters: [AtomicU64; COUNTERS.len()],
    /// Open HTTP connections (gauge).
    pub open_connections: AtomicU64,
}

impl CoreMetrics {
    /// Adds one.
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.counters[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }
}

/// Every core's counters.
#[derive(Debug)]
pub struct Metrics {
    cores: Box<[CoreMetrics]>,
}

impl Metrics {
    /// Blocks for `cores` cores.
    pub fn new(cores: usize) -> Self {
        Self { cores: (0..cores).map(|_| CoreMetrics::default()).collect() }
    }

    /// Core `i`'s block.
    pub fn core(&self, i: usize) -> &CoreMetrics {
        &self.cores[i]
    }

    /// Sum over cores.
    pub fn total(&self, c: Counter) -> u64 {
        self.cores.iter().map(|m| m.get(c)).sum()
    }

    /// Open connections over all cores.
    pub fn open_connections(&self) -> u64 {
        self.cores.iter().map(|m| m.open_connections.load(Ordering::Relaxed)).sum()
    }

    /// Prometheus text exposition of every counter per core, plus the given process-wide
    /// values (counters when their name ends in `_total`, gauges otherwise). Each family has
    /// one HELP and one TYPE line, then all its samples: Prometheus refuses a scrape that
    /// names a family twice.
    pub fn render(&self, values: &[(Stat, u64)]) -> String {
        let mut out = String::new();
        for (family, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for (c, name, protocol, kind) in COUNTERS {
                if name != family {
                    continue;
                }
                for (i, m) in self.cores.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}{{protocol=\"{protocol}\",kind=\"{kind}\",worker=\"{i}\"}} {}",
                        m.get(c)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP pbts_http_open_connections Open HTTP connections\n\
             # TYPE pbts_http_open_connections gauge"
        );
        for (i, m) in self.cores.iter().enumerate() {
            let _ = writeln!(
                out,
                "pbts_http_open_connections{{worker=\"{i}\"}} {}",
                m.open_connections.load(Ordering::Relaxed)
            );
        }
        for &(v, value) in values {
            let (name, help) = v.name_help();
            // Prometheus naming: a `_total` name is a counter, anything else a gauge.
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_table_matches_enum_order() {
        for (i, (c, ..)) in COUNTERS.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(std::mem::align_of::<CoreMetrics>(), 128);
    }

    /// Every family once, its samples together: a second TYPE line for one name, or a family
    /// split by another, makes Prometheus refuse the whole scrape.
    #[test]
    fn render_lists_each_family_once_with_all_its_samples() {
        let text = Metrics::new(2).render(&[(Stat::Torrents, 0), (Stat::ReceiptsAccepted, 0)]);
        let mut seen = Vec::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&name), "{name} typed twice");
                seen.push(name);
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{line} outside its family");
            }
        }
        for (_, family, ..) in COUNTERS {
            assert!(seen.contains(&family), "{family} missing");
        }
        assert_eq!(seen.len(), FAMILIES.len() + 1 + 2);
        assert_eq!(text.matches("# HELP ").count(), seen.len());
    }

    #[test]
    fn render_sums_nothing_and_lists_every_core() {
        let m = Metrics::new(2);
        m.core(1).inc(Counter::UdpAnnounce);
        let text = m.render(&[(Stat::Torrents, 3)]);
        assert!(
            text.contains(
                "pbts_requests_total{protocol=\"udp\",kind=\"announce\",worker=\"1\"} 1\n"
            )
        );
        assert!(text.contains("pbts_torrents 3\n"));
        assert_eq!(m.total(Counter::UdpAnnounce), 1);
    }
}
