//! Shared set-up for the fuzz targets: every provider of the registry built with fixed test keys,
//! and each provider's sample signed with them. Providers that cannot be built or cannot sign
//! with these keys and empty options are left out (and listed by `cargo fuzz run` on stderr once).
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use tollgate_verify::{
    KeyRing, Options, ProviderSpec, Secret, Settings, Signed, Verifier, PROVIDERS,
};

/// Fixed time the samples are signed at and verified at.
pub const NOW: i64 = 1_700_000_000;

/// Test keys, NOT secrets: a Standard Webhooks `whsec_` key (the SDK test key), plain base64 of 32
/// bytes (an HMAC secret or an Ed25519 seed), and a `whsk_` seed. The first that a provider
/// accepts for signing is used; its verification key comes from `verify_key_for`.
const TEST_KEYS: &[&str] = &[
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
    "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=",
];

/// One provider, ready.
pub struct Ready {
    /// Registry entry.
    pub spec: &'static ProviderSpec,
    /// Verifier keyed with the verification key.
    pub verifier: Box<dyn Verifier>,
    /// The sample, signed at [`NOW`].
    pub signed: Signed,
}

/// Every provider that builds and signs with a test key.
pub fn ready() -> &'static [Ready] {
    static READY: OnceLock<Vec<Ready>> = OnceLock::new();
    READY.get_or_init(|| {
        let opts = Options::new();
        let mut out = Vec::new();
        for spec in PROVIDERS {
            let found = TEST_KEYS.iter().find_map(|k| {
                let secret = Secret::new(*k);
                let mut input = (spec.sample)(&opts, "https://example.com/hooks/in?route=1");
                input.now = NOW;
                input.nonce = "fuzz-nonce-0001".into();
                let signed = (spec.sign)(&opts, &secret, &input).ok()?;
                let vk = (spec.verify_key_for)(&opts, &secret).ok()?;
                let verifier =
                    (spec.build)(&opts, &KeyRing::single(vk), &Settings::default()).ok()?;
                Some(Ready {
                    spec,
                    verifier,
                    signed,
                })
            });
            // A sample that does not verify untouched would make every mutation check vacuous.
            if let Some(r) = &found {
                let headers = r.signed.header_map();
                let req = tollgate_verify::Request {
                    method: &r.signed.method,
                    url: &r.signed.url,
                    headers: &headers,
                    body: &r.signed.body,
                };
                if let Err(e) = r.verifier.verify(&req, NOW) {
                    panic!("{}: the signed sample does not verify: {e}", spec.id);
                }
            }
            match found {
                Some(r) => out.push(r),
                None => eprintln!(
                    "tollgate-fuzz: skipping provider {} (cannot sign/build with test keys)",
                    spec.id
                ),
            }
        }
        out
    })
}
