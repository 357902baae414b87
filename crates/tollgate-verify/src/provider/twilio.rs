//! Twilio: `X-Twilio-Signature` = base64 HMAC over the URL Twilio requested, followed for form
//! POSTs by every body parameter as `name + value`, names sorted and each name's values sorted and
//! de-duplicated (twilio-python 9.13 `request_validator.py`, twilio-node 6.x `webhooks.ts`). JSON
//! bodies are bound through a `bodySHA256=<hex sha256(body)>` query parameter Twilio adds to the URL;
//! the signature then covers the URL only and the body hash is checked separately.
//!
//! The key is the account Auth Token (HMAC-SHA1, the classic scheme) or a SharedKey secret
//! (HMAC-SHA1 or HMAC-SHA256, announced in `X-Twilio-Webhooks-Signature-Settings`). The route pins
//! the algorithm: the settings header is attacker-controlled, so it can only be refused when it
//! disagrees, never obeyed. Its `key=` id only changes which key is tried first.
//!
//! URL variants: the SDKs accept a signature over the URL with its port removed or with the
//! default port added (Twilio's back end is "inconsistent" about ports), and twilio-node also over
//! the URL as WHATWG `new URL` normalises it and as the legacy `querystring` module re-serialises
//! its query (a `'` signed raw arrives as `%27`, twilio-node PR #1061). All of them are tried here,
//! the URL as received first.
//!
//! Nothing is timestamped, so replays can only be limited by deduplication. The
//! `I-Twilio-Idempotency-Token` header is not signed (an attacker could change it on a replay), so it
//! is not reported as the event id; Twilio's retries repeat the signed bytes exactly, and the
//! gateway deduplicates on a hash of those.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{
    parse_options, same_key, Options, ProviderSpec, Settings, SignInput, Signed, Verifier,
};
use crate::encoding::{b64, b64_signature, ct_eq};
use crate::form;
use crate::reject::{BuildError, Reject, SignError};
use crate::request::{Known, Request};
use crate::secret::{KeyRing, Prepared, PreparedKey, Secret};
use crate::url::Url;
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "twilio",
    summary: "Twilio: X-Twilio-Signature, HMAC-SHA1 (Auth Token) or HMAC-SHA256 (SharedKey) over URL + sorted form params; JSON via bodySHA256",
    signs_time: false,
    build,
    sign,
    verify_key_for: same_key,
    sample,
    lint,
};

const SIGNATURE: &str = "x-twilio-signature";
const SETTINGS: &str = "x-twilio-webhooks-signature-settings";
const IDEMPOTENCY: &str = "i-twilio-idempotency-token";
const BODY_SHA256: &[u8] = b"bodySHA256";
static SIGNATURE_NAME: Known = Known::new(SIGNATURE);
static SETTINGS_NAME: Known = Known::new(SETTINGS);

/// Route options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioOptions {
    /// `hmac-sha1` (Auth Token and SHA-1 SharedKeys, the default) or `hmac-sha256` (SharedKey).
    #[serde(default)]
    algorithm: Algorithm,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
enum Algorithm {
    #[default]
    #[serde(rename = "hmac-sha1")]
    HmacSha1,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl Algorithm {
    fn tag_len(self) -> usize {
        match self {
            Algorithm::HmacSha1 => 20,
            Algorithm::HmacSha256 => 32,
        }
    }

    /// The name Twilio uses in `X-Twilio-Webhooks-Signature-Settings`.
    fn settings_name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "HMAC_SHA1",
            Algorithm::HmacSha256 => "HMAC_SHA256",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha256 => "hmac-sha256",
        }
    }
}

/// A keyed MAC of either algorithm; cloned per attempt so the key schedule runs once per route.
#[derive(Clone)]
pub(crate) enum KeyedMac {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
}

impl std::fmt::Debug for KeyedMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keyed state is derived from the secret: never print it.
        f.write_str(match self {
            KeyedMac::Sha1(_) => "KeyedMac::Sha1([redacted])",
            KeyedMac::Sha256(_) => "KeyedMac::Sha256([redacted])",
        })
    }
}

impl KeyedMac {
    fn new(alg: Algorithm, key: &[u8]) -> Result<Self, BuildError> {
        let bad = |_| BuildError::Key("unusable HMAC key".into());
        Ok(match alg {
            Algorithm::HmacSha1 => KeyedMac::Sha1(Hmac::new_from_slice(key).map_err(bad)?),
            Algorithm::HmacSha256 => KeyedMac::Sha256(Hmac::new_from_slice(key).map_err(bad)?),
        })
    }

    pub(crate) fn sha1(key: &[u8]) -> Result<Self, BuildError> {
        Self::new(Algorithm::HmacSha1, key)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            KeyedMac::Sha1(m) => m.update(bytes),
            KeyedMac::Sha256(m) => m.update(bytes),
        }
    }

    /// Constant-time comparison with the received tag.
    pub(crate) fn verify(self, tag: &[u8]) -> bool {
        match self {
            KeyedMac::Sha1(m) => m.verify_slice(tag).is_ok(),
            KeyedMac::Sha256(m) => m.verify_slice(tag).is_ok(),
        }
    }

    pub(crate) fn finalize(self) -> Vec<u8> {
        match self {
            KeyedMac::Sha1(m) => m.finalize().into_bytes().to_vec(),
            KeyedMac::Sha256(m) => m.finalize().into_bytes().to_vec(),
        }
    }
}

