//! Arbitrary method, URL, headers and body through every provider configuration's verifier (and diagnosis):
//! never panics, and never verifies, since the fuzzer cannot forge a MAC or an Ed25519 signature.
//! Header names are drawn partly from the headers the provider itself signs, to get past the
//! "header missing" checks into the decoding and comparison code.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{ready, NOW};
use tollgate_verify::diagnose::{verify_explained, Hints};
use tollgate_verify::Request;

#[derive(Debug, Arbitrary)]
struct Input {
    provider: u8,
    method: String,
    url: String,
    headers: Vec<(u8, String, Vec<u8>)>,
    body: Vec<u8>,
    now_offset: i16,
}

fuzz_target!(|input: Input| {
    let all = ready();
    if all.is_empty() {
        return;
    }
    let r = &all[usize::from(input.provider) % all.len()];
    let mut headers = http::HeaderMap::new();
    for (pick, name, value) in &input.headers {
        // Even picks reuse a header name the provider's signer emits.
        let name = if pick % 2 == 0 && !r.signed.headers.is_empty() {
            r.signed.headers[usize::from(*pick / 2) % r.signed.headers.len()]
                .0
                .clone()
        } else {
            name.clone()
        };
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(name),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(k, v);
        }
    }
    let req = Request {
        method: &input.method,
        url: &input.url,
        headers: &headers,
        body: &input.body,
    };
    let now = NOW + i64::from(input.now_offset);
    let hints = Hints {
        alt_hosts: &["example.com", "other.example:8443"],
    };
    if let Ok(v) = verify_explained(r.verifier.as_ref(), &req, now, &hints) {
        panic!(
            "{} {:?} verified an arbitrary request: {v:?}",
            r.spec.id, r.config.opts
        );
    }
});
