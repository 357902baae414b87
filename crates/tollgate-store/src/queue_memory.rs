//! In-process [`EventQueue`]: a mutex-guarded map. For tests and `backend = "memory"`; everything
//! is lost on restart, so it gives no durability at all: never the choice for acknowledged
//! callbacks in production.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::clock::{deadline, duration_ms, SharedClock, SystemClock};
use crate::queue::{
    Enqueued, EventQueue, EventStatus, LeaseToken, Leased, ListFilter, QueueEntry, QueueStats,
    QueuedEvent, RouteStats, Settled,
};
use crate::StoreError;

#[derive(Debug)]
struct Slot {
    /// Receipt order; never reused, so order survives removals.
    seq: u64,
    entry: QueueEntry,
    token: Option<LeaseToken>,
    /// When the event was delivered or dead-lettered.
    finished_at_ms: u64,
}

impl Slot {
    fn is_live(&self) -> bool {
        matches!(
            self.entry.status,
            EventStatus::Pending | EventStatus::Leased
        )
    }

    /// When a live event is next due.
    fn due_ms(&self) -> u64 {
        match self.entry.status {
            EventStatus::Leased => self.entry.lease_until_ms.unwrap_or(0),
            _ => self.entry.next_attempt_at_ms,
        }
    }

    fn line(&self) -> Option<(String, String)> {
        self.entry
            .event
            .order_key
            .as_ref()
            .map(|k| (self.entry.event.route.clone(), k.clone()))
    }
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    next_token: u64,
    events: HashMap<String, Slot>,
    /// Every event by receipt order, for `list`.
    by_seq: BTreeMap<u64, String>,
    /// Live events by (due_ms, seq): `lease` walks this from the front instead of every event.
    due: BTreeSet<(u64, u64)>,
    /// Live (pending or leased) events of each (route, order_key) line; the first is the head.
    lines: HashMap<(String, String), BTreeSet<u64>>,
}

impl State {
    /// Takes `id` out of the line and due indexes before its state changes; [`State::index`]
    /// puts it back in according to its new state. Every transition goes through this pair.
    fn unindex(&mut self, id: &str) {
        let Some(slot) = self.events.get(id) else {
            return;
        };
        if slot.is_live() {
            self.due.remove(&(slot.due_ms(), slot.seq));
            self.leave_line(id);
        }
    }

    fn index(&mut self, id: &str) {
        let Some(slot) = self.events.get(id) else {
            return;
        };
        if slot.is_live() {
            self.due.insert((slot.due_ms(), slot.seq));
            self.join_line(id);
        }
    }

    fn leave_line(&mut self, id: &str) {
        let Some(slot) = self.events.get(id) else {
            return;
        };
        if let Some(line) = slot.line() {
            let seq = slot.seq;
            if let Some(set) = self.lines.get_mut(&line) {
                set.remove(&seq);
                if set.is_empty() {
                    self.lines.remove(&line);
                }
            }
        }
    }

    fn join_line(&mut self, id: &str) {
        let Some(slot) = self.events.get(id) else {
            return;
        };
        if let Some(line) = slot.line() {
            let seq = slot.seq;
            self.lines.entry(line).or_default().insert(seq);
        }
    }

    fn is_head(&self, slot: &Slot) -> bool {
        slot.line().is_none_or(|line| {
            self.lines
                .get(&line)
                .and_then(|set| set.first())
                .is_none_or(|head| *head == slot.seq)
        })
    }

    /// The slot `lease` still holds, if its token is current.
    fn held(&mut self, lease: &Leased) -> Option<&mut Slot> {
        self.events
            .get_mut(&lease.event.id)
            .filter(|s| s.entry.status == EventStatus::Leased && s.token == Some(lease.token))
    }

    /// Ends the lease of `lease.event.id` with `status`, if the lease is current.
    fn settle(
        &mut self,
        lease: &Leased,
        status: EventStatus,
        next_attempt_at_ms: Option<u64>,
        error: Option<&str>,
        now: u64,
    ) -> Settled {
        if self.held(lease).is_none() {
            return Settled::Stale;
        }
        self.unindex(&lease.event.id);
        let Some(slot) = self.held(lease) else {
            return Settled::Stale;
        };
        slot.entry.status = status;
        slot.entry.lease_until_ms = None;
        slot.token = None;
        slot.finished_at_ms = now;
        if let Some(at) = next_attempt_at_ms {
            slot.entry.next_attempt_at_ms = at;
        }
        if let Some(e) = error {
            slot.entry.last_error = Some(e.to_owned());
        }
        self.index(&lease.event.id);
        Settled::Applied
    }
}

/// In-memory [`EventQueue`].
#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<State>,
    clock: SharedClock,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// An empty queue on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty queue reading time from `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock,
        }
    }
}

