//! Telnyx API v2 webhooks: an Ed25519 signature (`telnyx-signature-ed25519`, base64 of 64 bytes)
//! over `timestamp + "|" + rawBody`, with the timestamp (`telnyx-timestamp`, unix seconds) checked
//! against the route's window in both directions, as the current Telnyx SDKs do.
//!
//! Keys: the account's Ed25519 public key, base64 of the 32 raw bytes (Mission Control → Keys &
//! Credentials); several may be configured while Telnyx rotates. For signing (CLI, tests) the secret
//! is the base64 32-byte seed or 64-byte keypair, and [`SPEC`]'s `verify_key_for` derives the public
//! key from it. The event id is the body's `data.id`, read only once the signature has verified.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::{
    no_lints, parse_options, Options, ProviderSpec, Settings, SignInput, Signed, Verifier,
};
use crate::encoding::{b64, b64_key, b64_signature};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, Secret};
use crate::time::{check_window, parse_unix};
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "telnyx",
    summary:
        "Telnyx API v2: Ed25519 over timestamp|body (telnyx-signature-ed25519, telnyx-timestamp)",
    signs_time: true,
    build,
    sign,
    verify_key_for,
    sample,
    lint: no_lints,
};

/// Telnyx has no options; the struct exists so unknown keys are refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TelnyxOptions {}

const SIGNATURE: &str = "telnyx-signature-ed25519";
const TIMESTAMP: &str = "telnyx-timestamp";

#[derive(Debug)]
struct Telnyx {
    keys: Prepared<VerifyingKey>,
    tolerance_secs: u64,
}

fn build(
    opts: &Options,
    keys: &KeyRing,
    settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let _: TelnyxOptions = parse_options(opts)?;
    let keys = keys.prepare(|s| public_key(s.expose_str()?))?;
    Ok(Box::new(Telnyx {
        keys,
        tolerance_secs: settings.tolerance_secs,
    }))
}

fn public_key(text: &str) -> Result<VerifyingKey, BuildError> {
    let raw =
        b64_key(text).ok_or_else(|| BuildError::Key("Telnyx public key is not base64".into()))?;
    let bytes: [u8; 32] = raw.try_into().map_err(|_| {
        BuildError::Key(
            "Telnyx public key must be base64 of 32 bytes (a 64-byte value is a signing keypair)"
                .into(),
        )
    })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| BuildError::Key("not an Ed25519 public key".into()))
}

impl Verifier for Telnyx {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let sig_text =
            req.require_header(SIGNATURE, Reject::SignatureMissing { header: SIGNATURE })?;
        let ts_text =
            req.require_header(TIMESTAMP, Reject::TimestampMissing { header: TIMESTAMP })?;
        let raw = b64_signature(sig_text, SIGNATURE)?;
        let sig = Signature::from_slice(&raw).map_err(|_| Reject::SignatureMalformed {
            header: SIGNATURE,
            why: "not 64 bytes",
        })?;
        let ts = parse_unix(ts_text, TIMESTAMP)?;
        check_window(ts, now, self.tolerance_secs)?;

        let keys = self.keys.live(now)?;
        let msg = signed_bytes(ts_text, req.body);
        for key in keys {
            // verify_strict refuses small-order keys and non-canonical signatures, which libsodium
            // (behind the python and node SDKs) refuses too.
            if key.state.verify_strict(&msg, &sig).is_ok() {
                return Ok(Verified::new(SPEC.id, "ed25519", key.label.clone())
                    .signed_at(Some(ts))
                    .event_id(event_id(req.body)));
            }
        }
        Err(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        false
    }
}

/// `data.id` of a Telnyx event. A body that is not such JSON is still a verified body, just one
/// without an id to deduplicate on.
fn event_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        id: String,
    }
    serde_json::from_slice::<Event>(body)
        .ok()
        .map(|e| e.data.id)
}

fn signed_bytes(ts: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ts.len() + 1 + body.len());
    m.extend_from_slice(ts.as_bytes());
    m.push(b'|');
    m.extend_from_slice(body);
    m
}

