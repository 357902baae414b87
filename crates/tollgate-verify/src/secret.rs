//! Secrets and key rings. A [`Secret`] never prints, never compares with `==`, and is zeroed on drop.
//! A [`KeyRing`] holds several labelled keys so a route can rotate without downtime: any live key
//! may match, and the result names the one that did.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::reject::{BuildError, Reject};

/// Key material: an auth token, a signing secret, a `whsec_…` string or a base64 public key, as the
/// route's scheme defines. Kept as the raw bytes the operator configured.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps key material.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Zeroizing::new(bytes.into()))
    }

    /// The material, for the provider code that keys a MAC or parses a public key.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The material as UTF-8 text, for schemes whose key is text (base64 keys, `whsec_` strings).
    pub fn expose_str(&self) -> Result<&str, BuildError> {
        std::str::from_utf8(&self.0)
            .map_err(|_| BuildError::Key("key material is not UTF-8".into()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One labelled key of a route.
#[derive(Debug, Clone)]
pub struct Key {
    /// Operator's name for the key (reported in [`crate::Verified`] and metrics).
    pub label: Arc<str>,
    /// The material.
    pub secret: Secret,
    /// Unix seconds after which the key no longer verifies.
    pub not_after: Option<i64>,
}

impl Key {
    /// A key with no expiry.
    pub fn new(label: impl Into<Arc<str>>, secret: Secret) -> Self {
        Key {
            label: label.into(),
            secret,
            not_after: None,
        }
    }
}

/// The keys of one route, in the order they are tried.
#[derive(Debug, Clone)]
pub struct KeyRing(Vec<Key>);

impl KeyRing {
    /// A ring of at least one key with distinct labels.
    pub fn new(keys: Vec<Key>) -> Result<Self, BuildError> {
        if keys.is_empty() {
            return Err(BuildError::Key("a route needs at least one key".into()));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.label == k.label) {
                return Err(BuildError::Key(format!(
                    "duplicate key label {:?}",
                    k.label
                )));
            }
        }
        Ok(KeyRing(keys))
    }

    /// A ring of one key labelled `default`.
    pub fn single(secret: Secret) -> Self {
        KeyRing(vec![Key::new("default", secret)])
    }

    /// All keys, live or not.
    pub fn keys(&self) -> &[Key] {
        &self.0
    }

    /// Turns every key into the scheme's prepared state (a keyed MAC, a parsed public key) once,
    /// at build time, so each request only clones it.
    pub fn prepare<T>(
        &self,
        mut f: impl FnMut(&Secret) -> Result<T, BuildError>,
    ) -> Result<Prepared<T>, BuildError> {
        let mut out = Vec::with_capacity(self.0.len());
        for k in &self.0 {
            let state = f(&k.secret).map_err(|e| e.for_key(&k.label))?;
            out.push(PreparedKey {
                label: k.label.clone(),
                not_after: k.not_after,
                state,
            });
        }
        Ok(Prepared(out))
    }
}

/// A key turned into the scheme's working state.
#[derive(Debug, Clone)]
pub struct PreparedKey<T> {
    /// The key's label.
    pub label: Arc<str>,
    /// Expiry, unix seconds.
    pub not_after: Option<i64>,
    /// The scheme's state for this key.
    pub state: T,
}

/// A prepared key ring.
#[derive(Debug, Clone)]
pub struct Prepared<T>(Vec<PreparedKey<T>>);

impl<T> Prepared<T> {
    /// The keys that may verify at `now`; [`Reject::KeyExpired`] when every key has expired, so an
    /// operator who forgot to add the new key sees why everything fails.
    pub fn live(&self, now: i64) -> Result<impl Iterator<Item = &PreparedKey<T>> + Clone, Reject> {
        let live = move |k: &&PreparedKey<T>| k.not_after.is_none_or(|t| now <= t);
        if !self.0.iter().any(|k| live(&k)) {
            return Err(Reject::KeyExpired);
        }
        Ok(self.0.iter().filter(live))
    }

    /// Every key, expired or not.
    pub fn all(&self) -> &[PreparedKey<T>] {
        &self.0
    }
}
