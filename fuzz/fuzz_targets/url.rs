//! Any string through the URL splitter: never panics, and a parsed URL printed and parsed again is
//! the same URL (nothing is normalised).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_verify::url::Url;

fuzz_target!(|s: &str| {
    let Ok(u) = Url::parse(s) else {
        return;
    };
    let printed = u.as_string();
    let again = match Url::parse(&printed) {
        Ok(a) => a,
        Err(_) => panic!("printed URL does not parse: {printed:?}"),
    };
    assert_eq!(u, again);
    let _ = u.twilio_port_variants();
    let _ = u.origin_with_port(Some(u.default_port()));
});
