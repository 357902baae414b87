//! The SQLite queue under faults. What matters is the gateway's promise: it acknowledges a
//! callback only after `enqueue` returned `Ok`, so `enqueue` must fail (and the gateway answer
//! 503) whenever the event could not be kept, and every event it accepted must survive a restart
//! and a `kill -9`. These run as root in CI, so read-only-ness comes from SQLite's `mode=ro` URI
//! and a full disk from `PRAGMA max_page_count`, not from file permissions.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tollgate_store::queue_conformance::{awkward_event, event};
use tollgate_store::{
    Durability, Enqueued, EventQueue, EventStatus, ListFilter, ManualClock, QueueOptions,
    ReplayStore, Settled, SqliteOptions, SqliteQueue, SqliteStore, StoreError,
};

const LEASE: Duration = Duration::from_secs(30);
const START_MS: u64 = 1_700_000_000_000;

fn open(path: &Path, durability: Durability, clock: &Arc<ManualClock>) -> SqliteQueue {
    SqliteQueue::open_with(
        path,
        QueueOptions::new(durability).with_clock(clock.clone()),
    )
    .unwrap()
}

#[tokio::test]
async fn read_only_database_refuses_enqueue_but_can_be_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let clock = ManualClock::new(START_MS);
    let writer = open(&path, Durability::Always, &clock);
    writer.enqueue(&event("existing", "voice")).await.unwrap();

    let uri = format!("file:{}?mode=ro", path.display());
    let ro = open(Path::new(&uri), Durability::Always, &clock);
    let err = ro.enqueue(&event("new", "voice")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    // Leasing writes too, so it fails rather than handing out an event it cannot mark.
    assert!(ro.lease(None, 10, LEASE).await.is_err());
    // `tollgate queue ls|show` against a read-only file still works.
    assert_eq!(
        ro.get("existing").await.unwrap().map(|e| e.status),
        Some(EventStatus::Pending)
    );
    assert_eq!(ro.list(&ListFilter::default(), 10).await.unwrap().len(), 1);
    assert_eq!(ro.stats().await.unwrap().route("voice").unwrap().pending, 1);
    // Not ready: `/readyz` must say so while enqueues fail.
    assert!(ro.ping().await.is_err());
    writer.ping().await.unwrap();
    // The refused event left nothing behind.
    assert!(writer.get("new").await.unwrap().is_none());
    assert_eq!(
        writer.enqueue(&event("new", "voice")).await.unwrap(),
        Enqueued::New
    );
}

