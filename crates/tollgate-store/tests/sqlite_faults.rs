//! The SQLite backend under faults: every failure must reach the caller as an error, never as a
//! panic or a false `Claimed`, and the store must recover when the fault goes away. Also restart
//! survival and the purge. These run as root in CI, so read-only-ness comes from SQLite's
//! `mode=ro` URI and unwritable directories from sysfs rather than from file permissions.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tollgate_store::conformance::awkward_response;
use tollgate_store::{
    Claim, Durability, ManualClock, ReplayStore, SqliteOptions, SqliteStore, StoreError,
};

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);

fn open(path: &Path, clock: &Arc<ManualClock>) -> SqliteStore {
    SqliteStore::open_with(
        path,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap()
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    for durability in [Durability::Always, Durability::Batch] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let clock = ManualClock::new(1_700_000_000_000);
        let options = SqliteOptions::new(durability).with_clock(clock.clone());

        let store = SqliteStore::open_with(&path, options.clone()).unwrap();
        assert_eq!(
            store.claim("in-flight", LEASE).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(store.claim("done", LEASE).await.unwrap(), Claim::Claimed);
        store
            .complete("done", &awkward_response(), TTL)
            .await
            .unwrap();
        store.close().await;

        let store = SqliteStore::open_with(&path, options.clone()).unwrap();
        assert_eq!(
            store.claim("in-flight", LEASE).await.unwrap(),
            Claim::InFlight
        );
        assert_eq!(
            store.claim("done", LEASE).await.unwrap(),
            Claim::Done(awkward_response())
        );
        // Deadlines are absolute, so they keep running across the restart.
        clock.advance(LEASE);
        assert_eq!(
            store.claim("in-flight", LEASE).await.unwrap(),
            Claim::Claimed
        );
        // Dropping without `close` must not lose what callers were told was stored.
        drop(store);
        let store = SqliteStore::open_with(&path, options).unwrap();
        assert_eq!(
            store.claim("in-flight", LEASE).await.unwrap(),
            Claim::InFlight
        );
    }
}

#[tokio::test]
async fn read_only_database_never_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let writer = open(&path, &clock);
    writer.claim("existing", LEASE).await.unwrap();

    let uri = format!("file:{}?mode=ro", path.display());
    // Opening succeeds (the schema is current, so nothing needs writing); the writes must fail.
    let ro = SqliteStore::open_with(
        &uri,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap();
    let err = ro.claim("new", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    // A claim that needs no write can still answer truthfully.
    assert_eq!(ro.claim("existing", LEASE).await.unwrap(), Claim::InFlight);
    assert!(ro.complete("new", &awkward_response(), TTL).await.is_err());
    assert!(ro.release("existing").await.is_err());
    // The failed claim left nothing behind: the writable store still sees "new" as new.
    assert_eq!(writer.claim("new", LEASE).await.unwrap(), Claim::Claimed);
}

#[tokio::test]
async fn full_database_fails_claims_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let store = open(&path, &clock);
    store.claim("before", LEASE).await.unwrap();

    // Emulates a full disk: SQLite answers SQLITE_FULL once the file would grow past the cap.
    let cap = store.set_max_page_count(1).await.unwrap();
    let padding = "p".repeat(1000);
    let mut failed_key = None;
    for i in 0..10_000 {
        let key = format!("{padding}-{i}");
        match store.claim(&key, LEASE).await {
            Ok(Claim::Claimed) => {}
            Ok(other) => panic!("fresh key answered {other:?}"),
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
                assert!(e.is_retryable());
                failed_key = Some(key);
                break;
            }
        }
    }
    let failed_key = failed_key.expect("a capped database must fill up");
    // Still full: the same claim keeps failing rather than half-succeeding.
    assert!(store.claim(&failed_key, LEASE).await.is_err());
    // Reads of what is stored still work through the failure (they need no new page).
    assert_eq!(store.claim("before", LEASE).await.unwrap(), Claim::InFlight);

    assert!(store.set_max_page_count(cap + 10_000).await.unwrap() > cap);
    // The failed claim was never stored, so it is claimable now, exactly once.
    assert_eq!(
        store.claim(&failed_key, LEASE).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.claim(&failed_key, LEASE).await.unwrap(),
        Claim::InFlight
    );
    store.ping().await.unwrap();
}

