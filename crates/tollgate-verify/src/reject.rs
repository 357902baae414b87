//! Why a request was refused. Each variant is one documented reason with a stable code
//! ([`Reject::reason`]) used as the metric label, the audit-log code and the gateway's JSON error.
//! Tests assert the exact variant, never just "is an error".

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The header or parameter carrying the signature or credentials is absent.
    #[error("no signature: header {header} is missing")]
    SignatureMissing {
        /// Where the signature was expected.
        header: &'static str,
    },
    /// The signature is present but cannot be decoded (bad base64/hex, wrong length, bad JWT shape).
    #[error("signature in {header} is malformed: {why}")]
    SignatureMalformed {
        /// Where the signature was found.
        header: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No live key produces the received signature.
    #[error("signature does not match any live key")]
    SignatureMismatch,
    /// The scheme signs a time but the request carries none.
    #[error("no timestamp: {header} is missing")]
    TimestampMissing {
        /// Where the timestamp was expected.
        header: &'static str,
    },
    /// The timestamp is not in the scheme's format.
    #[error("timestamp in {header} is malformed")]
    TimestampMalformed {
        /// Where the timestamp was found.
        header: &'static str,
    },
    /// The signed time is outside the tolerance window. `skew_secs` is local time minus signed time
    /// (positive: the request is old, or the provider's clock is behind ours).
    #[error("timestamp is {skew_secs} s from now, outside ±{tolerance_secs} s")]
    TimestampOutOfWindow {
        /// Local time minus signed time, seconds.
        skew_secs: i64,
        /// The route's tolerance.
        tolerance_secs: u64,
    },
    /// Every key of the route has passed its `not_after`.
    #[error("every key of this route has expired")]
    KeyExpired,
    /// The signature is valid but the body is not the one it commits to (`bodySHA256`, `payload_hash`).
    #[error("the body does not match the signed body hash")]
    BodyHashMismatch,
    /// The scheme has to parse the body (form, JSON) and cannot.
    #[error("body is malformed: {why}")]
    BodyMalformed {
        /// What is wrong with it.
        why: &'static str,
    },
    /// The URL cannot be split into scheme, authority, path and query.
    #[error("request URL is malformed")]
    UrlMalformed,
    /// A header the scheme reads is repeated or not visible ASCII.
    #[error("header {header} is malformed: {why}")]
    HeaderMalformed {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The request uses a variant of the scheme this route does not accept (another algorithm,
    /// another signature version).
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was not accepted.
        what: &'static str,
    },
}

impl Reject {
    /// The stable reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::SignatureMissing { .. } => "signature_missing",
            Reject::SignatureMalformed { .. } => "signature_malformed",
            Reject::SignatureMismatch => "signature_mismatch",
            Reject::TimestampMissing { .. } => "timestamp_missing",
            Reject::TimestampMalformed { .. } => "timestamp_malformed",
            Reject::TimestampOutOfWindow { .. } => "timestamp_out_of_window",
            Reject::KeyExpired => "key_expired",
            Reject::BodyHashMismatch => "body_hash_mismatch",
            Reject::BodyMalformed { .. } => "body_malformed",
            Reject::UrlMalformed => "url_malformed",
            Reject::HeaderMalformed { .. } => "header_malformed",
            Reject::Unsupported { .. } => "unsupported",
        }
    }

    /// True when the request brought no credentials at all (HTTP 401 rather than 403).
    pub fn is_missing_credentials(&self) -> bool {
        matches!(self, Reject::SignatureMissing { .. })
    }

    /// Every reason code, for metrics pre-registration and docs.
    pub const REASONS: &'static [&'static str] = &[
        "signature_missing",
        "signature_malformed",
        "signature_mismatch",
        "timestamp_missing",
        "timestamp_malformed",
        "timestamp_out_of_window",
        "key_expired",
        "body_hash_mismatch",
        "body_malformed",
        "url_malformed",
        "header_malformed",
        "unsupported",
    ];
}

/// A route's verification settings or keys are unusable. Found at start-up, never per request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An option is unknown, of the wrong type or out of range.
    #[error("{0}")]
    Option(String),
    /// A key cannot be used by this scheme (not base64, wrong length, not a public key...).
    #[error("{0}")]
    Key(String),
}

impl BuildError {
    pub(crate) fn for_key(self, label: &str) -> Self {
        match self {
            BuildError::Key(m) => BuildError::Key(format!("key {label:?}: {m}")),
            other => other,
        }
    }
}

/// Signing failed (CLI and tests only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignError(pub String);

impl From<BuildError> for SignError {
    fn from(e: BuildError) -> Self {
        SignError(e.to_string())
    }
}