/// How repeated parameter names are ordered in the Twilio-style canonical string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeats {
    /// twilio-python / twilio-node: a name's values sorted, identical values once.
    SortedDeduped,
    /// SignalWire's reference SDK: a stable sort by name, so values keep submission order.
    SubmissionOrder,
}

/// The parameters' part of the canonical string: for each pair in canonical order, the decoded
/// name followed by the decoded value, contiguous so a MAC takes it in one update (dozens of small
/// updates cost more than hashing the bytes). Names (and, for Twilio, values) compare as bytes,
/// which for UTF-8 is code-point order.
///
/// The body is split without decoding; when no name is escaped (Twilio never escapes one) names
/// compare raw, the sort is skipped when the body is already in order, and components are copied
/// or decoded straight into the output. Anything else (an escaped name, or a repeated name under
/// Twilio's value sort and de-duplication) takes the general path: decode, sort, concatenate.
pub(crate) fn canonical_params(body: &[u8], repeats: Repeats) -> Vec<u8> {
    let equal_names = repeats == Repeats::SubmissionOrder;
    if let Some(out) = form::concat_if_ordered(body, equal_names) {
        return out;
    }
    let mut pairs = Vec::with_capacity(32);
    form::split_raw(body, &mut pairs);
    // Decoding never lengthens a component and the separators are dropped.
    let mut out = Vec::with_capacity(body.len());
    match fast_order(&pairs, repeats) {
        Some(FastOrder::AsReceived) => pairs.iter().for_each(|p| p.push_decoded_to(&mut out)),
        Some(FastOrder::Sorted(order)) => order
            .iter()
            .filter_map(|&i| pairs.get(i))
            .for_each(|p| p.push_decoded_to(&mut out)),
        None => canonical_params_decoded(body, repeats, &mut out),
    }
    out
}

/// The canonical order when raw names decide it.
enum FastOrder {
    /// The pairs are already in canonical order, with nothing to remove.
    AsReceived,
    /// Indices into the pairs, in canonical order.
    Sorted(Vec<usize>),
}

