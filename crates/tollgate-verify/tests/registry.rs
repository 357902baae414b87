//! Holds every provider in `PROVIDERS` to the same contract, so a new provider cannot forget one:
//! sign → verify round-trips on its realistic sample; every single-byte change of the body, of the
//! URL (for URL-bound schemes) and of the signature is rejected; a wrong key is rejected; rotation
//! names the key that matched; an expired ring says `key_expired`; stale and future timestamps are
//! rejected where the scheme signs one; the diagnosis finds an http/https mix-up.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use tollgate_verify::{
    diagnose, find_provider, Key, KeyRing, Options, ProviderSpec, Reject, Request, Secret,
    Settings, SignInput, Signed, PROVIDERS,
};

const NOW: i64 = 1_763_900_000;
const URL: &str = "https://hooks.example.com/cb/voice?tenant=7";

/// A signing key for each provider's default scheme. A provider added to `PROVIDERS` without an
/// entry here fails the tests below until it gets one.
fn signing_key(id: &str, variant: u8) -> Secret {
    let k = match (id, variant) {
        ("telnyx", 0) => "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
        ("telnyx", _) => "TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs=",
        ("standard-webhooks", 0) => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ("standard-webhooks", _) => "whsec_c2Vjb25kLWtleS1mb3ItdGhlLXJlZ2lzdHJ5",
        ("basic", 0) => "twilio:correct-horse-battery",
        ("basic", _) => "twilio:another-password-123",
        // Sinch voice decodes its application secret from base64.
        ("sinch", 0) => "c2luY2gtYXBwLXNlY3JldC0wMTIzNDU2Nzg5",
        ("sinch", _) => "b3RoZXItc2luY2gtc2VjcmV0LWFiY2RlZmdo",
        (_, 0) => "test-secret-0123456789abcdef",
        (_, _) => "other-secret-fedcba9876543210",
    };
    Secret::new(k)
}

