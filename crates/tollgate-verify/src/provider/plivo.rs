//! Plivo callback signatures, V3 (voice XML callbacks; the default) and V2 (messaging and older
//! callbacks). Both are `b64(HMAC-SHA256(auth token, …))` and bind the URL; neither signs a time, so
//! the nonce (reported as the event id) and the replay store are the only defence against replays.
//!
//! V3 signs `B + "." + nonce`, where B is `scheme://netloc + path` followed by the decoded query
//! parameters and (for POST) the decoded form parameters, each sorted, in the shape plivo-python
//! `plivo/utils/signature_v3.py`, plivo-node `lib/utils/v3Security.js` and plivo-go build it. V2 signs
//! `scheme://netloc + path + nonce` only: neither query nor body is covered (see [`lint`]).
//!
//! Plivo sends a second signature (`-Ma-` headers) made with the main account's token, and each
//! header may hold several comma-separated signatures; any of them matching any live key passes.
//! A V3 route never looks at V2 headers, so a downgrade is impossible.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    parse_options, same_key, Options, ProviderSpec, Settings, SignInput, Signed, Verifier,
};
use crate::encoding::{b64, b64_signature, ct_eq, MAX_SIGNATURE_LEN};
use crate::form::{self, Pair};
use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Prepared, Secret};
use crate::url::Url;
use crate::verified::Verified;

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "plivo",
    summary: "Plivo: V3 HMAC-SHA256 over URL, sorted params and nonce (default), or legacy V2 over URL and nonce",
    signs_time: false,
    build,
    sign,
    verify_key_for: same_key,
    sample,
    lint,
};

/// Which signature version a route accepts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Version {
    /// `X-Plivo-Signature-V3`: URL, query and form parameters, nonce.
    #[default]
    V3,
    /// `X-Plivo-Signature-V2`: URL without query, nonce.
    V2,
}

/// Route options.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlivoOptions {
    /// `v3` (default) or `v2`.
    #[serde(default)]
    version: Version,
}

/// The header names of one version.
struct Headers {
    signature: &'static str,
    main_account: &'static str,
    nonce: &'static str,
    scheme: &'static str,
}

const V3: Headers = Headers {
    signature: "x-plivo-signature-v3",
    main_account: "x-plivo-signature-ma-v3",
    nonce: "x-plivo-signature-v3-nonce",
    scheme: "v3",
};

const V2: Headers = Headers {
    signature: "x-plivo-signature-v2",
    main_account: "x-plivo-signature-ma-v2",
    nonce: "x-plivo-signature-v2-nonce",
    scheme: "v2",
};

impl Version {
    fn headers(self) -> &'static Headers {
        match self {
            Version::V3 => &V3,
            Version::V2 => &V2,
        }
    }
}

#[derive(Debug)]
struct Plivo {
    version: Version,
    keys: Prepared<Hmac<Sha256>>,
}

fn hmac_key(secret: &Secret) -> Result<Hmac<Sha256>, BuildError> {
    if secret.expose().is_empty() {
        return Err(BuildError::Key("Plivo auth token is empty".into()));
    }
    Hmac::new_from_slice(secret.expose()).map_err(|_| BuildError::Key("unusable HMAC key".into()))
}

fn build(opts: &Options, keys: &KeyRing, _: &Settings) -> Result<Box<dyn Verifier>, BuildError> {
    let o: PlivoOptions = parse_options(opts)?;
    Ok(Box::new(Plivo {
        version: o.version,
        keys: keys.prepare(hmac_key)?,
    }))
}

/// What a signature covers, borrowed from the request and fed to the MAC piece by piece, so the
/// canonical string is never materialised on the verify path.
struct Canonical<'a> {
    url: Url<'a>,
    version: Version,
    get: bool,
    /// The URL's own query parameters, sorted by name then value (V3 only).
    query: Vec<Pair<'a>>,
    /// Form body parameters, sorted by name then value (V3 POST only).
    params: Vec<Pair<'a>>,
    nonce: &'a str,
}