/// `None` when decoding is needed to order the pairs: a name is escaped, or (Twilio) a name is
/// repeated, so its values must be compared decoded and identical pairs dropped.
fn fast_order(pairs: &[form::RawPair<'_>], repeats: Repeats) -> Option<FastOrder> {
    if pairs.iter().any(|p| p.name_escaped) {
        return None;
    }
    let repeats_kept = repeats == Repeats::SubmissionOrder;
    let mut in_order = true;
    for w in pairs.windows(2) {
        if let [a, b] = w {
            match a.name.cmp(b.name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal if repeats_kept => {}
                std::cmp::Ordering::Equal => return None,
                std::cmp::Ordering::Greater => {
                    in_order = false;
                    break;
                }
            }
        }
    }
    if in_order {
        return Some(FastOrder::AsReceived);
    }
    let name = |i: usize| pairs.get(i).map(|p| p.name);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    // Stable: SignalWire keeps a repeated name's values in submission order.
    order.sort_by(|&a, &b| name(a).cmp(&name(b)));
    if !repeats_kept
        && order
            .windows(2)
            .any(|w| w.first().map(|&i| name(i)) == w.get(1).map(|&i| name(i)))
    {
        return None;
    }
    Some(FastOrder::Sorted(order))
}

/// The general path of [`canonical_params`]: every pair decoded, sorted, concatenated.
fn canonical_params_decoded(body: &[u8], repeats: Repeats, out: &mut Vec<u8>) {
    let mut pairs = form::parse(body);
    match repeats {
        Repeats::SortedDeduped => {
            pairs.sort_unstable();
            pairs.dedup();
        }
        Repeats::SubmissionOrder => pairs.sort_by(|a, b| a.0.cmp(&b.0)),
    }
    for (k, v) in &pairs {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
}

/// The decoded value of the first `bodySHA256` query parameter, if the URL carries one.
pub(crate) fn body_sha256_param(url: &Url<'_>) -> Option<Vec<u8>> {
    let query = url.query?;
    form::parse(query.as_bytes())
        .into_iter()
        .find(|(k, _)| &**k == BODY_SHA256)
        .map(|(_, v)| v.into_owned())
}

/// True when `expected` (from the URL) is the lowercase hex SHA-256 of `body`, as the SDKs
/// compare it (an exact string comparison).
pub(crate) fn body_hash_matches(expected: &[u8], body: &[u8]) -> bool {
    let actual = hex::encode(Sha256::digest(body));
    ct_eq(actual.as_bytes(), expected)
}

/// The URL without its fragment (which never reaches a server), borrowed.
pub(crate) fn without_fragment(url: &str) -> &str {
    url.split('#').next().unwrap_or("")
}

#[derive(Debug)]
struct Twilio {
    alg: Algorithm,
    keys: Prepared<KeyedMac>,
}

fn build(
    opts: &Options,
    keys: &KeyRing,
    _settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let o: TwilioOptions = parse_options(opts)?;
    let keys = keys.prepare(|s| {
        if s.expose().is_empty() {
            return Err(BuildError::Key("the auth token is empty".into()));
        }
        KeyedMac::new(o.algorithm, s.expose())
    })?;
    Ok(Box::new(Twilio {
        alg: o.algorithm,
        keys,
    }))
}

/// What the request's `X-Twilio-Webhooks-Signature-Settings` says, parsed as twilio-python does:
/// comma-separated `name=value` items, names and values trimmed, the first non-empty one wins.
fn settings_item<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(',').find_map(|item| {
        let (n, v) = item.split_once('=')?;
        let v = v.trim();
        (n.trim() == name && !v.is_empty()).then_some(v)
    })
}

/// What the signature covers besides the URL.
enum Covered {
    /// URL only (GET, empty body, or JSON bound by `bodySHA256`).
    UrlOnly,
    /// URL + canonical form parameters.
    Form(Vec<u8>),
}

impl Verifier for Twilio {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let sig_text = req
            .header_named(&SIGNATURE_NAME)?
            .ok_or(Reject::SignatureMissing { header: SIGNATURE })?;

        let mut preferred_key = None;
        if let Some(settings) = req.header_named(&SETTINGS_NAME)? {
            if let Some(alg) = settings_item(settings, "algorithm") {
                if !alg.eq_ignore_ascii_case(self.alg.settings_name()) {
                    return Err(Reject::Unsupported {
                        what: match self.alg {
                            Algorithm::HmacSha1 => "X-Twilio-Webhooks-Signature-Settings names an algorithm other than HMAC_SHA1, which this route verifies",
                            Algorithm::HmacSha256 => "X-Twilio-Webhooks-Signature-Settings names an algorithm other than HMAC_SHA256, which this route verifies",
                        },
                    });
                }
            } else if self.alg != Algorithm::HmacSha1 {
                // Without `algorithm=` Twilio means the classic SHA-1 scheme.
                return Err(Reject::Unsupported {
                    what: "X-Twilio-Webhooks-Signature-Settings names no algorithm (classic HMAC_SHA1), this route verifies HMAC_SHA256",
                });
            }
            preferred_key = settings_item(settings, "key");
        }

        let tag = b64_signature(sig_text, SIGNATURE)?;
        if tag.len() != self.alg.tag_len() {
            return Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "wrong length for the route's algorithm",
            });
        }

        let url = Url::parse(req.url)?;
        let body_hash = body_sha256_param(&url);
        let covered = if body_hash.is_some() {
            Covered::UrlOnly
        } else if req.is_form() {
            Covered::Form(canonical_params(req.body, Repeats::SortedDeduped))
        } else if req.body.is_empty() {
            Covered::UrlOnly
        } else {
            // The SDKs would accept this with the body unauthenticated; a firewall must not.
            return Err(Reject::Unsupported {
                what:
                    "a non-form body without bodySHA256 in the URL is not covered by the signature",
            });
        };

        // The live keys, the one the settings header names first; no allocation.
        let live = self.keys.live(now)?;
        let preferred = preferred_key.and_then(|id| live.clone().find(|k| &*k.label == id));
        let live = preferred
            .into_iter()
            .chain(live.filter(move |k| !preferred.is_some_and(|p| std::ptr::eq(p, *k))));

        let try_url = |candidate: &str| -> Option<&PreparedKey<KeyedMac>> {
            live.clone().find(|key| {
                let mut mac = key.state.clone();
                mac.update(candidate.as_bytes());
                if let Covered::Form(params) = &covered {
                    mac.update(params);
                }
                mac.verify(&tag)
            })
        };

        // The URL as received is by far the likeliest, and needs no allocation.
        let received = without_fragment(req.url);
        let mut matched = try_url(received);
        if matched.is_none() {
            matched = url_variants(&url)
                .iter()
                .filter(|c| c.as_str() != received)
                .find_map(|c| try_url(c));
        }
        let key = matched.ok_or(Reject::SignatureMismatch)?;

        if let Some(expected) = body_hash {
            if !body_hash_matches(&expected, req.body) {
                return Err(Reject::BodyHashMismatch);
            }
        }

        // I-Twilio-Idempotency-Token is not covered by the signature: taking it as the event id
        // would let anyone replay a captured request under a fresh token and pass deduplication.
        // Twilio's retries repeat the signed bytes exactly, so the gateway's fallback key (a hash
        // of the signed material) already recognises them.
        Ok(Verified::new(SPEC.id, self.alg.scheme(), key.label.clone()))
    }

    fn signs_url(&self) -> bool {
        true
    }
}

/// Every URL a Twilio SDK would accept a signature over, for a request received at `url`,
/// without duplicates. The received form itself comes first.
fn url_variants(url: &Url<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(6);
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    // twilio-python: port removed / default port added (else as given).
    for v in url.twilio_port_variants() {
        push(v);
    }
    // twilio-node: the same two over the WHATWG-normalised URL (which elides a default port),
    // then both with the query re-serialised by the legacy `querystring` module. Re-parsing the
    // with-default-port form elides the port again, so its legacy form is the port-less one.
    let port = url
        .port
        .map(|p| match p.trim_start_matches('0') {
            "" => "0",
            p => p,
        })
        .filter(|p| *p != url.default_port());
    let with = whatwg(url, Some(port.unwrap_or(url.default_port())));
    let without = whatwg(url, None);
    let legacy_with = port.map(|p| legacy_querystring(&whatwg(url, Some(p))));
    let legacy_without = legacy_querystring(&without);
    push(without);
    push(with);
    if let Some(l) = legacy_with {
        push(l);
    }
    push(legacy_without);
    out
}

