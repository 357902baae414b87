//! A generic HMAC scheme for senders without a provider of their own: GitHub-style
//! (`X-Hub-Signature-256: sha256=<hex>` over the body), Shopify-style (base64 over the body),
//! `{timestamp}.{body}` or `{id}.{timestamp}.{body}` with the parts in their own headers, and
//! Stripe-style (`t=<ts>,v1=<hex>[,v1=<hex>…]` in one header, over `{t}.{body}`).
//!
//! Keys are used as their UTF-8 bytes, never base64-decoded (Stripe's `whsec_…` secret is the text,
//! prefix included). Whenever the signed content includes a timestamp it is checked against the
//! route's window; without one, a captured request can be replayed until the gateway's dedupe
//! catches it, which `tollgate check` points out.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use ::hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};

use super::{parse_options, Options, ProviderSpec, Settings, SignInput, Signed, Verifier};
use crate::encoding::{b64, b64_signature, ct_eq, hex_signature, MAX_SIGNATURE_LEN};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, Secret};
use crate::time::{check_window, parse_unix};
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "hmac",
    summary: "Generic HMAC (GitHub, Shopify, Stripe-style and similar): configurable algorithm, header, encoding and signed content",
    // The default content is the body alone; the window is enforced whenever the configured
    // content signs a timestamp.
    signs_time: false,
    build,
    sign,
    verify_key_for: super::same_key,
    sample,
    lint,
};

/// A route's options.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HmacOptions {
    /// `sha256` (default), `sha384`, `sha512`, or `sha1` (only with `insecure_allow_sha1`).
    #[serde(default)]
    algorithm: Algorithm,
    /// Allows `algorithm = "sha1"`, for senders (legacy GitHub `X-Hub-Signature`) that offer
    /// nothing better.
    #[serde(default)]
    insecure_allow_sha1: bool,
    /// The header carrying the signature, e.g. `X-Hub-Signature-256`. Required.
    header: String,
    /// How the MAC is written: `hex` (default, either case accepted) or `base64`.
    #[serde(default)]
    encoding: Encoding,
    /// Text before the encoded MAC, e.g. `sha256=`; required to be present when set.
    #[serde(default)]
    prefix: Option<String>,
    /// What is signed: `body` (default), `{timestamp}.{body}` or `{id}.{timestamp}.{body}`.
    /// In `stripe` format only `{timestamp}.{body}` (the default there) is allowed.
    #[serde(default)]
    signed_content: Option<Content>,
    /// Header with the unix-seconds timestamp, required when `signed_content` signs it.
    #[serde(default)]
    timestamp_header: Option<String>,
    /// Header with the message id: signed when `signed_content` includes `{id}`, and reported as
    /// the event id for deduplication in any case.
    #[serde(default)]
    id_header: Option<String>,
    /// `plain` (default): the header holds `prefix` + the MAC. `stripe`: the header holds
    /// `t=<ts>,v1=<hex>[,v1=<hex>…]` and any `v1` entry may match.
    #[serde(default)]
    header_format: HeaderFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    Sha1,
    #[default]
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
enum Content {
    #[serde(rename = "body")]
    Body,
    #[serde(rename = "{timestamp}.{body}")]
    TimestampBody,
    #[serde(rename = "{id}.{timestamp}.{body}")]
    IdTimestampBody,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum HeaderFormat {
    #[default]
    Plain,
    Stripe,
}

impl Algorithm {
    fn output_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    fn scheme(self, format: HeaderFormat) -> &'static str {
        match (format, self) {
            (HeaderFormat::Stripe, Algorithm::Sha1) => "stripe-sha1",
            (HeaderFormat::Stripe, Algorithm::Sha256) => "stripe-sha256",
            (HeaderFormat::Stripe, Algorithm::Sha384) => "stripe-sha384",
            (HeaderFormat::Stripe, Algorithm::Sha512) => "stripe-sha512",
            (HeaderFormat::Plain, Algorithm::Sha1) => "hmac-sha1",
            (HeaderFormat::Plain, Algorithm::Sha256) => "hmac-sha256",
            (HeaderFormat::Plain, Algorithm::Sha384) => "hmac-sha384",
            (HeaderFormat::Plain, Algorithm::Sha512) => "hmac-sha512",
        }
    }
}

