//! Shared set-up for the fuzz targets: every provider of the registry, and each non-default scheme
//! of one, built with fixed test keys and options, with its sample signed by them. Nothing is
//! skipped: a provider of `PROVIDERS` without an entry in [`configs`], or an entry that cannot
//! build, sign or verify its own sample, panics at start-up, so a fuzz run cannot silently cover
//! less than the registry.
//!
//! Each entry also states, from the scheme's documentation, which changes to a signed request the
//! scheme defines as no change ([`Ready::equivalent`]), so that `signed_mutation` reports only
//! real forgeries.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use tollgate_verify::url::Url;
use tollgate_verify::{
    form, KeyRing, Options, ProviderSpec, Secret, Settings, Signed, Verifier, PROVIDERS,
};

/// Fixed time the samples are signed at and verified at.
pub const NOW: i64 = 1_700_000_000;

/// Where the samples are signed for.
pub const URL: &str = "https://example.com/hooks/in?route=1";

/// Test keys, NOT secrets.
const HMAC_KEY: &str = "test-secret-0123456789abcdef";
/// RFC 8032 test-1 seed.
const ED25519_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";

/// What of the body a scheme signs, and so which body changes are no change to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCanon {
    /// The raw bytes (or their hash).
    Raw,
    /// Nothing (Plivo V2, Basic auth).
    Unsigned,
    /// Twilio: the decoded form parameters as `name + value`, names sorted, each name's values
    /// sorted and de-duplicated.
    TwilioParams,
    /// SignalWire scheme B: `name + value`, stable-sorted by name (repeats keep their order).
    SignalWireParams,
    /// Plivo V3: the decoded form parameters sorted by name then value.
    SortedParams,
    /// Vonage `sms-signature`: `&name=value` over the parameters but `sig`, sorted, with `&` and
    /// `=` in values replaced by `_`; `sig` itself is hex, either case, surrounding (Unicode) whitespace trimmed.
    VonageSms,
}

/// What of the URL a scheme signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlCanon {
    /// Not at all.
    Unsigned,
    /// All of it.
    Full,
    /// Scheme, host, port and path, not the query (Plivo V2).
    NoQuery,
    /// The path only (Sinch voice; the query is tried with and without).
    PathOnly,
}

/// One provider configuration under test.
pub struct Config {
    /// Registry id.
    pub id: &'static str,
    /// `key=value` options, as `--set` would give them.
    pub opts: &'static [(&'static str, &'static str)],
    /// Signing key.
    pub key: &'static str,
    /// What of the body is signed.
    pub body: BodyCanon,
    /// What of the URL is signed.
    pub url: UrlCanon,
    /// Headers the scheme does not sign (lowercase): changing them changes nothing it vouches for.
    pub unsigned_headers: &'static [&'static str],
    /// Headers that each carry the same signature, any one of which suffices (Plivo's `-V3` and
    /// `-Ma-V3`): changing one alone leaves a valid request.
    pub twin_headers: &'static [&'static str],
    /// A header whose value's part before the last `:` is not signed (Sinch voice's
    /// `Application <appKey>:<sig>`: the app key is checked only when the route pins one).
    pub unsigned_prefix_header: Option<&'static str>,
}

const CT: &str = "content-type";