fn signing_key(secret: &Secret) -> Result<SigningKey, SignError> {
    let raw = b64_key(secret.expose_str()?)
        .ok_or_else(|| SignError("Telnyx signing key is not base64".into()))?;
    if let Ok(seed) = <[u8; 32]>::try_from(raw.as_slice()) {
        return Ok(SigningKey::from_bytes(&seed));
    }
    if let Ok(pair) = <[u8; 64]>::try_from(raw.as_slice()) {
        return SigningKey::from_keypair_bytes(&pair)
            .map_err(|_| SignError("Telnyx signing keypair is inconsistent".into()));
    }
    Err(SignError(
        "Telnyx signing key must be base64 of a 32-byte seed or 64-byte keypair".into(),
    ))
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let _: TelnyxOptions = parse_options(opts)?;
    let ts = input.now.to_string();
    let sig = signing_key(secret)?.sign(&signed_bytes(&ts, &input.body));
    let mut headers = vec![
        (SIGNATURE.to_owned(), b64(&sig.to_bytes())),
        (TIMESTAMP.to_owned(), ts),
    ];
    if let Some(ct) = &input.content_type {
        headers.push(("content-type".into(), ct.clone()));
    }
    Ok(Signed {
        method: input.method.clone(),
        url: input.url.clone(),
        headers,
        body: input.body.clone(),
    })
}

fn verify_key_for(_: &Options, secret: &Secret) -> Result<Secret, SignError> {
    Ok(Secret::new(b64(signing_key(secret)?
        .verifying_key()
        .as_bytes())))
}

