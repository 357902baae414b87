//! The in-process replay index behind both embedded backends: [`MemoryStore`](crate::MemoryStore)
//! is this index alone, [`SqliteStore`](crate::SqliteStore) is this index as the authority for
//! claims plus SQLite as the persistence of completed answers.
//!
//! It is built to hold a whole dedupe window (typically 24 h of events) in a few tens of bytes per
//! event:
//! - an event key is kept as the first 16 bytes of its SHA-256 ([`KeyHash`]), never as a `String`
//!   (a collision needs ~2^64 events);
//! - an entry is that hash, a deadline and an optional pointer to the answer: 32 bytes plus the
//!   hash table's control byte and spare capacity;
//! - answers are interned by content ([`Answer`]): most events of a route get the same answer
//!   (`<Response/>`), so a thousand completed events share one allocation. An answer is dropped
//!   from the interner by a sweep once no entry points to it any more.
//!
//! A `date` header is not part of a stored answer: it would make every second's answer distinct,
//! and the HTTP server adds a current one when the answer is replayed.
//!
//! The entries are spread over [`SHARDS`] mutex-guarded maps (no `.await` is ever held inside
//! one). Expired entries are swept per shard when the shard has doubled since its last sweep or
//! [`SWEEP_INTERVAL_MS`] has passed, so expiry costs O(1) amortised per operation and the index
//! stays bounded by the live window plus a few seconds.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::deadline;
use crate::StoredResponse;

/// How many independently locked maps the entries are spread over.
pub(crate) const SHARDS: usize = 16;

/// A shard below this size is never swept for growth (only by time).
const MIN_SWEEP_LEN: usize = 1024;

/// Longest an expired entry waits for its shard's sweep when the shard is in use.
pub(crate) const SWEEP_INTERVAL_MS: u64 = 10_000;

/// The interner is swept once it has doubled since its last sweep, and never below this size.
const MIN_INTERNER_SWEEP_LEN: usize = 64;

/// The first 16 bytes of the SHA-256 of an event key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyHash(pub(crate) [u8; 16]);

impl KeyHash {
    /// Hashes an event key.
    pub(crate) fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        KeyHash(out)
    }

    fn shard(&self) -> usize {
        usize::from(self.0[15]) % SHARDS
    }
}

impl Hash for KeyHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a uniform cryptographic digest: its first 8 bytes are a perfect table hash, and
        // re-hashing them with SipHash would only cost time.
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

/// A hasher that passes a [`KeyHash`]'s (or answer id's) own bits through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached by types other than `KeyHash`; fold them in FNV-1a style to stay correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<KeyHash, V, BuildHasherDefault<PassThrough>>;

/// One distinct answer, shared by every entry that completed with it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The first 16 bytes of the SHA-256 of its content (status, encoded headers, body); also its
    /// key in SQLite's `answers` table.
    pub(crate) id: KeyHash,
    /// The answer, without a `date` header.
    pub(crate) response: StoredResponse,
    /// `response.headers` in the storage encoding ([`encode_headers`](crate::sqlite::encode_headers)).
    pub(crate) encoded_headers: Vec<u8>,
}

impl Answer {
    /// Builds the interned form of `response` (dropping its `date` header).
    pub(crate) fn new(response: &StoredResponse) -> Self {
        let headers: Vec<(String, Vec<u8>)> = response
            .headers
            .iter()
            .filter(|(name, _)| !is_date(name))
            .cloned()
            .collect();
        let encoded_headers = crate::sqlite::encode_headers(&headers);
        let response = StoredResponse {
            status: response.status,
            headers,
            body: response.body.clone(),
        };
        Self::with_encoded(response, encoded_headers)
    }

    /// An answer read back from storage, its headers already encoded.
    pub(crate) fn with_encoded(response: StoredResponse, encoded_headers: Vec<u8>) -> Self {
        let id = content_id(response.status, &encoded_headers, &response.body);
        Self {
            id,
            response,
            encoded_headers,
        }
    }
}

/// Whether a header is left out of stored answers.
fn is_date(name: &str) -> bool {
    name.eq_ignore_ascii_case("date")
}

/// [`Answer::new`]'s id without building the answer: the same bytes [`content_id`] hashes, with
/// the header block encoded straight into the hash, so a completion whose answer is already
/// interned allocates nothing.
fn response_id(response: &StoredResponse) -> KeyHash {
    let kept = || response.headers.iter().filter(|(n, _)| !is_date(n));
    let encoded_len: usize = 4 + kept().map(|(n, v)| 8 + n.len() + v.len()).sum::<usize>();
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    let mut h = Sha256::new();
    h.update(response.status.to_be_bytes());
    h.update((encoded_len as u64).to_be_bytes());
    h.update(len32(kept().count()));
    for (name, value) in kept() {
        h.update(len32(name.len()));
        h.update(name.as_bytes());
        h.update(len32(value.len()));
        h.update(value);
    }
    h.update(&response.body);
    truncate(h)
}

