//! Proof that a request passed its route's verifier. Only this crate can construct a [`Verified`],
//! so code that accepts one (the forwarder, the queue) cannot be handed unverified bytes.

use std::sync::Arc;

/// What verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    provider: &'static str,
    scheme: &'static str,
    key_label: Arc<str>,
    signed_at: Option<i64>,
    event_id: Option<String>,
}

impl Verified {
    pub(crate) fn new(provider: &'static str, scheme: &'static str, key_label: Arc<str>) -> Self {
        Verified {
            provider,
            scheme,
            key_label,
            signed_at: None,
            event_id: None,
        }
    }

    pub(crate) fn signed_at(mut self, t: Option<i64>) -> Self {
        self.signed_at = t;
        self
    }

    pub(crate) fn event_id(mut self, id: Option<String>) -> Self {
        self.event_id = id.filter(|s| !s.is_empty());
        self
    }

    /// Provider id (`twilio`, `telnyx`, ...).
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Which scheme of the provider matched (`classic`, `v3`, `jwt`, `v1a`, ...).
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Label of the key that matched.
    pub fn key_label(&self) -> &str {
        &self.key_label
    }

    /// The signed timestamp (unix seconds) where the scheme signs one.
    pub fn signed_time(&self) -> Option<i64> {
        self.signed_at
    }

    /// The provider's event or idempotency id, where the signature covers it (an unsigned id, such
    /// as Twilio's idempotency header, is not reported: it could be rewritten to dodge deduplication).
    pub fn event_id_str(&self) -> Option<&str> {
        self.event_id.as_deref()
    }
}
