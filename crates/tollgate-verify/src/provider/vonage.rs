//! Vonage (formerly Nexmo) webhook signatures, two unrelated schemes chosen per route:
//!
//! * `jwt` (default; Voice, Messages, Video): `Authorization: Bearer <JWT>`, HS256 with the
//!   account's signature secret. The SDKs check only the HMAC; tollgate also requires the signed
//!   `payload_hash` (hex SHA-256 of the body) to match, so the body cannot be swapped, and the
//!   signed `iat` to be fresh. Only `alg: HS256` is accepted: `none` or an asymmetric algorithm
//!   would let the token itself choose how it is checked.
//! * `sms-signature` (legacy SMS API, opt-in): a `sig` parameter over the other parameters,
//!   sorted, as `&name=value` with `&` and `=` in values replaced by `_`, hashed with the
//!   dashboard's method (plain MD5 of string + secret, or an HMAC). The signed `timestamp`
//!   parameter gives freshness.
//!
//! Neither scheme binds the URL, so diagnosis has no URL variants to try.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::{
    parse_options, same_key, Options, ProviderSpec, Settings, SignInput, Signed, Verifier,
};
use crate::encoding::{b64url, b64url_decode, ct_eq, hex_signature};
use crate::form::{self, Pair};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, Secret};
use crate::time::{check_window, parse_unix};
use crate::url::Url;
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "vonage",
    summary: "Vonage: HS256 JWT in Authorization with payload_hash and iat (default), or legacy SMS `sig` parameter",
    signs_time: true,
    build,
    sign,
    verify_key_for: same_key,
    sample,
    lint,
};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Scheme {
    /// Signed webhooks: HS256 JWT bearer token.
    #[default]
    Jwt,
    /// Legacy SMS API `sig` parameter.
    SmsSignature,
}

/// The dashboard's "signature method" for `sms-signature`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum SigMethod {
    /// Plain `MD5(string + secret)`, not an HMAC.
    Md5hash,
    /// HMAC-MD5 (what the current python SDK means by `md5`).
    Md5,
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl SigMethod {
    fn digest_len(self) -> usize {
        match self {
            SigMethod::Md5hash | SigMethod::Md5 => 16,
            SigMethod::Sha1 => 20,
            SigMethod::Sha256 => 32,
            SigMethod::Sha512 => 64,
        }
    }
}

/// Route options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VonageOptions {
    /// `jwt` (default) or `sms-signature`.
    #[serde(default)]
    scheme: Scheme,
    /// For `sms-signature`: `md5hash`, `md5`, `sha1`, `sha256` (default) or `sha512`.
    #[serde(default)]
    signature_method: Option<SigMethod>,
}

impl VonageOptions {
    fn parse(opts: &Options) -> Result<Self, BuildError> {
        let o: VonageOptions = parse_options(opts)?;
        if o.scheme == Scheme::Jwt && o.signature_method.is_some() {
            return Err(BuildError::Option(
                "signature_method applies only to scheme = \"sms-signature\"; Vonage JWTs are always HS256"
                    .into(),
            ));
        }
        Ok(o)
    }

    fn method(&self) -> SigMethod {
        self.signature_method.unwrap_or_default()
    }
}

/// A key prepared for the route's `sms-signature` method.
#[derive(Debug, Clone)]
enum SmsKey {
    // `Secret` prints as `[redacted]`; plain MD5 appends the secret, so there is nothing to pre-key.
    Md5Hash(Secret),
    Md5(Hmac<Md5>),
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

fn non_empty(secret: &Secret) -> Result<&[u8], BuildError> {
    match secret.expose() {
        [] => Err(BuildError::Key("Vonage signature secret is empty".into())),
        s => Ok(s),
    }
}

fn hmac<M: Mac + hmac::digest::KeyInit>(secret: &Secret) -> Result<M, BuildError> {
    <M as Mac>::new_from_slice(non_empty(secret)?)
        .map_err(|_| BuildError::Key("unusable HMAC key".into()))
}

fn sms_key(method: SigMethod, secret: &Secret) -> Result<SmsKey, BuildError> {
    Ok(match method {
        SigMethod::Md5hash => {
            non_empty(secret)?;
            SmsKey::Md5Hash(secret.clone())
        }
        SigMethod::Md5 => SmsKey::Md5(hmac(secret)?),
        SigMethod::Sha1 => SmsKey::Sha1(hmac(secret)?),
        SigMethod::Sha256 => SmsKey::Sha256(hmac(secret)?),
        SigMethod::Sha512 => SmsKey::Sha512(hmac(secret)?),
    })
}

#[derive(Debug)]
enum Vonage {
    Jwt {
        keys: Prepared<Hmac<Sha256>>,
        tolerance_secs: u64,
    },
    Sms {
        method: SigMethod,
        keys: Prepared<SmsKey>,
        tolerance_secs: u64,
    },
}

fn build(
    opts: &Options,
    keys: &KeyRing,
    settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let o = VonageOptions::parse(opts)?;
    let tolerance_secs = settings.tolerance_secs;
    Ok(Box::new(match o.scheme {
        Scheme::Jwt => Vonage::Jwt {
            keys: keys.prepare(hmac::<Hmac<Sha256>>)?,
            tolerance_secs,
        },
        Scheme::SmsSignature => Vonage::Sms {
            method: o.method(),
            keys: keys.prepare(|s| sms_key(o.method(), s))?,
            tolerance_secs,
        },
    }))
}

impl Verifier for Vonage {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        match self {
            Vonage::Jwt {
                keys,
                tolerance_secs,
            } => verify_jwt(keys, *tolerance_secs, req, now),
            Vonage::Sms {
                method,
                keys,
                tolerance_secs,
            } => verify_sms(*method, keys, *tolerance_secs, req, now),
        }
    }