fn truncate(h: Sha256) -> KeyHash {
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    KeyHash(out)
}

/// The content hash of an answer; lengths are framed so no two contents share an input.
fn content_id(status: u16, encoded_headers: &[u8], body: &[u8]) -> KeyHash {
    let mut h = Sha256::new();
    h.update(status.to_be_bytes());
    h.update((encoded_headers.len() as u64).to_be_bytes());
    h.update(encoded_headers);
    h.update(body);
    truncate(h)
}

/// A claimed key's state: in flight while `answer` is `None`, done once it holds the answer.
#[derive(Debug)]
struct Slot {
    until_ms: u64,
    answer: Option<Arc<Answer>>,
}

#[derive(Debug, Default)]
struct Shard {
    map: Map<Slot>,
    /// Sweep when the map reaches this size.
    sweep_at_len: usize,
    /// Sweep when the clock reaches this time.
    sweep_at_ms: u64,
}

impl Shard {
    /// Drops expired entries if this shard is due; amortised O(1) per call.
    fn maybe_sweep(&mut self, now: u64) {
        if self.map.len() >= self.sweep_at_len.max(MIN_SWEEP_LEN) || now >= self.sweep_at_ms {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, s| s.until_ms > now);
        // Let the table give back memory after a burst rather than keep its peak forever.
        if self.map.capacity() > 4 * self.map.len().max(MIN_SWEEP_LEN) {
            self.map.shrink_to(2 * self.map.len());
        }
        self.sweep_at_len = 2 * self.map.len();
        self.sweep_at_ms = now.saturating_add(SWEEP_INTERVAL_MS);
        before - self.map.len()
    }
}

#[derive(Debug, Default)]
struct Interner {
    map: Map<Arc<Answer>>,
    sweep_at_len: usize,
}

impl Interner {
    /// Drops answers no entry points to any more.
    fn sweep(&mut self) {
        self.map.retain(|_, a| Arc::strong_count(a) > 1);
        self.sweep_at_len = 2 * self.map.len();
    }
}

/// What [`Index::claim`] found.
#[derive(Debug)]
pub(crate) enum Seen {
    /// The key was free and is now in flight for this caller.
    Claimed,
    /// Another delivery holds the key.
    InFlight,
    /// Already answered.
    Done(Arc<Answer>),
    /// The key was free, but the caller did not allow a new claim.
    Free,
}

/// The sharded index of claims and interned answers.
pub(crate) struct Index {
    shards: Box<[Mutex<Shard>]>,
    answers: Mutex<Interner>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("entries", &self.len())
            .field("answers", &self.answers())
            .finish()
    }
}

impl Default for Index {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            answers: Mutex::default(),
        }
    }
}