#[tokio::test]
async fn full_database_refuses_enqueue_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let clock = ManualClock::new(START_MS);
    let queue = open(&path, Durability::Always, &clock);
    queue.enqueue(&event("before", "voice")).await.unwrap();

    // Emulates a full disk: SQLite answers SQLITE_FULL once the file would grow past the cap.
    let cap = queue.set_max_page_count(1).await.unwrap();
    let mut refused = None;
    for i in 0..10_000 {
        let e = tollgate_store::QueuedEvent {
            body: vec![b'x'; 2000],
            ..event(&format!("fill-{i}"), "voice")
        };
        match queue.enqueue(&e).await {
            Ok(Enqueued::New) => {}
            Ok(Enqueued::Duplicate) => panic!("fresh id answered Duplicate"),
            Err(err) => {
                assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
                assert!(err.is_retryable());
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a capped database must fill up");
    assert!(queue.enqueue(&refused).await.is_err(), "still full");
    // Reads go on through the failure, and the refused event is not half-stored.
    assert!(queue.get(&refused.id).await.unwrap().is_none());
    assert!(queue.get("before").await.unwrap().is_some());

    assert!(queue.set_max_page_count(cap + 10_000).await.unwrap() > cap);
    assert_eq!(queue.enqueue(&refused).await.unwrap(), Enqueued::New);
    assert_eq!(queue.enqueue(&refused).await.unwrap(), Enqueued::Duplicate);
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    for durability in [Durability::Always, Durability::Batch] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let clock = ManualClock::new(START_MS);

        let queue = open(&path, durability, &clock);
        for id in ["leased", "delivered", "dead", "pending"] {
            queue.enqueue(&event(id, "voice")).await.unwrap();
        }
        queue.enqueue(&awkward_event("awkward")).await.unwrap();
        let l = queue.lease(Some("voice"), 3, LEASE).await.unwrap();
        assert_eq!(queue.ack(&l[1]).await.unwrap(), Settled::Applied);
        assert_eq!(
            queue.dead_letter(&l[2], "410").await.unwrap(),
            Settled::Applied
        );
        let before_restart = l[0].clone();
        queue.close().await;

        let queue = open(&path, durability, &clock);
        let status = |id: &'static str| {
            let q = &queue;
            async move { q.get(id).await.unwrap().map(|e| e.status) }
        };
        assert_eq!(status("leased").await, Some(EventStatus::Leased));
        assert_eq!(status("delivered").await, Some(EventStatus::Delivered));
        assert_eq!(status("dead").await, Some(EventStatus::Dead));
        assert_eq!(
            queue.get("awkward").await.unwrap().unwrap().event,
            awkward_event("awkward")
        );
        // The dead worker's lease still holds until it ends (another process may own it)...
        let now = queue.lease(None, 10, LEASE * 10).await.unwrap();
        let ids: HashSet<_> = now.iter().map(|l| l.event.id.as_str()).collect();
        assert_eq!(ids, HashSet::from(["pending", "awkward"]));
        // ...then the event is delivered again, under a token the old one cannot settle.
        clock.advance(LEASE);
        let again = queue.lease(None, 10, LEASE).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event.id, "leased");
        assert_eq!(again[0].attempts, 2);
        assert_ne!(again[0].token, before_restart.token);
        assert_eq!(queue.ack(&before_restart).await.unwrap(), Settled::Stale);

        // Dropping without `close` must not lose what callers were told was stored.
        queue.enqueue(&event("last", "voice")).await.unwrap();
        drop(queue);
        let queue = open(&path, durability, &clock);
        assert_eq!(status_of(&queue, "last").await, Some(EventStatus::Pending));
    }
}

async fn status_of(queue: &SqliteQueue, id: &str) -> Option<EventStatus> {
    queue.get(id).await.unwrap().map(|e| e.status)
}

/// The child half of `acknowledged_events_survive_kill_9`: enqueues until killed, printing each
/// id only once `enqueue` has returned `Ok`, the moment the gateway would acknowledge it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_events_survive_kill_9"]
async fn crash_child_enqueuer() {
    let path = std::env::var("TOLLGATE_QUEUE_CRASH_PATH").unwrap();
    let durability = match std::env::var("TOLLGATE_QUEUE_CRASH_FSYNC")
        .unwrap()
        .as_str()
    {
        "always" => Durability::Always,
        _ => Durability::Batch,
    };
    let queue = Arc::new(SqliteQueue::open(&path, durability).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                for i in 0..100_000 {
                    let id = format!("t{t}-{i}");
                    let e = tollgate_store::QueuedEvent {
                        order_key: Some(format!("key-{}", i % 7)),
                        ..event(&id, "voice")
                    };
                    assert_eq!(queue.enqueue(&e).await.unwrap(), Enqueued::New);
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "acked {id}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn acknowledged_events_survive_kill_9() {
    use std::os::unix::process::ExitStatusExt;

    for fsync in ["always", "batch"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_enqueuer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TOLLGATE_QUEUE_CRASH_PATH", &path)
            .env("TOLLGATE_QUEUE_CRASH_FSYNC", fsync)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = HashSet::new();
        for line in lines.by_ref() {
            if let Some(id) = line.unwrap().strip_prefix("acked ") {
                acked.insert(id.to_owned());
                if acked.len() == 3_000 {
                    break;
                }
            }
        }
        assert_eq!(acked.len(), 3_000, "the child stopped early ({fsync})");
        child.kill().unwrap(); // SIGKILL: no destructor, no checkpoint, no flush.
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{fsync}: child was not killed");
        // Ids printed before the kill but not yet read were acknowledged too.
        for line in lines {
            if let Some(id) = line.unwrap().strip_prefix("acked ") {
                acked.insert(id.to_owned());
            }
        }

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let queue = SqliteQueue::open(&path, Durability::Always).unwrap();
            let stored: HashSet<String> = queue
                .list(&ListFilter::default(), usize::MAX)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event.id)
                .collect();
            let lost: Vec<_> = acked.difference(&stored).take(5).collect();
            assert!(
                lost.is_empty(),
                "{fsync}: {} of {} acknowledged events lost, e.g. {lost:?}",
                acked.difference(&stored).count(),
                acked.len()
            );
            // Events committed but not yet printed when the kill came are stored too; never fewer.
            assert!(stored.len() >= acked.len());
        });
    }
}

