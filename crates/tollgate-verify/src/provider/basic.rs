//! HTTP Basic credentials (RFC 7617) for senders that sign nothing: Bandwidth's callbacks, and
//! Twilio or others when the webhook URL carries `user:password@`.
//!
//! Each key is the text `user:password`. This proves only that the sender knows the credentials:
//! nothing covers the body or a time, so a captured request can be altered or replayed, which
//! `tollgate check` says. Credentials are compared as SHA-256 digests in constant time, so neither
//! a matching username prefix nor the credential's length shows in the timing.

use sha2::{Digest, Sha256};

use super::{parse_options, Options, ProviderSpec, Settings, SignInput, Signed, Verifier};
use crate::encoding::{b64, b64_signature, ct_eq};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, Secret};
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "basic",
    summary: "HTTP Basic credentials (Bandwidth, user:password@ webhook URLs): no integrity or replay protection",
    signs_time: false,
    build,
    sign,
    verify_key_for: super::same_key,
    sample,
    lint,
};

/// Basic auth has no options; the struct exists so unknown keys are refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicOptions {}

const AUTHORIZATION: &str = "authorization";

/// Longest `user:password` accepted, so its base64 form stays under the signature length limit.
const MAX_CREDENTIAL_LEN: usize = 512;

#[derive(Debug)]
struct Basic {
    /// SHA-256 of each key's `user:password`.
    keys: Prepared<[u8; 32]>,
}

fn build(opts: &Options, keys: &KeyRing, _: &Settings) -> Result<Box<dyn Verifier>, BuildError> {
    let _: BasicOptions = parse_options(opts)?;
    let keys = keys.prepare(|s| {
        let cred = s.expose();
        if !cred.contains(&b':') {
            return Err(BuildError::Key("Basic key must be user:password".into()));
        }
        if cred.len() > MAX_CREDENTIAL_LEN {
            return Err(BuildError::Key(format!(
                "Basic credentials longer than {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        Ok(Sha256::digest(cred).into())
    })?;
    Ok(Box::new(Basic { keys }))
}

impl Verifier for Basic {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let value = req.require_header(
            AUTHORIZATION,
            Reject::SignatureMissing {
                header: AUTHORIZATION,
            },
        )?;
        let (scheme, encoded) = value
            .trim()
            .split_once(' ')
            .ok_or(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "not Basic credentials",
            })?;
        // The scheme name is case-insensitive (RFC 7235 §2.1).
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "not Basic credentials",
            });
        }
        let cred = b64_signature(encoded.trim_start(), AUTHORIZATION)?;
        let digest: [u8; 32] = Sha256::digest(&cred).into();
        // Every live key is compared, so the timing does not reveal which one matched.
        let mut matched = None;
        for key in self.keys.live(now)? {
            if ct_eq(&key.state, &digest) && matched.is_none() {
                matched = Some(key.label.clone());
            }
        }
        matched
            .map(|label| Verified::new(SPEC.id, "basic", label))
            .ok_or(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        false
    }
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let _: BasicOptions = parse_options(opts)?;
    if !secret.expose().contains(&b':') {
        return Err(SignError("Basic key must be user:password".into()));
    }
    let mut headers = vec![(
        AUTHORIZATION.to_owned(),
        format!("Basic {}", b64(secret.expose())),
    )];
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

fn sample(_: &Options, url: &str) -> SignInput {
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/json".into()),
        body: br#"[{"type":"message-delivered","time":"2026-11-23T10:00:00.000Z","description":"ok","to":"+14155550199","message":{"id":"1661365814859loidf7mcwd4qacn7","owner":"+14155550100","applicationId":"93de2206-9669-4e07-948d-329f4b722ee2","time":"2026-11-23T09:59:59.000Z","segmentCount":1,"direction":"out","to":["+14155550199"],"from":"+14155550100","text":"Hello"}}]"#.to_vec(),
        now: 0,
        nonce: String::new(),
    }
}

