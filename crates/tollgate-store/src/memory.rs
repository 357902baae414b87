//! In-process store: the shared [`Index`](crate::index) alone. For tests and `backend = "memory"`;
//! lost on restart and not shared between instances.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{deadline, SharedClock, SystemClock};
use crate::index::{Index, KeyHash, Seen};
use crate::{Claim, ReplayStore, StoreError, StoredResponse};

/// In-memory [`ReplayStore`]: a few tens of bytes per event key, answers shared by content.
#[derive(Debug)]
pub struct MemoryStore {
    index: Index,
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
            index: Index::default(),
            clock,
        }
    }

    /// Drops expired entries (and answers no entry uses) now; returns how many entries were
    /// dropped. Expired entries are also swept as the store is used.
    pub async fn purge_expired(&self) -> usize {
        self.index.purge(self.clock.now_ms())
    }

    /// Number of entries held, live or expired-but-not-yet-purged.
    pub async fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no entry is held.
    pub async fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Number of distinct answers held (identical answers are stored once).
    pub async fn distinct_answers(&self) -> usize {
        self.index.answers()
    }
}

#[async_trait::async_trait]
impl ReplayStore for MemoryStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let now = self.clock.now_ms();
        Ok(
            match self.index.claim(&KeyHash::of(key), now, lease, true) {
                Seen::Claimed | Seen::Free => Claim::Claimed,
                Seen::InFlight => Claim::InFlight,
                Seen::Done(answer) => Claim::Done(answer.response.clone()),
            },
        )
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let answer = self.index.intern_response(response);
        self.index
            .complete(&KeyHash::of(key), now, deadline(now, ttl), answer);
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.index.release(&KeyHash::of(key));
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

    #[tokio::test]
    async fn many_events_with_one_answer_hold_one_copy() {
        let store = MemoryStore::new();
        let answer = StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), b"text/xml".to_vec())],
            body: b"<Response/>".to_vec(),
        };
        for i in 0..1_000 {
            let key = format!("twilio:id:SM{i}");
            store.claim(&key, Duration::from_secs(30)).await.unwrap();
            store
                .complete(&key, &answer, Duration::from_secs(86_400))
                .await
                .unwrap();
        }
        assert_eq!(store.distinct_answers().await, 1);
        assert_eq!(
            store
                .claim("twilio:id:SM999", Duration::from_secs(30))
                .await
                .unwrap(),
            Claim::Done(answer)
        );
    }
}
