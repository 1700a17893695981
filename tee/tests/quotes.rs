//! Real TDX quotes and their collateral (the samples shipped with dcap-qvl 0.7.1; see
//! `tests/data/SOURCE.md`): parsing against dcap-qvl's own parser, verification at a time inside
//! the collateral's validity, a flipped byte that must fail, and a report-data mismatch that
//! must fail.

#![allow(clippy::unwrap_used, missing_docs)]

use pbts_tee::quote::{self, Binding, BodyKind};
use pbts_tee::verify::{self, Expected};

struct Sample {
    name: &'static str,
    quote: &'static [u8],
    collateral: &'static [u8],
    version: u16,
    kind: BodyKind,
}

const SAMPLES: [Sample; 3] = [
    Sample {
        name: "tdx_quote",
        quote: include_bytes!("data/tdx_quote"),
        collateral: include_bytes!("data/tdx_quote_collateral.json"),
        version: 4,
        kind: BodyKind::Td10,
    },
    Sample {
        name: "tdx_quote_outdated",
        quote: include_bytes!("data/tdx_quote_outdated"),
        collateral: include_bytes!("data/tdx_quote_outdated_collateral.json"),
        version: 5,
        kind: BodyKind::Td15,
    },
    Sample {
        name: "tdx_quote_td15ex",
        quote: include_bytes!("data/tdx_quote_td15ex"),
        collateral: include_bytes!("data/tdx_quote_td15ex_collateral.json"),
        version: 5,
        kind: BodyKind::Td15Ex,
    },
];

fn at(s: &Sample) -> (dcap_qvl::QuoteCollateralV3, u64) {
    let c = verify::parse_collateral(s.collateral).unwrap();
    let t = verify::collateral_issue_time(&c).unwrap() + 3600;
    (c, t)
}

#[test]
fn our_parser_agrees_with_dcap_qvl_on_every_sample() {
    for s in &SAMPLES {
        let q = quote::parse(s.quote).unwrap();
        assert_eq!((q.version, q.report.kind), (s.version, s.kind), "{}", s.name);
        assert_eq!(q.tee_type, quote::TEE_TYPE_TDX);
        assert_eq!(q.attestation_key_type, 2, "ECDSA-256-with-P-256");
        let theirs = dcap_qvl::quote::Quote::parse(s.quote).unwrap();
        let td10 = match &theirs.report {
            dcap_qvl::quote::Report::TD10(r) => *r,
            dcap_qvl::quote::Report::TD15(r) => r.base,
            dcap_qvl::quote::Report::TD15Ex(r) => r.base.base,
            dcap_qvl::quote::Report::SgxEnclave(_) => panic!("{} is TDX", s.name),
        };
        assert_eq!(q.report.report_data, td10.report_data, "{}", s.name);
        assert_eq!(q.report.mr_td, td10.mr_td);
        assert_eq!(q.report.rtmr, [td10.rt_mr0, td10.rt_mr1, td10.rt_mr2, td10.rt_mr3]);
        assert_eq!(q.report.mr_config_id, td10.mr_config_id);
        assert_eq!(q.report.td_attributes, td10.td_attributes);
        // The original read report data from a fixed offset that is wrong for v5 quotes.
        let v4_offset = 48 + 520;
        if s.version == 5 {
            assert_ne!(
                &s.quote[v4_offset..v4_offset + 64],
                &q.report.report_data[..],
                "{}",
                s.name
            );
        }
    }
}

#[test]
fn genuine_quotes_verify_and_bind_their_report_data() {
    let s = &SAMPLES[0];
    let (c, now) = at(s);
    let rd = quote::parse(s.quote).unwrap().report.report_data;
    let v = verify::verify(s.quote, &c, now, Expected::ReportData(&rd));
    assert!(v.valid, "{v:?}");
    assert_eq!(v.reason, None);
    assert!(v.report_data_matches);
    assert!(verify::ACCEPTED_STATUSES.contains(&v.status.as_str()), "{}", v.status);

    // A tracker statement of 64 bytes or fewer is bound as itself.
    let v = verify::verify(s.quote, &c, now, Expected::Binds(Binding::Tracker(&rd)));
    assert!(v.valid && v.report_data_matches, "{v:?}");

    let td15 = &SAMPLES[2];
    let (c15, now15) = at(td15);
    let rd15 = quote::parse(td15.quote).unwrap().report.report_data;
    let v = verify::verify(td15.quote, &c15, now15, Expected::ReportData(&rd15));
    assert!(v.report_data_matches, "{v:?}");
    assert!(!v.status.is_empty(), "{v:?}");
}

#[test]
fn a_platform_below_every_tcb_level_is_invalid() {
    // This sample's platform TCB is older than every level in its collateral.
    let s = &SAMPLES[1];
    let (c, now) = at(s);
    let rd = quote::parse(s.quote).unwrap().report.report_data;
    let v = verify::verify(s.quote, &c, now, Expected::ReportData(&rd));
    assert!(!v.valid);
    assert_eq!(v.reason.as_deref(), Some("quote verification failed: No matching TCB level found"));
    assert!(v.report_data_matches, "the report data itself is what was asked for");
}

#[test]
fn a_flipped_byte_anywhere_signed_fails() {
    for s in &SAMPLES {
        let (c, now) = at(s);
        // A byte of MRTD, one of the report data, and one of the header.
        let body = if s.version == 5 { 54 } else { 48 };
        for offset in [body + 136, body + 520 + 5, 20] {
            let mut tampered = s.quote.to_vec();
            tampered[offset] ^= 0x01;
            // Expect the tampered report data, so only the signature can refuse the quote.
            let rd = quote::parse(&tampered).unwrap().report.report_data;
            let v = verify::verify(&tampered, &c, now, Expected::ReportData(&rd));
            assert!(!v.valid, "{} with byte {offset} flipped verified: {v:?}", s.name);
            assert!(
                v.reason.as_deref().is_some_and(|r| r.starts_with("quote verification failed")),
                "{}: {v:?}",
                s.name
            );
        }
    }
}

#[test]
fn a_report_data_mismatch_is_invalid() {
    let s = &SAMPLES[0];
    let (c, now) = at(s);
    let v = verify::verify(
        s.quote,
        &c,
        now,
        Expected::Binds(Binding::Tracker(b"PBTS-Tracker-v1.0:factory=0x1:referrer=0x0")),
    );
    assert!(!v.valid);
    assert!(!v.report_data_matches);
    assert_eq!(v.reason.as_deref(), Some("report data does not match the expected payload"));
    // The signature itself was fine: the status is known.
    assert!(!v.status.is_empty());
}

#[test]
fn garbage_and_truncation_are_errors_not_panics() {
    let (c, now) = at(&SAMPLES[0]);
    for bad in [&b""[..], &b"not a quote"[..], &SAMPLES[0].quote[..1000]] {
        let v = verify::verify(bad, &c, now, Expected::Binds(Binding::Client(b"x")));
        assert!(!v.valid);
        assert!(v.reason.as_deref().is_some_and(|r| r.starts_with("quote: ")), "{v:?}");
    }
    assert!(
        verify::parse_collateral(b"{}")
            .unwrap_err()
            .to_string()
            .starts_with("collateral: collateral JSON: missing field")
    );
}
