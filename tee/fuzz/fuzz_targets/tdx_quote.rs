//! TDX quote parsing: never panics, and a quote that parses has a body of the length its kind
//! says and bounds that fit the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_tee::quote::{self, BodyKind};

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = quote::parse(data) {
        let body = match q.report.kind {
            BodyKind::Td10 => quote::TD_REPORT10_LEN,
            BodyKind::Td15 => quote::TD_REPORT15_LEN,
            BodyKind::Td15Ex => quote::TD_REPORT15_EX_LEN,
        };
        let descriptor = if q.version == 5 { 6 } else { 0 };
        let signed = quote::HEADER_LEN + descriptor + body + 4 + q.signature_len;
        assert_eq!(signed + q.trailing_len, data.len());
        assert_eq!(q.tee_type, quote::TEE_TYPE_TDX);
    }
});
