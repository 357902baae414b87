//! Standard Webhooks (standardwebhooks.com), also sent with `svix-` header names: HMAC-SHA256 (`v1`)
//! or Ed25519 (`v1a`) over `id.timestamp.body`, a space-separated list of signatures so senders can
//! rotate, `webhook-id` as the idempotency id.
//!
//! Keys: `whsec_<base64>` (the HMAC key is the decoded bytes, not the text; a key without the prefix
//! is taken as base64 too, as the reference Python library does) or `whpk_<base64 Ed25519 public
//! key>`. For signing, `whsec_…` or `whsk_<base64 32-byte seed or 64-byte keypair>`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    no_lints, parse_options, Options, ProviderSpec, Settings, SignInput, Signed, Verifier,
};
use crate::encoding::{b64, b64_exact, b64_key, ct_eq, MAX_SIGNATURE_LEN};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::{Known, Request};
use crate::secret::{KeyRing, Prepared, Secret};
use crate::time::{check_window, parse_unix};
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "standard-webhooks",
    summary: "Standard Webhooks / Svix: v1 HMAC-SHA256 (whsec_) and v1a Ed25519 (whpk_) over id.timestamp.body",
    signs_time: true,
    build,
    sign,
    verify_key_for,
    sample,
    lint: no_lints,
};

/// This scheme has no options; the struct exists so unknown keys are refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StandardWebhooksOptions {}

#[derive(Debug, Clone)]
enum KeyState {
    V1(Hmac<Sha256>),
    V1a(VerifyingKey),
}

#[derive(Debug)]
struct StandardWebhooks {
    keys: Prepared<KeyState>,
    tolerance_secs: u64,
}

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

fn build(
    opts: &Options,
    keys: &KeyRing,
    settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let _: StandardWebhooksOptions = parse_options(opts)?;
    let keys = keys.prepare(|s| {
        let text = s.expose_str()?;
        if let Some(pk) = text.strip_prefix("whpk_") {
            let bytes: [u8; 32] = b64_key(pk)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| BuildError::Key("whpk_ key is not base64 of 32 bytes".into()))?;
            let vk = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| BuildError::Key("whpk_ key is not an Ed25519 public key".into()))?;
            return Ok(KeyState::V1a(vk));
        }
        if text.starts_with("whsk_") {
            return Err(BuildError::Key(
                "whsk_ is a signing key; verification needs the whpk_ public key".into(),
            ));
        }
        Ok(KeyState::V1(hmac_key(text)?))
    })?;
    Ok(Box::new(StandardWebhooks {
        keys,
        tolerance_secs: settings.tolerance_secs,
    }))
}

fn hmac_key(text: &str) -> Result<Hmac<Sha256>, BuildError> {
    let raw = b64_key(text.strip_prefix("whsec_").unwrap_or(text))
        .ok_or_else(|| BuildError::Key("whsec_ secret is not base64".into()))?;
    if raw.is_empty() {
        return Err(BuildError::Key("whsec_ secret is empty".into()));
    }
    Hmac::new_from_slice(&raw).map_err(|_| BuildError::Key("unusable HMAC key".into()))
}

/// Reads a header under its `webhook-` name, falling back to the `svix-` one.
static ID_H: [Known; 2] = [Known::new(ID), Known::new("svix-id")];
static TIMESTAMP_H: [Known; 2] = [Known::new(TIMESTAMP), Known::new("svix-timestamp")];
static SIGNATURE_H: [Known; 2] = [Known::new(SIGNATURE), Known::new("svix-signature")];

/// Reads a header under its `webhook-` name, falling back to the `svix-` one.
fn header<'a>(req: &Request<'a>, names: &[Known; 2]) -> Result<Option<&'a str>, Reject> {
    match req.header_named(&names[0])? {
        Some(v) => Ok(Some(v)),
        None => req.header_named(&names[1]),
    }
}

/// Signatures considered from one header; a rotation list is two or three long, and more than
/// this is not a sender following the spec.
const MAX_SIGNATURES: usize = 8;

