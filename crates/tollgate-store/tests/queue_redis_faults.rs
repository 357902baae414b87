//! The Redis queue under faults, each test on its own private redis-server: a dead server gives
//! [`StoreError::Unavailable`] promptly and never a false acknowledgement; a restarted server is
//! used again by the same queue; acknowledged events survive a `kill -9` of Redis (append-only
//! file, fsync always); two queues (two tollgate instances) share events, and a crashed
//! instance's leases are taken over by the other once they run out.
//!
//! Every operation runs under [`within`], a 2 s cap (the queue's own operation timeout is 1 s).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{assert_unavailable, start, wait_until_usable, within, LEASE, START_MS};
use tollgate_store::queue_conformance::event;
use tollgate_store::redis_server::{Persistence, RedisServer};
use tollgate_store::{
    Clock, Enqueued, EventQueue, EventStatus, ManualClock, RedisOptions, RedisQueue, Settled,
};

fn queue(server: &RedisServer, clock: &Arc<ManualClock>) -> RedisQueue {
    RedisQueue::new(&server.url(), RedisOptions::new().with_clock(clock.clone())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_fails_closed_and_the_same_queue_recovers() {
    let mut server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let q = queue(&server, &clock);
    assert_eq!(
        within("enqueue", q.enqueue(&event("a", "voice")))
            .await
            .unwrap(),
        Enqueued::New
    );
    let held = within("lease", q.lease(None, 1, LEASE)).await.unwrap();
    assert_eq!(held.len(), 1);

    server.kill();
    for round in 0..3 {
        let e = event(&format!("down-{round}"), "voice");
        assert_unavailable("enqueue", within("enqueue", q.enqueue(&e)).await);
        assert_unavailable("lease", within("lease", q.lease(None, 10, LEASE)).await);
        assert_unavailable("ack", within("ack", q.ack(&held[0])).await);
        assert_unavailable("get", within("get", q.get("a")).await);
        assert_unavailable("stats", within("stats", q.stats()).await);
    }

    server.restart().unwrap_or_else(|e| panic!("{e}"));
    wait_until_usable("the queue", "stats", || q.stats()).await;
    // No persistence: the server came back empty. What was refused was never stored.
    assert_eq!(within("get", q.get("down-0")).await.unwrap(), None);
    assert_eq!(
        within("enqueue", q.enqueue(&event("after", "voice")))
            .await
            .unwrap(),
        Enqueued::New
    );
    let l = within("lease", q.lease(None, 10, LEASE)).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].event.id, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_made_while_redis_is_down_connects_when_it_is_up() {
    let mut server = start(Persistence::None);
    server.kill();
    let clock = ManualClock::new(START_MS);
    let q = queue(&server, &clock);
    assert_unavailable(
        "enqueue",
        within("enqueue", q.enqueue(&event("early", "voice"))).await,
    );
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    wait_until_usable("the queue", "stats", || q.stats()).await;
    assert_eq!(
        within("enqueue", q.enqueue(&event("early", "voice")))
            .await
            .unwrap(),
        Enqueued::New
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_of_redis() {
    let mut server = start(Persistence::AppendFsyncAlways);
    let clock = ManualClock::new(START_MS);
    let q = queue(&server, &clock);
    for i in 0..50 {
        let e = event(
            &format!("e{i:02}"),
            if i % 2 == 0 { "voice" } else { "sms" },
        );
        assert_eq!(
            within("enqueue", q.enqueue(&e)).await.unwrap(),
            Enqueued::New
        );
    }
    let first = within("lease", q.lease(Some("voice"), 5, LEASE))
        .await
        .unwrap();
    for l in &first {
        assert_eq!(within("ack", q.ack(l)).await.unwrap(), Settled::Applied);
    }

    server.kill();
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    wait_until_usable("the queue", "stats", || q.stats()).await;

    // Everything acknowledged is there, once, with its state.
    for l in &first {
        let entry = within("get", q.get(&l.event.id)).await.unwrap().unwrap();
        assert_eq!(entry.status, EventStatus::Delivered);
    }
    let mut rest = Vec::new();
    loop {
        let l = within("lease", q.lease(None, 100, LEASE)).await.unwrap();
        if l.is_empty() {
            break;
        }
        rest.extend(l.into_iter().map(|l| l.event.id));
    }
    rest.sort();
    let mut want: Vec<String> = (0..50).map(|i| format!("e{i:02}")).collect();
    want.retain(|id| !first.iter().any(|l| l.event.id == *id));
    assert_eq!(rest, want);
    // A provider retry of an acknowledged event is still a duplicate.
    assert_eq!(
        within("enqueue", q.enqueue(&event("e00", "voice")))
            .await
            .unwrap(),
        Enqueued::Duplicate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_instances_leases_are_taken_over_by_the_other() {
    let server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let a = queue(&server, &clock);
    let b = queue(&server, &clock);
    for i in 0..6 {
        let e = event(&format!("e{i}"), "voice");
        // Enqueued through either instance; a retry through the other is a duplicate.
        let (first, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(
            within("enqueue", first.enqueue(&e)).await.unwrap(),
            Enqueued::New
        );
        assert_eq!(
            within("enqueue", other.enqueue(&e)).await.unwrap(),
            Enqueued::Duplicate
        );
    }
    // Instance A leases four, delivers one, then "crashes" holding three.
    let held = within("lease", a.lease(None, 4, LEASE)).await.unwrap();
    assert_eq!(held.len(), 4);
    assert_eq!(
        within("ack", a.ack(&held[0])).await.unwrap(),
        Settled::Applied
    );
    // B sees only what A does not hold.
    let b_now = within("lease", b.lease(None, 10, LEASE)).await.unwrap();
    let ids: Vec<&str> = b_now.iter().map(|l| l.event.id.as_str()).collect();
    assert_eq!(ids, ["e4", "e5"]);
    for l in &b_now {
        assert_eq!(within("ack", b.ack(l)).await.unwrap(), Settled::Applied);
    }
    assert!(within("lease", b.lease(None, 10, LEASE))
        .await
        .unwrap()
        .is_empty());

    // A's leases run out; B takes the events over.
    clock.advance(LEASE);
    let taken = within("lease", b.lease(None, 10, LEASE)).await.unwrap();
    let ids: Vec<&str> = taken.iter().map(|l| l.event.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    for l in &taken {
        assert_eq!(l.attempts, 2);
        assert_eq!(l.lease_until_ms, clock.now_ms() + LEASE.as_millis() as u64);
    }
    // A comes back late: its settlements are stale and change nothing.
    for l in &held[1..] {
        assert_eq!(within("ack", a.ack(l)).await.unwrap(), Settled::Stale);
    }
    for l in &taken {
        assert_eq!(within("ack", b.ack(l)).await.unwrap(), Settled::Applied);
    }
    let stats = within("stats", a.stats()).await.unwrap();
    assert!(stats.routes.is_empty(), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_key_is_prefixed_and_hash_tagged() {
    let server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let q = RedisQueue::new(
        &server.url(),
        RedisOptions::new()
            .with_clock(clock.clone())
            .with_key_prefix("tg1:"),
    )
    .unwrap();
    let keyed = tollgate_store::QueuedEvent {
        order_key: Some("CA1".into()),
        ..event("k", "voice")
    };
    within("enqueue", q.enqueue(&keyed)).await.unwrap();
    within("enqueue", q.enqueue(&event("s", "sms")))
        .await
        .unwrap();
    let l = within("lease", q.lease(None, 10, LEASE)).await.unwrap();
    within("dead", q.dead_letter(&l[1], "x")).await.unwrap();
    within("ack", q.ack(&l[0])).await.unwrap();
    let reply = server.command("KEYS *").unwrap();
    let mut keys: Vec<&str> = reply
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "tg1:{q:sms}:all",
            "tg1:{q:sms}:dead",
            "tg1:{q:sms}:e:s",
            "tg1:{q:sms}:tok",
            "tg1:{q:voice}:all",
            "tg1:{q:voice}:done",
            "tg1:{q:voice}:e:k",
            "tg1:{q:voice}:tok",
            "tg1:{qid:k}",
            "tg1:{qid:s}",
            "tg1:{qmeta}:routes",
            "tg1:{qmeta}:seq",
        ]
    );
}
