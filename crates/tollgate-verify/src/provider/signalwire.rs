//! SignalWire, verified as the current reference SDK does (`signalwire/signalwire-python`
//! `signalwire/core/security/webhook_validator.py` and `webhook_middleware.py`, mirrored by
//! `signalwire-typescript` `WebhookValidator.ts`). The key is the project's Signing Key.
//!
//! - `X-SignalWire-Sha256-Signature` (newer platform builds, JSON/SWML requests): lowercase hex
//!   HMAC-SHA256 over `url + raw body`. Checked first when present; when it does not match, the SDK
//!   falls back to the SHA-1 header below, and so does this verifier.
//! - `X-SignalWire-Signature`, or its Twilio-compatible alias `X-Twilio-Signature`:
//!   - Scheme A (RELAY/SWML/JSON): hex HMAC-SHA1 over `url + raw body`, the URL exactly as given.
//!   - Scheme B (compatibility/cXML): base64 HMAC-SHA1 over the Twilio-style string, URL followed
//!     by the form parameters stable-sorted by name (repeated names keep submission order, unlike
//!     Twilio), tried for the URL as given and, for default ports only, with the port added or
//!     removed; then with no parameters (JSON on the compatibility surface, bound through a
//!     `bodySHA256` query parameter whose hash must then match).
//!
//! Where the SDK accepts a body the signature does not cover (scheme B with no parameters and no
//! `bodySHA256`, over a non-empty body), this verifier refuses: a firewall cannot pass bytes it
//! cannot vouch for. Nothing is timestamped and SignalWire sends no event id that was found, so
//! replays can only be limited downstream.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::twilio::{body_hash_matches, body_sha256_param, canonical_params, KeyedMac, Repeats};
use super::{
    no_lints, parse_options, same_key, Options, ProviderSpec, Settings, SignInput, Signed, Verifier,
};
use crate::encoding::{b64, b64_signature, hex_signature, MAX_SIGNATURE_LEN};
use crate::form;
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, PreparedKey, Secret};
use crate::url::Url;
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "signalwire",
    summary: "SignalWire: X-SignalWire-Sha256-Signature (hex HMAC-SHA256 of url+body), X-SignalWire-Signature scheme A (hex HMAC-SHA1 of url+body) or B (Twilio-style compatibility)",
    signs_time: false,
    build,
    sign,
    verify_key_for: same_key,
    sample,
    lint: no_lints,
};

const SIGNATURE: &str = "x-signalwire-signature";
const SHA256_SIGNATURE: &str = "x-signalwire-sha256-signature";
const TWILIO_SIGNATURE: &str = "x-twilio-signature";

/// The SDK has no choices to make; the struct exists so unknown keys are refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalWireOptions {}

#[derive(Clone)]
struct KeyState {
    sha1: KeyedMac,
    sha256: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyState([redacted])")
    }
}

#[derive(Debug)]
struct SignalWire {
    keys: Prepared<KeyState>,
}

fn build(
    opts: &Options,
    keys: &KeyRing,
    _settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let _: SignalWireOptions = parse_options(opts)?;
    let keys = keys.prepare(|s| {
        if s.expose().is_empty() {
            // The SDK raises on an empty Signing Key: a configuration error, not a request's.
            return Err(BuildError::Key("the signing key is empty".into()));
        }
        Ok(KeyState {
            sha1: KeyedMac::sha1(s.expose())?,
            sha256: Hmac::new_from_slice(s.expose())
                .map_err(|_| BuildError::Key("unusable HMAC key".into()))?,
        })
    })?;
    Ok(Box::new(SignalWire { keys }))
}

/// Why the SHA-256 header, when present, did not verify (the SDK then falls back to SHA-1).
enum Sha256Outcome {
    Absent,
    Malformed(Reject),
    Mismatch,
}

impl Verifier for SignalWire {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let keys: Vec<&PreparedKey<KeyState>> = self.keys.live(now)?.collect();
        // The SDK hands the body over as text and refuses what is not UTF-8.
        if std::str::from_utf8(req.body).is_err() {
            return Err(Reject::BodyMalformed {
                why: "body is not UTF-8",
            });
        }
        let url = req.url;