impl Verifier for StandardWebhooks {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let id = header(req, &ID_H)?.ok_or(Reject::SignatureMissing { header: ID })?;
        let ts_text =
            header(req, &TIMESTAMP_H)?.ok_or(Reject::TimestampMissing { header: TIMESTAMP })?;
        let sigs =
            header(req, &SIGNATURE_H)?.ok_or(Reject::SignatureMissing { header: SIGNATURE })?;
        let ts = parse_unix(ts_text, TIMESTAMP)?;
        check_window(ts, now, self.tolerance_secs)?;
        if sigs.len() > 16 * MAX_SIGNATURE_LEN {
            return Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "too long",
            });
        }

        // Decode the list once; unknown versions are skipped (the spec says so, for forward
        // compatibility), but a list with nothing usable in it is malformed.
        // Decoded on the stack: this runs for every request, forged or not.
        let mut v1_buf = [[0u8; 32]; MAX_SIGNATURES];
        let mut n1 = 0;
        let mut v1a_buf = [[0u8; 64]; MAX_SIGNATURES];
        let mut n1a = 0;
        for item in sigs.split(' ').filter(|s| !s.is_empty()) {
            match item.split_once(',') {
                Some(("v1", sig)) if n1 < MAX_SIGNATURES => {
                    if let Some(slot) = v1_buf.get_mut(n1) {
                        if b64_exact(sig, slot).is_some() {
                            n1 += 1;
                        }
                    }
                }
                Some(("v1a", sig)) if n1a < MAX_SIGNATURES => {
                    if let Some(slot) = v1a_buf.get_mut(n1a) {
                        if b64_exact(sig, slot).is_some() {
                            n1a += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        let v1 = v1_buf.get(..n1).unwrap_or_default();
        let v1a: Vec<Signature> = v1a_buf
            .get(..n1a)
            .unwrap_or_default()
            .iter()
            .map(Signature::from_bytes)
            .collect();
        if v1.is_empty() && v1a.is_empty() {
            return Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "no decodable v1 or v1a signature",
            });
        }

        for key in self.keys.live(now)? {
            let ok = match &key.state {
                KeyState::V1(mac) if !v1.is_empty() => {
                    let tag = signed_mac(mac.clone(), id, ts_text, req.body);
                    v1.iter().any(|s| ct_eq(s, &tag))
                }
                KeyState::V1a(vk) if !v1a.is_empty() => {
                    let msg = signed_bytes(id, ts_text, req.body);
                    v1a.iter().any(|s| vk.verify_strict(&msg, s).is_ok())
                }
                _ => false,
            };
            if ok {
                let scheme = if matches!(key.state, KeyState::V1(_)) {
                    "v1"
                } else {
                    "v1a"
                };
                return Ok(Verified::new(SPEC.id, scheme, key.label.clone())
                    .signed_at(Some(ts))
                    .event_id(Some(id.to_owned())));
            }
        }
        Err(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        false
    }
}

fn signed_mac(mut mac: Hmac<Sha256>, id: &str, ts: &str, body: &[u8]) -> [u8; 32] {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn signed_bytes(id: &str, ts: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    m.extend_from_slice(id.as_bytes());
    m.push(b'.');
    m.extend_from_slice(ts.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

fn signing_key(text: &str) -> Result<SigningKey, SignError> {
    let raw = b64_key(text).ok_or_else(|| SignError("whsk_ key is not base64".into()))?;
    match raw.len() {
        32 => Ok(SigningKey::from_bytes(
            &raw.try_into().map_err(|_| SignError("bad key".into()))?,
        )),
        64 => SigningKey::from_keypair_bytes(
            &raw.try_into().map_err(|_| SignError("bad key".into()))?,
        )
        .map_err(|_| SignError("whsk_ keypair is inconsistent".into())),
        _ => Err(SignError("whsk_ key must be 32 or 64 bytes".into())),
    }
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let _: StandardWebhooksOptions = parse_options(opts)?;
    let text = secret.expose_str()?;
    let ts = input.now.to_string();
    let signature = if let Some(sk) = text.strip_prefix("whsk_") {
        let sig = signing_key(sk)?.sign(&signed_bytes(&input.nonce, &ts, &input.body));
        format!("v1a,{}", b64(&sig.to_bytes()))
    } else {
        format!(
            "v1,{}",
            b64(&signed_mac(hmac_key(text)?, &input.nonce, &ts, &input.body))
        )
    };
    let mut headers = vec![
        (ID.to_owned(), input.nonce.clone()),
        (TIMESTAMP.to_owned(), ts),
        (SIGNATURE.to_owned(), signature),
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
    let text = secret.expose_str()?;
    match text.strip_prefix("whsk_") {
        Some(sk) => Ok(Secret::new(format!(
            "whpk_{}",
            b64(signing_key(sk)?.verifying_key().as_bytes())
        ))),
        None => Ok(secret.clone()),
    }
}

fn sample(_: &Options, url: &str) -> SignInput {
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/json".into()),
        body: br#"{"type":"call.completed","timestamp":"2026-11-23T10:00:00Z","data":{"call_id":"c_2Qx9","from":"+14155550100","to":"+14155550199","duration_secs":42}}"#.to_vec(),
        now: 0,
        nonce: "msg_2Qx9sample".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn verifier(keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| crate::Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        build(&Options::new(), &ring, &Settings::default()).unwrap()
    }

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ID, id.parse().unwrap());
        h.insert(TIMESTAMP, ts.parse().unwrap());
        h.insert(SIGNATURE, sig.parse().unwrap());
        h
    }

    // standard-webhooks/standard-webhooks libraries/python/tests/test_webhooks.py::test_sign_function
    // (same values in libraries/go/webhook_test.go TestWebhookSign).
    const SDK_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SDK_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SDK_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SDK_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn sdk_vector_verifies_and_names_the_key() {
        let v = verifier(&[
            ("old", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ("new", SDK_KEY),
        ]);
        let h = headers(SDK_ID, "1614265330", SDK_SIG);
        let req = Request {
            method: "POST",
            url: "https://x/",
            headers: &h,
            body: SDK_BODY,
        };
        let ok = v.verify(&req, 1614265330).unwrap();
        assert_eq!(
            (ok.scheme(), ok.key_label(), ok.signed_time()),
            ("v1", "new", Some(1614265330))
        );
        assert_eq!(ok.event_id_str(), Some(SDK_ID));
    }

    #[test]
    fn sdk_vector_signs_identically() {
        let input = SignInput {
            method: "POST".into(),
            url: "https://x/".into(),
            content_type: None,
            body: SDK_BODY.to_vec(),
            now: 1614265330,
            nonce: SDK_ID.into(),
        };
        let signed = sign(&Options::new(), &Secret::new(SDK_KEY), &input).unwrap();
        assert!(signed.headers.contains(&(SIGNATURE.into(), SDK_SIG.into())));
    }

    #[test]
    fn sdk_secret_variants_without_prefix_or_padding_verify() {
        // The python tests accept the key without `whsec_`; base64 padding is optional.
        for key in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SDK_KEY] {
            let v = verifier(&[("k", key)]);
            let h = headers(SDK_ID, "1614265330", SDK_SIG);
            let req = Request {
                method: "POST",
                url: "https://x/",
                headers: &h,
                body: SDK_BODY,
            };
            assert!(v.verify(&req, 1614265330).is_ok(), "{key}");
        }
    }

    #[test]
    fn v1a_derived_vector_verifies() {
        // PROVIDERS.md §6 [derived]: RFC 8032 test-1 key, same id/ts/body as the SDK vector.
        let v = verifier(&[("ed", "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")]);
        let sig = "v1a,fldxM4gAKugP6nnt1hdz3sgGfZ6d99nzrMFnZOELIxbzEHoVmAb2ADpkJK7zgPePmPsle0zV9jSeGlHFG2NVAw==";
        let h = headers(SDK_ID, "1614265330", sig);
        let req = Request {
            method: "POST",
            url: "https://x/",
            headers: &h,
            body: SDK_BODY,
        };
        assert_eq!(v.verify(&req, 1614265330).unwrap().scheme(), "v1a");
    }

    #[test]
    fn any_entry_of_a_rotation_list_matches_and_unknown_versions_are_skipped() {
        let v = verifier(&[("k", SDK_KEY)]);
        let list = format!("v2,abc v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SDK_SIG}");
        let h = headers(SDK_ID, "1614265330", &list);
        let req = Request {
            method: "POST",
            url: "https://x/",
            headers: &h,
            body: SDK_BODY,
        };
        assert!(v.verify(&req, 1614265330).is_ok());
    }

    #[test]
    fn empty_v1_signature_is_malformed_not_accepted() {
        // The reference go tests require `v1,` with an empty signature to fail.
        let v = verifier(&[("k", SDK_KEY)]);
        let h = headers(SDK_ID, "1614265330", "v1,");
        let req = Request {
            method: "POST",
            url: "https://x/",
            headers: &h,
            body: SDK_BODY,
        };
        assert_eq!(
            v.verify(&req, 1614265330),
            Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "no decodable v1 or v1a signature"
            })
        );
    }

    #[test]
    fn stale_future_and_tampered_are_rejected_with_their_reason() {
        let v = verifier(&[("k", SDK_KEY)]);
        let h = headers(SDK_ID, "1614265330", SDK_SIG);
        let req = Request {
            method: "POST",
            url: "https://x/",
            headers: &h,
            body: SDK_BODY,
        };
        assert_eq!(
            v.verify(&req, 1614265330 + 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            v.verify(&req, 1614265330 - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let req = Request {
            body: br#"{"test": 2432232315}"#,
            ..req
        };
        assert_eq!(v.verify(&req, 1614265330), Err(Reject::SignatureMismatch));
    }

    #[test]
    fn svix_header_names_are_accepted() {
        let v = verifier(&[("k", SDK_KEY)]);
        let mut h = HeaderMap::new();
        h.insert("svix-id", SDK_ID.parse().unwrap());
        h.insert("svix-timestamp", "1614265330".parse().unwrap());
        h.insert("svix-signature", SDK_SIG.parse().unwrap());
        let req = Request {
            method: "POST",
            url: "https://x/",
            headers: &h,
            body: SDK_BODY,
        };
        assert!(v.verify(&req, 1614265330).is_ok());
    }

    #[test]
    fn signing_keys_are_refused_for_verification() {
        let ring = KeyRing::single(Secret::new(
            "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
        ));
        assert!(matches!(
            build(&Options::new(), &ring, &Settings::default()),
            Err(BuildError::Key(_))
        ));
    }
}
