//! The Redis backends on a real, private Redis Cluster, beyond the conformance suites (which run
//! there too): the keys really spread over every primary, so the suites exercised slot routing;
//! a primary's failover loses nothing that had reached its replica, never hands out a second
//! `Claimed`, and scripts run on the promoted replica, which never had them cached; with every
//! node down both backends fail closed, and they are used again once the nodes are back. A
//! cluster over TLS (client, bus and replication) is reached with its private CA.
//!
//! Operations that may meet a dead node run under [`within`] (2 s); waits are bounded polls. The
//! all-down case runs with the production timeouts, as it checks that failures are prompt; the
//! others with [`patient_options`], so a loaded machine cannot fail them.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{assert_unavailable, wait_until_usable, within, LEASE, START_MS};
use tollgate_store::conformance::awkward_response;
use tollgate_store::queue_conformance::event;
use tollgate_store::redis_server::{
    patient_options, ClusterOptions, RedisCluster, RedisServer, TestPki,
};
use tollgate_store::{
    Claim, Enqueued, EventQueue, ManualClock, RedisOptions, RedisQueue, RedisStore, RedisTarget,
    ReplayStore,
};

const TTL: Duration = Duration::from_secs(3600);

fn target(cluster: &RedisCluster) -> RedisTarget {
    cluster.target().unwrap_or_else(|e| panic!("{e}"))
}

async fn backends(cluster: &RedisCluster, options: RedisOptions) -> (RedisStore, RedisQueue) {
    let store = RedisStore::connect_to(&target(cluster), options.clone())
        .await
        .unwrap_or_else(|e| panic!("connect to the cluster: {e}"));
    let queue = RedisQueue::at(&target(cluster), options).unwrap();
    (store, queue)
}

fn keys(node: &RedisServer) -> u64 {
    let reply = node.command("DBSIZE").unwrap();
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("DBSIZE answered {reply:?}"))
}

