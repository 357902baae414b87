//! Sinch callbacks, two schemes chosen by the `scheme` option:
//!
//! - `voice` (Voice and Verification callbacks): `Authorization: Application <appKey>:<b64 sig>`
//!   (the python SDK 2.3 validates the scheme word `Service`, Voice API v2, with the same string to
//!   sign; both are accepted). sig = `b64(HMAC-SHA256(base64decode(appSecret), M))` with
//!   M = `METHOD\nb64(MD5(body))\nContent-Type\nx-timestamp:<value>\npath`. The `x-timestamp`
//!   header (ISO-8601 UTC) is signed, so its window is enforced.
//! - `conversation` (Conversation, SMS, event destinations): `x-sinch-webhook-signature` =
//!   `b64(HMAC-SHA256(secret, body.nonce.timestamp))` with the nonce and unix timestamp in their
//!   own headers.
//!
//! Keys: for `voice` the application secret as shown in the dashboard, base64 that is decoded as
//! leniently as the node SDK does (either alphabet, padding optional, trailing bits dropped); for
//! `conversation` the callback secret as UTF-8 text.

use ::hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::{parse_options, Options, ProviderSpec, Settings, SignInput, Signed, Verifier};
use crate::encoding::{b64, b64_signature, ct_eq};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, Secret};
use crate::time::{check_window, parse_unix};
use crate::url::Url;
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "sinch",
    summary: "Sinch: voice/verification Application-signed callbacks (x-timestamp) or Conversation x-sinch-webhook-signature",
    signs_time: true,
    build,
    sign,
    verify_key_for: super::same_key,
    sample,
    lint,
};

/// A route's options.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SinchOptions {
    /// `voice` (default) or `conversation`.
    #[serde(default)]
    scheme: Scheme,
    /// Voice only: the application key the `Authorization` header must name. Unset, any key is
    /// accepted (the secret still has to match).
    #[serde(default)]
    app_key: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Scheme {
    #[default]
    Voice,
    Conversation,
}

fn options(opts: &Options) -> Result<SinchOptions, BuildError> {
    let o: SinchOptions = parse_options(opts)?;
    if o.scheme == Scheme::Conversation && o.app_key.is_some() {
        return Err(BuildError::Option(
            "app_key applies to scheme = \"voice\" only".into(),
        ));
    }
    Ok(o)
}

const AUTHORIZATION: &str = "authorization";
const X_TIMESTAMP: &str = "x-timestamp";
const CONTENT_TYPE: &str = "content-type";
const SIGNATURE: &str = "x-sinch-webhook-signature";
const NONCE: &str = "x-sinch-webhook-signature-nonce";
const TIMESTAMP: &str = "x-sinch-webhook-signature-timestamp";

#[derive(Debug)]
struct Voice {
    app_key: Option<String>,
    keys: Prepared<Hmac<Sha256>>,
    tolerance_secs: u64,
}

#[derive(Debug)]
struct Conversation {
    keys: Prepared<Hmac<Sha256>>,
    tolerance_secs: u64,
}

fn build(
    opts: &Options,
    keys: &KeyRing,
    settings: &Settings,
) -> Result<Box<dyn Verifier>, BuildError> {
    let o = options(opts)?;
    Ok(match o.scheme {
        Scheme::Voice => Box::new(Voice {
            app_key: o.app_key,
            keys: keys.prepare(|s| voice_key(s.expose_str()?))?,
            tolerance_secs: settings.tolerance_secs,
        }),
        Scheme::Conversation => Box::new(Conversation {
            keys: keys.prepare(|s| conversation_key(s.expose()))?,
            tolerance_secs: settings.tolerance_secs,
        }),
    })
}

fn voice_key(text: &str) -> Result<Hmac<Sha256>, BuildError> {
    let raw = lenient_b64(text).ok_or_else(|| {
        BuildError::Key("Sinch application secret is not base64 (as shown in the dashboard)".into())
    })?;
    Hmac::new_from_slice(&raw).map_err(|_| BuildError::Key("unusable HMAC key".into()))
}

fn conversation_key(raw: &[u8]) -> Result<Hmac<Sha256>, BuildError> {
    if raw.is_empty() {
        return Err(BuildError::Key("Sinch callback secret is empty".into()));
    }
    Hmac::new_from_slice(raw).map_err(|_| BuildError::Key("unusable HMAC key".into()))
}