    fn signs_url(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// JWT

const AUTHORIZATION: &str = "authorization";
/// Vonage tokens are a few hundred bytes; anything near this is not one.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The only header the signer emits (and what Vonage sends).
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn malformed(why: &'static str) -> Reject {
    Reject::SignatureMalformed {
        header: AUTHORIZATION,
        why,
    }
}

/// A token split into its three segments, with the HS256 signature decoded and the algorithm
/// checked. Nothing signed has been trusted yet.
struct Token<'a> {
    signing_input: &'a str,
    claims_b64: &'a str,
    signature: [u8; 32],
}

#[derive(serde::Deserialize)]
struct JoseHeader {
    alg: Option<String>,
}

fn parse_token(auth: &str) -> Result<Token<'_>, Reject> {
    if auth.len() > MAX_TOKEN_LEN {
        return Err(malformed("too long"));
    }
    let token = match auth.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => auth.get(7..).unwrap_or("").trim(),
        _ => return Err(malformed("not a Bearer token")),
    };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a JWT has three dot-separated segments"));
    };
    // The header has to be read before the MAC to refuse other algorithms; it is tiny and bounded.
    let header = b64url_decode(h).ok_or_else(|| malformed("JWT header is not base64url"))?;
    let header: JoseHeader = serde_json::from_slice(&header)
        .map_err(|_| malformed("JWT header is not a JSON object"))?;
    if header.alg.as_deref() != Some("HS256") {
        return Err(Reject::Unsupported {
            what: "JWT algorithm other than HS256",
        });
    }
    let signature = b64url_decode(s.trim_end_matches('='))
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| malformed("JWT signature is not 32 bytes of base64url"))?;
    Ok(Token {
        signing_input: token.get(..h.len() + 1 + p.len()).unwrap_or(""),
        claims_b64: p,
        signature,
    })
}

/// The HS256 check alone: what the SDKs (`verify_signature`, `verify_webhook_token`) do.
fn hs256_matches(mac: &Hmac<Sha256>, token: &Token<'_>) -> bool {
    let mut mac = mac.clone();
    mac.update(token.signing_input.as_bytes());
    ct_eq(&mac.finalize().into_bytes(), &token.signature)
}

#[derive(serde::Deserialize)]
struct Claims {
    iat: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
    payload_hash: Option<serde_json::Value>,
}

/// A NumericDate: JSON number, integer or not (RFC 7519 allows fractions; whole seconds are kept).
fn numeric_date(v: &serde_json::Value, claim: &'static str) -> Result<i64, Reject> {
    let bad = Reject::TimestampMalformed { header: claim };
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f.floor() as i64),
        _ => Err(bad),
    }
}

/// The SHA-256 a Vonage `payload_hash` may commit to for this request. For a body, its bytes. For
/// a bodiless GET (Voice webhooks with the GET method), Vonage's support article says the hash is of
/// the query parameters as a compact JSON object in their original order: best effort, since no
/// SDK implements it. A GET with no query is also accepted with the hash of the empty body.
fn body_hashes(req: &Request<'_>) -> Result<Vec<[u8; 32]>, Reject> {
    if !(req.method == "GET" && req.body.is_empty()) {
        return Ok(vec![Sha256::digest(req.body).into()]);
    }
    let query = Url::parse(req.url)?.query.unwrap_or("");
    let pairs = form::parse(query.as_bytes());
    let Some(json) = query_json(&pairs) else {
        // Not UTF-8: no JSON text Vonage could have hashed.
        return Err(Reject::BodyHashMismatch);
    };
    let mut out = vec![Sha256::digest(json.as_bytes()).into()];
    if pairs.is_empty() {
        out.push(Sha256::digest(b"").into());
    }
    Ok(out)
}

/// `{"name":"value",…}` in received order, no whitespace, values as strings.
fn query_json(pairs: &[Pair<'_>]) -> Option<String> {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&serde_json::to_string(std::str::from_utf8(k).ok()?).ok()?);
        s.push(':');
        s.push_str(&serde_json::to_string(std::str::from_utf8(v).ok()?).ok()?);
    }
    s.push('}');
    Some(s)
}

fn verify_jwt(
    keys: &Prepared<Hmac<Sha256>>,
    tolerance_secs: u64,
    req: &Request<'_>,
    now: i64,
) -> Result<Verified, Reject> {
    let auth = req.require_header(
        AUTHORIZATION,
        Reject::SignatureMissing {
            header: AUTHORIZATION,
        },
    )?;
    let token = parse_token(auth)?;
    let key = keys
        .live(now)?
        .find(|k| hs256_matches(&k.state, &token))
        .ok_or(Reject::SignatureMismatch)?;

    // From here on the claims are authentic; read them.
    let claims = b64url_decode(token.claims_b64)
        .and_then(|c| serde_json::from_slice::<Claims>(&c).ok())
        .ok_or_else(|| malformed("JWT claims are not a JSON object"))?;

    let hash = claims
        .payload_hash
        .as_ref()
        .and_then(|h| h.as_str())
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Reject::BodyHashMismatch)?;
    if !body_hashes(req)?.iter().any(|b| ct_eq(b, &hash)) {
        return Err(Reject::BodyHashMismatch);
    }

    let iat = numeric_date(
        claims
            .iat
            .as_ref()
            .ok_or(Reject::TimestampMissing { header: "iat" })?,
        "iat",
    )?;
    check_window(iat, now, tolerance_secs)?;
    // Vonage sends no `exp`/`nbf`; when a token has them, they only narrow the window.
    if let Some(exp) = &claims.exp {
        let exp = numeric_date(exp, "exp")?;
        if now > exp {
            return Err(Reject::TimestampOutOfWindow {
                skew_secs: now.saturating_sub(exp),
                tolerance_secs: 0,
            });
        }
    }
    if let Some(nbf) = &claims.nbf {
        let nbf = numeric_date(nbf, "nbf")?;
        if now < nbf {
            return Err(Reject::TimestampOutOfWindow {
                skew_secs: now.saturating_sub(nbf),
                tolerance_secs: 0,
            });
        }
    }
    let jti = claims
        .jti
        .as_ref()
        .and_then(|j| j.as_str())
        .map(str::to_owned);
    Ok(Verified::new(SPEC.id, "jwt", key.label.clone())
        .signed_at(Some(iat))
        .event_id(jti))
}

// ---------------------------------------------------------------------------------------------
// SMS `sig`

const SIG: &str = "sig";
const TIMESTAMP: &str = "timestamp";

/// Where the parameters of a request live: query for GET, JSON or form body for POST (and the query
/// for a bodiless POST).
fn sms_params<'a>(req: &Request<'a>) -> Result<Vec<Pair<'a>>, Reject> {
    let is_json = req
        .media_type()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"));
    if req.method == "POST" && is_json {
        return json_params(req.body);
    }
    if req.method == "POST" && !req.body.is_empty() {
        return Ok(form::parse(req.body));
    }
    if !req.body.is_empty() {
        // A body next to query parameters would reach the app unsigned.
        return Err(Reject::BodyMalformed {
            why: "Vonage sig requests carry parameters either in the query or in the body",
        });
    }
    Ok(form::parse(
        Url::parse(req.url)?.query.unwrap_or("").as_bytes(),
    ))
}

