//! The providers. Each file holds one provider: its options, its verifier, its signer (for the CLI
//! and tests) and its unit tests with the official SDK vectors. [`PROVIDERS`] is the explicit list;
//! adding a provider means one file, one entry here, and a vectors folder under `tests/vectors/`.
//! `tests/registry.rs` holds every entry to the same contract (round trip, tamper sweep, wrong key,
//! missing headers, stale timestamps).

use serde::de::DeserializeOwned;

use crate::reject::{BuildError, Reject, SignError};
use crate::request::Request;
use crate::secret::{KeyRing, Secret};
use crate::verified::Verified;

pub mod basic;
pub mod hmac;
pub mod plivo;
pub mod signalwire;
pub mod sinch;
pub mod standard_webhooks;
pub mod telnyx;
pub mod twilio;
pub mod vonage;

/// Every provider, in the order `tollgate --help` lists them.
pub const PROVIDERS: &[ProviderSpec] = &[
    twilio::SPEC,
    signalwire::SPEC,
    plivo::SPEC,
    telnyx::SPEC,
    vonage::SPEC,
    sinch::SPEC,
    standard_webhooks::SPEC,
    hmac::SPEC,
    basic::SPEC,
];

/// Looks a provider up by its config id.
pub fn find_provider(id: &str) -> Option<&'static ProviderSpec> {
    PROVIDERS.iter().find(|p| p.id == id)
}

/// A route's provider-specific options (the route table's keys other than the common ones), as
/// JSON so TOML config and `--set key=value` reach the same serde structs.
pub type Options = serde_json::Map<String, serde_json::Value>;

/// Settings common to every scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Freshness window, ± seconds, for schemes that sign a time.
    pub tolerance_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tolerance_secs: crate::time::DEFAULT_TOLERANCE_SECS,
        }
    }
}

/// A route's prepared verifier: keys parsed and MAC states keyed once, at build time.
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// Verifies one request at `now` (unix seconds).
    fn verify(&self, req: &Request<'_>, now: i64) -> Result<Verified, Reject>;

    /// Whether the signature covers the request URL, so that diagnosis should try URL variants.
    fn signs_url(&self) -> bool;
}

/// What a signer needs to produce a request as the provider would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInput {
    /// Method.
    pub method: String,
    /// The URL the provider would call.
    pub url: String,
    /// Content type of `body`, if any.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Signing time, unix seconds (for schemes that sign one).
    pub now: i64,
    /// A fresh random token from the caller (message id, nonce, `jti`): this crate has no randomness.
    pub nonce: String,
}

/// A signed request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Method.
    pub method: String,
    /// URL to call (a scheme may add to it, as Twilio adds `bodySHA256`).
    pub url: String,
    /// Headers to send, including `Content-Type` when there is a body.
    pub headers: Vec<(String, String)>,
    /// Body (a scheme may add to it, as Vonage adds `sig`).
    pub body: Vec<u8>,
}

impl Signed {
    /// The headers as a map, for feeding the request straight back to a verifier.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k.as_str()),
                http::HeaderValue::try_from(v.as_str()),
            ) {
                map.append(k, v);
            }
        }
        map
    }
}

/// Builds a route's verifier from its options, keys and settings (once, at start-up or reload).
pub type BuildFn = fn(&Options, &KeyRing, &Settings) -> Result<Box<dyn Verifier>, BuildError>;

/// A provider's entry in the registry.
#[derive(Clone, Copy)]
pub struct ProviderSpec {
    /// Id used in config (`provider = "twilio"`) and on the command line.
    pub id: &'static str,
    /// One line for help text.
    pub summary: &'static str,
    /// Whether the scheme signs a timestamp (freshness is then enforced).
    pub signs_time: bool,
    /// Builds a route's verifier from its options and keys.
    pub build: BuildFn,
    /// Signs a request as the provider would (CLI `sign`/`send`, tests, benches).
    pub sign: fn(&Options, &Secret, &SignInput) -> Result<Signed, SignError>,
    /// The key a verifier needs for what `signing_key` signs: the same secret for HMAC schemes, the
    /// public key for asymmetric ones.
    pub verify_key_for: fn(&Options, &Secret) -> Result<Secret, SignError>,
    /// A realistic webhook of this provider for `url` (unsigned), for `send`, tests and benches.
    pub sample: fn(&Options, url: &str) -> SignInput,
    /// Warnings for `tollgate check` about weak choices in these options.
    pub lint: fn(&Options) -> Vec<String>,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Deserialises a provider's options struct (which should use `deny_unknown_fields`).
pub fn parse_options<T: DeserializeOwned>(opts: &Options) -> Result<T, BuildError> {
    serde_json::from_value(serde_json::Value::Object(opts.clone()))
        .map_err(|e| BuildError::Option(e.to_string()))
}

/// `verify_key_for` of symmetric schemes.
pub fn same_key(_: &Options, s: &Secret) -> Result<Secret, SignError> {
    Ok(s.clone())
}

/// `lint` of schemes with nothing to warn about.
pub fn no_lints(_: &Options) -> Vec<String> {
    Vec::new()
}