fn sample(_: &Options, url: &str) -> SignInput {
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/json".into()),
        body: br#"{"data":{"event_type":"call.initiated","id":"0ccc7b54-4df3-4bca-a65a-3da1ecc777f0","occurred_at":"2026-11-23T10:00:00.212205Z","payload":{"call_control_id":"v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg","call_leg_id":"2dc6fc34-f9e0-11ea-b68e-02420a0f7768","call_session_id":"2dc1b3c8-f9e0-11ea-bc5a-02420a0f7768","caller_id_name":"+14155550100","client_state":null,"connection_id":"1684641123236054244","direction":"incoming","from":"+14155550100","start_time":"2026-11-23T10:00:00.212205Z","state":"parked","to":"+14155550199"},"record_type":"event"},"meta":{"attempt":1,"delivered_to":"https://example.com/webhooks/telnyx"}}"#.to_vec(),
        now: 0,
        nonce: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use http::HeaderMap;

    // RFC 8032 §7.1 test 1.
    const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    // PROVIDERS.md §4 [derived] vector.
    const TS: &str = "1700000000";
    const BODY: &[u8] =
        br#"{"data":{"event_type":"call.initiated","id":"0ccc7b54-4df3-4bca-a65a-3da1ecc777f0"}}"#;
    const SIG: &str =
        "Es5MFqOrJvkje4uCzSmFjAx511fL4rQAC3ZGU4AtJD5rRccxihbsY+CM2fYNIWAs1I5FBdBwgsCyxk2o4h0iCA==";
    // Another valid key (RFC 8032 test 2's public key).
    const OTHER_PUBLIC: &str = "PUAXw+hDiVqStwqnTRt+vJyYLM8uxJaMwM1V8Sr0Zgw=";

    fn seed_secret() -> Secret {
        Secret::new(b64(&hex::decode(SEED_HEX).unwrap()))
    }

    fn verifier(keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        build(&Options::new(), &ring, &Settings::default()).unwrap()
    }

    fn headers(sig: Option<&str>, ts: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(s) = sig {
            h.insert(SIGNATURE, s.parse().unwrap());
        }
        if let Some(t) = ts {
            h.insert(TIMESTAMP, t.parse().unwrap());
        }
        h
    }

    fn check(v: &dyn Verifier, h: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, Reject> {
        v.verify(
            &Request {
                method: "POST",
                url: "https://example.com/hook",
                headers: h,
                body,
            },
            now,
        )
    }

    #[test]
    fn derived_vector_verifies_inside_the_window_with_event_id() {
        let v = verifier(&[("k", PUBLIC)]);
        let ok = check(&*v, &headers(Some(SIG), Some(TS)), BODY, 1_700_000_100).unwrap();
        assert_eq!(
            (ok.provider(), ok.scheme(), ok.key_label(), ok.signed_time()),
            ("telnyx", "ed25519", "k", Some(1_700_000_000))
        );
        assert_eq!(
            ok.event_id_str(),
            Some("0ccc7b54-4df3-4bca-a65a-3da1ecc777f0")
        );
    }

    #[test]
    fn derived_vector_is_stale_after_the_window_and_refused_early() {
        let v = verifier(&[("k", PUBLIC)]);
        let h = headers(Some(SIG), Some(TS));
        assert_eq!(
            check(&*v, &h, BODY, 1_700_000_400),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 400,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(&*v, &h, BODY, 1_700_000_000 - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn signing_reproduces_the_derived_vector_and_derives_the_public_key() {
        let input = SignInput {
            method: "POST".into(),
            url: "https://example.com/hook".into(),
            content_type: Some("application/json".into()),
            body: BODY.to_vec(),
            now: 1_700_000_000,
            nonce: String::new(),
        };
        let signed = sign(&Options::new(), &seed_secret(), &input).unwrap();
        assert!(signed.headers.contains(&(SIGNATURE.into(), SIG.into())));
        assert!(signed.headers.contains(&(TIMESTAMP.into(), TS.into())));
        assert!(signed
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        let vk = verify_key_for(&Options::new(), &seed_secret()).unwrap();
        assert_eq!(vk.expose(), PUBLIC.as_bytes());
    }

    #[test]
    fn keypair_form_of_the_signing_key_is_accepted() {
        let mut pair = hex::decode(SEED_HEX).unwrap();
        pair.extend(b64_key(PUBLIC).unwrap());
        let vk = verify_key_for(&Options::new(), &Secret::new(b64(&pair))).unwrap();
        assert_eq!(vk.expose(), PUBLIC.as_bytes());
    }

    #[test]
    fn round_trip_of_the_sample() {
        let input = SignInput {
            now: 1_800_000_000,
            ..sample(&Options::new(), "https://example.com/hook")
        };
        assert!(input.body.len() > 600);
        let signed = sign(&Options::new(), &seed_secret(), &input).unwrap();
        let vk = verify_key_for(&Options::new(), &seed_secret()).unwrap();
        let v = verifier(&[("k", vk.expose_str().unwrap())]);
        let ok = check(&*v, &signed.header_map(), &signed.body, 1_800_000_010).unwrap();
        assert_eq!(
            ok.event_id_str(),
            Some("0ccc7b54-4df3-4bca-a65a-3da1ecc777f0")
        );
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let v = verifier(&[("k", PUBLIC)]);
        let now = 1_700_000_100;
        for i in 0..BODY.len() {
            let mut body = BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(
                check(&*v, &headers(Some(SIG), Some(TS)), &body, now),
                Err(Reject::SignatureMismatch),
                "body byte {i}"
            );
        }
        for i in 0..TS.len() {
            let mut ts = TS.as_bytes().to_vec();
            ts[i] = if ts[i] == b'9' { b'8' } else { ts[i] + 1 };
            let ts = String::from_utf8(ts).unwrap();
            let t: i64 = ts.parse().unwrap();
            let expected = if (now - t).abs() <= 300 {
                Reject::SignatureMismatch
            } else {
                Reject::TimestampOutOfWindow {
                    skew_secs: now - t,
                    tolerance_secs: 300,
                }
            };
            assert_eq!(
                check(&*v, &headers(Some(SIG), Some(&ts)), BODY, now),
                Err(expected),
                "timestamp byte {i}"
            );
        }
        let raw = b64_key(SIG).unwrap();
        for i in 0..raw.len() {
            let mut s = raw.clone();
            s[i] ^= 0x01;
            assert_eq!(
                check(&*v, &headers(Some(&b64(&s)), Some(TS)), BODY, now),
                Err(Reject::SignatureMismatch),
                "signature byte {i}"
            );
        }
    }

    #[test]
    fn wrong_key_mismatches_and_rotation_names_the_matching_key() {
        let v = verifier(&[("other", OTHER_PUBLIC)]);
        let h = headers(Some(SIG), Some(TS));
        assert_eq!(
            check(&*v, &h, BODY, 1_700_000_000),
            Err(Reject::SignatureMismatch)
        );
        let v = verifier(&[("old", OTHER_PUBLIC), ("new", PUBLIC)]);
        assert_eq!(
            check(&*v, &h, BODY, 1_700_000_000).unwrap().key_label(),
            "new"
        );
    }

    #[test]
    fn expired_keys_are_reported() {
        let ring = KeyRing::new(vec![Key {
            not_after: Some(1_600_000_000),
            ..Key::new("k", Secret::new(PUBLIC))
        }])
        .unwrap();
        let v = build(&Options::new(), &ring, &Settings::default()).unwrap();
        assert_eq!(
            check(&*v, &headers(Some(SIG), Some(TS)), BODY, 1_700_000_000),
            Err(Reject::KeyExpired)
        );
    }

    #[test]
    fn missing_headers_give_their_own_reject() {
        let v = verifier(&[("k", PUBLIC)]);
        assert_eq!(
            check(&*v, &headers(None, Some(TS)), BODY, 1_700_000_000),
            Err(Reject::SignatureMissing { header: SIGNATURE })
        );
        assert_eq!(
            check(&*v, &headers(Some(SIG), None), BODY, 1_700_000_000),
            Err(Reject::TimestampMissing { header: TIMESTAMP })
        );
    }

    #[test]
    fn malformed_inputs_are_rejected_without_panic() {
        let v = verifier(&[("k", PUBLIC)]);
        let now = 1_700_000_000;
        assert_eq!(
            check(&*v, &headers(Some("!!not base64!!"), Some(TS)), BODY, now),
            Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "not base64"
            })
        );
        assert_eq!(
            check(&*v, &headers(Some("AAEC"), Some(TS)), BODY, now),
            Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "not 64 bytes"
            })
        );
        let huge = "A".repeat(64 * 1024);
        assert_eq!(
            check(&*v, &headers(Some(&huge), Some(TS)), BODY, now),
            Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "too long"
            })
        );
        for ts in ["", "17e8", "-1700000000", "99999999999999999999"] {
            assert_eq!(
                check(&*v, &headers(Some(SIG), Some(ts)), BODY, now),
                Err(Reject::TimestampMalformed { header: TIMESTAMP }),
                "{ts:?}"
            );
        }
        // A signature over bytes that are not UTF-8 is still a signature over those bytes.
        let body = [0xff, 0xfe, 0x00, b'{'];
        let signed = sign(
            &Options::new(),
            &seed_secret(),
            &SignInput {
                method: "POST".into(),
                url: "https://example.com/hook".into(),
                content_type: None,
                body: body.to_vec(),
                now,
                nonce: String::new(),
            },
        )
        .unwrap();
        let ok = check(&*v, &signed.header_map(), &body, now).unwrap();
        assert_eq!(ok.event_id_str(), None);
        assert_eq!(
            check(&*v, &signed.header_map(), &body[..3], now),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn repeated_signature_header_is_ambiguous() {
        let v = verifier(&[("k", PUBLIC)]);
        let mut h = headers(Some(SIG), Some(TS));
        h.append(SIGNATURE, SIG.parse().unwrap());
        assert_eq!(
            check(&*v, &h, BODY, 1_700_000_000),
            Err(Reject::HeaderMalformed {
                header: SIGNATURE,
                why: "repeated"
            })
        );
    }

    #[test]
    fn unusable_keys_and_options_fail_the_build() {
        let bad = |k: &str| {
            build(
                &Options::new(),
                &KeyRing::single(Secret::new(k)),
                &Settings::default(),
            )
            .map(|_| ())
        };
        assert!(matches!(bad("not base64!"), Err(BuildError::Key(_))));
        assert!(matches!(bad("AAEC"), Err(BuildError::Key(_))));
        let mut opts = Options::new();
        opts.insert("tolerance".into(), serde_json::json!(5));
        assert!(matches!(
            build(
                &opts,
                &KeyRing::single(Secret::new(PUBLIC)),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
    }
}
