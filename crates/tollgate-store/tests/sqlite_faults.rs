//! The SQLite backend under faults: every failure must reach the caller as an error, never as a
//! panic or a false `Claimed`, and the store must recover when the fault goes away. Also restart
//! survival, one owner per file, schema migration and the purge. These run as root in CI, so read-only-ness comes from SQLite's
//! `mode=ro` URI and unwritable directories from sysfs rather than from file permissions.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
async fn completed_answers_survive_close_and_reopen_in_flight_claims_do_not() {
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
        // After a restart nothing is in flight: the provider's retry must be forwarded again.
        assert_eq!(
            store.claim("in-flight", LEASE).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim("done", LEASE).await.unwrap(),
            Claim::Done(awkward_response())
        );
        store
            .complete("later", &awkward_response(), TTL)
            .await
            .unwrap();
        // Dropping without `close` must not lose what callers were told was stored.
        drop(store);
        let store = SqliteStore::open_with(&path, options.clone()).unwrap();
        assert_eq!(
            store.claim("later", LEASE).await.unwrap(),
            Claim::Done(awkward_response())
        );
        // Deadlines are absolute, so they keep running across the restart.
        store.close().await;
        clock.advance(TTL);
        let store = SqliteStore::open_with(&path, options).unwrap();
        assert_eq!(store.claim("done", LEASE).await.unwrap(), Claim::Claimed);
        assert_eq!(store.len().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn read_only_database_never_claims() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let writer = open(&path, &clock);
    writer.claim("existing", LEASE).await.unwrap();
    writer
        .complete("existing", &awkward_response(), TTL)
        .await
        .unwrap();
    writer.close().await;

    let uri = format!("file:{}?mode=ro", path.display());
    // Opening succeeds (the schema is current, so nothing needs writing), so `/readyz` can say
    // why it is not ready; every claim that would need a completion written fails closed.
    let ro = SqliteStore::open_with(
        &uri,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap();
    let err = ro.claim("new", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    assert!(ro.ping().await.is_err());
    // A stored answer needs no write and is still replayed truthfully.
    assert_eq!(
        ro.claim("existing", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
    assert!(ro.complete("new", &awkward_response(), TTL).await.is_err());
    ro.close().await;
    // The failed claim left nothing behind: a writable store sees "new" as new.
    let writer = open(&path, &clock);
    assert_eq!(writer.claim("new", LEASE).await.unwrap(), Claim::Claimed);
    writer.ping().await.unwrap();
}

#[tokio::test]
async fn full_database_fails_new_claims_then_recovers_and_keeps_the_refused_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let store = open(&path, &clock);
    store.claim("before", LEASE).await.unwrap();
    store
        .complete("before", &awkward_response(), TTL)
        .await
        .unwrap();

    // Emulates a full disk: SQLite answers SQLITE_FULL once the file would grow past the cap.
    let cap = store.set_max_page_count(1).await.unwrap();
    let mut failed = None;
    for i in 0..10_000 {
        let key = format!("evt-{i}");
        // Distinct answers, so every completion needs room on disk.
        let mut answer = awkward_response();
        answer.body = format!("{i}:{}", "b".repeat(1000)).into_bytes();
        assert_eq!(store.claim(&key, LEASE).await.unwrap(), Claim::Claimed);
        if let Err(e) = store.complete(&key, &answer, TTL).await {
            assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
            assert!(e.is_retryable());
            failed = Some((key, answer));
            break;
        }
    }
    let (failed_key, failed_answer) = failed.expect("a capped database must fill up");
    // Still full: new claims fail closed, and so does the health check.
    let err = store.claim("fresh", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(store.ping().await.is_err());
    // Keys already answered are still replayed, the refused one included (this process knows it).
    assert_eq!(
        store.claim("before", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
    assert_eq!(
        store.claim(&failed_key, LEASE).await.unwrap(),
        Claim::Done(failed_answer.clone())
    );

    assert!(store.set_max_page_count(cap + 10_000).await.unwrap() > cap);
    // The first claim after the disk recovers writes the refused answer, then proceeds.
    assert_eq!(store.claim("fresh", LEASE).await.unwrap(), Claim::Claimed);
    assert_eq!(store.claim("fresh", LEASE).await.unwrap(), Claim::InFlight);
    store.ping().await.unwrap();
    store.close().await;
    let store = open(&path, &clock);
    assert_eq!(
        store.claim(&failed_key, LEASE).await.unwrap(),
        Claim::Done(failed_answer)
    );
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
async fn corrupt_row_is_refused_at_open_not_replayed_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let store = open(&path, &clock);
    store.claim("k", LEASE).await.unwrap();
    store.complete("k", &awkward_response(), TTL).await.unwrap();
    store.close().await;

    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute("UPDATE replay_answers SET headers = x'ffffffff00'", [])
        .unwrap();
    let err = SqliteStore::open_with(
        &path,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!err.is_retryable());

    other.execute("DELETE FROM replay_answers", []).unwrap();
    let err = SqliteStore::open_with(
        &path,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[tokio::test]
async fn a_second_store_on_one_file_is_refused_with_the_owner_named() {
    // The index is per process, so two owners of one file would each claim the same event.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let first = open(&path, &clock);
    let mut options = SqliteOptions::new(Durability::Always).with_clock(clock.clone());
    options.busy_timeout = Duration::from_millis(100);
    let err = SqliteStore::open_with(&path, options.clone()).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let message = format!("{}", std::error::Error::source(&err).unwrap());
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(message.contains("backend = \"redis\""), "{message}");
    // The owner is unaffected, and once it closes the file is free.
    assert_eq!(first.claim("k", LEASE).await.unwrap(), Claim::Claimed);
    first.close().await;
    SqliteStore::open_with(&path, options).unwrap();
}

#[tokio::test]
async fn schema_1_file_is_migrated_keeping_live_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let now: i64 = 1_700_000_000_000;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE claims (key TEXT PRIMARY KEY NOT NULL, state INTEGER NOT NULL,
             until_ms INTEGER NOT NULL, status INTEGER, headers BLOB, body BLOB) WITHOUT ROWID;
         CREATE INDEX claims_until ON claims (until_ms);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    // Headers in the (unchanged) encoding: one header, content-type: text/xml.
    let headers: Vec<u8> = [
        &1u32.to_be_bytes()[..],
        &12u32.to_be_bytes(),
        b"content-type",
        &8u32.to_be_bytes(),
        b"text/xml",
    ]
    .concat();
    let mut insert = conn
        .prepare("INSERT INTO claims VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .unwrap();
    insert
        .execute(rusqlite::params![
            "live",
            1,
            now + 60_000,
            200,
            headers,
            b"<Response/>".to_vec()
        ])
        .unwrap();
    insert
        .execute(rusqlite::params![
            "expired",
            1,
            now,
            200,
            headers,
            b"old".to_vec()
        ])
        .unwrap();
    insert
        .execute(rusqlite::params![
            "in-flight",
            0,
            now + 60_000,
            None::<i64>,
            None::<Vec<u8>>,
            None::<Vec<u8>>
        ])
        .unwrap();
    insert
        .execute(rusqlite::params![
            "bad",
            1,
            now + 60_000,
            200,
            vec![0xffu8; 3],
            b"x".to_vec()
        ])
        .unwrap();
    drop(insert);
    drop(conn);

    let clock = ManualClock::new(now as u64);
    let store = open(&path, &clock);
    assert_eq!(
        store.claim("live", LEASE).await.unwrap(),
        Claim::Done(tollgate_store::StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), b"text/xml".to_vec())],
            body: b"<Response/>".to_vec(),
        })
    );
    for key in ["expired", "in-flight", "bad"] {
        assert_eq!(
            store.claim(key, LEASE).await.unwrap(),
            Claim::Claimed,
            "{key}"
        );
    }
    assert_eq!(store.persisted_len().await.unwrap(), 1);
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, tollgate_store::sqlite::SCHEMA_VERSION);
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'claims'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
}

#[tokio::test]
async fn identical_answers_are_stored_once_on_disk_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let store = open(&path, &clock);
    for i in 0..200 {
        let key = format!("evt-{i}");
        store.claim(&key, LEASE).await.unwrap();
        store
            .complete(&key, &awkward_response(), TTL)
            .await
            .unwrap();
    }
    assert_eq!(store.distinct_answers(), 1);
    assert_eq!(store.persisted_len().await.unwrap(), 200);
    store.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let answers: i64 = conn
        .query_row("SELECT count(*) FROM replay_answers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(answers, 1);
    drop(conn);
    let store = open(&path, &clock);
    assert_eq!(store.distinct_answers(), 1);
    assert_eq!(
        store.claim("evt-199", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
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
    // Concurrent completions so group commit keeps this quick even with fsync per batch.
    let tasks: Vec<_> = (0..50)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in (w..5_000).step_by(50) {
                    let key = format!("k{i}");
                    store.claim(&key, LEASE).await.unwrap();
                    store
                        .complete(&key, &awkward_response(), Duration::from_secs(1))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.persisted_len().await.unwrap(), 5_000);
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.purge_expired().await.unwrap(), 5_000);
    assert_eq!(store.len().await.unwrap(), 0);
    assert_eq!(store.persisted_len().await.unwrap(), 0);
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

/// `fsync = "batch"`: the gateway does not wait for the completion's commit. The answer must be
/// replayed at once, reach the disk anyway, and a write the disk refuses afterwards must still
/// fail new claims closed.
#[tokio::test]
async fn batch_complete_soon_answers_at_once_persists_and_still_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let options = SqliteOptions::new(Durability::Batch).with_clock(clock.clone());
    let store = SqliteStore::open_with(&path, options.clone()).unwrap();

    assert_eq!(store.claim("soon", LEASE).await.unwrap(), Claim::Claimed);
    store
        .complete_soon("soon", &awkward_response(), TTL)
        .await
        .unwrap();
    // No await on the write in between: the index already has the answer.
    assert_eq!(
        store.claim("soon", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );

    // A refused background write: the caller heard Ok, but new claims must now be refused.
    let cap = store.set_max_page_count(1).await.unwrap();
    let mut refused = false;
    for i in 0..10_000 {
        let key = format!("evt-{i}");
        let mut answer = awkward_response();
        answer.body = format!("{i}:{}", "b".repeat(1000)).into_bytes();
        match store.claim(&key, LEASE).await {
            Ok(Claim::Claimed) => store.complete_soon(&key, &answer, TTL).await.unwrap(),
            Err(e) => {
                assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
                refused = true;
                break;
            }
            Ok(other) => panic!("fresh key {key} answered {other:?}"),
        }
        // Let the background reply arrive, as traffic would.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(refused, "a full disk must make claims fail closed");
    assert!(store.ping().await.is_err());
    assert!(store.set_max_page_count(cap + 10_000).await.unwrap() > cap);
    assert_eq!(store.claim("after", LEASE).await.unwrap(), Claim::Claimed);
    store.close().await;

    let store = SqliteStore::open_with(&path, options).unwrap();
    assert_eq!(
        store.claim("soon", LEASE).await.unwrap(),
        Claim::Done(awkward_response())
    );
}
