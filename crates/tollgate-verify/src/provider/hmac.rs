//! hmac: not implemented yet.

use super::{no_lints, same_key, Options, ProviderSpec, Settings, SignInput, Signed, Verifier};
use crate::reject::{BuildError, SignError};
use crate::secret::{KeyRing, Secret};

/// Registry entry.
pub const SPEC: ProviderSpec = ProviderSpec {
    id: "hmac",
    summary: "not implemented yet",
    signs_time: false,
    build,
    sign,
    verify_key_for: same_key,
    sample,
    lint: no_lints,
};

fn build(_: &Options, _: &KeyRing, _: &Settings) -> Result<Box<dyn Verifier>, BuildError> {
    Err(BuildError::Option("hmac is not implemented yet".into()))
}

fn sign(_: &Options, _: &Secret, _: &SignInput) -> Result<Signed, SignError> {
    Err(SignError("hmac is not implemented yet".into()))
}

fn sample(_: &Options, url: &str) -> SignInput {
    SignInput {
        method: "POST".into(),
        url: url.into(),
        content_type: None,
        body: Vec::new(),
        now: 0,
        nonce: String::new(),
    }
}