/// The options checked for consistency, with header names interned.
#[derive(Debug, Clone)]
struct Config {
    algorithm: Algorithm,
    header: &'static str,
    encoding: Encoding,
    prefix: String,
    content: Content,
    timestamp_header: Option<&'static str>,
    id_header: Option<&'static str>,
    format: HeaderFormat,
}

impl Config {
    fn from_options(opts: &Options) -> Result<Self, BuildError> {
        let o: HmacOptions = parse_options(opts)?;
        let opt = |m: &str| Err(BuildError::Option(m.to_owned()));
        if o.algorithm == Algorithm::Sha1 && !o.insecure_allow_sha1 {
            return opt("algorithm = \"sha1\" needs insecure_allow_sha1 = true");
        }
        let content = match (o.header_format, o.signed_content) {
            (HeaderFormat::Plain, c) => c.unwrap_or(Content::Body),
            (HeaderFormat::Stripe, None | Some(Content::TimestampBody)) => Content::TimestampBody,
            (HeaderFormat::Stripe, Some(_)) => {
                return opt("header_format = \"stripe\" signs \"{timestamp}.{body}\" only")
            }
        };
        if o.header_format == HeaderFormat::Stripe {
            if o.timestamp_header.is_some() {
                return opt(
                    "header_format = \"stripe\" reads the timestamp from t=, not timestamp_header",
                );
            }
            if o.prefix.is_some() || o.encoding != Encoding::Hex {
                return opt("header_format = \"stripe\" takes no prefix and hex encoding only");
            }
        }
        let signs_ts = content != Content::Body;
        if o.header_format == HeaderFormat::Plain {
            match (signs_ts, &o.timestamp_header) {
                (true, None) => return opt("signed_content signs {timestamp}: set timestamp_header"),
                (false, Some(_)) => {
                    return opt("timestamp_header is set but signed_content does not sign it, so it would not be checked")
                }
                _ => {}
            }
        }
        if content == Content::IdTimestampBody && o.id_header.is_none() {
            return opt("signed_content signs {id}: set id_header");
        }
        Ok(Config {
            algorithm: o.algorithm,
            header: intern_header(&o.header)?,
            encoding: o.encoding,
            prefix: o.prefix.unwrap_or_default(),
            content,
            timestamp_header: o
                .timestamp_header
                .as_deref()
                .map(intern_header)
                .transpose()?,
            id_header: o.id_header.as_deref().map(intern_header).transpose()?,
            format: o.header_format,
        })
    }
}

/// A configured header name as the `&'static str` that [`Reject`] and [`Request::header`] carry.
/// Each distinct name is leaked once, so rebuilding routes (config reloads) does not grow memory.
fn intern_header(name: &str) -> Result<&'static str, BuildError> {
    let name = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| BuildError::Option(format!("{name:?} is not a valid header name")))?;
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.get(name.as_str()) {
        return Ok(known);
    }
    let leaked: &'static str = Box::leak(name.as_str().to_owned().into_boxed_str());
    names.insert(leaked);
    Ok(leaked)
}

/// A keyed MAC state, cloned per request.
#[derive(Debug, Clone)]
enum KeyState {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

/// A MAC output of any of the algorithms, without allocating.
struct Tag {
    bytes: [u8; 64],
    len: usize,
}

impl Tag {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl KeyState {
    fn new(alg: Algorithm, key: &[u8]) -> Result<Self, BuildError> {
        if key.is_empty() {
            return Err(BuildError::Key("HMAC key is empty".into()));
        }
        let bad = |_| BuildError::Key("unusable HMAC key".into());
        Ok(match alg {
            Algorithm::Sha1 => KeyState::Sha1(Hmac::new_from_slice(key).map_err(bad)?),
            Algorithm::Sha256 => KeyState::Sha256(Hmac::new_from_slice(key).map_err(bad)?),
            Algorithm::Sha384 => KeyState::Sha384(Hmac::new_from_slice(key).map_err(bad)?),
            Algorithm::Sha512 => KeyState::Sha512(Hmac::new_from_slice(key).map_err(bad)?),
        })
    }