/// Base64 decoded the way node's `Buffer.from(s, "base64")` does for the secrets Sinch hands out
/// (and for the SDK test secret `app-secret`, which is not strict base64): both alphabets,
/// whitespace skipped, stop at `=`, leftover bits dropped. Other characters are refused rather than
/// skipped, so a typo fails at start-up instead of keying a different MAC.
fn lenient_b64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    (!out.is_empty()).then_some(out)
}

impl Verifier for Voice {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let auth = req.require_header(
            AUTHORIZATION,
            Reject::SignatureMissing {
                header: AUTHORIZATION,
            },
        )?;
        let malformed = |why| Reject::SignatureMalformed {
            header: AUTHORIZATION,
            why,
        };
        // Both SDKs split on one space and refuse anything else (node: exactly two parts).
        let (scheme_word, credentials) = auth
            .split_once(' ')
            .ok_or(malformed("not <scheme> <key>:<signature>"))?;
        let scheme = if scheme_word.eq_ignore_ascii_case("application") {
            "application"
        } else if scheme_word.eq_ignore_ascii_case("service") {
            "service"
        } else if scheme_word.eq_ignore_ascii_case("basic") {
            return Err(Reject::Unsupported {
                what: "Basic credentials on a Sinch route (use the basic provider for those)",
            });
        } else {
            return Err(malformed("scheme is neither Application nor Service"));
        };
        let (app_key, sig_text) = credentials
            .split_once(':')
            .filter(|(k, s)| !k.contains(' ') && !s.contains([' ', ':']))
            .ok_or(malformed("not <scheme> <key>:<signature>"))?;
        let sig = b64_signature(sig_text, AUTHORIZATION)?;
        if sig.len() != 32 {
            return Err(malformed("not 32 bytes"));
        }
        if let Some(expected) = &self.app_key {
            if !ct_eq(expected.as_bytes(), app_key.as_bytes()) {
                return Err(Reject::SignatureMismatch);
            }
        }

        let ts_text = req.require_header(
            X_TIMESTAMP,
            Reject::TimestampMissing {
                header: X_TIMESTAMP,
            },
        )?;
        let ts = parse_iso8601(ts_text).ok_or(Reject::TimestampMalformed {
            header: X_TIMESTAMP,
        })?;
        check_window(ts, now, self.tolerance_secs)?;

        let url = Url::parse(req.url)?;
        let path = if url.path.is_empty() { "/" } else { url.path };
        let content_type = req.header(CONTENT_TYPE)?.unwrap_or("");
        let method = req.method.to_ascii_uppercase();
        let body_md5 = b64(&Md5::digest(req.body));
        // node signs an empty body as an empty MD5 line, python as MD5 of the empty string.
        let md5_lines: &[&str] = if req.body.is_empty() {
            &["", &body_md5]
        } else {
            &[&body_md5]
        };
        // The docs call the signed resource "the path"; whether Sinch adds the query is not
        // documented, so a URL with a query is tried both ways (the query is then not protected).
        let query = url.query.map(|q| (q, path.len() + 1 + q.len()));
        for key in self.keys.live(now)? {
            for md5_line in md5_lines {
                let base = |mac: &mut Hmac<Sha256>| {
                    for part in [
                        method.as_bytes(),
                        b"\n",
                        md5_line.as_bytes(),
                        b"\n",
                        content_type.as_bytes(),
                        b"\nx-timestamp:",
                        ts_text.as_bytes(),
                        b"\n",
                        path.as_bytes(),
                    ] {
                        mac.update(part);
                    }
                };
                let mut mac = key.state.clone();
                base(&mut mac);
                let with_query = query.map(|(q, _)| {
                    let mut m = mac.clone();
                    m.update(b"?");
                    m.update(q.as_bytes());
                    m
                });
                let matched = mac.verify_slice(&sig).is_ok()
                    || with_query.is_some_and(|m| m.verify_slice(&sig).is_ok());
                if matched {
                    return Ok(
                        Verified::new(SPEC.id, scheme, key.label.clone()).signed_at(Some(ts))
                    );
                }
            }
        }
        Err(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        true
    }
}