/// The URL as WHATWG `new URL(..).toString()` would print it, for what occurs in a request
/// target: scheme and host lowercased, an empty path becomes `/`, `\` becomes `/`, and the bytes of
/// the path and special-query percent-encode sets are escaped. Dot segments and IDNA are not
/// processed (a request target does not carry them in practice).
fn whatwg(url: &Url<'_>, port: Option<&str>) -> String {
    let mut s = String::with_capacity(url.host.len() + url.path.len() + 32);
    s.push_str(&url.scheme.to_ascii_lowercase());
    s.push_str("://");
    if let Some(u) = url.userinfo {
        s.push_str(u);
        s.push('@');
    }
    s.push_str(&url.host.to_ascii_lowercase());
    if let Some(p) = port {
        s.push(':');
        s.push_str(p);
    }
    if url.path.is_empty() {
        s.push('/');
    } else {
        for &b in url.path.as_bytes() {
            match b {
                b'\\' => s.push('/'),
                b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}' => pct(&mut s, b),
                b if !(0x20..=0x7e).contains(&b) => pct(&mut s, b),
                b => s.push(char::from(b)),
            }
        }
    }
    if let Some(q) = url.query {
        // `new URL` drops an empty query (`?` alone).
        if !q.is_empty() {
            s.push('?');
            for &b in q.as_bytes() {
                match b {
                    b' ' | b'"' | b'<' | b'>' | b'\'' => pct(&mut s, b),
                    b if !(0x20..=0x7e).contains(&b) => pct(&mut s, b),
                    b => s.push(char::from(b)),
                }
            }
        }
    }
    s
}

fn pct(s: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    s.push('%');
    s.push(char::from(HEX[usize::from(b >> 4)]));
    s.push(char::from(HEX[usize::from(b & 15)]));
}

/// Node's legacy `querystring.stringify(querystring.parse(query))` applied to a URL's query:
/// values decoded (`+` is a space), grouped by name in first-seen order with array-index names
/// first (JavaScript object key order), and re-escaped with `querystring.escape`'s unreserved set.
fn legacy_querystring(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs = form::parse(query.as_bytes());
    let mut names: Vec<Cow<'_, [u8]>> = Vec::new();
    for (k, _) in &pairs {
        if !names.iter().any(|n| n == k) {
            names.push(k.clone());
        }
    }
    // JavaScript orders integer-like property names first, ascending.
    let index = |n: &[u8]| -> Option<u32> {
        let s = std::str::from_utf8(n).ok()?;
        if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || s.len() > 10 {
            return None;
        }
        s.parse::<u32>().ok().filter(|&i| i < u32::MAX)
    };
    names.sort_by_key(|n| match index(n) {
        Some(i) => (0u8, i),
        None => (1u8, 0),
    });
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(base);
    out.push('?');
    let mut first = true;
    for name in &names {
        for (_, v) in pairs.iter().filter(|(k, _)| k == name) {
            if !first {
                out.push('&');
            }
            first = false;
            qs_escape(&mut out, name);
            out.push('=');
            qs_escape(&mut out, v);
        }
    }
    out
}

/// `querystring.escape`: JavaScript strings, so invalid UTF-8 first becomes U+FFFD.
fn qs_escape(out: &mut String, raw: &[u8]) {
    for &b in String::from_utf8_lossy(raw).as_bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'!'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(char::from(b)),
            b => pct(out, b),
        }
    }
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let o: TwilioOptions = parse_options(opts)?;
    let mut mac = KeyedMac::new(o.algorithm, secret.expose())?;
    let is_form = input.content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    let mut url = without_fragment(&input.url).to_owned();
    if !is_form && !input.body.is_empty() {
        // Twilio binds a non-form body through the URL it requests.
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("bodySHA256=");
        url.push_str(&hex::encode(Sha256::digest(&input.body)));
    }
    mac.update(url.as_bytes());
    if is_form {
        mac.update(&canonical_params(&input.body, Repeats::SortedDeduped));
    }
    let mut headers = vec![(SIGNATURE.to_owned(), b64(&mac.finalize()))];
    if o.algorithm != Algorithm::HmacSha1 {
        headers.push((
            SETTINGS.to_owned(),
            format!("algorithm={}", o.algorithm.settings_name()),
        ));
    }
    if !input.nonce.is_empty() {
        headers.push((IDEMPOTENCY.to_owned(), input.nonce.clone()));
    }
    if let Some(ct) = &input.content_type {
        headers.push(("content-type".into(), ct.clone()));
    }
    Ok(Signed {
        method: input.method.clone(),
        url,
        headers,
        body: input.body.clone(),
    })
}