    /// The MAC of the concatenation of `parts`, fed incrementally.
    fn tag(&self, parts: &[&[u8]]) -> Tag {
        fn run<M: Mac + Clone>(mac: &M, parts: &[&[u8]], out: &mut [u8; 64]) -> usize {
            let mut mac = mac.clone();
            for p in parts {
                mac.update(p);
            }
            let tag = mac.finalize().into_bytes();
            let n = tag.len().min(out.len());
            if let (Some(dst), Some(src)) = (out.get_mut(..n), tag.get(..n)) {
                dst.copy_from_slice(src);
            }
            n
        }
        let mut bytes = [0u8; 64];
        let len = match self {
            KeyState::Sha1(m) => run(m, parts, &mut bytes),
            KeyState::Sha256(m) => run(m, parts, &mut bytes),
            KeyState::Sha384(m) => run(m, parts, &mut bytes),
            KeyState::Sha512(m) => run(m, parts, &mut bytes),
        };
        Tag { bytes, len }
    }
}

#[derive(Debug)]
struct GenericHmac {
    config: Config,
    keys: Prepared<KeyState>,
    tolerance_secs: u64,
}

fn build(
    opts: &Options,
    keys: &KeyRing,
    settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let config = Config::from_options(opts)?;
    let keys = keys.prepare(|s| KeyState::new(config.algorithm, s.expose()))?;
    Ok(Box::new(GenericHmac {
        config,
        keys,
        tolerance_secs: settings.tolerance_secs,
    }))
}

/// The parts of the signed content, in order, without allocating: at most five pieces.
struct Parts<'a>([&'a [u8]; 5], usize);

impl<'a> Parts<'a> {
    fn new(content: Content, id: &'a str, ts: &'a str, body: &'a [u8]) -> Self {
        match content {
            Content::Body => Parts([body, b"", b"", b"", b""], 1),
            Content::TimestampBody => Parts([ts.as_bytes(), b".", body, b"", b""], 3),
            Content::IdTimestampBody => Parts([id.as_bytes(), b".", ts.as_bytes(), b".", body], 5),
        }
    }

    fn as_slice(&self) -> &[&'a [u8]] {
        self.0.get(..self.1).unwrap_or(&self.0)
    }
}

impl GenericHmac {
    /// Decodes the plain-format signature header into the MAC bytes.
    fn plain_signature(&self, value: &str) -> Result<Vec<u8>, Reject> {
        let header = self.config.header;
        let encoded =
            value
                .strip_prefix(self.config.prefix.as_str())
                .ok_or(Reject::SignatureMalformed {
                    header,
                    why: "missing the configured prefix",
                })?;
        let raw = match self.config.encoding {
            Encoding::Hex => hex_signature(encoded, header)?,
            Encoding::Base64 => b64_signature(encoded, header)?,
        };
        if raw.len() != self.config.algorithm.output_len() {
            return Err(Reject::SignatureMalformed {
                header,
                why: "wrong length for the algorithm",
            });
        }
        Ok(raw)
    }

    /// Splits a Stripe-style header into its timestamp and decodable `v1` signatures. As
    /// stripe-python does, the first `t` counts and entries of other schemes are ignored.
    fn stripe_signature<'a>(&self, value: &'a str) -> Result<(&'a str, Vec<Vec<u8>>), Reject> {
        let header = self.config.header;
        if value.len() > 16 * MAX_SIGNATURE_LEN {
            return Err(Reject::SignatureMalformed {
                header,
                why: "too long",
            });
        }
        let mut ts = None;
        let mut sigs = Vec::new();
        let mut other_schemes = false;
        for item in value.split(',') {
            match item.split_once('=') {
                Some(("t", t)) => {
                    ts.get_or_insert(t);
                }
                Some(("v1", s)) => sigs.extend(
                    hex::decode(s)
                        .ok()
                        .filter(|b| b.len() == self.config.algorithm.output_len()),
                ),
                Some(_) => other_schemes = true,
                None => {}
            }
        }
        let ts = ts.ok_or(Reject::TimestampMissing { header })?;
        if sigs.is_empty() {
            return Err(if other_schemes {
                Reject::Unsupported {
                    what: "no v1 signature (only other schemes)",
                }
            } else {
                Reject::SignatureMalformed {
                    header,
                    why: "no decodable v1 signature",
                }
            });
        }
        Ok((ts, sigs))
    }
}

impl Verifier for GenericHmac {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let c = &self.config;
        let value = req.require_header(c.header, Reject::SignatureMissing { header: c.header })?;
        let id = match c.id_header {
            Some(h) if c.content == Content::IdTimestampBody => {
                Some(req.require_header(h, Reject::SignatureMissing { header: h })?)
            }
            Some(h) => req.header(h)?,
            None => None,
        };