fn sorted(mut pairs: Vec<Pair<'_>>) -> Vec<Pair<'_>> {
    // Sorting (name, value) together gives the SDKs' "names sorted, each name's values sorted";
    // byte order of UTF-8 is code-point order, which is what Python's `sorted` uses.
    pairs.sort_unstable_by(|a, b| (&*a.0, &*a.1).cmp(&(&*b.0, &*b.1)));
    pairs
}

impl<'a> Canonical<'a> {
    fn new(
        version: Version,
        method: &str,
        url: &'a str,
        is_form: bool,
        body: &'a [u8],
        nonce: &'a str,
    ) -> Result<Self, Reject> {
        let url = Url::parse(url)?;
        let mut c = Canonical {
            url,
            version,
            get: method == "GET",
            query: Vec::new(),
            params: Vec::new(),
            nonce,
        };
        if version == Version::V2 {
            return Ok(c);
        }
        match method {
            "GET" | "POST" => {}
            _ => {
                return Err(Reject::Unsupported {
                    what: "Plivo V3 signs only GET and POST callbacks",
                })
            }
        }
        c.query = sorted(form::parse(url.query.unwrap_or("").as_bytes()));
        if !body.is_empty() {
            // The SDKs sign the parsed form parameters; any other body would reach the app
            // unsigned, and a GET carries no parameters in its body.
            if c.get || !is_form {
                return Err(Reject::BodyMalformed {
                    why: body_reason(c.get),
                });
            }
            c.params = sorted(form::parse(body));
        }
        Ok(c)
    }

    fn feed(&self, out: &mut impl FnMut(&[u8])) {
        let u = &self.url;
        // Python's urlparse lowercases the scheme; netloc (userinfo, host, port) stays as given.
        out(if u.scheme.eq_ignore_ascii_case("https") {
            b"https://"
        } else {
            b"http://"
        });
        if let Some(ui) = u.userinfo {
            out(ui.as_bytes());
            out(b"@");
        }
        out(u.host.as_bytes());
        if let Some(p) = u.port {
            out(b":");
            out(p.as_bytes());
        }
        out(u.path.as_bytes());
        if self.version == Version::V2 {
            out(self.nonce.as_bytes());
            return;
        }
        if !self.query.is_empty() || !self.params.is_empty() {
            out(b"?");
        }
        for (i, (k, v)) in self.query.iter().enumerate() {
            if i > 0 {
                out(b"&");
            }
            out(k);
            out(b"=");
            out(v);
        }
        if !self.get {
            if !self.query.is_empty() && !self.params.is_empty() {
                out(b".");
            }
            for (k, v) in &self.params {
                out(k);
                out(v);
            }
        }
        out(b".");
        out(self.nonce.as_bytes());
    }

    fn mac(&self, mut mac: Hmac<Sha256>) -> [u8; 32] {
        self.feed(&mut |b: &[u8]| mac.update(b));
        mac.finalize().into_bytes().into()
    }
}

/// `BodyMalformed` reason for a body V3 cannot sign.
fn body_reason(get: bool) -> &'static str {
    if get {
        "Plivo V3 GET callbacks carry no body"
    } else {
        "Plivo V3 signs form-encoded bodies only"
    }
}

/// Decodes every comma-separated signature of a header once, before the key loop. Entries that do
/// not decode to 32 bytes are skipped, as the SDKs simply never match them.
fn decode_list(value: &str, header: &'static str, out: &mut Vec<[u8; 32]>) -> Result<(), Reject> {
    if value.len() > 16 * MAX_SIGNATURE_LEN {
        return Err(Reject::SignatureMalformed {
            header,
            why: "too long",
        });
    }
    for item in value.split(',').filter(|s| !s.trim().is_empty()) {
        if let Some(sig) = b64_signature(item, header)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            out.push(sig);
        }
    }
    Ok(())
}