fn sample(_: &Options, url: &str) -> SignInput {
    let params: &[(&str, &str)] = &[
        ("AccountSid", "AC3f9a1c2e4b7d8e0f1a2b3c4d5e6f7a8b"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CA8e2d4b6a1c3f5e7d9b0a2c4e6f8a1b3d"),
        ("CallStatus", "ringing"),
        (
            "CallToken",
            r#"{"parentCallInfoToken":"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJBQzNmOWExYzJlNGI3ZDhlMGYxYTJiM2M0ZDVlNmY3YThiIiwiY2FsbFNpZCI6IkNBOGUyZDRiNmExYzNmNWU3ZDliMGEyYzRlNmY4YTFiM2QifQ.MEUCIQDx","identityHeaderTokens":[]}"#,
        ),
        ("Called", "+14155550142"),
        ("CalledCity", "SAN FRANCISCO"),
        ("CalledCountry", "US"),
        ("CalledState", "CA"),
        ("CalledZip", "94105"),
        ("Caller", "+12125550187"),
        ("CallerCity", "NEW YORK"),
        ("CallerCountry", "US"),
        ("CallerName", "JANE Q O'NEIL"),
        ("CallerState", "NY"),
        ("CallerZip", "10001"),
        ("Direction", "inbound"),
        ("From", "+12125550187"),
        ("FromCity", "NEW YORK"),
        ("FromCountry", "US"),
        ("FromState", "NY"),
        ("FromZip", "10001"),
        ("StirVerstat", "TN-Validation-Passed-A"),
        ("To", "+14155550142"),
        ("ToCity", "SAN FRANCISCO"),
        ("ToCountry", "US"),
        ("ToState", "CA"),
        ("ToZip", "94105"),
    ];
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/x-www-form-urlencoded".into()),
        body: form::encode_pairs(params).into_bytes(),
        now: 0,
        nonce: "d7f1c0a4-6a58-4c1e-9a57-2f3b1e0c9d42".into(),
    }
}

