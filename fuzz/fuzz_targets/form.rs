//! Any bytes through form decoding: never panics, decoding never grows the input, and encoding the
//! decoded pairs and parsing again gives the same pairs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_verify::form;

fuzz_target!(|data: &[u8]| {
    assert!(form::decode(data).len() <= data.len());
    let pairs = form::parse(data);
    let encoded = form::encode_pairs(&pairs);
    let again = form::parse(encoded.as_bytes());
    assert_eq!(pairs, again);
});