        let (ts_text, sigs) = match c.format {
            HeaderFormat::Plain => {
                let ts = match c.timestamp_header {
                    Some(h) => Some(req.require_header(h, Reject::TimestampMissing { header: h })?),
                    None => None,
                };
                (ts, vec![self.plain_signature(value)?])
            }
            HeaderFormat::Stripe => {
                let (ts, sigs) = self.stripe_signature(value)?;
                (Some(ts), sigs)
            }
        };
        let signed_at = match ts_text {
            Some(t) => {
                let ts_header = c.timestamp_header.unwrap_or(c.header);
                let ts = parse_unix(t, ts_header)?;
                check_window(ts, now, self.tolerance_secs)?;
                Some(ts)
            }
            None => None,
        };

        let parts = Parts::new(c.content, id.unwrap_or(""), ts_text.unwrap_or(""), req.body);
        for key in self.keys.live(now)? {
            let tag = key.state.tag(parts.as_slice());
            if sigs.iter().any(|s| ct_eq(s, tag.as_slice())) {
                return Ok(
                    Verified::new(SPEC.id, c.algorithm.scheme(c.format), key.label.clone())
                        .signed_at(signed_at)
                        .event_id(id.map(str::to_owned)),
                );
            }
        }
        Err(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        false
    }
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let c = Config::from_options(opts)?;
    let state = KeyState::new(c.algorithm, secret.expose())?;
    let ts = input.now.to_string();
    let tag = state.tag(Parts::new(c.content, &input.nonce, &ts, &input.body).as_slice());
    let mut headers = Vec::new();
    match c.format {
        HeaderFormat::Plain => {
            let encoded = match c.encoding {
                Encoding::Hex => hex::encode(tag.as_slice()),
                Encoding::Base64 => b64(tag.as_slice()),
            };
            headers.push((c.header.to_owned(), format!("{}{encoded}", c.prefix)));
            if let (Some(h), true) = (c.timestamp_header, c.content != Content::Body) {
                headers.push((h.to_owned(), ts));
            }
        }
        HeaderFormat::Stripe => headers.push((
            c.header.to_owned(),
            format!("t={ts},v1={}", hex::encode(tag.as_slice())),
        )),
    }
    if let Some(h) = c.id_header {
        headers.push((h.to_owned(), input.nonce.clone()));
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
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/json".into()),
        body: br#"{"id":"evt_1Qx9sample","type":"message.delivered","created":1795428000,"data":{"message_id":"m_7Hc2","from":"+14155550100","to":"+14155550199","status":"delivered"}}"#.to_vec(),
        now: 0,
        nonce: "evt_1Qx9sample".into(),
    }
}

