//! In-process store: a mutex-guarded map. For tests and `backend = "memory"`; lost on restart and
//! not shared between instances.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::clock::{deadline, SharedClock, SystemClock};
use crate::{Claim, ReplayStore, StoreError, StoredResponse};

#[derive(Debug)]
enum Entry {
    InFlight {
        until_ms: u64,
    },
    Done {
        until_ms: u64,
        response: StoredResponse,
    },
}

impl Entry {
    fn until_ms(&self) -> u64 {
        match self {
            Entry::InFlight { until_ms } | Entry::Done { until_ms, .. } => *until_ms,
        }
    }
}

/// In-memory [`ReplayStore`].
#[derive(Debug)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, Entry>>,
    clock: SharedClock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Drops expired entries now; returns how many were dropped.
    pub async fn purge_expired(&self) -> usize {
        let now = self.clock.now_ms();
        let mut map = self.map.lock().await;
        let before = map.len();
        map.retain(|_, e| e.until_ms() > now);
        before - map.len()
    }

    /// Number of entries held, live or expired-but-not-yet-purged.
    pub async fn len(&self) -> usize {
        self.map.lock().await.len()
    }

    /// Whether no entry is held.
    pub async fn is_empty(&self) -> bool {
        self.map.lock().await.is_empty()
    }
}

#[async_trait::async_trait]
impl ReplayStore for MemoryStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = self.clock.now_ms();
        let mut map = self.map.lock().await;
        // Opportunistic expiry keeps the map bounded by the live window. Running it only when the
        // size crosses a power of two amortises the full scan to O(1) per insert.
        if map.len() > 4096 && map.len().is_power_of_two() {
            map.retain(|_, e| e.until_ms() > now);
        }
        match map.get(key) {
            Some(Entry::InFlight { until_ms }) if *until_ms > now => Ok(Claim::InFlight),
            Some(Entry::Done { until_ms, response }) if *until_ms > now => {
                Ok(Claim::Done(response.clone()))
            }
            _ => {
                map.insert(
                    key.to_owned(),
                    Entry::InFlight {
                        until_ms: deadline(now, lease),
                    },
                );
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
        let until_ms = deadline(self.clock.now_ms(), ttl);
        self.map.lock().await.insert(
            key.to_owned(),
            Entry::Done {
                until_ms,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn purge_drops_only_expired_entries() {
        let clock = ManualClock::new(1_000);
        let store = MemoryStore::with_clock(clock.clone());
        store.claim("short", Duration::from_secs(1)).await.unwrap();
        store.claim("long", Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.purge_expired().await, 0);
        clock.advance(Duration::from_secs(1));
        assert_eq!(store.purge_expired().await, 1);
        assert_eq!(store.len().await, 1);
        assert_eq!(
            store.claim("long", Duration::from_secs(1)).await.unwrap(),
            Claim::InFlight
        );
    }
}
