//! Bencode decoding: never panics, never over-consumes, and (being canonical-only) re-encodes
//! anything it accepts to exactly the input bytes; `dict_value_span` agrees with `decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbts_http::bencode::{DecodeError, DecodeLimits, decode, decode_prefix, dict_value_span};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_depth: 32, max_items: 4096 };
    match decode_prefix(data, &limits) {
        Ok((value, used)) => {
            assert!(used <= data.len());
            let mut again = Vec::new();
            value.encode(&mut again);
            assert_eq!(&again[..], &data[..used]);
            if used == data.len() {
                assert_eq!(decode(data, &limits), Ok(value.clone()));
            } else {
                assert_eq!(decode(data, &limits), Err(DecodeError::TrailingBytes { offset: used }));
            }
            if let Some(entries) = value.as_dict() {
                for (key, v) in entries {
                    let span = dict_value_span(data, key, &limits)
                        .expect("valid input")
                        .expect("present key");
                    assert_eq!(decode(&data[span], &limits).as_ref(), Ok(v));
                }
            }
        }
        Err(e) => {
            assert!(e.offset().is_none_or(|o| o <= data.len()));
            assert_eq!(decode(data, &limits), Err(e));
            assert!(dict_value_span(data, b"info", &limits).is_err());
        }
    }
});