impl Verifier for Plivo {
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject> {
        let h = self.version.headers();
        let sig = req.header(h.signature)?;
        let ma = req.header(h.main_account)?;
        if sig.is_none() && ma.is_none() {
            return Err(Reject::SignatureMissing {
                header: h.signature,
            });
        }
        let nonce = req.require_header(h.nonce, Reject::SignatureMissing { header: h.nonce })?;
        let mut sigs = Vec::new();
        if let Some(s) = sig {
            decode_list(s, h.signature, &mut sigs)?;
        }
        if let Some(s) = ma {
            decode_list(s, h.main_account, &mut sigs)?;
        }
        if sigs.is_empty() {
            return Err(Reject::SignatureMalformed {
                header: if sig.is_some() {
                    h.signature
                } else {
                    h.main_account
                },
                why: "no base64 HMAC-SHA256 signature",
            });
        }
        let canonical = Canonical::new(
            self.version,
            req.method,
            req.url,
            req.is_form(),
            req.body,
            nonce,
        )?;
        for key in self.keys.live(now)? {
            let tag = canonical.mac(key.state.clone());
            if sigs.iter().any(|s| ct_eq(s, &tag)) {
                return Ok(Verified::new(SPEC.id, h.scheme, key.label.clone())
                    .event_id(Some(nonce.to_owned())));
            }
        }
        Err(Reject::SignatureMismatch)
    }

    fn signs_url(&self) -> bool {
        true
    }
}