/// Every configuration the targets cover.
pub fn configs() -> &'static [Config] {
    const SMS: fn(&'static str) -> Config = |m| Config {
        id: "vonage",
        opts: match m.as_bytes() {
            b"md5hash" => &[("scheme", "sms-signature"), ("signature_method", "md5hash")],
            b"md5" => &[("scheme", "sms-signature"), ("signature_method", "md5")],
            b"sha1" => &[("scheme", "sms-signature"), ("signature_method", "sha1")],
            b"sha256" => &[("scheme", "sms-signature"), ("signature_method", "sha256")],
            _ => &[("scheme", "sms-signature"), ("signature_method", "sha512")],
        },
        key: HMAC_KEY,
        body: BodyCanon::VonageSms,
        url: UrlCanon::Unsigned,
        // A non-JSON POST body is read as a form whatever its Content-Type says; the signed
        // parameters are the same bytes either way.
        unsigned_headers: &[CT],
        twin_headers: &[],
        unsigned_prefix_header: None,
    };
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let twilio = |opts| Config {
            id: "twilio",
            opts,
            key: HMAC_KEY,
            body: BodyCanon::TwilioParams,
            url: UrlCanon::Full,
            unsigned_headers: &[
                "i-twilio-idempotency-token",
                "x-twilio-webhooks-signature-settings",
            ],
            twin_headers: &[],
            unsigned_prefix_header: None,
        };
        let plain = |id, opts, key| Config {
            id,
            opts,
            key,
            body: BodyCanon::Raw,
            url: UrlCanon::Unsigned,
            unsigned_headers: &[CT],
            twin_headers: &[],
            unsigned_prefix_header: None,
        };
        vec![
            twilio(&[]),
            twilio(&[("algorithm", "hmac-sha256")]),
            Config {
                id: "signalwire",
                opts: &[],
                key: HMAC_KEY,
                body: BodyCanon::SignalWireParams,
                url: UrlCanon::Full,
                // As the SDK, scheme B reads every body as a form, whatever its Content-Type.
                unsigned_headers: &[CT],
                twin_headers: &[],
                unsigned_prefix_header: None,
            },
            Config {
                id: "plivo",
                opts: &[],
                key: HMAC_KEY,
                body: BodyCanon::SortedParams,
                url: UrlCanon::Full,
                unsigned_headers: &[],
                twin_headers: &["x-plivo-signature-v3", "x-plivo-signature-ma-v3"],
                unsigned_prefix_header: None,
            },
            Config {
                id: "plivo",
                opts: &[("version", "v2")],
                key: HMAC_KEY,
                body: BodyCanon::Unsigned,
                url: UrlCanon::NoQuery,
                unsigned_headers: &[CT],
                twin_headers: &["x-plivo-signature-v2", "x-plivo-signature-ma-v2"],
                unsigned_prefix_header: None,
            },
            plain("telnyx", &[], ED25519_SEED),
            plain("vonage", &[], HMAC_KEY),
            SMS("md5hash"),
            SMS("md5"),
            SMS("sha1"),
            SMS("sha256"),
            SMS("sha512"),
            Config {
                id: "sinch",
                opts: &[],
                key: "c2luY2gtYXBwLXNlY3JldC0wMTIzNDU2Nzg5",
                body: BodyCanon::Raw,
                url: UrlCanon::PathOnly,
                unsigned_headers: &[],
                twin_headers: &[],
                unsigned_prefix_header: Some("authorization"),
            },
            plain("sinch", &[("scheme", "conversation")], HMAC_KEY),
            plain(
                "standard-webhooks",
                &[],
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            plain(
                "standard-webhooks",
                &[],
                "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
            ),
            plain(
                "hmac",
                &[("header", "X-Hub-Signature-256"), ("prefix", "sha256=")],
                HMAC_KEY,
            ),
            plain(
                "hmac",
                &[("header", "X-Shopify-Hmac-Sha256"), ("encoding", "base64")],
                "joy~_\u{1D11E}é:",
            ),
            plain(
                "hmac",
                &[
                    ("header", "X-Signature"),
                    ("signed_content", "{id}.{timestamp}.{body}"),
                    ("timestamp_header", "X-Signature-Timestamp"),
                    ("id_header", "X-Signature-Id"),
                    ("algorithm", "sha512"),
                ],
                HMAC_KEY,
            ),
            plain(
                "hmac",
                &[
                    ("header", "Stripe-Signature"),
                    ("header_format", "stripe"),
                    ("signed_content", "{timestamp}.{body}"),
                ],
                "whsec_stripe-style-test-key",
            ),
            Config {
                id: "basic",
                opts: &[],
                key: "twilio:correct-horse-battery",
                body: BodyCanon::Unsigned,
                url: UrlCanon::Unsigned,
                unsigned_headers: &[CT],
                twin_headers: &[],
                unsigned_prefix_header: None,
            },
        ]
    })
}

fn options(pairs: &[(&str, &str)]) -> Options {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect()
}

/// One configuration, ready.
pub struct Ready {
    /// Registry entry.
    pub spec: &'static ProviderSpec,
    /// Its configuration.
    pub config: &'static Config,
    /// Verifier keyed with the verification key.
    pub verifier: Box<dyn Verifier>,
    /// The sample, signed at [`NOW`].
    pub signed: Signed,
}