fn lint(_: &Options) -> Vec<String> {
    vec![
        "Basic auth proves only that the sender knows the credentials: the body is not signed and nothing stops a replay; prefer a signing scheme and keep allow_ips on this route".to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use http::HeaderMap;

    fn verifier(keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        build(&Options::new(), &ring, &Settings::default()).unwrap()
    }

    fn check(v: &dyn Verifier, auth: Option<&str>) -> Result<Verified, Reject> {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, a.parse().unwrap());
        }
        v.verify(
            &Request {
                method: "POST",
                url: "https://example.com/hook",
                headers: &h,
                body: b"{}",
            },
            0,
        )
    }

    // RFC 7617 §2 example.
    const RFC_CRED: &str = "Aladdin:open sesame";
    const RFC_HEADER: &str = "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==";

    #[test]
    fn rfc7617_example_verifies_and_signs_identically() {
        let v = verifier(&[("bw", RFC_CRED)]);
        let ok = check(&*v, Some(RFC_HEADER)).unwrap();
        assert_eq!(
            (ok.provider(), ok.scheme(), ok.key_label(), ok.signed_time()),
            ("basic", "basic", "bw", None)
        );
        let signed = sign(
            &Options::new(),
            &Secret::new(RFC_CRED),
            &sample(&Options::new(), "https://example.com/hook"),
        )
        .unwrap();
        assert!(signed
            .headers
            .contains(&(AUTHORIZATION.into(), RFC_HEADER.into())));
        assert!(signed
            .headers
            .contains(&("content-type".into(), "application/json".into())));
    }

    #[test]
    fn scheme_word_is_case_insensitive() {
        let v = verifier(&[("bw", RFC_CRED)]);
        for h in [
            "basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "BASIC QWxhZGRpbjpvcGVuIHNlc2FtZQ",
        ] {
            assert!(check(&*v, Some(h)).is_ok(), "{h}");
        }
    }

    #[test]
    fn every_single_byte_change_of_the_credential_is_rejected() {
        let v = verifier(&[("bw", RFC_CRED)]);
        for i in 0..RFC_CRED.len() {
            let mut c = RFC_CRED.as_bytes().to_vec();
            c[i] ^= 0x01;
            assert_eq!(
                check(&*v, Some(&format!("Basic {}", b64(&c)))),
                Err(Reject::SignatureMismatch),
                "byte {i}"
            );
        }
        // A prefix or an extension of the credential is not the credential.
        for c in [
            "Aladdin:open sesam",
            "Aladdin:open sesame!",
            "Aladdin:",
            ":",
        ] {
            assert_eq!(
                check(&*v, Some(&format!("Basic {}", b64(c.as_bytes())))),
                Err(Reject::SignatureMismatch),
                "{c:?}"
            );
        }
    }

    #[test]
    fn rotation_names_the_matching_key_and_wrong_keys_mismatch() {
        let v = verifier(&[("old", "Aladdin:old"), ("new", RFC_CRED)]);
        assert_eq!(check(&*v, Some(RFC_HEADER)).unwrap().key_label(), "new");
        let v = verifier(&[("other", "Aladdin:other")]);
        assert_eq!(check(&*v, Some(RFC_HEADER)), Err(Reject::SignatureMismatch));
    }

    #[test]
    fn expired_keys_are_reported() {
        let ring = KeyRing::new(vec![Key {
            not_after: Some(-1),
            ..Key::new("k", Secret::new(RFC_CRED))
        }])
        .unwrap();
        let v = build(&Options::new(), &ring, &Settings::default()).unwrap();
        assert_eq!(check(&*v, Some(RFC_HEADER)), Err(Reject::KeyExpired));
    }

    #[test]
    fn missing_and_malformed_headers_have_their_reasons() {
        let v = verifier(&[("bw", RFC_CRED)]);
        assert_eq!(
            check(&*v, None),
            Err(Reject::SignatureMissing {
                header: AUTHORIZATION
            })
        );
        for (h, why) in [
            (
                "Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
                "not Basic credentials",
            ),
            ("Basic", "not Basic credentials"),
            ("QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "not Basic credentials"),
            ("Basic ***", "not base64"),
        ] {
            assert_eq!(
                check(&*v, Some(h)),
                Err(Reject::SignatureMalformed {
                    header: AUTHORIZATION,
                    why
                }),
                "{h}"
            );
        }
        let huge = format!("Basic {}", "A".repeat(100_000));
        assert_eq!(
            check(&*v, Some(&huge)),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "too long"
            })
        );
        // Decoded bytes need not be UTF-8; they simply do not match.
        assert_eq!(
            check(&*v, Some(&format!("Basic {}", b64(&[0xff, b':', 0xfe])))),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn keys_without_a_colon_or_unknown_options_fail_the_build() {
        let ring = KeyRing::single(Secret::new("no-colon"));
        assert!(matches!(
            build(&Options::new(), &ring, &Settings::default()),
            Err(BuildError::Key(_))
        ));
        let mut o = Options::new();
        o.insert("realm".into(), serde_json::json!("x"));
        assert!(matches!(
            build(
                &o,
                &KeyRing::single(Secret::new(RFC_CRED)),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
        assert_eq!(lint(&Options::new()).len(), 1);
    }
}
