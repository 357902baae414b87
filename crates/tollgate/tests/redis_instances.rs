//! Fault test 3 of issue 4 (proxy half), on the real binary: two tollgate instances on one Redis
//! act as one. The same provider retry sent to both, one after the other or at the same moment,
//! is forwarded once; every other copy gets the first answer replayed, or 409 while it is in
//! flight. The Redis URL carries a password, which no log line may show.
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use redis_support::{send, signed_request, upstream, Answer, Tollgate, APP_ANSWER};
use tokio::sync::Barrier;
use tollgate_store::redis_server::RedisServer;

const PASSWORD: &str = "s3cret-redis-pw";

/// A private server requiring [`PASSWORD`].
fn redis_with_password() -> (RedisServer, String) {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let reply = redis
        .command(&format!("CONFIG SET requirepass {PASSWORD}"))
        .unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port());
    (redis, url)
}

fn is_first(a: &Answer) -> bool {
    a.status == 200 && a.body == APP_ANSWER && !a.replayed()
}

fn is_replay(a: &Answer) -> bool {
    a.status == 200 && a.body == APP_ANSWER && a.replayed()
}

fn is_in_flight(a: &Answer) -> bool {
    a.status == 409 && a.body.contains("in_flight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_the_other_instance_is_recognised_sequentially() {
    let (redis, url) = redis_with_password();
    let (up, recorded) = upstream(Duration::ZERO).await;
    let a = Tollgate::start(&url, up).await;
    let b = Tollgate::start(&url, up).await;

    for i in 0..10 {
        let id = format!("seq-{i}");
        // Alternate which instance sees the event first.
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let bytes = signed_request(&id, first.addr);
        let one = send(first.addr, &bytes).await;
        assert!(is_first(&one), "{id} first: {one:?}");
        // The provider's retry: the very same bytes, landing on the other instance.
        let two = send(second.addr, &bytes).await;
        assert!(is_replay(&two), "{id} retry on the other instance: {two:?}");
        let three = send(first.addr, &bytes).await;
        assert!(
            is_replay(&three),
            "{id} retry on the same instance: {three:?}"
        );
        assert_eq!(recorded.count(&id), 1, "{id}");
    }
    assert_eq!(recorded.ids().len(), 10);
    for t in [&a, &b] {
        let log = t.log();
        assert!(
            !log.contains(PASSWORD),
            "the Redis password is in a log:\n{log}"
        );
    }
    drop((a, b, redis));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_copies_on_both_instances_are_forwarded_once() {
    const EVENTS: usize = 8;
    const COPIES_PER_INSTANCE: usize = 3;
    let (redis, url) = redis_with_password();
    // The app takes a moment, so copies arriving meanwhile find the event in flight.
    let (up, recorded) = upstream(Duration::from_millis(200)).await;
    let a = Tollgate::start(&url, up).await;
    let b = Tollgate::start(&url, up).await;

    let copies = EVENTS * 2 * COPIES_PER_INSTANCE;
    let barrier = Arc::new(Barrier::new(copies));
    let mut tasks = Vec::new();
    for e in 0..EVENTS {
        let id = format!("conc-{e}");
        let bytes = Arc::new(signed_request(&id, a.addr));
        for addr in [a.addr, b.addr] {
            for _ in 0..COPIES_PER_INSTANCE {
                let (id, bytes, barrier) = (id.clone(), Arc::clone(&bytes), Arc::clone(&barrier));
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    (id, send(addr, &bytes).await)
                }));
            }
        }
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for e in 0..EVENTS {
        let id = format!("conc-{e}");
        let mine: Vec<&Answer> = answers
            .iter()
            .filter(|(x, _)| *x == id)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(mine.len(), 2 * COPIES_PER_INSTANCE);
        let firsts = mine.iter().filter(|a| is_first(a)).count();
        assert_eq!(firsts, 1, "{id}: {mine:?}");
        for a in &mine {
            assert!(
                is_first(a) || is_replay(a) || is_in_flight(a),
                "{id}: unexpected answer {a:?}"
            );
        }
        assert_eq!(recorded.count(&id), 1, "{id} forwarded more than once");
        // Once the first answer is stored, every later retry, on either instance, replays it.
        for t in [&a, &b] {
            let later = send(t.addr, &signed_request(&id, t.addr)).await;
            assert!(is_replay(&later), "{id} later: {later:?}");
        }
    }
    assert_eq!(recorded.ids().len(), EVENTS);
    for t in [&a, &b] {
        assert!(
            !t.log().contains(PASSWORD),
            "the Redis password is in a log"
        );
    }
    drop((a, b, redis));
}