fn sign(opts: &Options, secret: &Secret, input: &SignInput) -> Result<Signed, SignError> {
    let o: PlivoOptions = parse_options(opts)?;
    let h = o.version.headers();
    let is_form = input
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let canonical = Canonical::new(
        o.version,
        &input.method,
        &input.url,
        is_form,
        &input.body,
        &input.nonce,
    )
    .map_err(|r| SignError(format!("cannot sign this request for Plivo: {r}")))?;
    let signature = b64(&canonical.mac(hmac_key(secret)?));
    // The -Ma- header carries the main account's signature; with one token both are the same,
    // as they are when the callback belongs to the main account.
    let mut headers = vec![
        (h.signature.to_owned(), signature.clone()),
        (h.main_account.to_owned(), signature),
        (h.nonce.to_owned(), input.nonce.clone()),
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

fn lint(opts: &Options) -> Vec<String> {
    match parse_options::<PlivoOptions>(opts) {
        Ok(o) if o.version == Version::V2 => vec![
            "plivo version v2 signs only the URL path and nonce, neither the query nor the body: a captured \
             request can be replayed with any body; use v3 where Plivo sends it (voice callbacks)"
                .into(),
        ],
        _ => Vec::new(),
    }
}

fn sample(_: &Options, url: &str) -> SignInput {
    let params: &[(&str, &str)] = &[
        ("ALegRequestUUID", "9f2c1e7a-2b3d-4c5e-8f90-1a2b3c4d5e6f"),
        ("ALegUUID", "9f2c1e7a-2b3d-4c5e-8f90-1a2b3c4d5e6f"),
        ("BillRate", "0.0085"),
        ("CallStatus", "in-progress"),
        ("CallUUID", "9f2c1e7a-2b3d-4c5e-8f90-1a2b3c4d5e6f"),
        ("CallerName", "+14155550100"),
        ("Direction", "inbound"),
        ("Event", "StartApp"),
        ("From", "14155550100"),
        ("ParentAuthID", "MAXXXXXXXXXXXXXXXXXX"),
        ("RequestUUID", "9f2c1e7a-2b3d-4c5e-8f90-1a2b3c4d5e6f"),
        ("STIRAttestation", "A"),
        ("STIRVerification", "Verified"),
        ("SessionStart", "2026-11-23 10:00:00.123456"),
        ("To", "14155550199"),
    ];
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: Some("application/x-www-form-urlencoded".into()),
        body: form::encode_pairs(params).into_bytes(),
        now: 0,
        nonce: "05429567804466091622".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const TOKEN: &str = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4";
    const NONCE: &str = "31627761595286130198";
    const URL_Q: &str =
        "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml/?a=b&c=d";
    const URL: &str = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml";

    // plivo/plivo-go utils_test.go TestValidateSignatureV3Pass1..4.
    const PARAMS: &[(&str, &str)] = &[
        ("Direction", "outbound"),
        ("From", "19792014278"),
        ("ALegUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        ("CallStatus", "in-progress"),
        ("BillRate", "0.002"),
        ("ParentAuthID", "MANWVLYTK4ZWU1YTY4QA"),
        (
            "To",
            "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
        ),
        ("ALegRequestUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        ("CallUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        ("RequestUUID", "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36"),
        (
            "SIP-H-To",
            "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
        ),
        ("SessionStart", "2020-04-08 11:34:33.238707"),
        ("Event", "StartApp"),
    ];

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

    fn v3() -> Box<dyn Verifier> {
        verifier("{}", &[("k", TOKEN)])
    }

    fn hdrs(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    /// The request plivo-go's test describes: POST params in a form body, GET params in the query.
    fn sdk_request(method: &str, url: &str) -> (String, Vec<u8>) {
        let enc = form::encode_pairs(PARAMS);
        if method == "GET" {
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}{enc}"), Vec::new())
        } else {
            (url.to_owned(), enc.into_bytes())
        }
    }

    fn check(
        v: &dyn Verifier,
        method: &str,
        url: &str,
        body: &[u8],
        h: &HeaderMap,
    ) -> Result<Verified, Reject> {
        v.verify(
            &Request {
                method,
                url,
                headers: h,
                body,
            },
            1_700_000_000,
        )
    }

    fn form_headers(sig: &str) -> HeaderMap {
        hdrs(&[
            (V3.signature, sig),
            (V3.nonce, NONCE),
            ("content-type", "application/x-www-form-urlencoded"),
        ])
    }

    #[test]
    fn plivo_go_v3_vectors_verify() {
        for (method, url, sig) in [
            (
                "POST",
                URL_Q,
                "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c=",
            ),
            ("GET", URL_Q, "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ="),
            ("POST", URL, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0="),
            ("GET", URL, "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc="),
        ] {
            let (u, body) = sdk_request(method, url);
            let ok = check(&*v3(), method, &u, &body, &form_headers(sig))
                .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
            assert_eq!((ok.scheme(), ok.key_label()), ("v3", "k"));
            assert_eq!(ok.event_id_str(), Some(NONCE));
            assert_eq!(ok.signed_time(), None);
        }
    }

    #[test]
    fn signer_reproduces_the_sdk_signatures() {
        for (method, url, sig) in [
            (
                "POST",
                URL_Q,
                "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c=",
            ),
            ("GET", URL, "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc="),
        ] {
            let (u, body) = sdk_request(method, url);
            let input = SignInput {
                method: method.into(),
                url: u,
                content_type: (method == "POST")
                    .then(|| "application/x-www-form-urlencoded".into()),
                body,
                now: 0,
                nonce: NONCE.into(),
            };
            let s = sign(&Options::new(), &Secret::new(TOKEN), &input).unwrap();
            assert!(
                s.headers.contains(&(V3.signature.into(), sig.into())),
                "{method}"
            );
        }
    }

    #[test]
    fn canonical_string_matches_the_documented_bytes() {
        let (u, body) = sdk_request("POST", URL_Q);
        let c = Canonical::new(Version::V3, "POST", &u, true, &body, NONCE).unwrap();
        let mut out = Vec::new();
        c.feed(&mut |b: &[u8]| out.extend_from_slice(b));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with(
            "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml/?a=b&c=d.ALegRequestUUID3e82"
        ), "{s}");
        assert!(
            s.ends_with("@phone-qa.voice.plivodev.com.31627761595286130198"),
            "{s}"
        );
        let (u, _) = sdk_request("GET", URL_Q);
        let c = Canonical::new(Version::V3, "GET", &u, false, b"", NONCE).unwrap();
        let mut out = Vec::new();
        c.feed(&mut |b: &[u8]| out.extend_from_slice(b));
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("xml/?ALegRequestUUID=3e82"), "{s}");
        assert!(s.contains("&SIP-H-To=<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1&"), "{s}");
        assert!(
            s.ends_with("plivodev.com&a=b&c=d.31627761595286130198"),
            "{s}"
        );
    }

    #[test]
    fn plivo_v2_vector_verifies_and_ignores_query_and_body() {
        // plivo/plivo-python tests/resources/test_signature.py (and plivo-go TestValidateSignatureV2Pass).
        let v = verifier(r#"{"version":"v2"}"#, &[("k", "my_auth_token")]);
        let h = hdrs(&[
            (V2.signature, "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc="),
            (V2.nonce, "12345"),
        ]);
        let ok = check(&*v, "POST", "https://answer.url", b"", &h).unwrap();
        assert_eq!(ok.scheme(), "v2");
        assert_eq!(ok.event_id_str(), Some("12345"));
        // What V2 does not sign: this is why `lint` warns.
        assert!(check(&*v, "POST", "https://answer.url?x=1", b"any=body", &h).is_ok());
        assert_eq!(
            check(&*v, "POST", "https://answer.url/", b"", &h),
            Err(Reject::SignatureMismatch)
        );
        assert_eq!(
            lint(&serde_json::from_str(r#"{"version":"v2"}"#).unwrap()).len(),
            1
        );
        assert!(lint(&Options::new()).is_empty());
    }

    #[test]
    fn main_account_header_and_comma_lists_match() {
        let (u, body) = sdk_request("POST", URL);
        let good = "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=";
        let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let h = hdrs(&[
            (V3.signature, other),
            (V3.main_account, &format!("{other},{good}")),
            (V3.nonce, NONCE),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert!(check(&*v3(), "POST", &u, &body, &h).is_ok());
        let h = hdrs(&[
            (V3.main_account, good),
            (V3.nonce, NONCE),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert!(check(&*v3(), "POST", &u, &body, &h).is_ok());
    }

    #[test]
    fn key_rotation_names_the_matching_key_and_wrong_key_fails() {
        let (u, body) = sdk_request("POST", URL);
        let h = form_headers("iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=");
        let v = verifier("{}", &[("old", "MAXXXXXXXXXXXXXXXXXX"), ("new", TOKEN)]);
        assert_eq!(
            check(&*v, "POST", &u, &body, &h).unwrap().key_label(),
            "new"
        );
        let v = verifier("{}", &[("old", "MAXXXXXXXXXXXXXXXXXX")]);
        assert_eq!(
            check(&*v, "POST", &u, &body, &h),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn expired_keys_give_key_expired() {
        let ring = KeyRing::new(vec![crate::Key {
            not_after: Some(1_000),
            ..crate::Key::new("k", Secret::new(TOKEN))
        }])
        .unwrap();
        let v = build(&Options::new(), &ring, &Settings::default()).unwrap();
        let (u, body) = sdk_request("POST", URL);
        let h = form_headers("iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=");
        assert_eq!(check(&*v, "POST", &u, &body, &h), Err(Reject::KeyExpired));
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let (u, body) = sdk_request("POST", URL_Q);
        let sig = "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c=";
        let v = v3();
        let h = form_headers(sig);
        assert!(check(&*v, "POST", &u, &body, &h).is_ok());
        for i in 0..body.len() {
            let mut b = body.clone();
            b[i] ^= 0x01;
            let got = check(&*v, "POST", &u, &b, &h);
            assert_eq!(got, Err(Reject::SignatureMismatch), "body byte {i}");
        }
        for i in 0..u.len() {
            let mut b = u.clone().into_bytes();
            b[i] ^= 0x01;
            let Ok(t) = String::from_utf8(b) else {
                continue;
            };
            let got = check(&*v, "POST", &t, &body, &h);
            assert!(
                matches!(got, Err(Reject::SignatureMismatch | Reject::UrlMalformed)),
                "url byte {i}: {t} {got:?}"
            );
        }
        for i in 0..NONCE.len() {
            let mut n = NONCE.as_bytes().to_vec();
            n[i] ^= 0x01;
            let n = String::from_utf8(n).unwrap();
            let h = hdrs(&[
                (V3.signature, sig),
                (V3.nonce, &n),
                ("content-type", "application/x-www-form-urlencoded"),
            ]);
            assert_eq!(
                check(&*v, "POST", &u, &body, &h),
                Err(Reject::SignatureMismatch),
                "nonce {i}"
            );
        }
        // Flipping a signature character either changes the decoded bytes or breaks base64.
        for i in 0..sig.len() - 1 {
            let mut s = sig.as_bytes().to_vec();
            s[i] = if s[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(s).unwrap();
            let got = check(&*v, "POST", &u, &body, &form_headers(&s));
            assert!(
                matches!(
                    got,
                    Err(Reject::SignatureMismatch | Reject::SignatureMalformed { .. })
                ),
                "sig {i}: {got:?}"
            );
        }
    }

    #[test]
    fn get_and_post_canonicalise_differently() {
        // Same parameters: in a GET query they are `name=value&…`, in a POST body `namevalue…`.
        let (get_url, _) = sdk_request("GET", URL);
        let (_, post_body) = sdk_request("POST", URL);
        let post_sig = form_headers("iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=");
        let get_sig = form_headers("i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc=");
        assert!(check(&*v3(), "GET", &get_url, b"", &get_sig).is_ok());
        assert_eq!(
            check(&*v3(), "GET", &get_url, b"", &post_sig),
            Err(Reject::SignatureMismatch)
        );
        assert_eq!(
            check(&*v3(), "POST", URL, &post_body, &get_sig),
            Err(Reject::SignatureMismatch)
        );
        assert_eq!(
            check(&*v3(), "PUT", &get_url, b"", &get_sig),
            Err(Reject::Unsupported {
                what: "Plivo V3 signs only GET and POST callbacks"
            })
        );
    }

    #[test]
    fn missing_headers_give_their_own_reject() {
        let (u, body) = sdk_request("POST", URL);
        let h = hdrs(&[(V3.nonce, NONCE)]);
        assert_eq!(
            check(&*v3(), "POST", &u, &body, &h),
            Err(Reject::SignatureMissing {
                header: V3.signature
            })
        );
        let h = hdrs(&[(V3.signature, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=")]);
        assert_eq!(
            check(&*v3(), "POST", &u, &body, &h),
            Err(Reject::SignatureMissing { header: V3.nonce })
        );
    }

    #[test]
    fn v3_route_does_not_fall_back_to_v2_headers() {
        let h = hdrs(&[
            (V2.signature, "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc="),
            (V2.nonce, "12345"),
        ]);
        let v = verifier("{}", &[("k", "my_auth_token")]);
        assert_eq!(
            check(&*v, "POST", "https://answer.url", b"", &h),
            Err(Reject::SignatureMissing {
                header: V3.signature
            })
        );
    }

    #[test]
    fn malformed_and_oversized_signatures_are_rejected_without_panic() {
        let (u, body) = sdk_request("POST", URL);
        for bad in ["!!!!", "", ",", "AAAA", "@@@,###"] {
            assert_eq!(
                check(&*v3(), "POST", &u, &body, &form_headers(bad)),
                Err(Reject::SignatureMalformed {
                    header: V3.signature,
                    why: "no base64 HMAC-SHA256 signature"
                }),
                "{bad:?}"
            );
        }
        let huge = "A".repeat(20 * MAX_SIGNATURE_LEN);
        assert_eq!(
            check(&*v3(), "POST", &u, &body, &form_headers(&huge)),
            Err(Reject::SignatureMalformed {
                header: V3.signature,
                why: "too long"
            })
        );
    }

    #[test]
    fn unsigned_bodies_are_refused() {
        let good = form_headers("iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0=");
        let mut json = good.clone();
        json.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(
            check(&*v3(), "POST", URL, b"{\"a\":1}", &json),
            Err(Reject::BodyMalformed {
                why: "Plivo V3 signs form-encoded bodies only"
            })
        );
        assert_eq!(
            check(&*v3(), "GET", URL, b"a=1", &good),
            Err(Reject::BodyMalformed {
                why: "Plivo V3 GET callbacks carry no body"
            })
        );
    }

    #[test]
    fn invalid_utf8_and_bad_escapes_are_signed_as_bytes() {
        let input = SignInput {
            method: "POST".into(),
            url: "https://h.example/cb?q=%FF%zz".into(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: b"a=%FF&b=\xfe&c=%4".to_vec(),
            now: 0,
            nonce: "n".into(),
        };
        let s = sign(&Options::new(), &Secret::new(TOKEN), &input).unwrap();
        let h = s.header_map();
        assert_eq!(
            check(&*v3(), "POST", &s.url, &s.body, &h).unwrap().scheme(),
            "v3"
        );
        assert_eq!(
            check(&*v3(), "POST", &s.url, b"a=%FE&b=\xfe&c=%4", &h),
            Err(Reject::SignatureMismatch)
        );
    }

    #[test]
    fn sample_round_trips_for_both_versions() {
        for opts in ["{}", r#"{"version":"v2"}"#] {
            let o: Options = serde_json::from_str(opts).unwrap();
            let input = sample(&o, "https://hooks.example.com:8443/plivo/answer?tenant=7");
            assert!(input.body.len() > 300);
            let s = sign(&o, &Secret::new(TOKEN), &input).unwrap();
            let v = verifier(opts, &[("k", TOKEN)]);
            let ok = check(&*v, &s.method, &s.url, &s.body, &s.header_map()).unwrap();
            assert_eq!(ok.event_id_str(), Some("05429567804466091622"));
        }
    }

    #[test]
    fn diagnosis_finds_a_hidden_https_scheme() {
        let input = sample(&Options::new(), "https://hooks.example.com/plivo/answer");
        let s = sign(&Options::new(), &Secret::new(TOKEN), &input).unwrap();
        let h = s.header_map();
        let seen = "http://hooks.example.com/plivo/answer";
        let req = Request {
            method: "POST",
            url: seen,
            headers: &h,
            body: &s.body,
        };
        let v = v3();
        assert_eq!(v.verify(&req, 0), Err(Reject::SignatureMismatch));
        let d = crate::diagnose::explain(&*v, &req, 0, &Default::default()).unwrap();
        assert_eq!(d.code, "scheme");
        assert_eq!(
            d.signed_url.as_deref(),
            Some("https://hooks.example.com/plivo/answer")
        );
    }

    #[test]
    fn unknown_options_are_refused() {
        let o: Options = serde_json::from_str(r#"{"version":"v1"}"#).unwrap();
        assert!(matches!(
            build(
                &o,
                &KeyRing::single(Secret::new(TOKEN)),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
        let o: Options = serde_json::from_str(r#"{"versoin":"v3"}"#).unwrap();
        assert!(matches!(
            build(
                &o,
                &KeyRing::single(Secret::new(TOKEN)),
                &Settings::default()
            ),
            Err(BuildError::Option(_))
        ));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn sign_then_verify_and_param_order_does_not_matter(
                pairs in proptest::collection::vec(("[A-Za-z0-9 <>;@&=+%-]{1,8}", "[A-Za-z0-9 <>;@&=+%é-]{0,8}"), 0..8),
                query in proptest::collection::vec(("[a-z]{1,4}", "[a-z0-9 ]{0,4}"), 0..3),
                get in any::<bool>(),
            ) {
                let q = form::encode_pairs(&query);
                let url = if q.is_empty() { "https://h.example/cb/".to_string() } else { format!("https://h.example/cb/?{q}") };
                let (url, body) = if get {
                    let all: Vec<_> = query.iter().chain(pairs.iter()).cloned().collect();
                    let enc = form::encode_pairs(&all);
                    (if enc.is_empty() { "https://h.example/cb/".to_string() } else { format!("https://h.example/cb/?{enc}") }, Vec::new())
                } else {
                    (url, form::encode_pairs(&pairs).into_bytes())
                };
                let input = SignInput {
                    method: if get { "GET".into() } else { "POST".into() },
                    url: url.clone(),
                    content_type: Some("application/x-www-form-urlencoded".into()),
                    body: body.clone(),
                    now: 0,
                    nonce: "n1".into(),
                };
                let s = sign(&Options::new(), &Secret::new(TOKEN), &input).unwrap();
                let h = s.header_map();
                prop_assert!(check(&*v3(), &s.method, &url, &body, &h).is_ok());
                if !get && pairs.len() > 1 {
                    let mut rev = pairs.clone();
                    rev.reverse();
                    let rbody = form::encode_pairs(&rev).into_bytes();
                    prop_assert!(check(&*v3(), "POST", &url, &rbody, &h).is_ok());
                }
            }

            #[test]
            fn arbitrary_requests_never_panic(
                url in ".{0,40}",
                body in proptest::collection::vec(any::<u8>(), 0..64),
                sig in "[A-Za-z0-9+/=, ]{0,90}",
            ) {
                let h = form_headers(&sig);
                let _ = check(&*v3(), "POST", &url, &body, &h);
                let _ = check(&*v3(), "GET", &url, &body, &h);
            }
        }
    }
}