/// Top-level JSON members as parameters. Strings are taken as is, numbers as written; anything
/// else has no agreed string form between the SDKs and is refused.
fn json_params(body: &[u8]) -> Result<Vec<Pair<'static>>, Reject> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| Reject::BodyMalformed {
            why: "not a JSON object",
        })?;
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(Reject::BodyMalformed {
                        why: "JSON parameter is not a string or a number",
                    })
                }
            };
            Ok((Cow::Owned(k.into_bytes()), Cow::Owned(v.into_bytes())))
        })
        .collect()
}

/// Feeds `&name=value…` for the sorted parameters other than `sig`, with `&` and `=` in values
/// replaced by `_` (the SDKs replace them in values only).
fn feed_sms(sorted: &[Pair<'_>], out: &mut dyn FnMut(&[u8])) {
    for (k, v) in sorted.iter().filter(|(k, _)| &**k != SIG.as_bytes()) {
        out(b"&");
        out(k);
        out(b"=");
        let mut rest: &[u8] = v;
        while let Some(i) = rest.iter().position(|&b| b == b'&' || b == b'=') {
            out(rest.get(..i).unwrap_or_default());
            out(b"_");
            rest = rest.get(i + 1..).unwrap_or_default();
        }
        out(rest);
    }
}

fn sms_tag_matches(key: &SmsKey, sorted: &[Pair<'_>], sig: &[u8]) -> bool {
    fn run<M: Mac + Clone>(m: &M, sorted: &[Pair<'_>], sig: &[u8]) -> bool {
        let mut m = m.clone();
        feed_sms(sorted, &mut |b| m.update(b));
        ct_eq(&m.finalize().into_bytes(), sig)
    }
    match key {
        SmsKey::Md5Hash(secret) => {
            let mut h = Md5::new();
            feed_sms(sorted, &mut |b| h.update(b));
            h.update(secret.expose());
            ct_eq(&h.finalize(), sig)
        }
        SmsKey::Md5(m) => run(m, sorted, sig),
        SmsKey::Sha1(m) => run(m, sorted, sig),
        SmsKey::Sha256(m) => run(m, sorted, sig),
        SmsKey::Sha512(m) => run(m, sorted, sig),
    }
}

fn param<'p>(pairs: &'p [Pair<'_>], name: &str) -> Option<&'p [u8]> {
    pairs
        .iter()
        .find(|(k, _)| &**k == name.as_bytes())
        .map(|(_, v)| &**v)
}

fn verify_sms(
    method: SigMethod,
    keys: &Prepared<SmsKey>,
    tolerance_secs: u64,
    req: &Request<'_>,
    now: i64,
) -> Result<Verified, Reject> {
    let mut pairs = sms_params(req)?;
    pairs.sort_unstable_by(|a, b| (&*a.0, &*a.1).cmp(&(&*b.0, &*b.1)));
    // The SDKs take the parameters as a map; a repeated name has no single signed value.
    if pairs.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
        return Err(Reject::BodyMalformed {
            why: "repeated parameter",
        });
    }
    let sig = param(&pairs, SIG).ok_or(Reject::SignatureMissing { header: SIG })?;
    let ts = param(&pairs, TIMESTAMP).ok_or(Reject::TimestampMissing { header: TIMESTAMP })?;
    let ts = std::str::from_utf8(ts)
        .map_err(|_| Reject::TimestampMalformed { header: TIMESTAMP })
        .and_then(|t| parse_unix(t, TIMESTAMP))?;
    let sig = std::str::from_utf8(sig)
        .map_err(|_| Reject::SignatureMalformed {
            header: SIG,
            why: "not hex",
        })
        .and_then(|s| hex_signature(s, SIG))?;
    if sig.len() != method.digest_len() {
        return Err(Reject::SignatureMalformed {
            header: SIG,
            why: "wrong length for the route's signature_method",
        });
    }
    check_window(ts, now, tolerance_secs)?;
    for key in keys.live(now)? {
        if sms_tag_matches(&key.state, &pairs, &sig) {
            let id = param(&pairs, "messageId").map(|m| String::from_utf8_lossy(m).into_owned());
            return Ok(Verified::new(SPEC.id, "sms-signature", key.label.clone())
                .signed_at(Some(ts))
                .event_id(id));
        }
    }
    Err(Reject::SignatureMismatch)
}

// ---------------------------------------------------------------------------------------------
// Signing, lints, sample

fn content_type_is(input: &SignInput, media: &str) -> bool {
    input
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media))
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let o = VonageOptions::parse(opts)?;
    let mut headers = Vec::new();
    let mut url = input.url.clone();
    let mut body = input.body.clone();
    match o.scheme {
        Scheme::Jwt => {
            let headers_probe = http::HeaderMap::new();
            let req = Request {
                method: &input.method,
                url: &input.url,
                headers: &headers_probe,
                body: &input.body,
            };
            let hash = body_hashes(&req)
                .ok()
                .and_then(|h| h.into_iter().next())
                .ok_or_else(|| SignError("cannot hash this request's payload".into()))?;
            let jti =
                serde_json::to_string(&input.nonce).map_err(|e| SignError(format!("jti: {e}")))?;
            let claims = format!(
                r#"{{"iat":{},"jti":{jti},"iss":"Vonage","payload_hash":"{}"}}"#,
                input.now,
                hex::encode(hash)
            );
            let signing_input = format!(
                "{}.{}",
                b64url(JWT_HEADER.as_bytes()),
                b64url(claims.as_bytes())
            );
            let mut mac: Hmac<Sha256> = hmac(secret)?;
            mac.update(signing_input.as_bytes());
            let sig = b64url(&mac.finalize().into_bytes());
            headers.push((
                AUTHORIZATION.to_owned(),
                format!("Bearer {signing_input}.{sig}"),
            ));
        }
        Scheme::SmsSignature => {
            let key = sms_key(o.method(), secret)?;
            let json = input.method == "POST" && content_type_is(input, "application/json");
            let in_body = input.method == "POST" && !input.body.is_empty();
            let ts = input.now.to_string();
            if json {
                let mut map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&input.body)
                        .map_err(|e| SignError(format!("body is not a JSON object: {e}")))?;
                let pairs = json_params(&input.body).map_err(|e| SignError(e.to_string()))?;
                let sig = sms_digest(&key, &with_timestamp(pairs, &ts));
                map.remove(SIG);
                map.insert(TIMESTAMP.into(), ts.into());
                map.insert(SIG.into(), sig.into());
                body = serde_json::to_vec(&map).map_err(|e| SignError(e.to_string()))?;
            } else if in_body {
                body = signed_form(&key, &input.body, &ts).into_bytes();
            } else {
                let parsed = Url::parse(&input.url).map_err(|e| SignError(e.to_string()))?;
                let q = signed_form(&key, parsed.query.unwrap_or("").as_bytes(), &ts);
                url = format!(
                    "{}?{q}",
                    Url {
                        query: None,
                        ..parsed
                    }
                    .as_string()
                );
            }
        }
    }
    if let Some(ct) = &input.content_type {
        headers.push(("content-type".into(), ct.clone()));
    }
    Ok(Signed {
        method: input.method.clone(),
        url,
        headers,
        body,
    })
}

