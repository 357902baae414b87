//! In-process store: a mutex-guarded map. For tests and `backend = "memory"`; lost on restart and
//! not shared between instances.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::{Claim, ReplayStore, StoreError, StoredResponse};

#[derive(Debug)]
enum Entry {
    InFlight {
        until: Instant,
    },
    Done {
        until: Instant,
        response: StoredResponse,
    },
}

/// In-memory [`ReplayStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, Entry>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl ReplayStore for MemoryStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = Instant::now();
        let mut map = self.map.lock().await;
        // Opportunistic expiry keeps the map bounded by the live window.
        if map.len() > 4096 && map.len().is_power_of_two() {
            map.retain(|_, e| match e {
                Entry::InFlight { until } | Entry::Done { until, .. } => *until > now,
            });
        }
        match map.get(key) {
            Some(Entry::InFlight { until }) if *until > now => Ok(Claim::InFlight),
            Some(Entry::Done { until, response }) if *until > now => {
                Ok(Claim::Done(response.clone()))
            }
            _ => {
                map.insert(key.to_owned(), Entry::InFlight { until: now + lease });
                Ok(Claim::Claimed)
            }
        }
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let until = Instant::now() + ttl;
        self.map.lock().await.insert(
            key.to_owned(),
            Entry::Done {
                until,
                response: response.clone(),
            },
        );
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut map = self.map.lock().await;
        if matches!(map.get(key), Some(Entry::InFlight { .. })) {
            map.remove(key);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
