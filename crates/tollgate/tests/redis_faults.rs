//! Fault test 4 of issue 4, on the real binary: Redis killed and restarted under traffic. While it
//! is down tollgate answers 503 and `/readyz` 503, and nothing reaches the upstream without a claim;
//! once it is back (same port) tollgate serves again without being restarted.
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_support::{send, signed_request, upstream, Answer, Tollgate, APP_ANSWER};
use tollgate_store::redis_server::{Persistence, RedisServer};

/// Bounded polling: `what` must hold within 400 × 25 ms.
async fn poll_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

fn is_store_unavailable(a: &Answer) -> bool {
    a.status == 503 && a.body.contains("store_unavailable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_traffic_fails_closed_then_recovers_without_restart() {
    // Append-only with fsync always: claims made before the crash survive it, as in production.
    let mut redis =
        RedisServer::start_with(Persistence::AppendFsyncAlways).unwrap_or_else(|e| panic!("{e}"));
    let (up, recorded) = upstream(Duration::ZERO).await;
    let mut tg = Tollgate::start(&redis.url(), up).await;

    for i in 0..10 {
        let a = tg.send(&format!("before-{i}")).await;
        assert_eq!((a.status, a.body.as_str()), (200, APP_ANSWER), "{a:?}");
        assert!(!a.replayed());
    }

    // Traffic: one client sending fresh events back to back until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let live: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
    let traffic = {
        let (stop, live, addr) = (Arc::clone(&stop), Arc::clone(&live), tg.addr);
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("live-{i}");
                let a = send(addr, &signed_request(&id, addr)).await;
                live.lock().unwrap().push((id, a));
                i += 1;
            }
        })
    };
    let live_count = |pred: fn(&Answer) -> bool| {
        let live = Arc::clone(&live);
        move || {
            let n = live.lock().unwrap().iter().filter(|(_, a)| pred(a)).count();
            async move { n }
        }
    };
    let ok_before = live_count(|a| a.status == 200);
    poll_until("live traffic accepted", || async { ok_before().await >= 5 }).await;

    redis.kill();
    poll_until("/readyz 503 with Redis down", || async {
        tg.readyz().await == Some(503)
    })
    .await;
    let failed = live_count(is_store_unavailable);
    poll_until("live traffic refused during the outage", || async {
        failed().await >= 5
    })
    .await;
    for i in 0..10 {
        let a = tg.send(&format!("outage-{i}")).await;
        assert!(is_store_unavailable(&a), "outage-{i}: {a:?}");
    }
    assert_eq!(tg.readyz().await, Some(503));

    redis.restart().unwrap_or_else(|e| panic!("{e}"));
    // The first requests after the restart may still meet the dead connection; tollgate must
    // reconnect by itself, with no restart.
    let mut probe = 0;
    poll_until("accepting again after Redis came back", || {
        probe += 1;
        let id = format!("probe-{probe}");
        let tg = &tg;
        async move {
            let a = tg.send(&id).await;
            assert!(
                a.status == 200 || is_store_unavailable(&a),
                "{id} while recovering: {a:?}"
            );
            a.status == 200
        }
    })
    .await;
    assert_eq!(tg.readyz().await, Some(200));
    let ok_now = live_count(|a| a.status == 200);
    let ok_at_restart = ok_now().await;
    poll_until("live traffic accepted after recovery", || async {
        ok_now().await > ok_at_restart
    })
    .await;
    for i in 0..10 {
        let a = tg.send(&format!("after-{i}")).await;
        assert_eq!((a.status, a.body.as_str()), (200, APP_ANSWER), "{a:?}");
    }
    // A provider retry of an event claimed before the crash is still recognised (append-only
    // file, fsync always): answered from the store, not forwarded again.
    let again = tg.send("before-3").await;
    assert_eq!((again.status, again.body.as_str()), (200, APP_ANSWER));
    assert!(again.replayed(), "{again:?}");

    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert!(
        tg.is_running(),
        "tollgate was restarted or died: {}",
        tg.log()
    );

    // Exact accounting: every event reached the upstream at most once, and exactly the events
    // answered 2xx reached it. Nothing refused (503) reached it: no acceptance without a claim.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in recorded.ids() {
        *seen.entry(id).or_default() += 1;
    }
    for (id, n) in &seen {
        assert_eq!(*n, 1, "{id} forwarded {n} times");
    }
    for i in 0..10 {
        assert_eq!(seen.get(&format!("before-{i}")), Some(&1));
        assert_eq!(seen.get(&format!("after-{i}")), Some(&1));
        assert_eq!(
            seen.get(&format!("outage-{i}")),
            None,
            "outage-{i} forwarded"
        );
    }
    let live = live.lock().unwrap();
    let mut refused = 0;
    for (id, a) in live.iter() {
        match a.status {
            200 => assert_eq!(
                seen.get(id),
                Some(&1),
                "{id} answered 200 but not forwarded"
            ),
            _ => {
                assert!(is_store_unavailable(a), "{id}: {a:?}");
                assert_eq!(seen.get(id), None, "{id} answered 503 but forwarded");
                refused += 1;
            }
        }
    }
    assert!(refused >= 5);
    let forwarded_live = seen.keys().filter(|id| id.starts_with("live-")).count();
    assert_eq!(forwarded_live, live.len() - refused);
    for p in 1..=probe {
        let id = format!("probe-{p}");
        let expect = if p == probe { Some(&1) } else { None };
        assert_eq!(seen.get(&id), expect, "{id}");
    }
    assert_eq!(seen.len(), 10 + 10 + forwarded_live + 1);
    drop(tg);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn started_while_redis_is_down_it_runs_not_ready_then_serves_when_redis_is_up() {
    let mut redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    redis.kill();
    let (up, recorded) = upstream(Duration::ZERO).await;
    let mut tg = Tollgate::start_until(&redis.url(), up, 503).await;
    for i in 0..5 {
        let a = tg.send(&format!("early-{i}")).await;
        assert!(is_store_unavailable(&a), "early-{i}: {a:?}");
    }
    assert!(recorded.ids().is_empty(), "forwarded without a claim");

    redis.restart().unwrap_or_else(|e| panic!("{e}"));
    poll_until("/readyz 200 once Redis is up", || async {
        tg.readyz().await == Some(200)
    })
    .await;
    let a = tg.send("early-0").await;
    assert_eq!((a.status, a.body.as_str()), (200, APP_ANSWER), "{a:?}");
    assert!(!a.replayed());
    assert_eq!(recorded.ids(), ["early-0"]);
    assert!(tg.is_running());
    let log = tg.log();
    assert!(log.contains("state store not reachable yet"), "{log}");
    drop(tg);
    drop(redis);
}