/// The parameters with any `sig` removed and `timestamp` set to `ts`, sorted for signing.
fn with_timestamp<'a>(mut pairs: Vec<Pair<'a>>, ts: &str) -> Vec<Pair<'a>> {
    pairs.retain(|(k, _)| &**k != SIG.as_bytes() && &**k != TIMESTAMP.as_bytes());
    pairs.push((
        Cow::Borrowed(TIMESTAMP.as_bytes()),
        Cow::Owned(ts.as_bytes().to_vec()),
    ));
    pairs.sort_unstable_by(|a, b| (&*a.0, &*a.1).cmp(&(&*b.0, &*b.1)));
    pairs
}

/// A form-encoded parameter list with `timestamp` and `sig` appended, in the received order.
fn signed_form(key: &SmsKey, raw: &[u8], ts: &str) -> String {
    let sig = sms_digest(key, &with_timestamp(form::parse(raw), ts));
    let mut out: Vec<Pair<'_>> = form::parse(raw)
        .into_iter()
        .filter(|(k, _)| &**k != SIG.as_bytes() && &**k != TIMESTAMP.as_bytes())
        .collect();
    out.push((
        Cow::Borrowed(TIMESTAMP.as_bytes()),
        Cow::Borrowed(ts.as_bytes()),
    ));
    out.push((Cow::Borrowed(SIG.as_bytes()), Cow::Owned(sig.into_bytes())));
    form::encode_pairs(&out)
}

