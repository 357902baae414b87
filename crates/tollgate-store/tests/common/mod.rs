//! Helpers shared by the Redis fault tests (`redis_faults.rs`, `queue_redis_faults.rs`,
//! `redis_tls.rs`, `redis_cluster.rs`): a private server, a cap on every operation, the
//! fail-closed check, a bounded wait for a restarted server to be used again, and the
//! kill-and-restart round the plain and the TLS store both go through. Each file uses some.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tollgate_store::redis_server::{Persistence, RedisServer};
use tollgate_store::{Claim, RedisStore, ReplayStore, StoreError};

pub const LEASE: Duration = Duration::from_secs(30);
pub const START_MS: u64 = 1_700_000_000_000;

/// The longest any store or queue operation may take, server dead or alive.
pub const HANG_CAP: Duration = Duration::from_secs(2);

/// Runs `fut`, failing the test if it takes longer than [`HANG_CAP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_CAP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung past {HANG_CAP:?}"))
}

/// A private redis-server with the given persistence.
pub fn start(persistence: Persistence) -> RedisServer {
    RedisServer::start_with(persistence).unwrap_or_else(|e| panic!("{e}"))
}

/// `r` must be a retryable [`StoreError::Unavailable`].
pub fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    match r {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.is_retryable()),
        other => panic!("{what} with Redis down answered {other:?}"),
    }
}

/// Polls (bounded: 100 tries, 50 ms apart, each under [`within`] as `probe`) until the operation
/// `op` makes succeeds; `who` ("the store", "the queue") names what failed to reconnect.
pub async fn wait_until_usable<T, E, F, Fut>(who: &str, probe: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    for _ in 0..100 {
        if within(probe, op()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{who} never reconnected to the restarted server");
}

/// Claims `k` on `store`, kills `server`, checks that a claim of `k2` fails closed, restarts the
/// server and waits until the same store uses it again, then claims `k2` there.
pub async fn kill_and_restart(server: &mut RedisServer, store: &RedisStore) {
    assert_eq!(store.claim("k", LEASE).await.unwrap(), Claim::Claimed);
    server.kill();
    assert_unavailable("claim", within("claim", store.claim("k2", LEASE)).await);
    server.restart().unwrap();
    wait_until_usable("the store", "ping", || store.ping()).await;
    // The scripts are gone from the new server's cache: EVALSHA must fall back to EVAL.
    assert_eq!(
        within("claim", store.claim("k2", LEASE)).await.unwrap(),
        Claim::Claimed
    );
}