#[test]
fn missing_directory_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        SqliteStore::open(dir.path().join("no/such/dir/state.db"), Durability::Always).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn unwritable_directory_fails_at_open() {
    // sysfs refuses new files even to root, unlike a chmod-ed directory.
    let err = SqliteStore::open("/sys/tollgate-state.db", Durability::Always).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

#[test]
fn directory_as_database_fails_at_open() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SqliteStore::open(dir.path(), Durability::Always).is_err());
}

#[test]
fn garbage_file_is_corrupt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0xa5; 8192]).unwrap();
    let err = SqliteStore::open(&path, Durability::Always).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[test]
fn newer_schema_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, Durability::Always).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_row_is_an_error_not_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let store = open(&path, &clock);
    store.claim("k", LEASE).await.unwrap();
    store.complete("k", &awkward_response(), TTL).await.unwrap();

    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute(
            "UPDATE claims SET headers = x'ffffffff00' WHERE key = 'k'",
            [],
        )
        .unwrap();
    let err = store.claim("k", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!err.is_retryable());

    other
        .execute("UPDATE claims SET state = 7 WHERE key = 'k'", [])
        .unwrap();
    assert!(matches!(
        store.claim("k", LEASE).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_still_have_one_winner() {
    // Two gateway processes sharing a file: SQLite's write lock, not our thread, decides.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let stores = [Arc::new(open(&path, &clock)), Arc::new(open(&path, &clock))];
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
                    store.claim(&key, LEASE).await
                })
            })
            .collect();
        let mut claimed = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                Claim::Claimed => claimed += 1,
                Claim::InFlight => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(claimed, 1, "round {round}");
    }
}

#[tokio::test]
async fn purge_deletes_only_expired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = open(&dir.path().join("state.db"), &clock);
    store.claim("a", Duration::from_secs(1)).await.unwrap();
    store.claim("b", Duration::from_secs(1)).await.unwrap();
    store.claim("c", Duration::from_secs(1)).await.unwrap();
    store.complete("c", &awkward_response(), TTL).await.unwrap();
    store.claim("d", Duration::from_secs(10)).await.unwrap();
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    assert_eq!(store.len().await.unwrap(), 4);

    clock.advance(Duration::from_secs(1));
    assert_eq!(store.purge_expired().await.unwrap(), 2);
    assert_eq!(store.len().await.unwrap(), 2);
    assert_eq!(
        store.claim("c", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
    assert_eq!(store.claim("d", LEASE).await.unwrap(), Claim::InFlight);
    assert_eq!(store.claim("a", LEASE).await.unwrap(), Claim::Claimed);
}

#[tokio::test]
async fn purge_handles_more_rows_than_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = Arc::new(open(&dir.path().join("state.db"), &clock));
    // Concurrent claims so group commit keeps this quick even with fsync per batch.
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in (w..5_000).step_by(8) {
                    store
                        .claim(&format!("k{i}"), Duration::from_secs(1))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.purge_expired().await.unwrap(), 5_000);
    assert_eq!(store.len().await.unwrap(), 0);
}

#[tokio::test]
async fn writer_thread_purges_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let mut options = SqliteOptions::new(Durability::Batch).with_clock(clock.clone());
    options.purge_interval = Duration::from_millis(1);
    let store = SqliteStore::open_with(dir.path().join("state.db"), options).unwrap();
    store.claim("old", Duration::from_secs(1)).await.unwrap();
    store.claim("live", Duration::from_secs(60)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    // The purge runs on the writer's own timer; wait for it by polling, bounded, not by timing.
    let mut len = store.len().await.unwrap();
    for _ in 0..1_000 {
        if len == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        len = store.len().await.unwrap();
    }
    assert_eq!(len, 1, "the periodic purge never removed the expired row");
    assert_eq!(store.claim("live", LEASE).await.unwrap(), Claim::InFlight);
}
