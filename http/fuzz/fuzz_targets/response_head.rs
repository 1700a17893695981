//! The client-side response-head parser: never panics, never over-consumes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_http::request::{Status, parse_response_head};

fuzz_target!(|data: &[u8]| {
    if let Ok(Status::Complete(head, used)) = parse_response_head(data) {
        assert!(used <= data.len());
        assert_eq!(head.head_len, used);
        assert!((100..=999).contains(&head.status));
    }
});