#[async_trait::async_trait]
impl EventQueue for MemoryQueue {
    async fn enqueue(&self, event: &QueuedEvent) -> Result<Enqueued, StoreError> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().await;
        if st.events.contains_key(&event.id) {
            return Ok(Enqueued::Duplicate);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.events.insert(
            event.id.clone(),
            Slot {
                seq,
                entry: QueueEntry {
                    event: event.clone(),
                    status: EventStatus::Pending,
                    attempts: 0,
                    next_attempt_at_ms: now,
                    lease_until_ms: None,
                    last_error: None,
                },
                token: None,
                finished_at_ms: 0,
            },
        );
        st.by_seq.insert(seq, event.id.clone());
        st.index(&event.id);
        Ok(Enqueued::New)
    }

    async fn lease(
        &self,
        route: Option<&str>,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Leased>, StoreError> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().await;
        // Only heads of their lines qualify, at most one per line, so leasing one candidate
        // never changes whether another is a head.
        let due: Vec<String> = st
            .due
            .iter()
            .take_while(|(due_ms, _)| *due_ms <= now)
            .filter_map(|(_, seq)| st.by_seq.get(seq).and_then(|id| st.events.get(id)))
            .filter(|s| route.is_none_or(|r| r == s.entry.event.route))
            .filter(|s| st.is_head(s))
            .take(max)
            .map(|s| s.entry.event.id.clone())
            .collect();
        let lease_until_ms = deadline(now, lease_for);
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            st.next_token += 1;
            let token = LeaseToken::new(st.next_token);
            st.unindex(&id);
            if let Some(slot) = st.events.get_mut(&id) {
                slot.entry.status = EventStatus::Leased;
                slot.entry.attempts = slot.entry.attempts.saturating_add(1);
                slot.entry.lease_until_ms = Some(lease_until_ms);
                slot.token = Some(token);
                out.push(Leased {
                    event: slot.entry.event.clone(),
                    attempts: slot.entry.attempts,
                    lease_until_ms,
                    token,
                });
            }
            st.index(&id);
        }
        Ok(out)
    }

    async fn ack(&self, lease: &Leased) -> Result<Settled, StoreError> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().await;
        Ok(st.settle(lease, EventStatus::Delivered, None, None, now))
    }

    async fn retry(
        &self,
        lease: &Leased,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<Settled, StoreError> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().await;
        Ok(st.settle(
            lease,
            EventStatus::Pending,
            Some(next_attempt_at_ms),
            Some(error),
            now,
        ))
    }

    async fn dead_letter(&self, lease: &Leased, error: &str) -> Result<Settled, StoreError> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().await;
        Ok(st.settle(lease, EventStatus::Dead, None, Some(error), now))
    }

    async fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let now = self.clock.now_ms();
        let st = self.state.lock().await;
        Ok(st
            .by_seq
            .values()
            .filter_map(|id| st.events.get(id))
            .filter(|s| filter.matches(&s.entry, now))
            .take(limit)
            .map(|s| s.entry.clone())
            .collect())
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        let st = self.state.lock().await;
        Ok(st.events.get(id).map(|s| s.entry.clone()))
    }

    async fn requeue(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let mut st = self.state.lock().await;
        let requeueable = st
            .events
            .get(id)
            .is_some_and(|s| matches!(s.entry.status, EventStatus::Dead | EventStatus::Pending));
        if !requeueable {
            return Ok(false);
        }
        st.unindex(id);
        if let Some(slot) = st.events.get_mut(id) {
            slot.entry.status = EventStatus::Pending;
            slot.entry.attempts = 0;
            slot.entry.next_attempt_at_ms = now;
        }
        st.index(id);
        Ok(true)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let mut st = self.state.lock().await;
        st.unindex(id);
        match st.events.remove(id) {
            Some(slot) => {
                st.by_seq.remove(&slot.seq);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn purge_delivered(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = self.clock.now_ms().saturating_sub(duration_ms(older_than));
        let mut st = self.state.lock().await;
        let gone: Vec<(String, u64)> = st
            .events
            .values()
            .filter(|s| s.entry.status == EventStatus::Delivered && s.finished_at_ms <= cutoff)
            .map(|s| (s.entry.event.id.clone(), s.seq))
            .collect();
        for (id, seq) in &gone {
            st.events.remove(id);
            st.by_seq.remove(seq);
        }
        Ok(gone.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let now = self.clock.now_ms();
        let st = self.state.lock().await;
        let mut routes: BTreeMap<&str, (RouteStats, Option<u64>)> = BTreeMap::new();
        for slot in st.events.values() {
            let e = &slot.entry;
            if e.status == EventStatus::Delivered {
                continue;
            }
            let (r, oldest) = routes.entry(&e.event.route).or_insert_with(|| {
                (
                    RouteStats {
                        route: e.event.route.clone(),
                        ..RouteStats::default()
                    },
                    None,
                )
            });
            match e.status {
                EventStatus::Pending => r.pending += 1,
                EventStatus::Leased => r.leased += 1,
                EventStatus::Dead => r.dead += 1,
                EventStatus::Delivered => {}
            }
            if slot.is_live() {
                let at = e.event.received_at_ms;
                *oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        Ok(QueueStats {
            routes: routes
                .into_values()
                .map(|(mut r, oldest)| {
                    r.oldest_undelivered_age =
                        oldest.map(|at| Duration::from_millis(now.saturating_sub(at)));
                    r
                })
                .collect(),
        })
    }
}