fn lint(opts: &Options) -> Vec<String> {
    match parse_options::<TwilioOptions>(opts) {
        Ok(o) if o.algorithm == Algorithm::HmacSha1 => vec![
            "twilio: HMAC-SHA1 is in use; Twilio offers HMAC-SHA256 through SharedKey webhook signing (set algorithm = \"hmac-sha256\" with a SharedKey secret)".into(),
        ],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Key;
    use http::HeaderMap;
    use proptest::prelude::*;

    const TOKEN: &str = "12345";
    const BASE: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    // twilio-python tests/unit/test_request_validator.py, twilio-node spec/validation.spec.js.
    const PARAMS: &str =
        "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    const FORM: &str = "application/x-www-form-urlencoded";

    fn opts(alg: &str) -> Options {
        let mut o = Options::new();
        o.insert("algorithm".into(), alg.into());
        o
    }

    fn verifier_with(o: &Options, keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        build(o, &ring, &Settings::default()).unwrap()
    }

    fn verifier() -> Box<dyn Verifier> {
        verifier_with(&Options::new(), &[("primary", TOKEN)])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::try_from(*k).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(
        v: &dyn Verifier,
        url: &str,
        ct: Option<&str>,
        body: &str,
        sig: &str,
    ) -> Result<Verified, Reject> {
        let mut h = vec![("x-twilio-signature", sig)];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let h = headers(&h);
        v.verify(
            &Request {
                method: "POST",
                url,
                headers: &h,
                body: body.as_bytes(),
            },
            0,
        )
    }

    #[test]
    fn sdk_vectors_verify() {
        let v = verifier();
        let cases: &[(String, &str, &str)] = &[
            (BASE.into(), PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            // signed with :443, received without a port
            (BASE.into(), PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w="),
            // https with :1234: the signature is over the URL without the port
            (
                BASE.replace(".com", ".com:1234"),
                PARAMS,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            ),
            // http with :1234 signed as given
            (
                BASE.replace(".com", ".com:1234").replace("https", "http"),
                PARAMS,
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            // http signed with :80 added
            (
                BASE.replace("https", "http"),
                PARAMS,
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
            // repeated names: sorted and de-duplicated
            (
                BASE.into(),
                "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234",
                "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
            ),
            (
                BASE.into(),
                "MessagingBinding.Address=%2B1325xxxxxxx&MessagingBinding.Address=%2B1415xxxxxxx",
                "83O6e2vORAoJHUNzJjDWN1jz+BA=",
            ),
            (
                BASE.into(),
                "MessagingBinding.Address=%2B1415xxxxxxx&MessagingBinding.Address=%2B1325xxxxxxx",
                "83O6e2vORAoJHUNzJjDWN1jz+BA=",
            ),
            // node: the query value was signed with %27; the request carries a raw '
            (
                format!("{BASE}&Body=It's+amazing"),
                PARAMS,
                "TfZzewPq8wqrGlMfyAud8+/IvJ0=",
            ),
            (
                format!("{BASE}&Body=It%27s+amazing"),
                PARAMS,
                "TfZzewPq8wqrGlMfyAud8+/IvJ0=",
            ),
        ];
        for (url, body, sig) in cases {
            let ok = check(&*v, url, Some(FORM), body, sig)
                .unwrap_or_else(|e| panic!("{url} {body} {sig}: {e:?}"));
            assert_eq!((ok.scheme(), ok.key_label()), ("hmac-sha1", "primary"));
        }
    }

    #[test]
    fn json_body_is_bound_by_body_sha256() {
        let v = verifier();
        let body = r#"{"property": "value", "boolean": true}"#;
        let url = format!(
            "{BASE}&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert!(check(&*v, &url, Some("application/json"), body, sig).is_ok());
        assert_eq!(
            check(
                &*v,
                &url,
                Some("application/json"),
                r#"{"property": "value", "boolean": false}"#,
                sig
            ),
            Err(Reject::BodyHashMismatch)
        );
        // `{}` is signed with :443 added (twilio-node test).
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert!(check(
            &*v,
            url,
            Some("application/json"),
            "{}",
            "Ldidvp12m26NI7eqEvxnEpkd9Hc="
        )
        .is_ok());
    }

    #[test]
    fn uncovered_body_is_refused() {
        let v = verifier();
        assert_eq!(
            check(
                &*v,
                BASE,
                Some("application/json"),
                "{}",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8="
            ),
            Err(Reject::Unsupported {
                what:
                    "a non-form body without bodySHA256 in the URL is not covered by the signature"
            })
        );
    }

    #[test]
    fn sha256_shared_key_vector_and_settings_header() {
        // PROVIDERS.md §1.2 [derived] with twilio-python 9.13.0.
        let v = verifier_with(
            &opts("hmac-sha256"),
            &[("old", "nope"), ("webhooks_sharedkey_1", TOKEN)],
        );
        let sig = "033hgUJA9M/hXIZsYjwkerEP/DBm35nEri5FhCYjA5s=";
        let run = |settings: Option<&str>| {
            let mut h = vec![("x-twilio-signature", sig), ("content-type", FORM)];
            if let Some(s) = settings {
                h.push((SETTINGS, s));
            }
            let h = headers(&h);
            v.verify(
                &Request {
                    method: "POST",
                    url: BASE,
                    headers: &h,
                    body: PARAMS.as_bytes(),
                },
                0,
            )
        };
        let ok = run(Some("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256")).unwrap();
        assert_eq!(
            (ok.scheme(), ok.key_label()),
            ("hmac-sha256", "webhooks_sharedkey_1")
        );
        assert!(
            run(None).is_ok(),
            "the header is an ordering hint, not a requirement"
        );
        assert!(run(Some(" algorithm = hmac_sha256 ")).is_ok());
        assert!(matches!(
            run(Some("key=k,algorithm=HMAC_SHA1")),
            Err(Reject::Unsupported { .. })
        ));
        assert!(matches!(
            run(Some("key=k")),
            Err(Reject::Unsupported { .. })
        ));
        assert!(matches!(
            run(Some("algorithm=HMAC_MD5")),
            Err(Reject::Unsupported { .. })
        ));

        // A SHA-1 route refuses a request that announces SHA-256, whatever the signature.
        let v1 = verifier();
        let h = headers(&[
            ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("content-type", FORM),
            (SETTINGS, "key=x,algorithm=HMAC_SHA256"),
        ]);
        assert!(matches!(
            v1.verify(
                &Request {
                    method: "POST",
                    url: BASE,
                    headers: &h,
                    body: PARAMS.as_bytes()
                },
                0
            ),
            Err(Reject::Unsupported { .. })
        ));
        // A SHA-1 signature on a SHA-256 route is the wrong length.
        let h = headers(&[
            ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("content-type", FORM),
        ]);
        assert!(matches!(
            v.verify(
                &Request {
                    method: "POST",
                    url: BASE,
                    headers: &h,
                    body: PARAMS.as_bytes()
                },
                0
            ),
            Err(Reject::SignatureMalformed { .. })
        ));
    }

    #[test]
    fn docs_example_and_get() {
        let v = verifier();
        let body = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
        assert!(check(&*v, BASE, Some(FORM), body, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=").is_ok());
        // GET: the signature is over the URL alone.
        let mut mac = KeyedMac::sha1(TOKEN.as_bytes()).unwrap();
        mac.update(BASE.as_bytes());
        let sig = b64(&mac.finalize());
        let h = headers(&[("x-twilio-signature", &sig)]);
        let req = Request {
            method: "GET",
            url: BASE,
            headers: &h,
            body: b"",
        };
        assert!(v.verify(&req, 0).is_ok());
        let req = Request {
            url: "https://mycompany.com/myapp.php?foo=1&bar=3",
            ..req
        };
        assert_eq!(v.verify(&req, 0), Err(Reject::SignatureMismatch));
    }

    fn round_trip(alg: &str, input: &SignInput) {
        let o = opts(alg);
        let signed = sign(&o, &Secret::new(TOKEN), input).unwrap();
        let v = verifier_with(&o, &[("old", "other-token"), ("new", TOKEN)]);
        let h = signed.header_map();
        let req = Request {
            method: &signed.method,
            url: &signed.url,
            headers: &h,
            body: &signed.body,
        };
        let ok = v.verify(&req, 0).unwrap();
        assert_eq!(ok.key_label(), "new");
        assert_eq!(
            ok.event_id_str(),
            None,
            "the unsigned idempotency token must not be trusted"
        );

        // Every single-byte change of the URL, the body and the signature is refused.
        for i in 0..signed.url.len() {
            let mut u = signed.url.clone().into_bytes();
            u[i] ^= 0x01;
            let Ok(u) = String::from_utf8(u) else {
                continue;
            };
            let got = v.verify(&req.with_url(&u), 0);
            assert!(got.is_err(), "url byte {i} changed still verifies: {u}");
        }
        for i in 0..signed.body.len() {
            let mut b = signed.body.clone();
            b[i] ^= 0x01;
            let got = v.verify(&req.with_body(&b), 0);
            assert!(
                matches!(
                    got,
                    Err(Reject::SignatureMismatch | Reject::BodyHashMismatch)
                ),
                "body byte {i}: {got:?}"
            );
        }
        let sig = h.get(SIGNATURE).unwrap().to_str().unwrap().to_owned();
        for i in 0..sig.len() {
            let mut s = sig.clone().into_bytes();
            s[i] = if s[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(s).unwrap();
            let mut h2 = h.clone();
            h2.insert(SIGNATURE, s.parse().unwrap());
            let got = v.verify(
                &Request {
                    headers: &h2,
                    ..req
                },
                0,
            );
            assert!(
                matches!(
                    got,
                    Err(Reject::SignatureMismatch | Reject::SignatureMalformed { .. })
                ),
                "sig byte {i}: {got:?}"
            );
        }
        // Wrong key.
        let wrong = verifier_with(&o, &[("k", "54321")]);
        assert_eq!(wrong.verify(&req, 0), Err(Reject::SignatureMismatch));
    }

    #[test]
    fn sign_verify_round_trips_and_tamper_sweep() {
        for alg in ["hmac-sha1", "hmac-sha256"] {
            round_trip(
                alg,
                &sample(
                    &Options::new(),
                    "https://hooks.example.com/twilio/voice?x=1",
                ),
            );
            round_trip(
                alg,
                &SignInput {
                    method: "POST".into(),
                    url: "https://hooks.example.com/conv".into(),
                    content_type: Some("application/json".into()),
                    body: br#"{"ConversationSid":"CH1","Body":"hi"}"#.to_vec(),
                    now: 0,
                    nonce: "tok-1".into(),
                },
            );
        }
    }

    #[test]
    fn tampered_param_name_or_value_is_refused() {
        let v = verifier();
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        for body in [
            "CallSid=CA1234567890ABCDF&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212",
            "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1235&From=%2B14158675309&To=%2B18005551212",
            "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&Tp=%2B18005551212",
            "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309",
            "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212&X=1",
        ] {
            assert_eq!(check(&*v, BASE, Some(FORM), body, sig), Err(Reject::SignatureMismatch), "{body}");
        }
    }

    #[test]
    fn missing_malformed_and_expired() {
        let v = verifier();
        let h = headers(&[("content-type", FORM)]);
        let req = Request {
            method: "POST",
            url: BASE,
            headers: &h,
            body: PARAMS.as_bytes(),
        };
        assert_eq!(
            v.verify(&req, 0),
            Err(Reject::SignatureMissing { header: SIGNATURE })
        );
        for bad in ["!!!!", "%%%%notbase64", "AAAA"] {
            assert!(
                matches!(
                    check(&*v, BASE, Some(FORM), PARAMS, bad),
                    Err(Reject::SignatureMalformed { .. })
                ),
                "{bad}"
            );
        }
        let huge = "A".repeat(100_000);
        assert!(matches!(
            check(&*v, BASE, Some(FORM), PARAMS, &huge),
            Err(Reject::SignatureMalformed {
                why: "too long",
                ..
            })
        ));
        assert_eq!(
            check(
                &*v,
                "not a url",
                Some(FORM),
                PARAMS,
                "RSOYDt4T1cUTdK1PDd93/VVr8B8="
            ),
            Err(Reject::UrlMalformed)
        );
        let ring = KeyRing::new(vec![Key {
            not_after: Some(10),
            ..Key::new("k", Secret::new(TOKEN))
        }])
        .unwrap();
        let v = build(&Options::new(), &ring, &Settings::default()).unwrap();
        let h = headers(&[
            ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("content-type", FORM),
        ]);
        let req = Request {
            method: "POST",
            url: BASE,
            headers: &h,
            body: PARAMS.as_bytes(),
        };
        assert!(v.verify(&req, 10).is_ok());
        assert_eq!(v.verify(&req, 11), Err(Reject::KeyExpired));
    }

    #[test]
    fn invalid_utf8_body_is_signed_as_bytes_and_never_panics() {
        let v = verifier();
        let h = headers(&[
            ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("content-type", FORM),
        ]);
        let body = b"A=%FF%FE\xff\xfe&B=\x80";
        let req = Request {
            method: "POST",
            url: BASE,
            headers: &h,
            body,
        };
        assert_eq!(v.verify(&req, 0), Err(Reject::SignatureMismatch));
    }

    #[test]
    fn options_are_checked() {
        let ring = KeyRing::single(Secret::new(TOKEN));
        assert!(matches!(
            build(&opts("md5"), &ring, &Settings::default()),
            Err(BuildError::Option(_))
        ));
        let mut o = Options::new();
        o.insert("algoritm".into(), "hmac-sha1".into());
        assert!(matches!(
            build(&o, &ring, &Settings::default()),
            Err(BuildError::Option(_))
        ));
        assert_eq!(lint(&Options::new()).len(), 1);
        assert!(lint(&opts("hmac-sha256")).is_empty());
    }

    #[test]
    fn node_url_forms() {
        let u = Url::parse("https://Example.com:443?b=it's+ok&a=1&b=2&0=z").unwrap();
        let all = url_variants(&u);
        assert!(
            all.contains(&"https://example.com/?b=it%27s+ok&a=1&b=2&0=z".to_string()),
            "{all:?}"
        );
        assert!(
            all.contains(&"https://example.com/?0=z&b=it's%20ok&b=2&a=1".to_string()),
            "{all:?}"
        );
        assert!(
            all.contains(&"https://Example.com?b=it's+ok&a=1&b=2&0=z".to_string()),
            "{all:?}"
        );
    }

    /// The straightforward canonicaliser, the specification of the fast one: decode every pair,
    /// sort (Twilio: by name then value, identical pairs once; SignalWire: stable by name),
    /// concatenate.
    fn reference_params(body: &[u8], repeats: Repeats) -> Vec<u8> {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = form::parse(body)
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        match repeats {
            Repeats::SortedDeduped => {
                pairs.sort();
                pairs.dedup();
            }
            Repeats::SubmissionOrder => pairs.sort_by(|a, b| a.0.cmp(&b.0)),
        }
        pairs
            .into_iter()
            .flat_map(|(k, v)| [k, v])
            .flatten()
            .collect()
    }

    #[test]
    fn canonical_params_takes_every_path() {
        for (body, repeats) in [
            (&b"a=1&b=2&c=3"[..], Repeats::SortedDeduped),
            (b"c=3&a=1&b=%2B2", Repeats::SortedDeduped),
            (b"a=2&a=1&a=2&b", Repeats::SortedDeduped),
            (b"b=1&a=2&a=1", Repeats::SubmissionOrder),
            (b"a=2&a=1", Repeats::SubmissionOrder),
            (b"%62=1&a=2", Repeats::SortedDeduped),
            (b"a+b=1&a%20a=2&a", Repeats::SubmissionOrder),
            (b"x=100%&y=%4&z=%zz+%41", Repeats::SortedDeduped),
            (b"", Repeats::SortedDeduped),
            (b"&&", Repeats::SubmissionOrder),
        ] {
            assert_eq!(
                canonical_params(body, repeats),
                reference_params(body, repeats),
                "{body:?} {repeats:?}"
            );
        }
    }

    #[test]
    fn prebuilt_header_lookup_answers_as_request_header() {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE, "abc".parse().unwrap());
        h.append(SETTINGS, "a".parse().unwrap());
        h.append(SETTINGS, "b".parse().unwrap());
        let bad = http::HeaderValue::from_bytes(b"\xffx").unwrap();
        h.insert("x-other", bad);
        let req = Request {
            method: "POST",
            url: BASE,
            headers: &h,
            body: b"",
        };
        for name in [&SIGNATURE_NAME, &SETTINGS_NAME] {
            assert_eq!(req.header_named(name), req.header(name.label()));
        }
        static OTHER: Known = Known::new("x-other");
        assert_eq!(req.header_named(&OTHER), req.header("x-other"));
        static ABSENT: Known = Known::new("x-absent");
        assert_eq!(req.header_named(&ABSENT), Ok(None));
    }

    #[test]
    fn sample_is_realistic() {
        let s = sample(&Options::new(), "https://x/");
        assert!(s.body.len() > 800, "{}", s.body.len());
        assert!(String::from_utf8_lossy(&s.body).contains("%2B1"));
    }

    proptest! {
        #[test]
        fn canonical_order_is_sorted_and_deduped(pairs in proptest::collection::vec(("[a-c]{0,2}", "[x-z]{0,2}"), 0..12)) {
            let body = form::encode_pairs(&pairs);
            let mut want: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            want.sort();
            want.dedup();
            let want: String = want.iter().flat_map(|(k, v)| [*k, *v]).collect();
            prop_assert_eq!(canonical_params(body.as_bytes(), Repeats::SortedDeduped), want.into_bytes());

            let mut want: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            want.sort_by(|a, b| a.0.cmp(b.0));
            let want: String = want.iter().flat_map(|(k, v)| [*k, *v]).collect();
            prop_assert_eq!(canonical_params(body.as_bytes(), Repeats::SubmissionOrder), want.into_bytes());
        }

        #[test]
        fn canonical_params_equals_reference_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            for repeats in [Repeats::SortedDeduped, Repeats::SubmissionOrder] {
                prop_assert_eq!(canonical_params(&body, repeats), reference_params(&body, repeats));
            }
        }

        #[test]
        fn canonical_params_equals_reference_on_form_like_bytes(
            body in proptest::collection::vec(proptest::sample::select(b"&&==%%++aabB0fF1\xff\xc3".to_vec()), 0..128)
        ) {
            for repeats in [Repeats::SortedDeduped, Repeats::SubmissionOrder] {
                prop_assert_eq!(canonical_params(&body, repeats), reference_params(&body, repeats));
            }
        }

        #[test]
        fn canonical_params_equals_reference_on_encoded_pairs(
            pairs in proptest::collection::vec(("[a-dA%+=&]{0,3}", "[x-z +%=&\u{e9}]{0,3}"), 0..16),
            raw_tail in "[a-c=%+&]{0,6}",
            shuffle in any::<bool>(),
        ) {
            let mut pairs = pairs;
            if shuffle {
                pairs.reverse();
            } else {
                pairs.sort();
            }
            let mut body = form::encode_pairs(&pairs);
            // Some bodies keep their escapes undecoded or add raw `+`, `%` and `=`.
            body.push_str(&raw_tail);
            for repeats in [Repeats::SortedDeduped, Repeats::SubmissionOrder] {
                prop_assert_eq!(canonical_params(body.as_bytes(), repeats), reference_params(body.as_bytes(), repeats));
            }
        }

        #[test]
        fn verify_never_panics(url in "https?://[a-z.:0-9\\[\\]@]{0,20}/[ -~]{0,30}", body in proptest::collection::vec(any::<u8>(), 0..64), sig in "[ -~]{0,40}") {
            let v = verifier();
            let mut h = HeaderMap::new();
            if let Ok(s) = http::HeaderValue::from_str(&sig) {
                h.insert(SIGNATURE, s);
            }
            h.insert("content-type", http::HeaderValue::from_static(FORM));
            let _ = v.verify(&Request { method: "POST", url: &url, headers: &h, body: &body }, 0);
        }
    }
}