        let mut sha256 = Sha256Outcome::Absent;
        if let Some(text) = req.header(SHA256_SIGNATURE)?.filter(|s| !s.is_empty()) {
            match hex_signature(text, SHA256_SIGNATURE) {
                Ok(tag) if tag.len() == 32 => {
                    for key in &keys {
                        let mut mac = key.state.sha256.clone();
                        mac.update(url.as_bytes());
                        mac.update(req.body);
                        if mac.verify_slice(&tag).is_ok() {
                            return Ok(Verified::new(SPEC.id, "a-sha256", key.label.clone()));
                        }
                    }
                    sha256 = Sha256Outcome::Mismatch;
                }
                Ok(_) => {
                    sha256 = Sha256Outcome::Malformed(Reject::SignatureMalformed {
                        header: SHA256_SIGNATURE,
                        why: "not 32 bytes",
                    })
                }
                Err(e) => sha256 = Sha256Outcome::Malformed(e),
            }
        }

        // As the SDK: the SignalWire header when present (even empty), else the Twilio alias.
        let (header, text) = match req.header(SIGNATURE)? {
            Some(s) => (SIGNATURE, s),
            None => match req.header(TWILIO_SIGNATURE)? {
                Some(s) => (TWILIO_SIGNATURE, s),
                None => (SIGNATURE, ""),
            },
        };
        if text.is_empty() {
            return Err(match sha256 {
                Sha256Outcome::Absent => Reject::SignatureMissing { header: SIGNATURE },
                Sha256Outcome::Malformed(r) => r,
                Sha256Outcome::Mismatch => Reject::SignatureMismatch,
            });
        }
        if text.len() > MAX_SIGNATURE_LEN {
            return Err(Reject::SignatureMalformed {
                header,
                why: "too long",
            });
        }

        // Scheme A's 40 hex characters never decode as scheme B's 20-byte base64, so the form of
        // the signature says which scheme to compute: one decode, no wasted MACs.
        if text.len() == 40 {
            if let Ok(tag) = hex_signature(text, header) {
                return self.scheme_a(&keys, url, req.body, &tag);
            }
        }
        let tag = b64_signature(text, header)?;
        if tag.len() != 20 {
            return Err(Reject::SignatureMalformed {
                header,
                why: "neither 40 hex characters nor base64 of 20 bytes",
            });
        }
        self.scheme_b(&keys, req, &tag)
    }

    fn signs_url(&self) -> bool {
        true
    }
}

impl SignalWire {
    fn scheme_a(
        &self,
        keys: &[&PreparedKey<KeyState>],
        url: &str,
        body: &[u8],
        tag: &[u8],
    ) -> Result<Verified, Reject> {
        keys.iter()
            .find(|key| {
                let mut mac = key.state.sha1.clone();
                mac.update(url.as_bytes());
                mac.update(body);
                mac.verify(tag)
            })
            .map(|key| Verified::new(SPEC.id, "a", key.label.clone()))
            .ok_or(Reject::SignatureMismatch)
    }