#[tokio::test]
async fn queue_and_replay_store_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let clock = ManualClock::new(START_MS);
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap();
    let queue = open(&path, Durability::Always, &clock);
    store.claim("evt", LEASE).await.unwrap();
    // Only completed claims are persisted (an in-flight one dies with its process).
    store
        .complete(
            "evt",
            &tollgate_store::conformance::awkward_response(),
            LEASE,
        )
        .await
        .unwrap();
    queue.enqueue(&event("evt", "voice")).await.unwrap();
    store.close().await;
    queue.close().await;
    // Reopened in the other order, both find their data and their schema versions intact.
    let queue = open(&path, Durability::Always, &clock);
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions::new(Durability::Always).with_clock(clock.clone()),
    )
    .unwrap();
    assert!(queue.get("evt").await.unwrap().is_some());
    assert_eq!(store.len().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_file_never_lease_an_event_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let clock = ManualClock::new(START_MS);
    let queues = [
        Arc::new(open(&path, Durability::Batch, &clock)),
        Arc::new(open(&path, Durability::Batch, &clock)),
    ];
    for i in 0..500 {
        queues[i % 2]
            .enqueue(&event(&format!("e{i}"), "voice"))
            .await
            .unwrap();
    }
    let barrier = Arc::new(Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let queue = Arc::clone(&queues[w % 2]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                loop {
                    let l = queue.lease(None, 7, LEASE).await.unwrap();
                    if l.is_empty() {
                        return got;
                    }
                    got.extend(l.into_iter().map(|l| l.event.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 500, "an event was leased twice or not at all");
    assert_eq!(unique.len(), 500);
}

#[test]
fn newer_queue_schema_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    drop(SqliteQueue::open(&path, Durability::Always).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE queue_meta SET value = 99 WHERE name = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = SqliteQueue::open(&path, Durability::Always).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_row_is_an_error_not_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let clock = ManualClock::new(START_MS);
    let queue = open(&path, Durability::Always, &clock);
    queue.enqueue(&event("e", "voice")).await.unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute("UPDATE queue_requests SET headers = x'ffffffff00'", [])
        .unwrap();
    let err = queue.lease(None, 10, LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!err.is_retryable());
    // The failed lease did not mark the event leased.
    other
        .execute("UPDATE queue_requests SET headers = x'00000000'", [])
        .unwrap();
    assert_eq!(queue.lease(None, 10, LEASE).await.unwrap().len(), 1);

    other
        .execute("UPDATE queue_events SET status = 9", [])
        .unwrap();
    assert!(matches!(queue.get("e").await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn delivered_events_are_kept_as_long_as_retain_delivered_asks() {
    // In queue mode the queue is what recognises a provider's late retry, so its own purge must
    // keep delivered events at least as long as the routes' dedupe TTL.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let mut options = QueueOptions::new(Durability::Batch).with_clock(clock.clone());
    options.keep_delivered = Duration::from_secs(1);
    options.purge_interval = Duration::from_millis(20);
    let q = SqliteQueue::open_with(dir.path().join("queue.db"), options).unwrap();
    q.retain_delivered(Duration::from_secs(3600));
    // Lowering it is ignored: a reload must not make a retry look new.
    q.retain_delivered(Duration::from_secs(2));
    q.enqueue(&event("kept", "voice")).await.unwrap();
    let lease = q.lease(None, 1, LEASE).await.unwrap().pop().unwrap();
    assert_eq!(q.ack(&lease).await.unwrap(), Settled::Applied);
    clock.advance(Duration::from_secs(3599));
    // Several purge intervals pass: past the opened-with second, inside the hour.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        q.get("kept").await.unwrap().map(|e| e.status),
        Some(EventStatus::Delivered)
    );
    assert_eq!(
        q.enqueue(&event("kept", "voice")).await.unwrap(),
        Enqueued::Duplicate
    );
    clock.advance(Duration::from_secs(2));
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while q.get("kept").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < end, "never purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The queue schema version 1 (tollgate before the request moved to its own table), exactly as
/// it created it.
const QUEUE_SCHEMA_V1: &str = "
    CREATE TABLE queue_meta (
        name  TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO queue_meta (name, value) VALUES ('schema_version', 1), ('next_lease_token', 0);
    CREATE TABLE queue_events (
        seq                INTEGER PRIMARY KEY AUTOINCREMENT,
        id                 TEXT NOT NULL UNIQUE,
        route              TEXT NOT NULL,
        method             TEXT NOT NULL,
        url                TEXT NOT NULL,
        headers            BLOB NOT NULL,
        body               BLOB NOT NULL,
        received_at_ms     INTEGER NOT NULL,
        order_key          TEXT,
        status             INTEGER NOT NULL,
        attempts           INTEGER NOT NULL,
        next_attempt_at_ms INTEGER NOT NULL,
        lease_until_ms     INTEGER,
        lease_token        INTEGER,
        due_ms             INTEGER,
        last_error         TEXT,
        finished_at_ms     INTEGER
    );
    CREATE INDEX queue_events_due ON queue_events (due_ms, seq) WHERE status IN (0, 1);
    CREATE INDEX queue_events_line ON queue_events (route, order_key, seq)
        WHERE status IN (0, 1) AND order_key IS NOT NULL;
    CREATE INDEX queue_events_stats ON queue_events (status, route, received_at_ms);
    CREATE INDEX queue_events_finished ON queue_events (finished_at_ms) WHERE status = 2;";

/// The one value `sql` selects.
fn scalar<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str) -> T {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The names `sql` selects, in order.
fn names(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn schema_version(conn: &rusqlite::Connection) -> i64 {
    scalar(
        conn,
        "SELECT value FROM queue_meta WHERE name = 'schema_version'",
    )
}

/// The header encoding of versions 1 and 2: a u32 count, then per header a u32-prefixed name
/// and value.
fn old_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        out.extend((k.len() as u32).to_be_bytes());
        out.extend(k.as_bytes());
        out.extend((v.len() as u32).to_be_bytes());
        out.extend(v);
    }
    out
}

/// A row as version 1 wrote it: (id, status, attempts, due_ms, lease_token, last_error,
/// finished_at_ms, order_key), with the request of `event(id, "voice")`.
#[allow(clippy::type_complexity)]
fn insert_v1(
    conn: &rusqlite::Connection,
    row: (
        &str,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<&str>,
        Option<i64>,
        Option<&str>,
    ),
) {
    let (id, status, attempts, due, token, error, finished, key) = row;
    let e = tollgate_store::QueuedEvent {
        order_key: key.map(str::to_owned),
        ..event(id, "voice")
    };
    let headers = old_headers(&e.headers);
    let lease_until = if status == 1 { due } else { None };
    conn.execute(
        "INSERT INTO queue_events (id, route, method, url, headers, body, received_at_ms,
             order_key, status, attempts, next_attempt_at_ms, lease_until_ms, lease_token, due_ms,
             last_error, finished_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        rusqlite::params![
            e.id,
            e.route,
            e.method,
            e.url,
            headers,
            e.body,
            e.received_at_ms as i64,
            e.order_key,
            status,
            attempts,
            START_MS as i64,
            lease_until,
            token,
            due,
            error,
            finished
        ],
    )
    .unwrap();
}

#[tokio::test]
async fn version_1_file_is_upgraded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let now = START_MS as i64;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(QUEUE_SCHEMA_V1).unwrap();
        for row in [
            ("pending", 0, 0, Some(now), None, None, None, None),
            ("retrying", 0, 2, Some(now), None, Some("503"), None, None),
            (
                "leased",
                1,
                1,
                Some(now + 30_000),
                Some(7),
                None,
                None,
                None,
            ),
            ("delivered", 2, 1, None, None, None, Some(now), None),
            ("dead", 3, 3, None, None, Some("410"), Some(now), None),
            (
                "line-head",
                1,
                1,
                Some(now + 30_000),
                Some(8),
                None,
                None,
                Some("CA"),
            ),
            ("line-next", 0, 0, Some(now), None, None, None, Some("CA")),
            ("removed-last", 0, 0, Some(now), None, None, None, None),
        ] {
            insert_v1(&conn, row);
        }
        // The newest event was removed: its sequence number must not be handed out again.
        conn.execute("DELETE FROM queue_events WHERE id = 'removed-last'", [])
            .unwrap();
        conn.execute(
            "UPDATE queue_meta SET value = 8 WHERE name = 'next_lease_token'",
            [],
        )
        .unwrap();
    }

    let clock = ManualClock::new(START_MS);
    let queue = open(&path, Durability::Batch, &clock);
    let entry = |id: &'static str| {
        let q = &queue;
        async move { q.get(id).await.unwrap().unwrap() }
    };
    for (id, status, attempts, error) in [
        ("pending", EventStatus::Pending, 0, None),
        ("retrying", EventStatus::Pending, 2, Some("503")),
        ("leased", EventStatus::Leased, 1, None),
        ("dead", EventStatus::Dead, 3, Some("410")),
        ("line-head", EventStatus::Leased, 1, None),
        ("line-next", EventStatus::Pending, 0, None),
    ] {
        let e = entry(id).await;
        assert_eq!(
            (e.status, e.attempts, e.last_error.as_deref()),
            (status, attempts, error),
            "{id}"
        );
        // Every undelivered event keeps its request, byte for byte.
        let want = tollgate_store::QueuedEvent {
            order_key: e.event.order_key.clone(),
            ..event(id, "voice")
        };
        assert_eq!(e.event, want, "{id}");
    }
    // A delivered event is kept for deduplication only.
    let delivered = entry("delivered").await;
    assert_eq!(delivered.status, EventStatus::Delivered);
    assert!(delivered.event.body.is_empty() && delivered.event.headers.is_empty());
    assert_eq!(
        queue.enqueue(&event("delivered", "voice")).await.unwrap(),
        Enqueued::Duplicate
    );
    assert!(queue.get("removed-last").await.unwrap().is_none());

    // Leasing goes on in receipt order; the line waits for its leased head; tokens go on
    // from the file's counter.
    let l = queue.lease(None, 10, LEASE).await.unwrap();
    let ids: Vec<&str> = l.iter().map(|l| l.event.id.as_str()).collect();
    assert_eq!(ids, ["pending", "retrying"]);
    assert!(l.iter().all(|l| l.token.get() > 8));
    assert_eq!(l[1].attempts, 3);
    assert_eq!(queue.ack(&l[0]).await.unwrap(), Settled::Applied);

    // New events come after every old one still held.
    assert_eq!(
        queue.enqueue(&event("new", "voice")).await.unwrap(),
        Enqueued::New
    );
    queue.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let seq = |id: &str| -> i64 {
        conn.query_row("SELECT seq FROM queue_events WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert!(
        seq("new") > seq("line-next"),
        "a new event before an old one"
    );
    assert_eq!(seq("pending"), 1);
    let tables = names(
        &conn,
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'queue%' ORDER BY name",
    );
    assert_eq!(tables, ["queue_events", "queue_meta", "queue_requests"]);
    assert_eq!(
        schema_version(&conn),
        tollgate_store::queue_sqlite::QUEUE_SCHEMA_VERSION
    );
    // Requests of delivered events are gone, the others kept.
    assert_eq!(
        scalar::<i64>(&conn, "SELECT count(*) FROM queue_requests"),
        6
    );
    drop(conn);

    // Opening it again finds it current and changes nothing.
    let queue = open(&path, Durability::Batch, &clock);
    assert_eq!(
        queue.get("line-next").await.unwrap().unwrap().status,
        EventStatus::Pending
    );
    assert_eq!(
        queue.get("pending").await.unwrap().unwrap().status,
        EventStatus::Delivered
    );
}

/// The queue schema version 2 (requests in their own table, the status index), exactly as it
/// created it.
const QUEUE_SCHEMA_V2: &str = "
    CREATE TABLE queue_meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO queue_meta (name, value) VALUES ('schema_version', 2), ('next_lease_token', 0);
    CREATE TABLE queue_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        route TEXT NOT NULL, received_at_ms INTEGER NOT NULL, order_key TEXT,
        status INTEGER NOT NULL, attempts INTEGER NOT NULL, next_attempt_at_ms INTEGER NOT NULL,
        lease_until_ms INTEGER, lease_token INTEGER, due_ms INTEGER, last_error TEXT,
        finished_at_ms INTEGER);
    CREATE TABLE queue_requests (seq INTEGER PRIMARY KEY, method TEXT NOT NULL, url TEXT NOT NULL,
        headers BLOB NOT NULL, body BLOB NOT NULL);
    CREATE INDEX queue_events_due ON queue_events (due_ms, seq) WHERE status IN (0, 1);
    CREATE INDEX queue_events_line ON queue_events (route, order_key, seq)
        WHERE status IN (0, 1) AND order_key IS NOT NULL;
    CREATE INDEX queue_events_undelivered ON queue_events (status, route, received_at_ms)
        WHERE status <> 2;
    CREATE INDEX queue_events_finished ON queue_events (finished_at_ms) WHERE status = 2;";

/// A file written by version 2 opens as version 3 (new indexes, same tables: its
/// AUTOINCREMENT stays), with every event where it was, and goes on working.
#[tokio::test]
async fn version_2_file_is_upgraded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let clock = ManualClock::new(START_MS);
    // Events in every state, as version 2 wrote them.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(QUEUE_SCHEMA_V2).unwrap();
        let now = START_MS as i64;
        for (id, route, status, due, token, finished) in [
            ("pending", "voice", 0, Some(now), None, None),
            ("leased", "voice", 1, Some(now + 30_000), Some(3), None),
            ("delivered", "voice", 2, None, None, Some(now)),
            ("dead", "sms", 3, None, None, Some(now)),
            ("pending-sms", "sms", 0, Some(now), None, None),
            ("removed-last", "voice", 0, Some(now), None, None),
        ] {
            let e = event(id, route);
            conn.execute(
                "INSERT INTO queue_events (id, route, received_at_ms, status, attempts,
                     next_attempt_at_ms, lease_until_ms, lease_token, due_ms, finished_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    id,
                    route,
                    e.received_at_ms as i64,
                    status,
                    i64::from(status == 1),
                    now,
                    if status == 1 { due } else { None },
                    token,
                    due,
                    finished
                ],
            )
            .unwrap();
            if status != 2 {
                conn.execute(
                    "INSERT INTO queue_requests (seq, method, url, headers, body)
                     VALUES (last_insert_rowid(), ?1, ?2, ?3, ?4)",
                    rusqlite::params![e.method, e.url, old_headers(&e.headers), e.body],
                )
                .unwrap();
            }
        }
        conn.execute_batch(
            "DELETE FROM queue_requests WHERE seq =
                 (SELECT seq FROM queue_events WHERE id = 'removed-last');
             DELETE FROM queue_events WHERE id = 'removed-last';
             UPDATE queue_meta SET value = 3 WHERE name = 'next_lease_token';",
        )
        .unwrap();
    }

    let queue = open(&path, Durability::Batch, &clock);
    let stats = queue.stats().await.unwrap();
    let voice = stats.route("voice").unwrap();
    assert_eq!((voice.pending, voice.leased, voice.dead), (1, 1, 0));
    let sms = stats.route("sms").unwrap();
    assert_eq!((sms.pending, sms.leased, sms.dead), (1, 0, 1));
    assert_eq!(
        queue.get("pending").await.unwrap().unwrap().event,
        event("pending", "voice")
    );
    assert_eq!(
        queue.enqueue(&event("delivered", "voice")).await.unwrap(),
        Enqueued::Duplicate
    );
    let l = queue.lease(None, 10, LEASE).await.unwrap();
    let ids: Vec<&str> = l.iter().map(|l| l.event.id.as_str()).collect();
    assert_eq!(ids, ["pending", "pending-sms"]);
    assert_eq!(l[0].event, event("pending", "voice"));
    assert!(l.iter().all(|l| l.token.get() > 3));
    assert_eq!(queue.ack(&l[0]).await.unwrap(), Settled::Applied);
    assert_eq!(
        queue.enqueue(&event("new", "voice")).await.unwrap(),
        Enqueued::New
    );
    let stats = queue.stats().await.unwrap();
    let voice = stats.route("voice").unwrap();
    assert_eq!((voice.pending, voice.leased, voice.dead), (1, 1, 0));
    queue.close().await;

    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(
        schema_version(&conn),
        tollgate_store::queue_sqlite::QUEUE_SCHEMA_VERSION
    );
    let indexes = names(
        &conn,
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'queue_events'
             AND sql IS NOT NULL ORDER BY name",
    );
    assert_eq!(
        indexes,
        [
            "queue_events_dead",
            "queue_events_due",
            "queue_events_finished",
            "queue_events_line"
        ]
    );
    // The table was kept as it was: its AUTOINCREMENT still never hands out a number twice.
    let seq: i64 = scalar(&conn, "SELECT seq FROM queue_events WHERE id = 'new'");
    assert!(
        seq > 6,
        "the removed newest event's number was handed out again"
    );
}

/// A new file's events table has no AUTOINCREMENT (no `sqlite_sequence` write per enqueue), and
/// a new event still comes after every event held.
#[tokio::test]
async fn new_file_numbers_events_without_autoincrement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let queue = open(&path, Durability::Batch, &ManualClock::new(START_MS));
    for id in ["a", "b", "c"] {
        queue.enqueue(&event(id, "voice")).await.unwrap();
    }
    assert!(queue.remove("c").await.unwrap());
    assert!(queue.remove("a").await.unwrap());
    queue.enqueue(&event("d", "voice")).await.unwrap();
    let l = queue.lease(None, 10, LEASE).await.unwrap();
    let ids: Vec<&str> = l.iter().map(|l| l.event.id.as_str()).collect();
    assert_eq!(ids, ["b", "d"]);
    assert_eq!(l[1].event, event("d", "voice"));
    queue.close().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let sql: String = scalar(
        &conn,
        "SELECT sql FROM sqlite_schema WHERE name = 'queue_events'",
    );
    assert!(!sql.contains("AUTOINCREMENT"), "{sql}");
    assert!(names(
        &conn,
        "SELECT name FROM sqlite_schema WHERE name = 'sqlite_sequence'"
    )
    .is_empty());
}