/// Every configuration, built and signed. Panics when a provider of the registry has no
/// configuration, or one cannot build, sign or verify its own sample.
pub fn ready() -> &'static [Ready] {
    static READY: OnceLock<Vec<Ready>> = OnceLock::new();
    READY.get_or_init(|| {
        for spec in PROVIDERS {
            assert!(
                configs().iter().any(|c| c.id == spec.id),
                "tollgate-fuzz: provider {} has no configuration in fuzz/src/lib.rs",
                spec.id
            );
        }
        configs()
            .iter()
            .map(|config| {
                let name = format!("{} {:?}", config.id, config.opts);
                let spec = tollgate_verify::find_provider(config.id)
                    .unwrap_or_else(|| panic!("{name}: not in the registry"));
                let opts = options(config.opts);
                let secret = Secret::new(config.key);
                let mut input = (spec.sample)(&opts, URL);
                input.now = NOW;
                input.nonce = "fuzz-nonce-0001".into();
                let signed = (spec.sign)(&opts, &secret, &input)
                    .unwrap_or_else(|e| panic!("{name}: cannot sign: {e}"));
                let vk = (spec.verify_key_for)(&opts, &secret)
                    .unwrap_or_else(|e| panic!("{name}: no verify key: {e}"));
                let verifier = (spec.build)(&opts, &KeyRing::single(vk), &Settings::default())
                    .unwrap_or_else(|e| panic!("{name}: cannot build: {e}"));
                // A sample that does not verify untouched would make every mutation check vacuous.
                let headers = signed.header_map();
                let req = tollgate_verify::Request {
                    method: &signed.method,
                    url: &signed.url,
                    headers: &headers,
                    body: &signed.body,
                };
                if let Err(e) = verifier.verify(&req, NOW) {
                    panic!("{name}: the signed sample does not verify: {e}");
                }
                Ready {
                    spec,
                    config,
                    verifier,
                    signed,
                }
            })
            .collect()
    })
}

impl Ready {
    /// Whether a request with this URL, these headers (same names, same order as the signed
    /// ones) and this body is, by the scheme's definition, the signed request: the only requests
    /// that may verify.
    pub fn equivalent(&self, url: &str, headers: &[(String, String)], body: &[u8]) -> bool {
        let c = self.config;
        self.same_url(url)
            && headers.len() == self.signed.headers.len()
            && headers
                .iter()
                .zip(&self.signed.headers)
                .all(|((kn, vn), (ko, vo))| {
                    let name = ko.to_ascii_lowercase();
                    kn == ko
                        && (vn == vo
                            || c.unsigned_headers.contains(&name.as_str())
                            || c.twin_headers.contains(&name.as_str())
                            || (c.unsigned_prefix_header == Some(name.as_str())
                                && vn.rsplit_once(':').map(|p| p.1)
                                    == vo.rsplit_once(':').map(|p| p.1)
                                && vn.split_once(' ').map(|p| p.0)
                                    == vo.split_once(' ').map(|p| p.0)))
                })
            && self.same_body(body)
    }

    fn same_url(&self, url: &str) -> bool {
        let signed = &self.signed.url;
        match self.config.url {
            UrlCanon::Unsigned => true,
            UrlCanon::Full => url == signed,
            UrlCanon::NoQuery | UrlCanon::PathOnly => {
                let (Ok(a), Ok(b)) = (Url::parse(url), Url::parse(signed)) else {
                    return false;
                };
                if self.config.url == UrlCanon::PathOnly {
                    return a.path == b.path;
                }
                a.scheme.eq_ignore_ascii_case(b.scheme)
                    && a.host.eq_ignore_ascii_case(b.host)
                    && a.port == b.port
                    && a.path == b.path
            }
        }
    }

    fn same_body(&self, body: &[u8]) -> bool {
        let signed = &self.signed.body;
        match self.config.body {
            BodyCanon::Raw => body == signed.as_slice(),
            BodyCanon::Unsigned => true,
            BodyCanon::TwilioParams => twilio_string(body) == twilio_string(signed),
            BodyCanon::SignalWireParams => signalwire_string(body) == signalwire_string(signed),
            BodyCanon::SortedParams => sorted_pairs(body) == sorted_pairs(signed),
            BodyCanon::VonageSms => {
                let sig = |b: &[u8]| {
                    form::parse(b)
                        .into_iter()
                        .filter(|(k, _)| k.as_ref() == b"sig")
                        .map(|(_, v)| String::from_utf8_lossy(&v).trim().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                };
                vonage_string(body) == vonage_string(signed) && sig(body) == sig(signed)
            }
        }
    }
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The decoded form parameters sorted by name then value.
pub fn sorted_pairs(body: &[u8]) -> Pairs {
    let mut p: Pairs = form::parse(body)
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    p.sort();
    p
}

fn twilio_string(body: &[u8]) -> Vec<u8> {
    let mut p = sorted_pairs(body);
    p.dedup();
    p.into_iter().flat_map(|(k, v)| [k, v].concat()).collect()
}

fn signalwire_string(body: &[u8]) -> Vec<u8> {
    let mut p: Pairs = form::parse(body)
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    p.into_iter().flat_map(|(k, v)| [k, v].concat()).collect()
}

fn vonage_string(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in sorted_pairs(body) {
        if k == b"sig" {
            continue;
        }
        out.push(b'&');
        out.extend_from_slice(&k);
        out.push(b'=');
        out.extend(
            v.iter()
                .map(|&b| if b == b'&' || b == b'=' { b'_' } else { b }),
        );
    }
    out
}
