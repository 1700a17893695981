//! BEP 15 request decoding: never panics, and every announce it accepts re-encodes to a request
//! that decodes to the same value (`cargo fuzz run udp_request` from `engine/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_engine::udp::wire::{self, Request, RequestError};

fuzz_target!(|data: &[u8]| {
    match wire::parse_request(data) {
        Ok(Request::Announce(a)) => {
            let mut again = Vec::new();
            wire::write_announce_request(&mut again, &a);
            assert_eq!(wire::parse_request(&again), Ok(Request::Announce(a)));
            assert!(a.url_data.len() <= data.len());
        }
        Ok(Request::Scrape { info_hashes, .. }) => {
            assert!(!info_hashes.is_empty() && info_hashes.len() % 20 == 0);
            assert_eq!(info_hashes.len(), data.len() - 16);
        }
        Ok(Request::Connect { .. }) => assert!(data.len() >= 16),
        Err(RequestError::Drop) => {}
        Err(RequestError::Sendable { message, .. }) => assert!(!message.is_empty()),
    }
});
