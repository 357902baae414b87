//! The Redis backend under faults, each test on its own private redis-server: a dead or frozen
//! server must give [`StoreError::Unavailable`] promptly and never a false `Claimed`; a restarted
//! server must be used again by the same store; two stores (two tollgate instances) on one server
//! must still have one winner. Also the key layout, server-side expiry and damaged records.
//!
//! Every operation here runs under [`within`], a 2 s cap (the store's own operation timeout is
//! 1 s), so a hang fails the test instead of stalling CI.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    assert_unavailable, kill_and_restart, start, wait_until_usable, within, LEASE, START_MS,
};
use tokio::sync::Barrier;
use tollgate_store::conformance::awkward_response;
use tollgate_store::redis_server::{Persistence, RedisServer};
use tollgate_store::{Claim, ManualClock, RedisOptions, RedisStore, ReplayStore, StoreError};

const TTL: Duration = Duration::from_secs(3600);

async fn store(server: &RedisServer, clock: &Arc<ManualClock>) -> RedisStore {
    within(
        "connect",
        RedisStore::connect_with(&server.url(), RedisOptions::new().with_clock(clock.clone())),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_fails_promptly_and_never_claims() {
    let mut server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let store = Arc::new(store(&server, &clock).await);
    assert_eq!(store.claim("before", LEASE).await.unwrap(), Claim::Claimed);

    server.kill();
    // Several rounds: the first operation sees the connection drop, later ones the reconnection
    // attempts being refused; both must fail closed.
    for round in 0..3 {
        assert_unavailable(
            "claim of a new key",
            within("claim", store.claim(&format!("new-{round}"), LEASE)).await,
        );
        assert_unavailable(
            "claim of a held key",
            within("claim", store.claim("before", LEASE)).await,
        );
        assert_unavailable(
            "complete",
            within(
                "complete",
                store.complete("before", &awkward_response(), TTL),
            )
            .await,
        );
        assert_unavailable("release", within("release", store.release("before")).await);
        assert_unavailable("ping", within("ping", store.ping()).await);
    }
    // Racing callers while the server is down: not one hears `Claimed`.
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { within("racing claim", store.claim("race", LEASE)).await })
        })
        .collect();
    for t in tasks {
        assert_unavailable("racing claim", t.await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_server_is_reconnected_by_the_same_store() {
    let mut server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let store = store(&server, &clock).await;
    kill_and_restart(&mut server, &store).await;
    assert_eq!(
        within("claim", store.claim("k2", LEASE)).await.unwrap(),
        Claim::InFlight
    );
    store
        .complete("k2", &awkward_response(), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.claim("k2", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
    // A Redis without persistence forgets every claim on restart (the deployment notes say to
    // enable AOF); this pins that behaviour so a change to it is noticed.
    assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Claimed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_fsync_always_keeps_claims_and_answers_across_kill_9() {
    let mut server = start(Persistence::AppendFsyncAlways);
    let clock = ManualClock::new(START_MS);
    let store = store(&server, &clock).await;
    assert_eq!(
        store.claim("in-flight", LEASE).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(store.claim("done", LEASE).await.unwrap(), Claim::Claimed);
    store
        .complete("done", &awkward_response(), TTL)
        .await
        .unwrap();

    server.kill();
    server.restart().unwrap();
    wait_until_usable("the store", "ping", || store.ping()).await;

    assert_eq!(
        within("claim", store.claim("in-flight", LEASE))
            .await
            .unwrap(),
        Claim::InFlight
    );
    assert_eq!(
        within("claim", store.claim("done", LEASE)).await.unwrap(),
        Claim::Done(awkward_response())
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_server_times_out_instead_of_hanging() {
    let server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let store = store(&server, &clock).await;
    store.ping().await.unwrap();
    let pid = server.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };

    // SIGSTOP: the connection stays open but nothing answers, so only timeouts can end the wait.
    signal("-STOP");
    let frozen = within("claim", store.claim("frozen", LEASE)).await;
    let other = within("ping", store.ping()).await;
    signal("-CONT");
    assert_unavailable("claim", frozen);
    assert_unavailable("ping", other);

    wait_until_usable("the store", "ping", || store.ping()).await;
    assert_eq!(
        within("claim", store.claim("after", LEASE)).await.unwrap(),
        Claim::Claimed
    );
    // The claim sent while frozen may have run once the server woke: then it holds the key until
    // its lease ends. Either way no caller was told `Claimed` twice.
    let late = within("claim", store.claim("frozen", LEASE)).await.unwrap();
    assert!(matches!(late, Claim::Claimed | Claim::InFlight), "{late:?}");
    assert_eq!(
        within("claim", store.claim("frozen", LEASE)).await.unwrap(),
        Claim::InFlight
    );
}

#[tokio::test]
async fn connecting_to_no_server_fails_promptly() {
    let mut server = start(Persistence::None);
    let url = server.url();
    server.kill();
    let clock = ManualClock::new(START_MS);
    let r = within(
        "connect",
        RedisStore::connect_with(&url, RedisOptions::new().with_clock(clock)),
    )
    .await;
    assert_unavailable("connect", r);
}

#[tokio::test]
async fn invalid_url_is_an_error() {
    let r = RedisStore::connect_with("http://localhost/", RedisOptions::new()).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_server_have_one_winner() {
    let server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    // Two stores, two connections: as two tollgate processes behind a load balancer.
    let stores: [Arc<dyn ReplayStore>; 2] = [
        Arc::new(store(&server, &clock).await),
        Arc::new(store(&server, &clock).await),
    ];
    for round in 0..20 {
        let key = format!("shared-{round}");
        let barrier = Arc::new(Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                let barrier = Arc::clone(&barrier);
                let key = key.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    within("racing claim", store.claim(&key, LEASE)).await
                })
            })
            .collect();
        let mut claimed = [0; 2];
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap().unwrap() {
                Claim::Claimed => claimed[i % 2] += 1,
                Claim::InFlight => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(claimed[0] + claimed[1], 1, "round {round}: {claimed:?}");
    }
    // What one instance records, the other replays; what one releases, the other may claim.
    stores[0]
        .complete("shared-0", &awkward_response(), TTL)
        .await
        .unwrap();
    assert_eq!(
        stores[1].claim("shared-0", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
    stores[1].release("shared-1").await.unwrap();
    assert_eq!(
        stores[0].claim("shared-1", LEASE).await.unwrap(),
        Claim::Claimed
    );
}

#[tokio::test]
async fn keys_are_hash_tagged_prefixed_and_expire_server_side() {
    let server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let store = store(&server, &clock).await;
    assert_eq!(store.redis_key("evt-1"), b"tollgate:{evt-1}:claim");
    assert_eq!(store.claim("evt-1", LEASE).await.unwrap(), Claim::Claimed);
    assert_eq!(
        server.command("EXISTS tollgate:{evt-1}:claim").unwrap(),
        ":1\r\n"
    );

    let pttl = |server: &RedisServer| -> u64 {
        let reply = server.command("PTTL tollgate:{evt-1}:claim").unwrap();
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("PTTL answered {reply:?}"))
    };
    let margin = store.options().expiry_margin;
    // Lease plus margin for a claim, TTL plus margin once done: Redis collects what nobody will
    // read again, but never before the deadline the clock decides by.
    let claim_ttl = pttl(&server);
    assert!(claim_ttl > margin.as_millis() as u64, "{claim_ttl}");
    assert!(
        claim_ttl <= (LEASE + margin).as_millis() as u64,
        "{claim_ttl}"
    );
    store
        .complete("evt-1", &awkward_response(), TTL)
        .await
        .unwrap();
    let done_ttl = pttl(&server);
    assert!(done_ttl > (LEASE + margin).as_millis() as u64, "{done_ttl}");
    assert!(done_ttl <= (TTL + margin).as_millis() as u64, "{done_ttl}");

    // Another prefix is another deployment: the same event key is new there.
    let other = RedisStore::connect_with(
        &server.url(),
        RedisOptions::new()
            .with_clock(clock.clone())
            .with_key_prefix("staging:"),
    )
    .await
    .unwrap();
    assert_eq!(other.claim("evt-1", LEASE).await.unwrap(), Claim::Claimed);
    assert_eq!(
        server.command("EXISTS staging:{evt-1}:claim").unwrap(),
        ":1\r\n"
    );
    // The URL may carry a password; the store's Debug output never shows it.
    assert!(!format!("{other:?}").contains("redis://"));
}

#[tokio::test]
async fn damaged_records_are_corrupt_not_claimed() {
    let server = start(Persistence::None);
    let clock = ManualClock::new(START_MS);
    let store = store(&server, &clock).await;
    let far = START_MS + 1_000_000;
    for (key, setup) in [
        ("string", "SET tollgate:{string}:claim x".to_owned()),
        (
            "state",
            format!("HSET tollgate:{{state}}:claim s 7 u {far}"),
        ),
        (
            "deadline",
            "HSET tollgate:{deadline}:claim s 0 u soon".to_owned(),
        ),
        (
            "response",
            format!("HSET tollgate:{{response}}:claim s 1 u {far}"),
        ),
        (
            "header",
            format!("HSET tollgate:{{header}}:claim s 1 u {far} st 200 b x n 2 hn0 a hv0 b"),
        ),
        (
            "status",
            format!("HSET tollgate:{{status}}:claim s 1 u {far} st abc b x n 0"),
        ),
    ] {
        assert!(!server.command(&setup).unwrap().starts_with('-'), "{setup}");
        let r = store.claim(key, LEASE).await;
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{key}: {r:?}");
    }
    // A release never deletes what it does not recognise as an in-flight claim.
    store.release("string").await.unwrap();
    assert_eq!(
        server.command("EXISTS tollgate:{string}:claim").unwrap(),
        ":1\r\n"
    );
}