    fn scheme_b(
        &self,
        keys: &[&PreparedKey<KeyState>],
        req: &Request<'_>,
        tag: &[u8],
    ) -> Result<Verified, Reject> {
        // The SDK parses every body as a form, whatever its content type.
        let params = canonical_params(req.body, Repeats::SubmissionOrder);
        let no_pairs = form::is_empty(req.body);
        let mut hash_mismatch = false;
        // `candidate_urls` starts with the URL as received, by far the likeliest: the others
        // (which cost a parse and two allocations) are only built when it does not match.
        let candidates = std::iter::once(Cow::Borrowed(req.url)).chain(
            std::iter::once_with(|| candidate_urls(req.url))
                .flat_map(|all| all.into_iter().skip(1)),
        );
        for candidate in candidates {
            let body_hash = Url::parse(&candidate)
                .ok()
                .and_then(|u| body_sha256_param(&u));
            // Parsed parameters first, then none (JSON on the compatibility surface); the latter
            // only when something binds the body, or there is no body.
            let shapes: &[bool] = if no_pairs {
                &[false]
            } else if body_hash.is_some() || req.body.is_empty() {
                &[true, false]
            } else {
                &[true]
            };
            for &with_params in shapes {
                let matched = keys.iter().find(|key| {
                    let mut mac = key.state.sha1.clone();
                    mac.update(candidate.as_bytes());
                    if with_params {
                        mac.update(&params);
                    }
                    mac.verify(tag)
                });
                let Some(key) = matched else { continue };
                match &body_hash {
                    Some(expected) if !body_hash_matches(expected, req.body) => {
                        // The SDK keeps trying the other shapes and URLs.
                        hash_mismatch = true;
                    }
                    _ => return Ok(Verified::new(SPEC.id, "b", key.label.clone())),
                }
            }
        }
        if hash_mismatch {
            return Err(Reject::BodyHashMismatch);
        }
        if !no_pairs && !req.body.is_empty() {
            // Tell apart a URL-only signature over an uncovered body, which the SDK would accept.
            let url_only = keys.iter().any(|key| {
                candidate_urls(req.url).iter().any(|c| {
                    let mut mac = key.state.sha1.clone();
                    mac.update(c.as_bytes());
                    mac.verify(tag)
                })
            });
            if url_only {
                return Err(Reject::Unsupported {
                    what: "a signature over the URL alone does not cover this body (no bodySHA256)",
                });
            }
        }
        Err(Reject::SignatureMismatch)
    }
}

/// The URL variants scheme B tries: as given first; with no port, the default port added; with
/// the default port, the port removed; a non-default port only as given. The python SDK rebuilds
/// the variant from `hostname` (lowercased, userinfo dropped), the TypeScript one keeps the
/// authority as written; both forms are tried when they differ.
fn candidate_urls(url: &str) -> Vec<Cow<'_, str>> {
    let mut out: Vec<Cow<'_, str>> = vec![Cow::Borrowed(url)];
    let Ok(u) = Url::parse(url) else {
        return out;
    };
    let std_port = u.default_port();
    let port = match u.port {
        None => Some(std_port),
        Some(p) if p == std_port => None,
        Some(_) => return out,
    };
    let fragment = url.split_once('#').map(|(_, f)| f);
    let mut typescript = u.to_string_with_port(port);
    let lower_host = u.host.to_ascii_lowercase();
    let mut python = Url {
        userinfo: None,
        host: &lower_host,
        ..u
    }
    .to_string_with_port(port);
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        for s in [&mut typescript, &mut python] {
            s.push('#');
            s.push_str(f);
        }
    }
    for s in [typescript, python] {
        if !out.iter().any(|o| **o == *s) {
            out.push(Cow::Owned(s));
        }
    }
    out
}