/// Each provider's default options, except where the scheme has no default (the generic `hmac`
/// must be told its header).
fn opts_for(id: &str) -> Options {
    match id {
        "hmac" => serde_json::json!({
            "header": "X-Signature",
            "prefix": "sha256=",
            "signed_content": "{timestamp}.{body}",
            "timestamp_header": "X-Signature-Timestamp",
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
        _ => Options::new(),
    }
}

fn sign(spec: &ProviderSpec, variant: u8, now: i64) -> Signed {
    let mut input: SignInput = (spec.sample)(&opts_for(spec.id), URL);
    input.now = now;
    input.nonce = "evt_0123456789abcdef".into();
    (spec.sign)(&opts_for(spec.id), &signing_key(spec.id, variant), &input)
        .unwrap_or_else(|e| panic!("{}: sign failed: {e}", spec.id))
}

fn ring(spec: &ProviderSpec, variants: &[(u8, Option<i64>)]) -> KeyRing {
    KeyRing::new(
        variants
            .iter()
            .map(|&(v, not_after)| {
                let vk =
                    (spec.verify_key_for)(&opts_for(spec.id), &signing_key(spec.id, v)).unwrap();
                Key {
                    not_after,
                    ..Key::new(format!("key{v}"), vk)
                }
            })
            .collect(),
    )
    .unwrap()
}

fn verify(
    spec: &ProviderSpec,
    keys: &KeyRing,
    s: &Signed,
    url: &str,
    body: &[u8],
    now: i64,
) -> Result<String, Reject> {
    let v = (spec.build)(&opts_for(spec.id), keys, &Settings::default())
        .unwrap_or_else(|e| panic!("{}: build: {e}", spec.id));
    let headers = s.header_map();
    let req = Request {
        method: &s.method,
        url,
        headers: &headers,
        body,
    };
    v.verify(&req, now).map(|ok| {
        assert_eq!(ok.provider(), spec.id);
        ok.key_label().to_owned()
    })
}

fn is_rejected_as_forgery(r: &Result<String, Reject>) -> bool {
    matches!(
        r,
        Err(Reject::SignatureMismatch
            | Reject::BodyHashMismatch
            | Reject::BodyMalformed { .. }
            | Reject::SignatureMalformed { .. }
            | Reject::UrlMalformed)
    )
}

#[test]
fn every_provider_round_trips_its_sample() {
    for spec in PROVIDERS {
        let s = sign(spec, 0, NOW);
        assert_eq!(
            verify(spec, &ring(spec, &[(0, None)]), &s, &s.url, &s.body, NOW),
            Ok("key0".into()),
            "{}",
            spec.id
        );
        assert!(find_provider(spec.id).is_some());
    }
}

#[test]
fn every_single_byte_change_of_the_body_is_rejected() {
    for spec in PROVIDERS.iter().filter(|p| p.id != "basic") {
        let s = sign(spec, 0, NOW);
        let keys = ring(spec, &[(0, None)]);
        assert!(!s.body.is_empty(), "{}: sample has no body", spec.id);
        for i in 0..s.body.len() {
            let mut body = s.body.clone();
            body[i] ^= 0x01;
            let got = verify(spec, &keys, &s, &s.url, &body, NOW);
            assert!(
                is_rejected_as_forgery(&got),
                "{}: body byte {i} changed: {got:?}",
                spec.id
            );
        }
    }
}

#[test]
fn url_bound_schemes_reject_every_path_byte_change() {
    for spec in PROVIDERS {
        let s = sign(spec, 0, NOW);
        let keys = ring(spec, &[(0, None)]);
        let v = (spec.build)(&opts_for(spec.id), &keys, &Settings::default()).unwrap();
        if !v.signs_url() {
            continue;
        }
        let path_start = s.url.find("/cb").unwrap();
        let path_end = s.url.find('?').unwrap_or(s.url.len());
        for i in path_start + 1..path_end {
            let mut url = s.url.clone().into_bytes();
            url[i] ^= 0x01;
            let url = String::from_utf8(url).unwrap();
            let got = verify(spec, &keys, &s, &url, &s.body, NOW);
            assert!(
                is_rejected_as_forgery(&got),
                "{}: url {url}: {got:?}",
                spec.id
            );
        }
    }
}

/// The headers whose value depends on the key: the signature headers.
fn signature_headers(spec: &ProviderSpec) -> Vec<(String, String)> {
    let a = sign(spec, 0, NOW);
    let b = sign(spec, 1, NOW);
    a.headers
        .iter()
        .filter(|h| !b.headers.contains(h))
        .cloned()
        .collect()
}

fn with_header(s: &Signed, name: &str, value: Option<&str>) -> Signed {
    let mut out = s.clone();
    out.headers.retain(|(n, _)| n != name);
    if let Some(v) = value {
        out.headers.push((name.to_owned(), v.to_owned()));
    }
    out
}

fn vary(value: &str, pos: usize) -> String {
    let mut bytes = value.as_bytes().to_vec();
    bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_changed_signature_is_rejected() {
    for spec in PROVIDERS {
        let s = sign(spec, 0, NOW);
        let keys = ring(spec, &[(0, None)]);
        let sigs = signature_headers(spec);
        assert!(
            !sigs.is_empty(),
            "{}: no header depends on the key",
            spec.id
        );
        for (name, value) in &sigs {
            for pos in [value.len() / 2, value.len().saturating_sub(3)] {
                // Changed alone: refused, unless another signature header (Plivo's -Ma- twin)
                // still carries a valid signature.
                let got = verify(
                    spec,
                    &keys,
                    &with_header(&s, name, Some(&vary(value, pos))),
                    &s.url,
                    &s.body,
                    NOW,
                );
                assert!(
                    is_rejected_as_forgery(&got) || (got.is_ok() && sigs.len() > 1),
                    "{}: {name} changed at {pos}: {got:?}",
                    spec.id
                );
                // Changed in every signature header at once: always refused.
                let mut all = s.clone();
                for (n, v) in &sigs {
                    all = with_header(&all, n, Some(&vary(v, pos.min(v.len() - 1))));
                }
                let got = verify(spec, &keys, &all, &s.url, &s.body, NOW);
                assert!(
                    is_rejected_as_forgery(&got),
                    "{}: all signatures changed at {pos}: {got:?}",
                    spec.id
                );
            }
        }
    }
}

#[test]
fn a_wrong_key_is_rejected_and_rotation_names_the_matching_key() {
    for spec in PROVIDERS {
        let s = sign(spec, 1, NOW);
        let got = verify(spec, &ring(spec, &[(0, None)]), &s, &s.url, &s.body, NOW);
        assert_eq!(got, Err(Reject::SignatureMismatch), "{}", spec.id);
        let got = verify(
            spec,
            &ring(spec, &[(0, None), (1, None)]),
            &s,
            &s.url,
            &s.body,
            NOW,
        );
        assert_eq!(got, Ok("key1".into()), "{}", spec.id);
    }
}

#[test]
fn expired_keys_do_not_verify() {
    for spec in PROVIDERS {
        let s = sign(spec, 0, NOW);
        let all_expired = ring(spec, &[(0, Some(NOW - 1))]);
        assert_eq!(
            verify(spec, &all_expired, &s, &s.url, &s.body, NOW),
            Err(Reject::KeyExpired),
            "{}",
            spec.id
        );
        let one_expired = ring(spec, &[(0, Some(NOW - 1)), (1, None)]);
        assert_eq!(
            verify(spec, &one_expired, &s, &s.url, &s.body, NOW),
            Err(Reject::SignatureMismatch),
            "{}: an expired key must not match",
            spec.id
        );
    }
}

#[test]
fn stale_and_future_timestamps_are_rejected_where_signed() {
    for spec in PROVIDERS.iter().filter(|p| p.signs_time) {
        let keys = ring(spec, &[(0, None)]);
        for (signed, skew) in [(NOW - 301, 301), (NOW + 301, -301)] {
            let s = sign(spec, 0, signed);
            let got = verify(spec, &keys, &s, &s.url, &s.body, NOW);
            assert_eq!(
                got,
                Err(Reject::TimestampOutOfWindow {
                    skew_secs: skew,
                    tolerance_secs: 300
                }),
                "{}: signed at {signed}",
                spec.id
            );
            assert_eq!(
                verify(spec, &keys, &s, &s.url, &s.body, signed),
                Ok("key0".into()),
                "{}",
                spec.id
            );
        }
    }
}

#[test]
fn without_its_signature_headers_a_request_is_missing_credentials() {
    for spec in PROVIDERS {
        let s = sign(spec, 0, NOW);
        let keys = ring(spec, &[(0, None)]);
        let mut stripped = s.clone();
        for (n, _) in signature_headers(spec) {
            stripped = with_header(&stripped, &n, None);
        }
        let got = verify(spec, &keys, &stripped, &s.url, &s.body, NOW);
        assert!(
            matches!(got, Err(Reject::SignatureMissing { .. })),
            "{}: {got:?}",
            spec.id
        );
        // Any other header removed: a verdict, never a panic.
        for (name, _) in &s.headers {
            let _ = verify(
                spec,
                &keys,
                &with_header(&s, name, None),
                &s.url,
                &s.body,
                NOW,
            );
        }
    }
}

#[test]
fn diagnosis_finds_a_proxy_that_hides_https() {
    for spec in PROVIDERS {
        let keys = ring(spec, &[(0, None)]);
        let v = (spec.build)(&opts_for(spec.id), &keys, &Settings::default()).unwrap();
        if !v.signs_url() {
            continue;
        }
        let s = sign(spec, 0, NOW);
        let seen = s.url.replacen("https://", "http://", 1);
        let headers = s.header_map();
        let req = Request {
            method: &s.method,
            url: &seen,
            headers: &headers,
            body: &s.body,
        };
        if v.verify(&req, NOW).is_ok() {
            // The scheme signs the path but not the scheme (Sinch voice): nothing to diagnose.
            continue;
        }
        assert_eq!(
            v.verify(&req, NOW).map(|_| ()),
            Err(Reject::SignatureMismatch),
            "{}",
            spec.id
        );
        let d = diagnose::explain(v.as_ref(), &req, NOW, &diagnose::Hints::default())
            .unwrap_or_else(|| panic!("{}: no diagnosis", spec.id));
        assert_eq!(d.code, "scheme", "{}: {d:?}", spec.id);
        assert_eq!(d.signed_url.as_deref(), Some(s.url.as_str()), "{}", spec.id);
        assert!(d.message.contains("X-Forwarded-Proto"), "{}", spec.id);
    }
}