impl Verifier for Conversation {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let sig_text =
            req.require_header(SIGNATURE, Reject::SignatureMissing { header: SIGNATURE })?;
        let nonce = req.require_header(NONCE, Reject::SignatureMissing { header: NONCE })?;
        let ts_text =
            req.require_header(TIMESTAMP, Reject::TimestampMissing { header: TIMESTAMP })?;
        let sig = b64_signature(sig_text, SIGNATURE)?;
        if sig.len() != 32 {
            return Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "not 32 bytes",
            });
        }
        let ts = parse_unix(ts_text, TIMESTAMP)?;
        check_window(ts, now, self.tolerance_secs)?;
        for key in self.keys.live(now)? {
            let mac = conversation_mac(key.state.clone(), req.body, nonce, ts_text);
            if mac.verify_slice(&sig).is_ok() {
                return Ok(
                    Verified::new(SPEC.id, "conversation", key.label.clone()).signed_at(Some(ts))
                );
            }
        }
        Err(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        false
    }
}

fn conversation_mac(mut mac: Hmac<Sha256>, body: &[u8], nonce: &str, ts: &str) -> Hmac<Sha256> {
    mac.update(body);
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac
}

/// Parses the `x-timestamp` form Sinch sends, `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, up to nine
/// fractional digits, as .NET writes seven), into unix seconds, the fraction truncated. Anything
/// else, including offsets other than `Z` and impossible dates, is `None`.
pub(crate) fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 30 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let rest = b.get(19..)?;
    let rest = match rest.split_first() {
        Some((b'.', frac)) => {
            let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            frac.get(digits..)?
        }
        _ => rest,
    };
    if rest != b"Z" {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `now` as Sinch writes `x-timestamp` (seven fractional digits).
fn format_iso8601(now: i64) -> String {
    let (days, secs) = (now.div_euclid(86_400), now.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.0000000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let o = options(opts)?;
    let mut headers = Vec::new();
    match o.scheme {
        Scheme::Voice => {
            let mut mac = voice_key(secret.expose_str()?)?;
            let url = Url::parse(&input.url).map_err(|_| SignError("URL is malformed".into()))?;
            let path = if url.path.is_empty() { "/" } else { url.path };
            let ts = format_iso8601(input.now);
            let md5 = if input.body.is_empty() {
                String::new()
            } else {
                b64(&Md5::digest(&input.body))
            };
            let ct = input.content_type.as_deref().unwrap_or("");
            mac.update(
                format!(
                    "{}\n{md5}\n{ct}\nx-timestamp:{ts}\n{path}",
                    input.method.to_ascii_uppercase()
                )
                .as_bytes(),
            );
            let key = o.app_key.as_deref().unwrap_or("tollgate-app-key");
            headers.push((
                AUTHORIZATION.to_owned(),
                format!("Application {key}:{}", b64(&mac.finalize().into_bytes())),
            ));
            headers.push((X_TIMESTAMP.to_owned(), ts));
        }
        Scheme::Conversation => {
            let ts = input.now.to_string();
            let mac = conversation_mac(
                conversation_key(secret.expose())?,
                &input.body,
                &input.nonce,
                &ts,
            );
            headers.push((SIGNATURE.to_owned(), b64(&mac.finalize().into_bytes())));
            headers.push((NONCE.to_owned(), input.nonce.clone()));
            headers.push((TIMESTAMP.to_owned(), ts));
        }
    }
    if let Some(ct) = &input.content_type {
        headers.push((CONTENT_TYPE.into(), ct.clone()));
    }
    Ok(Signed {
        method: input.method.clone(),
        url: input.url.clone(),
        headers,
        body: input.body.clone(),
    })
}

fn sample(opts: &Options, url: &str) -> SignInput {
    let conversation = options(opts).is_ok_and(|o| o.scheme == Scheme::Conversation);
    let (content_type, body, nonce): (&str, &[u8], &str) = if conversation {
        (
            "application/json",
            br#"{"app_id":"01EB37HMH1M6SV18BSNS3G135H","accepted_time":"2026-11-23T10:00:00.659Z","event_time":"2026-11-23T10:00:01.267185Z","project_id":"c36f3d3d-1513-2edd-ae42-11995557ff61","message_delivery_report":{"message_id":"01EQBC1A3BEK731GY4YXEN0C2R","conversation_id":"01EPYATA64TMNZ1FV02JKF12JF","status":"DELIVERED","channel_identity":{"channel":"SMS","identity":"14155550199"},"contact_id":"01EXA07N79THJ20WSN6AS30TMW"}}"#,
            "01FJA8B4A7BM43YGWSG9GBV067",
        )
    } else {
        (
            "application/json; charset=utf-8",
            br#"{"event":"ice","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","callResourceUrl":"https://calling-euc1.api.sinch.com/calling/v1/calls/id/822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","timestamp":"2026-11-23T10:00:00Z","version":1,"cli":"14155550100","to":{"type":"number","endpoint":"14155550199"},"domain":"pstn","applicationKey":"669E367E-6BBA-48AB-AF15-266871C28135","originationType":"PSTN","rdnis":""}"#,
            "",
        )
    };
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some(content_type.into()),
        body: body.to_vec(),
        now: 0,
        nonce: nonce.into(),
    }
}

fn lint(opts: &Options) -> Vec<String> {
    match options(opts) {
        Ok(o) if o.scheme == Scheme::Voice && o.app_key.is_none() => vec![
            "app_key is not set: requests naming any application key are accepted when the secret matches; set it to pin the application".to_owned(),
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
    use serde_json::json;

    fn opts(v: serde_json::Value) -> Options {
        match v {
            serde_json::Value::Object(m) => m,
            _ => Options::new(),
        }
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

    fn check(
        v: &dyn Verifier,
        url: &str,
        h: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Reject> {
        v.verify(
            &Request {
                method: "POST",
                url,
                headers: h,
                body,
            },
            now,
        )
    }

    // sinch/sinch-sdk-node packages/sdk-client/tests/utils/authorization.helper.test.ts
    const V_SECRET: &str = "app-secret";
    const V_TS: &str = "2024-01-19T09:19:28.9372196Z";
    const V_CT: &str = "application/json; charset=utf-8";
    const V_BODY: &[u8] =
        br#"{"id":"018d2104-aaa-bbbb-1234","price":{"amount":0.0308},"rate":{"amount":0.0}}"#;
    const V_AUTH: &str = "Application app-key:p7hUz20oz16Fhfogs4Z0X+VA/Nhuu505I1alXYqwlKw=";
    const V_URL: &str = "https://example.com/webhook";
    const V_NOW: i64 = 1_705_655_968; // 2024-01-19T09:19:28Z

    fn voice_headers(auth: &str) -> HeaderMap {
        hm(&[
            (AUTHORIZATION, auth),
            (X_TIMESTAMP, V_TS),
            (CONTENT_TYPE, V_CT),
        ])
    }

    // sinch/sinch-sdk-python tests/unit/domains/conversation/v1/sinch_events/test_conversation_sinch_event.py
    const C_SECRET: &str = "foo_secret1234";
    const C_NONCE: &str = "01FJA8B4A7BM43YGWSG9GBV067";
    const C_TS: &str = "1634579353";
    const C_SIG: &str = "Yc+3R1pIS78xLASybulhs8BsSo9BPB3Pr92QCUoczfk=";
    const C_BODY: &str = concat!(
        r#"{"app_id":"01EB37HMH1M6SV18BSNS3G135H","accepted_time":"2020-11-17T15:09:11.659Z","#,
        r#""project_id":"c36f3d3d-1513-2edd-ae42-11995557ff61","#,
        r#""message_delivery_report":{"message_id":"01EQBC1A3BEK731GY4YXEN0C2R","#,
        r#""conversation_id":"01EPYATA64TMNZ1FV02JKF12JF","status":"QUEUED_ON_CHANNEL","#,
        r#""contact_id":"01EXA07N79THJ20WSN6AS30TMW"}}"#
    );

    fn conversation() -> Options {
        opts(json!({"scheme": "conversation"}))
    }

    fn conv_headers(sig: &str, nonce: &str, ts: &str) -> HeaderMap {
        hm(&[(SIGNATURE, sig), (NONCE, nonce), (TIMESTAMP, ts)])
    }

    #[test]
    fn node_secret_decodes_like_buffer_from_base64() {
        assert_eq!(
            hex::encode(lenient_b64("app-secret").unwrap()),
            "6a9a7eb1e72b7a"
        );
        assert_eq!(lenient_b64("BeIukql3pTKJ8RGL5zo0DA==").unwrap().len(), 16);
        assert_eq!(lenient_b64("bad*chars"), None);
        assert_eq!(lenient_b64(""), None);
    }

    #[test]
    fn node_sdk_voice_vector_verifies_and_signs_identically() {
        let v = verifier(&opts(json!({"app_key": "app-key"})), &[("app", V_SECRET)]);
        let ok = check(&*v, V_URL, &voice_headers(V_AUTH), V_BODY, V_NOW + 1).unwrap();
        assert_eq!(
            (ok.provider(), ok.scheme(), ok.key_label(), ok.signed_time()),
            ("sinch", "application", "app", Some(V_NOW))
        );
        assert!(v.signs_url());
        // The signer writes its own x-timestamp, so compare through the MAC with the SDK's one.
        let mut mac = voice_key(V_SECRET).unwrap();
        mac.update(
            format!(
                "POST\n{}\n{V_CT}\nx-timestamp:{V_TS}\n/webhook",
                b64(&Md5::digest(V_BODY))
            )
            .as_bytes(),
        );
        assert_eq!(
            format!("Application app-key:{}", b64(&mac.finalize().into_bytes())),
            V_AUTH
        );
    }

    #[test]
    fn service_scheme_word_is_accepted_with_the_same_signature() {
        let v = verifier(&Options::new(), &[("app", V_SECRET)]);
        let auth = V_AUTH.replace("Application", "Service");
        let ok = check(&*v, V_URL, &voice_headers(&auth), V_BODY, V_NOW).unwrap();
        assert_eq!(ok.scheme(), "service");
        let auth = V_AUTH.replace("Application", "application");
        assert!(check(&*v, V_URL, &voice_headers(&auth), V_BODY, V_NOW).is_ok());
    }

    #[test]
    fn node_validate_vector_with_doubled_prefix_is_refused() {
        // The SDK test's "validate" vector only passes because its header value repeats
        // `x-timestamp:`; sent as Sinch sends it, it must not verify.
        let v = verifier(&Options::new(), &[("app", V_SECRET)]);
        let auth = "Application app-key:wC8XcoLQ22cxrOsUqqbWk+LHJ82wtqR/IgeIp9NG8LY=";
        assert_eq!(
            check(&*v, V_URL, &voice_headers(auth), V_BODY, V_NOW),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn voice_every_signed_element_is_covered() {
        let v = verifier(&Options::new(), &[("app", V_SECRET)]);
        for i in 0..V_BODY.len() {
            let mut b = V_BODY.to_vec();
            b[i] ^= 0x01;
            assert_eq!(
                check(&*v, V_URL, &voice_headers(V_AUTH), &b, V_NOW),
                Err(Reject::SignatureMismatch),
                "body byte {i}"
            );
        }
        let mut h = voice_headers(V_AUTH);
        h.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(
            check(&*v, V_URL, &h, V_BODY, V_NOW),
            Err(Reject::SignatureMismatch)
        );
        let mut h = voice_headers(V_AUTH);
        h.insert(X_TIMESTAMP, "2024-01-19T09:19:28.9372197Z".parse().unwrap());
        assert_eq!(
            check(&*v, V_URL, &h, V_BODY, V_NOW),
            Err(Reject::SignatureMismatch)
        );
        for url in [
            "https://example.com/webhooK",
            "https://example.com/webhook/",
        ] {
            assert_eq!(
                check(&*v, url, &voice_headers(V_AUTH), V_BODY, V_NOW),
                Err(Reject::SignatureMismatch),
                "{url}"
            );
        }
        let put = Request {
            method: "PUT",
            url: V_URL,
            headers: &voice_headers(V_AUTH),
            body: V_BODY,
        };
        assert_eq!(v.verify(&put, V_NOW), Err(Reject::SignatureMismatch));
        let raw = b64_signature(&V_AUTH["Application app-key:".len()..], "t").unwrap();
        for i in 0..raw.len() {
            let mut s = raw.clone();
            s[i] ^= 0x01;
            let auth = format!("Application app-key:{}", b64(&s));
            assert_eq!(
                check(&*v, V_URL, &voice_headers(&auth), V_BODY, V_NOW),
                Err(Reject::SignatureMismatch),
                "signature byte {i}"
            );
        }
    }

    #[test]
    fn voice_window_key_pinning_rotation_and_wrong_key() {
        let v = verifier(&Options::new(), &[("app", V_SECRET)]);
        let h = voice_headers(V_AUTH);
        assert_eq!(
            check(&*v, V_URL, &h, V_BODY, V_NOW + 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(&*v, V_URL, &h, V_BODY, V_NOW - 301),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        let pinned = verifier(&opts(json!({"app_key": "other-key"})), &[("app", V_SECRET)]);
        assert_eq!(
            check(&*pinned, V_URL, &h, V_BODY, V_NOW),
            Err(Reject::SignatureMismatch)
        );
        let rotated = verifier(
            &Options::new(),
            &[("old", "BeIukql3pTKJ8RGL5zo0DA=="), ("new", V_SECRET)],
        );
        assert_eq!(
            check(&*rotated, V_URL, &h, V_BODY, V_NOW)
                .unwrap()
                .key_label(),
            "new"
        );
        let wrong = verifier(&Options::new(), &[("w", "BeIukql3pTKJ8RGL5zo0DA==")]);
        assert_eq!(
            check(&*wrong, V_URL, &h, V_BODY, V_NOW),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn voice_missing_and_malformed_headers() {
        let v = verifier(&Options::new(), &[("app", V_SECRET)]);
        let no_auth = hm(&[(X_TIMESTAMP, V_TS), (CONTENT_TYPE, V_CT)]);
        assert_eq!(
            check(&*v, V_URL, &no_auth, V_BODY, V_NOW),
            Err(Reject::SignatureMissing {
                header: AUTHORIZATION
            })
        );
        let no_ts = hm(&[(AUTHORIZATION, V_AUTH), (CONTENT_TYPE, V_CT)]);
        assert_eq!(
            check(&*v, V_URL, &no_ts, V_BODY, V_NOW),
            Err(Reject::TimestampMissing {
                header: X_TIMESTAMP
            })
        );
        for (auth, expected) in [
            (
                "Application  app-key:p7hUz20oz16Fhfogs4Z0X+VA/Nhuu505I1alXYqwlKw=",
                "not <scheme> <key>:<signature>",
            ),
            (
                "Application app-keyapp-secret",
                "not <scheme> <key>:<signature>",
            ),
            ("Application", "not <scheme> <key>:<signature>"),
            (
                "Unknown app-key:p7hUz20oz16Fhfogs4Z0X+VA/Nhuu505I1alXYqwlKw=",
                "scheme is neither Application nor Service",
            ),
            ("Application app-key:AAEC", "not 32 bytes"),
            ("Application app-key:!!!!", "not base64"),
        ] {
            assert_eq!(
                check(&*v, V_URL, &voice_headers(auth), V_BODY, V_NOW),
                Err(Reject::SignatureMalformed {
                    header: AUTHORIZATION,
                    why: expected
                }),
                "{auth}"
            );
        }
        assert_eq!(
            check(
                &*v,
                V_URL,
                &voice_headers("Basic app-key:app-secret"),
                V_BODY,
                V_NOW
            ),
            Err(Reject::Unsupported {
                what: "Basic credentials on a Sinch route (use the basic provider for those)"
            })
        );
        let mut h = voice_headers(V_AUTH);
        h.insert(X_TIMESTAMP, "1705655968".parse().unwrap());
        assert_eq!(
            check(&*v, V_URL, &h, V_BODY, V_NOW),
            Err(Reject::TimestampMalformed {
                header: X_TIMESTAMP
            })
        );
        let huge = format!("Application k:{}", "A".repeat(50_000));
        assert_eq!(
            check(&*v, V_URL, &voice_headers(&huge), V_BODY, V_NOW),
            Err(Reject::SignatureMalformed {
                header: AUTHORIZATION,
                why: "too long"
            })
        );
        assert_eq!(
            check(&*v, "not a url", &voice_headers(V_AUTH), V_BODY, V_NOW),
            Err(Reject::UrlMalformed)
        );
    }

    #[test]
    fn voice_round_trip_including_empty_bodies_and_queries() {
        for (url, body) in [
            (
                "https://example.com/sinch/voice",
                b"{\"event\":\"dice\"}".as_slice(),
            ),
            (
                "https://example.com/sinch/voice?tenant=7",
                b"\xff\xfe not utf-8".as_slice(),
            ),
            ("https://example.com", b"".as_slice()),
        ] {
            let input = SignInput {
                method: "POST".into(),
                url: url.into(),
                content_type: Some("application/json".into()),
                body: body.to_vec(),
                now: 1_800_000_000,
                nonce: String::new(),
            };
            let signed = sign(&Options::new(), &Secret::new(V_SECRET), &input).unwrap();
            let v = verifier(&Options::new(), &[("k", V_SECRET)]);
            let ok = check(&*v, url, &signed.header_map(), body, 1_800_000_000).unwrap();
            assert_eq!(ok.signed_time(), Some(1_800_000_000), "{url}");
        }
        // python signs an empty body as MD5(""), which is accepted too.
        let mut mac = voice_key(V_SECRET).unwrap();
        mac.update(
            format!(
                "POST\n{}\n{V_CT}\nx-timestamp:{V_TS}\n/webhook",
                b64(&Md5::digest(b""))
            )
            .as_bytes(),
        );
        let auth = format!("Service id:{}", b64(&mac.finalize().into_bytes()));
        let v = verifier(&Options::new(), &[("k", V_SECRET)]);
        assert!(check(&*v, V_URL, &voice_headers(&auth), b"", V_NOW).is_ok());
    }

    #[test]
    fn python_sdk_conversation_vector_verifies() {
        assert_eq!(C_BODY.len(), 322);
        let v = verifier(&conversation(), &[("conv", C_SECRET)]);
        let now = 1_634_579_353;
        let ok = check(
            &*v,
            V_URL,
            &conv_headers(C_SIG, C_NONCE, C_TS),
            C_BODY.as_bytes(),
            now,
        )
        .unwrap();
        assert_eq!(
            (ok.scheme(), ok.key_label(), ok.signed_time()),
            ("conversation", "conv", Some(now))
        );
        assert!(!v.signs_url());
        let signed = sign(
            &conversation(),
            &Secret::new(C_SECRET),
            &SignInput {
                method: "POST".into(),
                url: V_URL.into(),
                content_type: Some("application/json".into()),
                body: C_BODY.as_bytes().to_vec(),
                now,
                nonce: C_NONCE.into(),
            },
        )
        .unwrap();
        assert!(signed.headers.contains(&(SIGNATURE.into(), C_SIG.into())));
    }

    #[test]
    fn conversation_tamper_window_and_missing_headers() {
        let v = verifier(&conversation(), &[("old", "other"), ("conv", C_SECRET)]);
        let now = 1_634_579_353;
        let body = C_BODY.as_bytes();
        for i in 0..body.len() {
            let mut b = body.to_vec();
            b[i] ^= 0x01;
            assert_eq!(
                check(&*v, V_URL, &conv_headers(C_SIG, C_NONCE, C_TS), &b, now),
                Err(Reject::SignatureMismatch),
                "body byte {i}"
            );
        }
        for i in 0..C_NONCE.len() {
            let mut n = C_NONCE.as_bytes().to_vec();
            n[i] ^= 0x01;
            let n = String::from_utf8(n).unwrap();
            assert_eq!(
                check(&*v, V_URL, &conv_headers(C_SIG, &n, C_TS), body, now),
                Err(Reject::SignatureMismatch),
                "nonce byte {i}"
            );
        }
        assert_eq!(
            check(
                &*v,
                V_URL,
                &conv_headers(C_SIG, C_NONCE, "1634579354"),
                body,
                now
            ),
            Err(Reject::SignatureMismatch)
        );
        assert_eq!(
            check(
                &*v,
                V_URL,
                &conv_headers(C_SIG, C_NONCE, C_TS),
                body,
                now + 301
            ),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(
                &*v,
                V_URL,
                &conv_headers(C_SIG, C_NONCE, C_TS),
                body,
                now - 301
            ),
            Err(Reject::TimestampOutOfWindow {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        for (drop, expected) in [
            (SIGNATURE, Reject::SignatureMissing { header: SIGNATURE }),
            (NONCE, Reject::SignatureMissing { header: NONCE }),
            (TIMESTAMP, Reject::TimestampMissing { header: TIMESTAMP }),
        ] {
            let mut h = conv_headers(C_SIG, C_NONCE, C_TS);
            h.remove(drop);
            assert_eq!(check(&*v, V_URL, &h, body, now), Err(expected), "{drop}");
        }
        assert_eq!(
            check(&*v, V_URL, &conv_headers("AAEC", C_NONCE, C_TS), body, now),
            Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "not 32 bytes"
            })
        );
        assert_eq!(
            check(&*v, V_URL, &conv_headers("@@@@", C_NONCE, C_TS), body, now),
            Err(Reject::SignatureMalformed {
                header: SIGNATURE,
                why: "not base64"
            })
        );
        assert_eq!(
            check(
                &*v,
                V_URL,
                &conv_headers(C_SIG, C_NONCE, "16345x9353"),
                body,
                now
            ),
            Err(Reject::TimestampMalformed { header: TIMESTAMP })
        );
        let wrong = verifier(&conversation(), &[("w", "foo_secret1235")]);
        assert_eq!(
            check(
                &*wrong,
                V_URL,
                &conv_headers(C_SIG, C_NONCE, C_TS),
                body,
                now
            ),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn options_and_keys_are_checked_at_build() {
        let ring = KeyRing::single(Secret::new(V_SECRET));
        for o in [
            json!({"scheme": "sms"}),
            json!({"scheme": "conversation", "app_key": "k"}),
            json!({"secret": "x"}),
        ] {
            assert!(matches!(
                build(&opts(o), &ring, &Settings::default()),
                Err(BuildError::Option(_))
            ));
        }
        assert!(matches!(
            build(
                &Options::new(),
                &KeyRing::single(Secret::new("not*base64")),
                &Settings::default()
            ),
            Err(BuildError::Key(_))
        ));
        assert_eq!(lint(&Options::new()).len(), 1);
        assert!(lint(&opts(json!({"app_key": "k"}))).is_empty());
        assert!(lint(&conversation()).is_empty());
    }

    #[test]
    fn samples_round_trip_for_both_schemes() {
        for (o, secret) in [(Options::new(), V_SECRET), (conversation(), C_SECRET)] {
            let input = SignInput {
                now: 1_800_000_000,
                ..sample(&o, "https://example.com/sinch")
            };
            let signed = sign(&o, &Secret::new(secret), &input).unwrap();
            let v = verifier(&o, &[("k", secret)]);
            assert!(check(
                &*v,
                &signed.url,
                &signed.header_map(),
                &signed.body,
                1_800_000_000
            )
            .is_ok());
        }
    }

    #[test]
    fn iso8601_parser_accepts_sinch_forms_and_refuses_the_rest() {
        assert_eq!(parse_iso8601(V_TS), Some(V_NOW));
        assert_eq!(parse_iso8601("2014-09-24T10:59:41Z"), Some(1_411_556_381));
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.0Z"), Some(0));
        assert_eq!(parse_iso8601("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        for bad in [
            "",
            "2024-01-19T09:19:28",
            "2024-01-19T09:19:28+00:00",
            "2024-01-19 09:19:28Z",
            "2024-01-19T09:19:28.Z",
            "2024-01-19T09:19:28.1234567890Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-32T00:00:00Z",
            "2024-01-19T24:00:00Z",
            "2024-01-19T23:60:00Z",
            "2024-01-19T23:59:60Z",
            "+024-01-19T09:19:28Z",
            "2024-01-19T09:19:28zZ",
            "2024-01-19T09:19:28Z ",
            "２０２４-01-19T09:19:28Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn iso8601_round_trips_every_second_of_four_millennia(t in -62_135_596_800i64..253_402_300_799i64) {
            prop_assert_eq!(parse_iso8601(&format_iso8601(t)), Some(t));
        }

        #[test]
        fn iso8601_never_panics(s in "\\PC{0,40}") {
            let _ = parse_iso8601(&s);
        }

        #[test]
        fn iso8601_never_panics_near_the_format(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?[Z+0-9:]{0,3}") {
            if let Some(t) = parse_iso8601(&s) {
                let (y, m, d) = civil_from_days(t.div_euclid(86_400));
                prop_assert_eq!(&s[..10], format!("{y:04}-{m:02}-{d:02}"));
            }
        }
    }
}