/// A poisoned lock only means another thread panicked mid-operation; every operation leaves the
/// map consistent at each step, so the data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Index {
    fn shard(&self, key: &KeyHash) -> MutexGuard<'_, Shard> {
        lock(&self.shards[key.shard()])
    }

    /// Claims `key` for `lease` if it is free and `may_claim`; reports what it found.
    pub(crate) fn claim(&self, key: &KeyHash, now: u64, lease: Duration, may_claim: bool) -> Seen {
        let mut shard = self.shard(key);
        shard.maybe_sweep(now);
        if let Some(slot) = shard.map.get(key).filter(|s| s.until_ms > now) {
            return match &slot.answer {
                None => Seen::InFlight,
                Some(a) => Seen::Done(Arc::clone(a)),
            };
        }
        if !may_claim {
            return Seen::Free;
        }
        shard.map.insert(
            *key,
            Slot {
                until_ms: deadline(now, lease),
                answer: None,
            },
        );
        Seen::Claimed
    }

    /// Records `answer` for `key` until `until_ms`, replacing whatever was there.
    pub(crate) fn complete(&self, key: &KeyHash, now: u64, until_ms: u64, answer: Arc<Answer>) {
        let mut shard = self.shard(key);
        shard.maybe_sweep(now);
        shard.map.insert(
            *key,
            Slot {
                until_ms,
                answer: Some(answer),
            },
        );
    }

    /// Drops `key` if it is in flight; a stored answer is never dropped.
    pub(crate) fn release(&self, key: &KeyHash) {
        let mut shard = self.shard(key);
        if shard.map.get(key).is_some_and(|s| s.answer.is_none()) {
            shard.map.remove(key);
        }
    }

    /// The shared copy of `response` (without its `date` header), stored now if new.
    pub(crate) fn intern_response(&self, response: &StoredResponse) -> Arc<Answer> {
        let id = response_id(response);
        if let Some(a) = lock(&self.answers).map.get(&id) {
            return Arc::clone(a);
        }
        self.intern(Answer::new(response))
    }

    /// The shared copy of `answer`'s content (stored now if new).
    pub(crate) fn intern(&self, answer: Answer) -> Arc<Answer> {
        let mut interner = lock(&self.answers);
        if let Some(a) = interner.map.get(&answer.id) {
            return Arc::clone(a);
        }
        if interner.map.len() >= interner.sweep_at_len.max(MIN_INTERNER_SWEEP_LEN) {
            interner.sweep();
        }
        let answer = Arc::new(answer);
        interner.map.insert(answer.id, Arc::clone(&answer));
        answer
    }

    /// Drops every expired entry and every answer no entry uses; returns how many entries went.
    pub(crate) fn purge(&self, now: u64) -> usize {
        let dropped = self.shards.iter().map(|s| lock(s).sweep(now)).sum();
        lock(&self.answers).sweep();
        dropped
    }

    /// Entries held, live or expired but not yet swept.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Distinct answers held.
    pub(crate) fn answers(&self) -> usize {
        lock(&self.answers).map.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn response(body: &str, date: &str) -> StoredResponse {
        StoredResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), b"text/xml".to_vec()),
                ("Date".into(), date.as_bytes().to_vec()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn identical_answers_share_one_copy_whatever_their_date() {
        let index = Index::default();
        let a = index.intern(Answer::new(&response(
            "<Response/>",
            "Mon, 23 Nov 2026 13:00:00 GMT",
        )));
        let b = index.intern(Answer::new(&response(
            "<Response/>",
            "Mon, 23 Nov 2026 13:00:01 GMT",
        )));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            a.response.headers,
            vec![("content-type".to_owned(), b"text/xml".to_vec())]
        );
        let c = index.intern(Answer::new(&response("<Response>2</Response>", "x")));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(index.answers(), 2);
    }

    #[test]
    fn the_streamed_id_is_the_id_of_the_built_answer() {
        for r in [
            response("<Response/>", "Mon, 23 Nov 2026 13:00:00 GMT"),
            StoredResponse {
                status: 203,
                headers: vec![
                    ("x-raw".into(), vec![0xff, 0x00]),
                    ("DATE".into(), b"gone".to_vec()),
                    ("x-raw".into(), Vec::new()),
                ],
                body: (0..=255u8).collect(),
            },
            StoredResponse {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            },
        ] {
            assert_eq!(response_id(&r), Answer::new(&r).id);
        }
        let index = Index::default();
        let built = index.intern(Answer::new(&response("x", "a")));
        assert!(Arc::ptr_eq(
            &built,
            &index.intern_response(&response("x", "b"))
        ));
    }

    #[test]
    fn content_framing_keeps_headers_and_body_apart() {
        // Moving bytes between the header block and the body must change the id.
        let a = content_id(200, b"ab", b"c");
        let b = content_id(200, b"a", b"bc");
        assert_ne!(a, b);
        assert_ne!(content_id(200, b"", b""), content_id(201, b"", b""));
    }

    #[test]
    fn unused_answers_are_reclaimed_by_the_purge() {
        let index = Index::default();
        let key = KeyHash::of("k");
        assert!(matches!(
            index.claim(&key, NOW, Duration::from_secs(1), true),
            Seen::Claimed
        ));
        let answer = index.intern(Answer::new(&response("once", "")));
        index.complete(&key, NOW, NOW + 1_000, answer);
        assert_eq!(index.purge(NOW), 0);
        assert_eq!(index.answers(), 1);
        assert_eq!(index.purge(NOW + 1_000), 1);
        assert_eq!((index.len(), index.answers()), (0, 0));
    }

    #[test]
    fn expired_entries_are_swept_without_an_explicit_purge() {
        let index = Index::default();
        let lease = Duration::from_secs(1);
        for i in 0..10_000 {
            index.claim(&KeyHash::of(&format!("k{i}")), NOW, lease, true);
        }
        assert_eq!(index.len(), 10_000);
        // Every shard sees traffic after the interval; each sweeps what expired.
        let later = NOW + SWEEP_INTERVAL_MS + 1_000;
        for i in 0..1_000 {
            index.claim(&KeyHash::of(&format!("new{i}")), later, lease, true);
        }
        assert_eq!(index.len(), 1_000);
    }

    #[test]
    fn an_entry_is_a_few_tens_of_bytes() {
        assert_eq!(
            std::mem::size_of::<KeyHash>() + std::mem::size_of::<Slot>(),
            32
        );
    }
}
