//! Any bytes through the raw request parser: never panics, and a parsed request written back out
//! with `Content-Length` (when it had framing or a body) parses to the same method, target, headers
//! and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_verify::raw::RawRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = RawRequest::parse(data) else {
        return;
    };
    let _ = r.url(None);
    let _ = r.url(Some("https://example.com/x"));

    let mut out = format!("{} {} HTTP/1.1\r\n", r.method, r.target).into_bytes();
    for (k, v) in &r.headers {
        if k == http::header::CONTENT_LENGTH || k == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Framing only where the original had some, or a body: adding a `Content-Length` to a request
    // that has exactly `MAX_HEADERS` fields and none would push it over the limit.
    let framed = r.headers.contains_key(http::header::CONTENT_LENGTH)
        || r.headers.contains_key(http::header::TRANSFER_ENCODING);
    if framed || !r.body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", r.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&r.body);
    let again = match RawRequest::parse(&out) {
        Ok(a) => a,
        Err(e) => panic!("re-serialised request does not parse: {e}"),
    };
    assert_eq!(again.method, r.method);
    assert_eq!(again.target, r.target);
    assert_eq!(again.body, r.body);
    for (k, v) in &r.headers {
        if k == http::header::CONTENT_LENGTH || k == http::header::TRANSFER_ENCODING {
            continue;
        }
        assert!(again.headers.get_all(k).iter().any(|x| x == v));
    }
});