fn lint(opts: &Options) -> Vec<String> {
    // Options that do not parse are reported by the build; lint only judges valid ones.
    let Ok(c) = Config::from_options(opts) else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    if c.algorithm == Algorithm::Sha1 {
        warnings.push(
            "algorithm = \"sha1\": HMAC-SHA1 is legacy; switch the sender to sha256 if it can"
                .to_owned(),
        );
    }
    if c.content == Content::Body {
        warnings.push(
            "no timestamp is signed: a captured request can be replayed, and only the idempotency store's dedupe stops it"
                .to_owned(),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use http::HeaderMap;
    use serde_json::json;

    fn opts(v: serde_json::Value) -> Options {
        match v {
            serde_json::Value::Object(m) => m,
            _ => Options::new(),
        }
    }

    fn github() -> Options {
        opts(json!({"header": "X-Hub-Signature-256", "prefix": "sha256="}))
    }

    fn stripe() -> Options {
        opts(json!({"header": "Stripe-Signature", "header_format": "stripe"}))
    }

    fn timestamped() -> Options {
        opts(json!({
            "header": "X-Signature", "encoding": "base64",
            "signed_content": "{id}.{timestamp}.{body}",
            "timestamp_header": "X-Timestamp", "id_header": "X-Id"
        }))
    }

    fn verifier(o: &Options, keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        build(o, &ring, &Settings::default()).unwrap()
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

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn input(body: &[u8], now: i64, nonce: &str) -> SignInput {
        SignInput {
            method: "POST".into(),
            url: "https://example.com/hook".into(),
            content_type: Some("application/json".into()),
            body: body.to_vec(),
            now,
            nonce: nonce.into(),
        }
    }

    // github/docs "Validating webhook deliveries".
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    // PROVIDERS.md §7 [derived] with stripe-python 16.1.0.
    const ST_SECRET: &str = "whsec_test_secret";
    const ST_BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const ST_SIG: &str =
        "t=1614265330,v1=3c5817089d739023dd6190f70a3757e04f7a2fd8b5dab12c2e000f51970dccff";

    #[test]
    fn github_docs_vector_verifies_and_signs_identically() {
        let v = verifier(&github(), &[("gh", GH_SECRET)]);
        let ok = check(
            &*v,
            &hm(&[("x-hub-signature-256", GH_SIG)]),
            b"Hello, World!",
            0,
        )
        .unwrap();
        assert_eq!(
            (ok.scheme(), ok.key_label(), ok.signed_time()),
            ("hmac-sha256", "gh", None)
        );
        let signed = sign(
            &github(),
            &Secret::new(GH_SECRET),
            &input(b"Hello, World!", 0, "x"),
        )
        .unwrap();
        assert!(signed
            .headers
            .contains(&("x-hub-signature-256".into(), GH_SIG.into())));
    }

    #[test]
    fn github_vector_accepts_uppercase_hex_and_rejects_missing_prefix() {
        let v = verifier(&github(), &[("gh", GH_SECRET)]);
        let upper = format!("sha256={}", GH_SIG["sha256=".len()..].to_uppercase());
        assert!(check(
            &*v,
            &hm(&[("x-hub-signature-256", &upper)]),
            b"Hello, World!",
            0
        )
        .is_ok());
        assert_eq!(
            check(
                &*v,
                &hm(&[("x-hub-signature-256", &GH_SIG["sha256=".len()..])]),
                b"Hello, World!",
                0
            ),
            Err(Reject::SignatureMalformed {
                header: "x-hub-signature-256",
                why: "missing the configured prefix"
            })
        );
    }

    #[test]
    fn stripe_vector_verifies_in_window_and_signs_identically() {
        let v = verifier(&stripe(), &[("st", ST_SECRET)]);
        let h = hm(&[("stripe-signature", ST_SIG)]);
        let ok = check(&*v, &h, ST_BODY, 1_614_265_330 + 10).unwrap();
        assert_eq!(
            (ok.scheme(), ok.signed_time()),
            ("stripe-sha256", Some(1_614_265_330))
        );
        assert_eq!(
            check(&*v, &h, ST_BODY, 1_614_265_330 + 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(&*v, &h, ST_BODY, 1_614_265_330 - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let signed = sign(
            &stripe(),
            &Secret::new(ST_SECRET),
            &input(ST_BODY, 1_614_265_330, "evt"),
        )
        .unwrap();
        assert!(signed
            .headers
            .contains(&("stripe-signature".into(), ST_SIG.into())));
    }

    #[test]
    fn stripe_any_v1_of_a_rolled_secret_matches_and_v0_is_ignored() {
        let v = verifier(&stripe(), &[("st", ST_SECRET)]);
        let zeros = "0".repeat(64);
        let list = format!(
            "t=1614265330,v0=abc,v1={zeros},v1=3c5817089d739023dd6190f70a3757e04f7a2fd8b5dab12c2e000f51970dccff"
        );
        assert!(check(
            &*v,
            &hm(&[("stripe-signature", &list)]),
            ST_BODY,
            1_614_265_330
        )
        .is_ok());
        assert_eq!(
            check(
                &*v,
                &hm(&[("stripe-signature", "t=1614265330,v0=abc")]),
                ST_BODY,
                1_614_265_330
            ),
            Err(Reject::Unsupported {
                what: "no v1 signature (only other schemes)"
            })
        );
        assert_eq!(
            check(
                &*v,
                &hm(&[("stripe-signature", "t=1614265330,v1=zz")]),
                ST_BODY,
                1_614_265_330
            ),
            Err(Reject::SignatureMalformed {
                header: "stripe-signature",
                why: "no decodable v1 signature"
            })
        );
        assert_eq!(
            check(
                &*v,
                &hm(&[("stripe-signature", &format!("v1={zeros}"))]),
                ST_BODY,
                1_614_265_330
            ),
            Err(Reject::TimestampMissing {
                header: "stripe-signature"
            })
        );
    }

    #[test]
    fn stripe_every_single_byte_change_is_rejected() {
        let v = verifier(&stripe(), &[("st", ST_SECRET)]);
        let now = 1_614_265_330;
        for i in 0..ST_BODY.len() {
            let mut body = ST_BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(
                check(&*v, &hm(&[("stripe-signature", ST_SIG)]), &body, now),
                Err(Reject::SignatureMismatch),
                "body byte {i}"
            );
        }
        // Change the last timestamp digit (stays in the window, so the MAC must catch it).
        let h = hm(&[("stripe-signature", &ST_SIG.replacen("330", "331", 1))]);
        assert_eq!(check(&*v, &h, ST_BODY, now), Err(Reject::SignatureMismatch));
    }

    #[test]
    fn timestamped_round_trip_tamper_sweep_and_event_id() {
        let o = timestamped();
        let secret = "s3cr3t-key";
        let body = br#"{"event":"sms.received","text":"hi"}"#;
        let signed = sign(
            &o,
            &Secret::new(secret),
            &input(body, 1_800_000_000, "msg_42"),
        )
        .unwrap();
        let v = verifier(&o, &[("old", "another-key"), ("new", secret)]);
        let h = signed.header_map();
        let ok = check(&*v, &h, body, 1_800_000_005).unwrap();
        assert_eq!(
            (
                ok.scheme(),
                ok.key_label(),
                ok.event_id_str(),
                ok.signed_time()
            ),
            ("hmac-sha256", "new", Some("msg_42"), Some(1_800_000_000))
        );
        for i in 0..body.len() {
            let mut b = body.to_vec();
            b[i] ^= 0x01;
            assert_eq!(
                check(&*v, &h, &b, 1_800_000_000),
                Err(Reject::SignatureMismatch)
            );
        }
        for (name, value) in [("x-id", "msg_43"), ("x-timestamp", "1800000001")] {
            let mut h2 = h.clone();
            h2.insert(name, value.parse().unwrap());
            assert_eq!(
                check(&*v, &h2, body, 1_800_000_000),
                Err(Reject::SignatureMismatch),
                "{name}"
            );
        }
        assert_eq!(
            check(&*v, &h, body, 1_800_000_000 + 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(&*v, &h, body, 1_800_000_000 - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let wrong = verifier(&o, &[("w", "not-the-key")]);
        assert_eq!(
            check(&*wrong, &h, body, 1_800_000_000),
            Err(Reject::SignatureMismatch)
        );
        for (name, expected) in [
            (
                "x-signature",
                Reject::SignatureMissing {
                    header: "x-signature",
                },
            ),
            (
                "x-timestamp",
                Reject::TimestampMissing {
                    header: "x-timestamp",
                },
            ),
            ("x-id", Reject::SignatureMissing { header: "x-id" }),
        ] {
            let mut h2 = h.clone();
            h2.remove(name);
            assert_eq!(check(&*v, &h2, body, 1_800_000_000), Err(expected));
        }
        let mut h2 = h.clone();
        h2.insert("x-timestamp", "18e8".parse().unwrap());
        assert_eq!(
            check(&*v, &h2, body, 1_800_000_000),
            Err(Reject::TimestampMalformed {
                header: "x-timestamp"
            })
        );
    }

    #[test]
    fn every_algorithm_round_trips_and_checks_length() {
        for (alg, len) in [("sha256", 32), ("sha384", 48), ("sha512", 64), ("sha1", 20)] {
            let o = opts(json!({"header": "X-Sig", "algorithm": alg, "insecure_allow_sha1": true}));
            let signed = sign(&o, &Secret::new("k"), &input(b"abc", 0, "")).unwrap();
            let v = verifier(&o, &[("k", "k")]);
            let ok = check(&*v, &signed.header_map(), b"abc", 0).unwrap();
            assert!(ok.scheme().ends_with(alg), "{alg}");
            let value = &signed.headers[0].1;
            assert_eq!(value.len(), 2 * len, "{alg}");
            assert_eq!(
                check(&*v, &hm(&[("x-sig", &value[2..])]), b"abc", 0),
                Err(Reject::SignatureMalformed {
                    header: "x-sig",
                    why: "wrong length for the algorithm"
                }),
                "{alg}"
            );
        }
    }

    #[test]
    fn malformed_signatures_and_bodies_never_panic() {
        let v = verifier(&github(), &[("gh", GH_SECRET)]);
        assert_eq!(
            check(&*v, &hm(&[("x-hub-signature-256", "sha256=xyz")]), b"", 0),
            Err(Reject::SignatureMalformed {
                header: "x-hub-signature-256",
                why: "not hex"
            })
        );
        let huge = format!("sha256={}", "a".repeat(100_000));
        assert_eq!(
            check(&*v, &hm(&[("x-hub-signature-256", &huge)]), b"", 0),
            Err(Reject::SignatureMalformed {
                header: "x-hub-signature-256",
                why: "too long"
            })
        );
        assert_eq!(
            check(&*v, &HeaderMap::new(), b"", 0),
            Err(Reject::SignatureMissing {
                header: "x-hub-signature-256"
            })
        );
        let st = verifier(&stripe(), &[("st", ST_SECRET)]);
        let huge = format!("t=1,{}", "v1=00,".repeat(10_000));
        assert_eq!(
            check(&*st, &hm(&[("stripe-signature", &huge)]), b"", 0),
            Err(Reject::SignatureMalformed {
                header: "stripe-signature",
                why: "too long"
            })
        );
        let b = verifier(
            &opts(json!({"header": "X-Sig", "encoding": "base64"})),
            &[("k", "k")],
        );
        assert_eq!(
            check(&*b, &hm(&[("x-sig", "@@@@")]), b"", 0),
            Err(Reject::SignatureMalformed {
                header: "x-sig",
                why: "not base64"
            })
        );
        // Bodies are bytes: invalid UTF-8 signs and verifies like anything else.
        let body = [0xff, 0x00, 0xc3];
        let signed = sign(&github(), &Secret::new(GH_SECRET), &input(&body, 0, "")).unwrap();
        assert!(check(&*v, &signed.header_map(), &body, 0).is_ok());
    }

    #[test]
    fn inconsistent_options_fail_the_build() {
        let ring = KeyRing::single(Secret::new("k"));
        for (o, why) in [
            (json!({}), "header is required"),
            (
                json!({"header": "X-Sig", "algorithm": "sha1"}),
                "sha1 needs opt-in",
            ),
            (
                json!({"header": "X-Sig", "algorithm": "md5"}),
                "unknown algorithm",
            ),
            (
                json!({"header": "X-Sig", "signed_content": "{timestamp}.{body}"}),
                "no timestamp_header",
            ),
            (
                json!({"header": "X-Sig", "timestamp_header": "X-T"}),
                "unsigned timestamp_header",
            ),
            (
                json!({"header": "X-Sig", "signed_content": "{id}.{timestamp}.{body}", "timestamp_header": "X-T"}),
                "no id_header",
            ),
            (
                json!({"header": "X-Sig", "header_format": "stripe", "signed_content": "body"}),
                "stripe signs t.body",
            ),
            (
                json!({"header": "X-Sig", "header_format": "stripe", "prefix": "v1="}),
                "stripe has no prefix",
            ),
            (json!({"header": "bad header"}), "invalid header name"),
            (json!({"header": "X-Sig", "secret": "x"}), "unknown option"),
        ] {
            assert!(
                matches!(
                    build(&opts(o), &ring, &Settings::default()),
                    Err(BuildError::Option(_))
                ),
                "{why}"
            );
        }
        assert!(matches!(
            build(
                &github(),
                &KeyRing::single(Secret::new("")),
                &Settings::default()
            ),
            Err(BuildError::Key(_))
        ));
    }

    #[test]
    fn lint_warns_about_sha1_and_unsigned_time() {
        let sha1 = opts(
            json!({"header": "X-Hub-Signature", "algorithm": "sha1", "insecure_allow_sha1": true}),
        );
        assert_eq!(lint(&sha1).len(), 2);
        assert_eq!(lint(&github()).len(), 1);
        assert!(lint(&stripe()).is_empty());
        assert!(lint(&timestamped()).is_empty());
    }

    #[test]
    fn header_names_are_interned_once() {
        let a = intern_header("X-Interned-Once").unwrap();
        let b = intern_header("x-interned-once").unwrap();
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "x-interned-once");
    }
}