/// Lowercase hex of the method's digest over sorted pairs (the signer's side of [`sms_tag_matches`]).
fn sms_digest(key: &SmsKey, sorted: &[Pair<'_>]) -> String {
    fn run<M: Mac + Clone>(m: &M, sorted: &[Pair<'_>]) -> String {
        let mut m = m.clone();
        feed_sms(sorted, &mut |b| m.update(b));
        hex::encode(m.finalize().into_bytes())
    }
    match key {
        SmsKey::Md5Hash(secret) => {
            let mut h = Md5::new();
            feed_sms(sorted, &mut |b| h.update(b));
            h.update(secret.expose());
            hex::encode(h.finalize())
        }
        SmsKey::Md5(m) => run(m, sorted),
        SmsKey::Sha1(m) => run(m, sorted),
        SmsKey::Sha256(m) => run(m, sorted),
        SmsKey::Sha512(m) => run(m, sorted),
    }
}

fn lint(opts: &Options) -> Vec<String> {
    let Ok(o) = VonageOptions::parse(opts) else {
        return Vec::new();
    };
    if o.scheme != Scheme::SmsSignature {
        return Vec::new();
    }
    let weak = match o.method() {
        SigMethod::Md5hash => "md5hash (plain MD5 of the string and secret, not an HMAC)",
        SigMethod::Md5 => "md5 (HMAC-MD5)",
        SigMethod::Sha1 => "sha1 (HMAC-SHA1)",
        SigMethod::Sha256 | SigMethod::Sha512 => return Vec::new(),
    };
    vec![format!(
        "vonage signature_method {weak} is weak; Vonage also offers sha256 and sha512 HMACs: switch the \
         dashboard setting and this route together"
    )]
}

fn sample(opts: &Options, url: &str) -> SignInput {
    let sms = VonageOptions::parse(opts).is_ok_and(|o| o.scheme == Scheme::SmsSignature);
    if sms {
        let params: &[(&str, &str)] = &[
            ("msisdn", "447700900001"),
            ("to", "447700900000"),
            ("messageId", "1600000023F0E6F7"),
            ("text", "Hello from Vonage & friends = SMS"),
            ("type", "text"),
            ("keyword", "HELLO"),
            ("api-key", "a1b2c3d4"),
            ("message-timestamp", "2026-11-23 10:00:00"),
        ];
        return SignInput {
            method: "POST".into(),
            url: url.into(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: form::encode_pairs(params).into_bytes(),
            now: 0,
            nonce: String::new(),
        };
    }
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/json".into()),
        body: br#"{"headers":{},"from":"447700900001","to":"447700900000","uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356","conversation_uuid":"CON-f972836a-550f-45fa-956c-12a2ab5b7d22","status":"answered","direction":"inbound","timestamp":"2026-11-23T10:00:00.000Z","start_time":"2026-11-23T10:00:00.000Z","network":"23410","rate":"0.00450000","price":"0","duration":"0","end_time":null,"detail":"ok","client_ref":"tollgate-sample","endpoint":{"type":"phone","number":"447700900001"},"region_url":"https://api-eu-1.vonage.com"}"#.to_vec(),
        now: 0,
        nonce: "2e6ab8b0-1f3f-4a9e-9c55-7ad1f1c5b9d4".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    // Vonage/vonage-ruby-sdk test/vonage/test.rb `sample_webhook_token` / `sample_webhook_secret`.
    const RUBY_SECRET: &str = "ZYtdTtGV3BCFN7tWmOWr1md66XsquMggr4W2cTtXtcPgfnI0Xw";
    const RUBY_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE1ODc0OTQ5NjIsImp0aSI6ImM1YmE4ZjI0LTFhMTQtNGMxMC1iZmRmLTNmYmU4Y2U1MTFiNSIsImlzcyI6IlZvbmFnZSIsInBheWxvYWRfaGFzaCI6ImQ2YzBlNzRiNTg1N2RmMjBlM2I3ZTUxYjMwYzBjMmE0MGVjNzNhNzc4NzliNmYwNzRkZGM3YTIzMTdkZDAzMWIiLCJhcGlfa2V5IjoiYTFiMmMzZCIsImFwcGxpY2F0aW9uX2lkIjoiYWFhYWFhYWEtYmJiYi1jY2NjLWRkZGQtMDEyMzQ1Njc4OWFiIn0.JQRKi1d0SQitmjPINfTWMpt3XZkGsLbD7EjCdXoNSbk";
    const RUBY_IAT: i64 = 1587494962;
    // Vonage/vonage-python-sdk jwt/tests/test_verify_jwt.py.
    const PY_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJPbmxpbmUgSldUIEJ1aWxkZXIiLCJpYXQiOjE2OTc2MzQ2ODAsImV4cCI6MzMyNTQ1NDA4MjgsImF1ZCI6IiIsInN1YiI6IiJ9.88vJc3I2HhuqEDixHXVhc9R30tA6U_HQHZTC29y6CGM";
    const PY_SECRET: &str = "qwertyuiopasdfghjklzxcvbnm123456";
    const SECRET: &str = "sig_secret_for_tests_0123456789";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"status":"answered","uuid":"63f61863"}"#;

    fn verifier(opts: &str, keys: &[(&str, &str)]) -> Box<dyn Verifier> {
        let ring = KeyRing::new(
            keys.iter()
                .map(|(l, k)| crate::Key::new(*l, Secret::new(*k)))
                .collect(),
        )
        .unwrap();
        let opts: Options = serde_json::from_str(opts).unwrap();
        build(&opts, &ring, &Settings::default()).unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    fn run(
        v: &dyn Verifier,
        method: &str,
        url: &str,
        h: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Reject> {
        v.verify(
            &Request {
                method,
                url,
                headers: h,
                body,
            },
            now,
        )
    }

    /// A token with an arbitrary header and claims, HS256-signed with `secret`.
    fn jwt(secret: &str, header: &str, claims: &str) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64url(&mac.finalize().into_bytes()))
    }

    fn claims_for(body: &[u8], iat: i64) -> String {
        format!(
            r#"{{"iat":{iat},"jti":"j-1","iss":"Vonage","payload_hash":"{}"}}"#,
            hex::encode(Sha256::digest(body))
        )
    }

    fn signed_jwt(body: &[u8], now: i64) -> Signed {
        let input = SignInput {
            method: "POST".into(),
            url: "https://h.example/vonage/event".into(),
            content_type: Some("application/json".into()),
            body: body.to_vec(),
            now,
            nonce: "jti-42".into(),
        };
        sign(&Options::new(), &Secret::new(SECRET), &input).unwrap()
    }

    fn jwt_v() -> Box<dyn Verifier> {
        verifier("{}", &[("k", SECRET)])
    }

    #[test]
    fn ruby_sdk_token_has_a_valid_hs256_signature_but_its_body_is_unknown() {
        let auth = format!("Bearer {RUBY_TOKEN}");
        let t = parse_token(&auth).unwrap();
        let good = Hmac::<Sha256>::new_from_slice(RUBY_SECRET.as_bytes()).unwrap();
        let bad = Hmac::<Sha256>::new_from_slice(b"not the secret").unwrap();
        assert!(hs256_matches(&good, &t));
        assert!(!hs256_matches(&bad, &t));
        // The token commits to a body the SDK does not publish; any other body must not pass.
        let v = verifier("{}", &[("k", RUBY_SECRET)]);
        assert_eq!(
            run(
                &*v,
                "POST",
                "https://x/",
                &bearer(RUBY_TOKEN),
                b"{}",
                RUBY_IAT
            ),
            Err(Reject::BodyHashMismatch)
        );
        let v = verifier("{}", &[("k", "wrong")]);
        assert_eq!(
            run(
                &*v,
                "POST",
                "https://x/",
                &bearer(RUBY_TOKEN),
                b"{}",
                RUBY_IAT
            ),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn python_sdk_token_signature_checks_and_lacks_payload_hash() {
        let v = verifier("{}", &[("k", PY_SECRET)]);
        assert_eq!(
            run(
                &*v,
                "POST",
                "https://x/",
                &bearer(PY_TOKEN),
                b"",
                1697634680
            ),
            Err(Reject::BodyHashMismatch)
        );
        let v = verifier("{}", &[("k", "asdf")]);
        assert_eq!(
            run(
                &*v,
                "POST",
                "https://x/",
                &bearer(PY_TOKEN),
                b"",
                1697634680
            ),
            Err(Reject::SignatureMismatch)
        );
        assert_eq!(
            run(&*v, "POST", "https://x/", &bearer("asdf"), b"", 1697634680),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "a JWT has three dot-separated segments"
            })
        );
    }

    #[test]
    fn jwt_round_trip_reports_iat_jti_and_key() {
        let s = signed_jwt(BODY, NOW);
        let v = verifier("{}", &[("old", "other"), ("new", SECRET)]);
        let ok = run(&*v, "POST", &s.url, &s.header_map(), &s.body, NOW + 10).unwrap();
        assert_eq!(
            (
                ok.scheme(),
                ok.key_label(),
                ok.signed_time(),
                ok.event_id_str()
            ),
            ("jwt", "new", Some(NOW), Some("jti-42"))
        );
        assert!(s
            .headers
            .contains(&("content-type".into(), "application/json".into())));
    }

    #[test]
    fn every_body_byte_change_is_a_body_hash_mismatch() {
        let s = signed_jwt(BODY, NOW);
        let h = s.header_map();
        for i in 0..BODY.len() {
            let mut b = BODY.to_vec();
            b[i] ^= 0x01;
            assert_eq!(
                run(&*jwt_v(), "POST", &s.url, &h, &b, NOW),
                Err(Reject::BodyHashMismatch),
                "byte {i}"
            );
        }
    }

    #[test]
    fn every_token_byte_change_is_rejected() {
        let s = signed_jwt(BODY, NOW);
        let token = s.headers[0].1.strip_prefix("Bearer ").unwrap().to_owned();
        for i in 0..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            let got = run(&*jwt_v(), "POST", &s.url, &bearer(&t), BODY, NOW);
            assert!(
                matches!(
                    got,
                    Err(Reject::SignatureMismatch
                        | Reject::SignatureMalformed { .. }
                        | Reject::Unsupported { .. })
                ),
                "byte {i}: {got:?}"
            );
        }
    }

    #[test]
    fn only_hs256_is_accepted() {
        let claims = claims_for(BODY, NOW);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"hs256","typ":"JWT"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let t = jwt(SECRET, header, &claims);
            assert_eq!(
                run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW),
                Err(Reject::Unsupported {
                    what: "JWT algorithm other than HS256"
                }),
                "{header}"
            );
        }
        // The unsigned form of alg=none, with an empty signature segment.
        let none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none"}"#),
            b64url(claims.as_bytes())
        );
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&none), BODY, NOW),
            Err(Reject::Unsupported {
                what: "JWT algorithm other than HS256"
            })
        );
    }

    #[test]
    fn iat_is_required_and_fresh_and_exp_is_honoured() {
        let no_iat = format!(
            r#"{{"jti":"j","payload_hash":"{}"}}"#,
            hex::encode(Sha256::digest(BODY))
        );
        let t = jwt(SECRET, JWT_HEADER, &no_iat);
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW),
            Err(Reject::TimestampMissing { header: "iat" })
        );
        let s = signed_jwt(BODY, NOW);
        let h = s.header_map();
        assert_eq!(
            run(&*jwt_v(), "POST", &s.url, &h, BODY, NOW + 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            run(&*jwt_v(), "POST", &s.url, &h, BODY, NOW - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let bad_iat = format!(
            r#"{{"iat":"yesterday","payload_hash":"{}"}}"#,
            hex::encode(Sha256::digest(BODY))
        );
        let t = jwt(SECRET, JWT_HEADER, &bad_iat);
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW),
            Err(Reject::TimestampMalformed { header: "iat" })
        );
        let expired = format!(
            r#"{{"iat":{NOW},"exp":{},"payload_hash":"{}"}}"#,
            NOW + 5,
            hex::encode(Sha256::digest(BODY))
        );
        let t = jwt(SECRET, JWT_HEADER, &expired);
        assert!(run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW + 5).is_ok());
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW + 6),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 1,
                tolerance_secs: 0
            })
        );
        let fractional = format!(
            r#"{{"iat":{NOW}.75,"payload_hash":"{}"}}"#,
            hex::encode(Sha256::digest(BODY))
        );
        let t = jwt(SECRET, JWT_HEADER, &fractional);
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW)
                .unwrap()
                .signed_time(),
            Some(NOW)
        );
    }

    #[test]
    fn missing_and_malformed_authorization() {
        assert_eq!(
            run(
                &*jwt_v(),
                "POST",
                "https://x/",
                &HeaderMap::new(),
                BODY,
                NOW
            ),
            Err(Reject::SignatureMissing {
                header: AUTHORIZATION
            })
        );
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &h, BODY, NOW),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "not a Bearer token"
            })
        );
        let huge = format!("a.{}.b", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&huge), BODY, NOW),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "too long"
            })
        );
        for (t, why) in [
            ("!!.e30.AAAA", "JWT header is not base64url"),
            ("bm90IGpzb24.e30.AAAA", "JWT header is not a JSON object"),
            ("a.b.c.d", "a JWT has three dot-separated segments"),
        ] {
            assert_eq!(
                run(&*jwt_v(), "POST", "https://x/", &bearer(t), BODY, NOW),
                Err(Reject::SignatureMalformed {
                    header: AUTHORIZATION,
                    why
                }),
                "{t}"
            );
        }
        let short_sig = format!("{}.{}.AAAA", b64url(JWT_HEADER.as_bytes()), b64url(b"{}"));
        assert_eq!(
            run(
                &*jwt_v(),
                "POST",
                "https://x/",
                &bearer(&short_sig),
                BODY,
                NOW
            ),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "JWT signature is not 32 bytes of base64url"
            })
        );
        // Signed but not JSON claims: authentic garbage is still refused, not trusted.
        let t = jwt(SECRET, JWT_HEADER, "not json");
        assert_eq!(
            run(&*jwt_v(), "POST", "https://x/", &bearer(&t), BODY, NOW),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "JWT claims are not a JSON object"
            })
        );
    }

    #[test]
    fn get_voice_webhook_hashes_query_as_compact_json() {
        // Best effort, after Vonage's support article: no SDK implements this.
        let url = "https://h.example/answer?to=447700900000&from=447700900001&conversation_uuid=CON-1&uuid=u%201";
        let json = r#"{"to":"447700900000","from":"447700900001","conversation_uuid":"CON-1","uuid":"u 1"}"#;
        let claims = format!(
            r#"{{"iat":{NOW},"jti":"g","payload_hash":"{}"}}"#,
            hex::encode(Sha256::digest(json.as_bytes()))
        );
        let t = jwt(SECRET, JWT_HEADER, &claims);
        assert!(run(&*jwt_v(), "GET", url, &bearer(&t), b"", NOW).is_ok());
        let reordered = "https://h.example/answer?from=447700900001&to=447700900000&conversation_uuid=CON-1&uuid=u%201";
        assert_eq!(
            run(&*jwt_v(), "GET", reordered, &bearer(&t), b"", NOW),
            Err(Reject::BodyHashMismatch)
        );
        let input = SignInput {
            method: "GET".into(),
            url: url.into(),
            content_type: None,
            body: Vec::new(),
            now: NOW,
            nonce: "g".into(),
        };
        let s = sign(&Options::new(), &Secret::new(SECRET), &input).unwrap();
        assert!(run(&*jwt_v(), "GET", url, &s.header_map(), b"", NOW).is_ok());
        // A GET whose token commits to the empty body cannot carry unsigned query parameters.
        let empty = jwt(SECRET, JWT_HEADER, &claims_for(b"", NOW));
        assert!(run(
            &*jwt_v(),
            "GET",
            "https://h.example/answer",
            &bearer(&empty),
            b"",
            NOW
        )
        .is_ok());
        assert_eq!(
            run(&*jwt_v(), "GET", url, &bearer(&empty), b"", NOW),
            Err(Reject::BodyHashMismatch)
        );
    }

    #[test]
    fn expired_keys_give_key_expired() {
        let ring = KeyRing::new(vec![crate::Key {
            not_after: Some(NOW - 1),
            ..crate::Key::new("k", Secret::new(SECRET))
        }])
        .unwrap();
        let v = build(&Options::new(), &ring, &Settings::default()).unwrap();
        let s = signed_jwt(BODY, NOW);
        assert_eq!(
            run(&*v, "POST", &s.url, &s.header_map(), BODY, NOW),
            Err(Reject::KeyExpired)
        );
    }

    // ---- sms-signature

    // Vonage/vonage-ruby-sdk test/vonage/signature_test.rb.
    const RUBY_SIG_SECRET: &str = "my_secret_key_for_testing";
    const RUBY_PARAMS: &[(&str, &str)] = &[
        ("message-timestamp", "2013-11-21 15:27:30"),
        ("messageId", "020000001B0FE827"),
        ("msisdn", "14843472194"),
        ("text", "Test again"),
        ("timestamp", "1385047698"),
        ("to", "13239877404"),
        ("type", "text"),
    ];
    const RUBY_TS: i64 = 1385047698;
    const RUBY_SIGS: &[(&str, &str)] = &[
        ("md5hash", "d2e7b1dc968737c5998ad624e02f90b7"),
        ("md5", "DDEBD46008C2D4E93CCE578A332A52D5"),
        ("sha1", "27D0D05C2876C7CB1720DBCDBA4D492E1E55C09A"),
        ("sha256", "DDB8397C2B90AAC7F3882D306475C9A5058C92322EEF43C92B298B6E0FC0D330"),
        ("sha512", "E0D3C650F8C9D1A5C174D10DDDBFB003E561F59B265616208B0487C5D819481CD3C311D59CF6165ECD1139622D5BA3A256C0D763AC4A9AD9144B5A426B94FE82"),
    ];

    fn sms_v(method: &str, secret: &str) -> Box<dyn Verifier> {
        verifier(
            &format!(r#"{{"scheme":"sms-signature","signature_method":"{method}"}}"#),
            &[("k", secret)],
        )
    }

    fn form_req(params: &[(&str, &str)], sig: &str) -> (Vec<u8>, HeaderMap) {
        let mut p = params.to_vec();
        p.push(("sig", sig));
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        (form::encode_pairs(&p).into_bytes(), h)
    }

    #[test]
    fn ruby_sig_vectors_verify_in_query_form_and_json_and_either_case() {
        for (method, sig) in RUBY_SIGS {
            let v = sms_v(method, RUBY_SIG_SECRET);
            let (body, h) = form_req(RUBY_PARAMS, sig);
            let ok = run(&*v, "POST", "https://x/sms", &h, &body, RUBY_TS).unwrap();
            assert_eq!(
                (ok.scheme(), ok.signed_time(), ok.event_id_str()),
                ("sms-signature", Some(RUBY_TS), Some("020000001B0FE827")),
                "{method}"
            );
            let url = format!("https://x/sms?{}", String::from_utf8(body.clone()).unwrap());
            assert!(
                run(&*v, "GET", &url, &HeaderMap::new(), b"", RUBY_TS).is_ok(),
                "{method} GET"
            );
            let lower = sig.to_ascii_lowercase();
            let (body, h) = form_req(RUBY_PARAMS, &lower);
            assert!(
                run(&*v, "POST", "https://x/sms", &h, &body, RUBY_TS).is_ok(),
                "{method} lower"
            );
            let mut m: serde_json::Map<String, serde_json::Value> = RUBY_PARAMS
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect();
            m.insert("sig".into(), (*sig).into());
            m.insert("timestamp".into(), RUBY_TS.into());
            let mut jh = HeaderMap::new();
            jh.insert("content-type", "application/json".parse().unwrap());
            let jb = serde_json::to_vec(&m).unwrap();
            assert!(
                run(&*v, "POST", "https://x/sms", &jh, &jb, RUBY_TS).is_ok(),
                "{method} json"
            );
        }
    }

    #[test]
    fn python_sig_vectors_verify() {
        // Vonage/vonage-python-sdk http_client/tests/test_auth.py.
        let params = &[
            ("param1", "value1"),
            ("param2", "value2"),
            ("timestamp", "1234567890"),
        ];
        for (method, sig) in [
            (
                "sha256",
                "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287",
            ),
            ("md5", "724c2bf6ca423c36e20631b11d1c5753"),
        ] {
            let v = sms_v(method, "signature_secret");
            let (body, h) = form_req(params, sig);
            assert!(
                run(&*v, "POST", "https://x/", &h, &body, 1234567890).is_ok(),
                "{method}"
            );
            let v = sms_v(method, "signature_secreT");
            assert_eq!(
                run(&*v, "POST", "https://x/", &h, &body, 1234567890),
                Err(Reject::SignatureMismatch)
            );
        }
    }

    #[test]
    fn every_sig_param_change_is_rejected() {
        let v = sms_v("sha256", RUBY_SIG_SECRET);
        let sig = RUBY_SIGS[3].1;
        for i in 0..RUBY_PARAMS.len() {
            let mut p = RUBY_PARAMS.to_vec();
            let changed = format!("{}x", p[i].1);
            p[i].1 = &changed;
            let (body, h) = form_req(&p, sig);
            let got = run(&*v, "POST", "https://x/", &h, &body, RUBY_TS);
            let want = if p[i].0 == "timestamp" {
                Err(Reject::TimestampMalformed { header: TIMESTAMP })
            } else {
                Err(Reject::SignatureMismatch)
            };
            assert_eq!(got, want, "{}", p[i].0);
        }
        // An extra parameter is not signed.
        let mut p = RUBY_PARAMS.to_vec();
        p.push(("extra", "1"));
        let (body, h) = form_req(&p, sig);
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::SignatureMismatch)
        );
        // The ts value changed to another valid time.
        let mut p = RUBY_PARAMS.to_vec();
        p[4].1 = "1385047699";
        let (body, h) = form_req(&p, sig);
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn sig_missing_timestamp_missing_stale_and_malformed() {
        let v = sms_v("sha256", RUBY_SIG_SECRET);
        let sig = RUBY_SIGS[3].1;
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let body = form::encode_pairs(RUBY_PARAMS).into_bytes();
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::SignatureMissing { header: SIG })
        );
        let no_ts: Vec<_> = RUBY_PARAMS
            .iter()
            .copied()
            .filter(|(k, _)| *k != "timestamp")
            .collect();
        let (body, h) = form_req(&no_ts, sig);
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::TimestampMissing { header: TIMESTAMP })
        );
        let (body, h) = form_req(RUBY_PARAMS, sig);
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS + 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let (body, h) = form_req(RUBY_PARAMS, "zz");
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::SignatureMalformed {
                header: SIG,
                why: "not hex"
            })
        );
        let (body, h) = form_req(RUBY_PARAMS, RUBY_SIGS[1].1);
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::SignatureMalformed {
                header: SIG,
                why: "wrong length for the route's signature_method"
            })
        );
        let mut p = RUBY_PARAMS.to_vec();
        p.push(("to", "1"));
        let (body, h) = form_req(&p, sig);
        assert_eq!(
            run(&*v, "POST", "https://x/", &h, &body, RUBY_TS),
            Err(Reject::BodyMalformed {
                why: "repeated parameter"
            })
        );
        let mut bad = body.clone();
        bad.extend_from_slice(b"&x=%FF\xfe");
        assert!(run(&*v, "POST", "https://x/", &h, &bad, RUBY_TS).is_err());
        let mut jh = HeaderMap::new();
        jh.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(
            run(&*v, "POST", "https://x/", &jh, b"[1,2]", RUBY_TS),
            Err(Reject::BodyMalformed {
                why: "not a JSON object"
            })
        );
        assert_eq!(
            run(
                &*v,
                "POST",
                "https://x/",
                &jh,
                br#"{"sig":"00","timestamp":{"a":1}}"#,
                RUBY_TS
            ),
            Err(Reject::BodyMalformed {
                why: "JSON parameter is not a string or a number"
            })
        );
    }

    #[test]
    fn sms_sign_round_trips_for_every_method_and_place() {
        for method in ["md5hash", "md5", "sha1", "sha256", "sha512"] {
            let opts: Options = serde_json::from_str(&format!(
                r#"{{"scheme":"sms-signature","signature_method":"{method}"}}"#
            ))
            .unwrap();
            let v = sms_v(method, SECRET);
            let form = sample(&opts, "https://h.example/sms");
            let mut json = form.clone();
            json.content_type = Some("application/json".into());
            json.body =
                br#"{"msisdn":"447700900001","text":"a&b=c","messageId":"m1","n":5}"#.to_vec();
            let mut get = form.clone();
            get.method = "GET".into();
            get.url = format!(
                "https://h.example/sms?{}",
                String::from_utf8(form.body.clone()).unwrap()
            );
            get.body.clear();
            get.content_type = None;
            for mut input in [form, json, get] {
                input.now = NOW;
                let s = sign(&opts, &Secret::new(SECRET), &input).unwrap();
                let ok = run(&*v, &s.method, &s.url, &s.header_map(), &s.body, NOW)
                    .unwrap_or_else(|e| panic!("{method} {}: {e:?}", input.method));
                assert_eq!(ok.signed_time(), Some(NOW));
                assert!(ok.event_id_str().is_some());
            }
        }
    }

    #[test]
    fn values_with_ampersand_and_equals_are_replaced_not_split() {
        let pairs = form::parse(b"b=x%26y%3Dz&a=1");
        let mut sorted = pairs.clone();
        sorted.sort_unstable_by(|a, b| (&*a.0, &*a.1).cmp(&(&*b.0, &*b.1)));
        let mut out = Vec::new();
        feed_sms(&sorted, &mut |b| out.extend_from_slice(b));
        assert_eq!(out, b"&a=1&b=x_y_z");
    }

    #[test]
    fn options_and_lints() {
        let o = |s: &str| serde_json::from_str::<Options>(s).unwrap();
        assert!(matches!(
            build(
                &o(r#"{"signature_method":"sha256"}"#),
                &KeyRing::single(Secret::new("s")),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
        assert!(matches!(
            build(
                &o(r#"{"scheme":"sms-signature","signature_method":"sha384"}"#),
                &KeyRing::single(Secret::new("s")),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
        assert!(matches!(
            build(
                &o(r#"{"schema":"jwt"}"#),
                &KeyRing::single(Secret::new("s")),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
        assert!(lint(&Options::new()).is_empty());
        assert!(lint(&o(r#"{"scheme":"sms-signature"}"#)).is_empty());
        for m in ["md5hash", "md5", "sha1"] {
            assert_eq!(
                lint(&o(&format!(
                    r#"{{"scheme":"sms-signature","signature_method":"{m}"}}"#
                )))
                .len(),
                1,
                "{m}"
            );
        }
    }

    #[test]
    fn jwt_sample_is_realistic_and_round_trips() {
        let input = SignInput {
            now: NOW,
            ..sample(&Options::new(), "https://h.example/vonage/event")
        };
        assert!(input.body.len() > 400);
        assert!(serde_json::from_slice::<serde_json::Value>(&input.body).is_ok());
        let s = sign(&Options::new(), &Secret::new(SECRET), &input).unwrap();
        assert!(run(&*jwt_v(), &s.method, &s.url, &s.header_map(), &s.body, NOW).is_ok());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_authorization_never_panics_or_verifies(auth in "[ -~]{0,300}", body in proptest::collection::vec(any::<u8>(), 0..32)) {
                let mut h = HeaderMap::new();
                if let Ok(v) = auth.parse() { h.insert(AUTHORIZATION, v); }
                prop_assert!(run(&*jwt_v(), "POST", "https://x/", &h, &body, NOW).is_err());
                let t = format!("Bearer {auth}.{auth}.{auth}");
                if let Ok(v) = t.parse() { h.insert(AUTHORIZATION, v); }
                prop_assert!(run(&*jwt_v(), "POST", "https://x/", &h, &body, NOW).is_err());
            }

            #[test]
            fn arbitrary_sms_requests_never_panic(url in ".{0,40}", body in proptest::collection::vec(any::<u8>(), 0..64), json in any::<bool>()) {
                let mut h = HeaderMap::new();
                h.insert("content-type", if json { "application/json" } else { "application/x-www-form-urlencoded" }.parse().unwrap());
                let v = sms_v("sha256", SECRET);
                prop_assert!(run(&*v, "POST", &url, &h, &body, NOW).is_err());
                prop_assert!(run(&*v, "GET", &url, &h, b"", NOW).is_err());
            }

            #[test]
            fn sms_sign_verify_any_params(pairs in proptest::collection::btree_map("[a-zA-Z-]{1,6}", "[ -~é]{0,10}", 0..6)) {
                let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "sig" && k != "timestamp").collect();
                let input = SignInput {
                    method: "POST".into(),
                    url: "https://h.example/sms".into(),
                    content_type: Some("application/x-www-form-urlencoded".into()),
                    body: form::encode_pairs(&pairs).into_bytes(),
                    now: NOW,
                    nonce: String::new(),
                };
                let opts: Options = serde_json::from_str(r#"{"scheme":"sms-signature"}"#).unwrap();
                let s = sign(&opts, &Secret::new(SECRET), &input).unwrap();
                let v = sms_v("sha256", SECRET);
                prop_assert!(run(&*v, "POST", &s.url, &s.header_map(), &s.body, NOW).is_ok());
            }
        }
    }
}
