//! Webhook signature verification for voice and messaging providers.
//!
//! This crate is pure: no I/O, no async runtime, no clock, no environment. The caller hands in a
//! [`Request`] exactly as the provider sent it (method, the public URL the provider called, headers,
//! raw body bytes) and the current time; a route's [`provider::Verifier`] answers [`Verified`] or a
//! [`Reject`] with a stable reason code. [`diagnose::explain`] recomputes a failed URL-bound signature
//! for the usual proxy mistakes and says which variant would have matched; it never makes a request pass.
//!
//! Where a new provider goes: one file in [`provider`], one entry in [`provider::PROVIDERS`], and its
//! official-SDK vectors in `tests/vectors/<provider>/`.
#![forbid(unsafe_code)]

pub mod diagnose;
pub mod encoding;
pub mod form;
pub mod provider;
pub mod raw;
pub mod reject;
pub mod request;
pub mod secret;
pub mod time;
pub mod url;
pub mod verified;

pub use diagnose::{explain, Diagnosis, Hints};
pub use provider::{
    find_provider, Options, ProviderSpec, Settings, SignInput, Signed, Verifier, PROVIDERS,
};
pub use reject::{BuildError, Reject};
pub use request::Request;
pub use secret::{Key, KeyRing, Secret};
pub use verified::Verified;