fn is_form(ct: Option<&str>) -> bool {
    ct.is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let _: SignalWireOptions = parse_options(opts)?;
    let key = secret.expose();
    let mut headers = Vec::new();
    if is_form(input.content_type.as_deref()) {
        let mut mac = KeyedMac::sha1(key)?;
        mac.update(input.url.as_bytes());
        mac.update(&canonical_params(&input.body, Repeats::SubmissionOrder));
        headers.push((SIGNATURE.to_owned(), b64(&mac.finalize())));
    } else {
        // RELAY/SWML requests carry both the SHA-1 and the SHA-256 signature of url + body.
        let mut mac = KeyedMac::sha1(key)?;
        mac.update(input.url.as_bytes());
        mac.update(&input.body);
        headers.push((SIGNATURE.to_owned(), hex::encode(mac.finalize())));
        let mut mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| SignError("unusable HMAC key".into()))?;
        mac.update(input.url.as_bytes());
        mac.update(&input.body);
        headers.push((
            SHA256_SIGNATURE.to_owned(),
            hex::encode(mac.finalize().into_bytes()),
        ));
    }
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
    // A compatibility (cXML) inbound-call webhook, as the legacy SDK's captured vectors show.
    let params: &[(&str, &str)] = &[
        ("AccountSid", "6bfbbe86-a901-4197-8759-2a0de1fa319d"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "a97d4e8a-6047-4e2b-be48-fb96b33b5642"),
        ("CallStatus", "ringing"),
        ("CallbackSource", "call-progress-events"),
        ("Called", "+12089806814"),
        ("CalledCity", "BOISE"),
        ("CalledCountry", "US"),
        ("CalledState", "ID"),
        ("Caller", "+12135877632"),
        ("CallerCity", "LOS ANGELES"),
        ("CallerCountry", "US"),
        ("CallerName", "JANE DOE"),
        ("CallerState", "CA"),
        ("Direction", "inbound"),
        ("ForwardedFrom", ""),
        ("From", "+12135877632"),
        ("FromCity", "LOS ANGELES"),
        ("FromCountry", "US"),
        ("FromState", "CA"),
        ("HangupBy", "sip:+17063958228@sip.swire.io"),
        ("SipResultCode", "180"),
        ("Timestamp", "Thu, 09 Nov 2023 14:40:55 +0000"),
        ("To", "+12089806814"),
        ("ToCity", "BOISE"),
        ("ToCountry", "US"),
        ("ToState", "ID"),
    ];
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/x-www-form-urlencoded".into()),
        body: form::encode_pairs(params).into_bytes(),
        now: 0,
        nonce: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use http::HeaderMap;

    const KEY_A: &str = "PSKtest1234567890abcdef";
    const URL_A: &str = "https://example.ngrok.io/webhook";
    const BODY_A: &str =
        r#"{"event":"call.state","params":{"call_id":"abc-123","state":"answered"}}"#;
    const FORM: &str = "application/x-www-form-urlencoded";

    fn verifier(keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        build(&Options::new(), &ring, &Settings::default()).unwrap()
    }

    fn run(
        v: &dyn Verifier,
        url: &str,
        hdrs: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Verified, Reject> {
        let mut h = HeaderMap::new();
        for (k, val) in hdrs {
            h.append(
                http::HeaderName::try_from(*k).unwrap(),
                http::HeaderValue::from_str(val).unwrap(),
            );
        }
        v.verify(
            &Request {
                method: "POST",
                url,
                headers: &h,
                body,
            },
            0,
        )
    }

    fn sha1_b64(key: &str, msg: &str) -> String {
        let mut m = KeyedMac::sha1(key.as_bytes()).unwrap();
        m.update(msg.as_bytes());
        b64(&m.finalize())
    }

    fn sha256_hex(key: &str, msg: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        m.update(msg.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn canonical_vectors_a_b_c() {
        let v = verifier(&[("old", "nope"), ("psk", KEY_A)]);
        let ok = run(
            &*v,
            URL_A,
            &[(SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f")],
            BODY_A.as_bytes(),
        )
        .unwrap();
        assert_eq!((ok.scheme(), ok.key_label()), ("a", "psk"));
        assert_eq!(
            run(
                &*v,
                URL_A,
                &[(SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f")],
                BODY_A.replace("answered", "ringing").as_bytes()
            ),
            Err(Reject::SignatureMismatch)
        );
        assert_eq!(
            run(
                &*v,
                "https://example.ngrok.io/different",
                &[(SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f")],
                BODY_A.as_bytes()
            ),
            Err(Reject::SignatureMismatch)
        );

        let vb = verifier(&[("k", "12345")]);
        let body = "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
        let ok = run(
            &*vb,
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &[
                (TWILIO_SIGNATURE, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                ("content-type", FORM),
            ],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.scheme(), "b");

        let url_c = "https://example.ngrok.io/webhook?bodySHA256=69f3cbfc18e386ef8236cb7008cd5a54b7fed637a8cb3373b5a1591d7f0fd5f4";
        let ok = run(
            &*v,
            url_c,
            &[(SIGNATURE, "dfO9ek8mxyFtn2nMz24plPmPfIY=")],
            br#"{"event":"call.state"}"#,
        )
        .unwrap();
        assert_eq!(ok.scheme(), "b");
        assert_eq!(
            run(
                &*v,
                url_c,
                &[(SIGNATURE, "dfO9ek8mxyFtn2nMz24plPmPfIY=")],
                br#"{"event":"DIFFERENT"}"#
            ),
            Err(Reject::BodyHashMismatch)
        );
    }

    #[test]
    fn sha256_header_is_preferred_and_falls_back() {
        let v = verifier(&[("psk", KEY_A)]);
        let good = sha256_hex(KEY_A, &format!("{URL_A}{BODY_A}"));
        let ok = run(
            &*v,
            URL_A,
            &[(SHA256_SIGNATURE, &good), (SIGNATURE, "bad")],
            BODY_A.as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.scheme(), "a-sha256");
        // A bad SHA-256 signature falls back to the SHA-1 header.
        let bad = sha256_hex("wrong-key", &format!("{URL_A}{BODY_A}"));
        let ok = run(
            &*v,
            URL_A,
            &[
                (SHA256_SIGNATURE, &bad),
                (SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f"),
            ],
            BODY_A.as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.scheme(), "a");
        // ...and without one, the failed SHA-256 check is the answer.
        assert_eq!(
            run(&*v, URL_A, &[(SHA256_SIGNATURE, &bad)], BODY_A.as_bytes()),
            Err(Reject::SignatureMismatch)
        );
        assert!(matches!(
            run(&*v, URL_A, &[(SHA256_SIGNATURE, "zz")], BODY_A.as_bytes()),
            Err(Reject::SignatureMalformed {
                header: SHA256_SIGNATURE,
                ..
            })
        ));
        // The SHA-1 vector is not a SHA-256 signature.
        assert!(matches!(
            run(
                &*v,
                URL_A,
                &[(SHA256_SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f")],
                BODY_A.as_bytes()
            ),
            Err(Reject::SignatureMalformed { .. })
        ));
        let tampered = BODY_A.replace("answered", "ringing");
        assert_eq!(
            run(
                &*v,
                URL_A,
                &[(SHA256_SIGNATURE, &good)],
                tampered.as_bytes()
            ),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn legacy_package_captured_vectors() {
        // signalwire 2.1.1 signalwire/tests/test_request_validator.py, real platform traffic.
        let v = verifier(&[("k", "PSK_7TruNcSNTxp4zNrykMj4EPzF")]);
        let body = r#"{"call":{"call_id":"b5d63b2e-f75b-4dc8-b6d4-269b635f96c0","node_id":"fa3570ae-f8bd-42c2-83f4-9950d906c91b@us-west","segment_id":"b5d63b2e-f75b-4dc8-b6d4-269b635f96c0","call_state":"created","direction":"inbound","type":"phone","from":"+12135877632","to":"+12089806814","from_number":"+12135877632","to_number":"+12089806814","project_id":"4b7ae78a-d02e-4889-a63b-08b156d5916e","space_id":"62615f44-2a34-4235-b38b-76b5a1de6ef8"},"vars":{}}"#;
        assert_eq!(body.len(), 438);
        let ok = run(
            &*v,
            "https://81f2-2-45-18-191.ngrok-free.app/",
            &[(SIGNATURE, "b18500437ebb010220ddd770cbe6fd531ea0ba0d")],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.scheme(), "a");

        let v = verifier(&[("k", "PSK_V3bF8oyeRNpJWGoRWHNYQMUU")]);
        let body = form::encode_pairs(&[
            ("CallSid", "a97d4e8a-6047-4e2b-be48-fb96b33b5642"),
            ("AccountSid", "6bfbbe86-a901-4197-8759-2a0de1fa319d"),
            ("ApiVersion", "2010-04-01"),
            ("Direction", "outbound-api"),
            ("From", "sip:+17063958228@sip.swire.io"),
            ("To", "sip:jpsantos@joaosantos-2a0de1fa319d.sip.swire.io"),
            ("Timestamp", "Thu, 09 Nov 2023 14:40:55 +0000"),
            ("CallStatus", "no-answer"),
            ("CallbackSource", "call-progress-events"),
            ("HangupDirection", "outbound"),
            ("HangupBy", "sip:+17063958228@sip.swire.io"),
            ("SipResultCode", "487"),
        ]);
        let ok = run(
            &*v,
            "https://675d-189-71-169-171.ngrok-free.app/voice",
            &[
                (TWILIO_SIGNATURE, "muUMpldcBHlzuXGZ5gbw1ETZCYA="),
                ("content-type", FORM),
            ],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.scheme(), "b");
    }

    #[test]
    fn repeated_keys_keep_submission_order() {
        let v = verifier(&[("k", "test-key")]);
        let url = "https://example.com/hook";
        let sig = sha1_b64("test-key", &format!("{url}ToaTob"));
        assert!(run(&*v, url, &[(SIGNATURE, &sig)], b"To=a&To=b").is_ok());
        assert_eq!(
            run(&*v, url, &[(SIGNATURE, &sig)], b"To=b&To=a"),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn port_variants_only_for_default_ports() {
        let v = verifier(&[("k", "test-key")]);
        let sig = sha1_b64("test-key", "https://example.com:443/webhook");
        assert!(run(
            &*v,
            "https://example.com/webhook",
            &[(SIGNATURE, &sig)],
            b""
        )
        .is_ok());
        let sig = sha1_b64("test-key", "https://example.com/webhook");
        assert!(run(
            &*v,
            "https://example.com:443/webhook",
            &[(SIGNATURE, &sig)],
            b""
        )
        .is_ok());
        let sig = sha1_b64("test-key", "http://example.com:80/path");
        assert!(run(&*v, "http://example.com/path", &[(SIGNATURE, &sig)], b"").is_ok());
        // A non-default port is used only as given (unlike twilio-python).
        let sig = sha1_b64("test-key", "https://example.com/webhook");
        assert_eq!(
            run(
                &*v,
                "https://example.com:8443/webhook",
                &[(SIGNATURE, &sig)],
                b""
            ),
            Err(Reject::SignatureMismatch)
        );
        // Scheme A takes the URL exactly as given.
        let mut m = KeyedMac::sha1(b"test-key").unwrap();
        m.update(b"https://example.com:443/webhook{}");
        let hex_sig = hex::encode(m.finalize());
        assert_eq!(
            run(
                &*v,
                "https://example.com/webhook",
                &[(SIGNATURE, &hex_sig)],
                b"{}"
            ),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn url_only_signature_does_not_cover_a_body() {
        // The SDK would accept this (scheme B, empty params, no bodySHA256); the firewall refuses.
        let v = verifier(&[("k", "test-key")]);
        let sig = sha1_b64("test-key", "https://example.com:443/webhook");
        assert_eq!(
            run(
                &*v,
                "https://example.com/webhook",
                &[(SIGNATURE, &sig)],
                b"{}"
            ),
            Err(Reject::Unsupported {
                what: "a signature over the URL alone does not cover this body (no bodySHA256)"
            })
        );
    }

    #[test]
    fn missing_malformed_and_non_utf8() {
        let v = verifier(&[("k", KEY_A)]);
        assert_eq!(
            run(&*v, URL_A, &[], BODY_A.as_bytes()),
            Err(Reject::SignatureMissing { header: SIGNATURE })
        );
        assert_eq!(
            run(&*v, URL_A, &[(SIGNATURE, "")], BODY_A.as_bytes()),
            Err(Reject::SignatureMissing { header: SIGNATURE })
        );
        for garbage in ["xyz", "!!!!", "%%notbase64%%"] {
            assert!(
                matches!(
                    run(&*v, URL_A, &[(SIGNATURE, garbage)], BODY_A.as_bytes()),
                    Err(Reject::SignatureMalformed { .. })
                ),
                "{garbage}"
            );
        }
        let huge = "a".repeat(100_000);
        assert!(matches!(
            run(&*v, URL_A, &[(SIGNATURE, &huge)], BODY_A.as_bytes()),
            Err(Reject::SignatureMalformed {
                why: "too long",
                ..
            })
        ));
        assert_eq!(
            run(
                &*v,
                URL_A,
                &[(SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f")],
                b"\xff\xfe"
            ),
            Err(Reject::BodyMalformed {
                why: "body is not UTF-8"
            })
        );
        let ring = KeyRing::new(vec![Key {
            not_after: Some(-1),
            ..Key::new("k", Secret::new(KEY_A))
        }])
        .unwrap();
        let v = build(&Options::new(), &ring, &Settings::default()).unwrap();
        assert_eq!(
            run(
                &*v,
                URL_A,
                &[(SIGNATURE, "c3c08c1fefaf9ee198a100d5906765a6f394bf0f")],
                BODY_A.as_bytes()
            ),
            Err(Reject::KeyExpired)
        );
    }

    fn round_trip(input: &SignInput) {
        let signed = sign(&Options::new(), &Secret::new(KEY_A), input).unwrap();
        let v = verifier(&[("old", "PSK_old"), ("new", KEY_A)]);
        let h = signed.header_map();
        let req = Request {
            method: &signed.method,
            url: &signed.url,
            headers: &h,
            body: &signed.body,
        };
        assert_eq!(v.verify(&req, 0).unwrap().key_label(), "new");
        for i in 0..signed.body.len() {
            let mut b = signed.body.clone();
            b[i] ^= 0x01;
            let got = v.verify(&req.with_body(&b), 0);
            assert!(
                matches!(
                    got,
                    Err(Reject::SignatureMismatch | Reject::BodyMalformed { .. })
                ),
                "body byte {i}: {got:?}"
            );
        }
        for i in 0..signed.url.len() {
            let mut u = signed.url.clone().into_bytes();
            u[i] ^= 0x01;
            let Ok(u) = String::from_utf8(u) else {
                continue;
            };
            assert!(v.verify(&req.with_url(&u), 0).is_err(), "url byte {i}: {u}");
        }
        // Each signature header on its own, tampered, is refused.
        for name in [SIGNATURE, SHA256_SIGNATURE] {
            let Some(sig) = h.get(name).and_then(|s| s.to_str().ok()) else {
                continue;
            };
            let mut only = HeaderMap::new();
            if let Some(ct) = h.get("content-type") {
                only.insert("content-type", ct.clone());
            }
            for i in 0..sig.len() {
                let mut s = sig.as_bytes().to_vec();
                s[i] = if s[i] == b'0' { b'1' } else { b'0' };
                only.insert(name, String::from_utf8(s).unwrap().parse().unwrap());
                let got = v.verify(
                    &Request {
                        headers: &only,
                        ..req
                    },
                    0,
                );
                assert!(
                    matches!(
                        got,
                        Err(Reject::SignatureMismatch | Reject::SignatureMalformed { .. })
                    ),
                    "{name} byte {i}: {got:?}"
                );
            }
        }
        let wrong = verifier(&[("k", "PSK_wrong")]);
        assert_eq!(wrong.verify(&req, 0), Err(Reject::SignatureMismatch));
    }

    #[test]
    fn sign_verify_round_trips_and_tamper_sweep() {
        round_trip(&sample(
            &Options::new(),
            "https://hooks.example.com/sw/voice?x=1",
        ));
        round_trip(&SignInput {
            method: "POST".into(),
            url: URL_A.into(),
            content_type: Some("application/json".into()),
            body: BODY_A.as_bytes().to_vec(),
            now: 0,
            nonce: String::new(),
        });
        let s = sample(&Options::new(), "https://x/");
        assert!(s.body.len() > 500, "{}", s.body.len());
    }

    #[test]
    fn unknown_options_are_refused() {
        let mut o = Options::new();
        o.insert("algorithm".into(), "hmac-sha1".into());
        assert!(matches!(
            build(
                &o,
                &KeyRing::single(Secret::new(KEY_A)),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
    }
}