/// Completes 30 claims and queues 30 events on 6 routes, checking that each lands on every
/// primary and that every event is found again, by id and by a lease over all routes.
async fn spreads_over_every_primary(cluster: &mut RedisCluster) {
    let clock = ManualClock::new(START_MS);
    let (store, queue) = backends(cluster, patient_options(clock)).await;
    for i in 0..30 {
        let key = format!("route:id:evt-{i}");
        assert_eq!(store.claim(&key, LEASE).await.unwrap(), Claim::Claimed);
        store
            .complete(&key, &awkward_response(), TTL)
            .await
            .unwrap();
        assert_eq!(
            store.claim(&key, LEASE).await.unwrap(),
            Claim::Done(awkward_response())
        );
    }
    let after_claims: Vec<u64> = cluster.primaries().iter().map(keys).collect();
    assert!(
        after_claims.iter().all(|&n| n > 0),
        "claims per primary: {after_claims:?}"
    );

    for i in 0..30 {
        let e = event(&format!("q-{i}"), &format!("route-{}", i % 6));
        assert_eq!(queue.enqueue(&e).await.unwrap(), Enqueued::New);
    }
    let grown: Vec<u64> = cluster
        .primaries()
        .iter()
        .zip(&after_claims)
        .map(|(p, before)| keys(p) - before)
        .collect();
    assert!(
        grown.iter().all(|&n| n > 0),
        "queue keys per primary: {grown:?}"
    );
    for i in 0..30 {
        assert!(
            queue.get(&format!("q-{i}")).await.unwrap().is_some(),
            "q-{i}"
        );
    }
    assert_eq!(queue.lease(None, 100, LEASE).await.unwrap().len(), 30);
    assert_eq!(queue.purge_delivered(Duration::ZERO).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_queued_events_spread_over_every_primary() {
    let mut cluster = RedisCluster::start().unwrap_or_else(|e| panic!("{e}"));
    spreads_over_every_primary(&mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_is_reached_on_every_primary_with_its_private_ca() {
    let pki = TestPki::generate().unwrap_or_else(|e| panic!("{e}"));
    let options = ClusterOptions {
        primaries: 3,
        replicas: 1,
        ..ClusterOptions::default()
    };
    let mut cluster = RedisCluster::start_tls(&options, &pki).unwrap_or_else(|e| panic!("{e}"));
    assert!(cluster.url().starts_with("rediss://"), "{}", cluster.url());
    spreads_over_every_primary(&mut cluster).await;
    // The replicas follow over TLS as well.
    cluster.wait_replicated().unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_keeps_replicated_answers_and_events() {
    let options = ClusterOptions {
        primaries: 3,
        replicas: 1,
        // Short, so the replica takes over within a few seconds.
        node_timeout: Duration::from_millis(1500),
    };
    let mut cluster = RedisCluster::start_with(&options).unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(START_MS);
    let (store, queue) = backends(&cluster, patient_options(clock)).await;
    let keys_done: Vec<String> = (0..30).map(|i| format!("route:id:done-{i}")).collect();
    for key in &keys_done {
        assert_eq!(store.claim(key, LEASE).await.unwrap(), Claim::Claimed);
        store.complete(key, &awkward_response(), TTL).await.unwrap();
    }
    for i in 0..10 {
        let e = event(&format!("ev-{i}"), &format!("r{}", i % 3));
        assert_eq!(queue.enqueue(&e).await.unwrap(), Enqueued::New);
    }
    cluster.wait_replicated().unwrap_or_else(|e| panic!("{e}"));
    assert!(keys(&cluster.primaries()[0]) > 0, "nothing on primary 0");

    cluster.primaries()[0].kill();
    // Until its replica takes over, a key of the dead primary's slots fails closed; a key
    // elsewhere is answered. Nothing completed is ever claimed again.
    for key in &keys_done {
        match within("claim", store.claim(key, LEASE)).await {
            Ok(Claim::Done(r)) => assert_eq!(r, awkward_response()),
            Err(e) => assert!(e.is_retryable(), "{key}: {e}"),
            Ok(other) => panic!("{key} during the failover: {other:?}"),
        }
    }
    cluster.wait_failover(0).unwrap_or_else(|e| panic!("{e}"));
    wait_until_usable("the store", "claim", || async {
        for key in &keys_done {
            match store.claim(key, LEASE).await? {
                Claim::Done(r) if r == awkward_response() => {}
                other => panic!("{key} after the failover: {other:?}"),
            }
        }
        Ok::<_, tollgate_store::StoreError>(())
    })
    .await;

    // New claims, some on the promoted replica: the scripts run there although it never
    // loaded them.
    for i in 0..30 {
        let key = format!("route:id:new-{i}");
        assert_eq!(
            within("claim", store.claim(&key, LEASE)).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            within("claim", store.claim(&key, LEASE)).await.unwrap(),
            Claim::InFlight
        );
    }
    // Every queued event survived and is delivered from the new primary.
    let leased = within("lease", queue.lease(None, 100, LEASE))
        .await
        .unwrap();
    let mut ids: Vec<String> = leased.iter().map(|l| l.event.id.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("ev-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
    for l in &leased {
        within("ack", queue.ack(l)).await.unwrap();
    }
    assert_eq!(
        within("enqueue", queue.enqueue(&event("ev-0", "r0")))
            .await
            .unwrap(),
        Enqueued::Duplicate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_down_fails_closed_then_the_cluster_is_used_again() {
    let mut cluster = RedisCluster::start().unwrap_or_else(|e| panic!("{e}"));
    let clock = ManualClock::new(START_MS);
    let (store, queue) = backends(&cluster, RedisOptions::new().with_clock(clock)).await;
    assert_eq!(store.claim("before", LEASE).await.unwrap(), Claim::Claimed);
    queue.ping().await.unwrap();

    for p in cluster.primaries() {
        p.kill();
    }
    for round in 0..2 {
        assert_unavailable(
            "claim",
            within("claim", store.claim(&format!("new-{round}"), LEASE)).await,
        );
        assert_unavailable("claim", within("claim", store.claim("before", LEASE)).await);
        assert_unavailable("store ping", within("ping", store.ping()).await);
        assert_unavailable(
            "enqueue",
            within("enqueue", queue.enqueue(&event("down", "r"))).await,
        );
        assert_unavailable("queue ping", within("ping", queue.ping()).await);
    }
    // A queue that never connected fails closed as well.
    let fresh = RedisQueue::at(&target(&cluster), RedisOptions::new()).unwrap();
    assert_unavailable("fresh queue", within("ping", fresh.ping()).await);

    // The nodes come back on their ports with their cluster configuration (not their data:
    // no persistence here).
    for p in cluster.primaries() {
        p.restart().unwrap_or_else(|e| panic!("{e}"));
    }
    wait_until_usable("the store", "claim", || store.claim("after", LEASE)).await;
    let after = event("after", "r");
    wait_until_usable("the queue", "enqueue", || queue.enqueue(&after)).await;
    assert_eq!(
        within("claim", store.claim("after", LEASE)).await.unwrap(),
        Claim::InFlight
    );
    assert!(within("get", queue.get("after")).await.unwrap().is_some());
    wait_until_usable("the fresh queue", "ping", || fresh.ping()).await;
}
