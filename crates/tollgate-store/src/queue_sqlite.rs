//! The embedded default [`EventQueue`]: a table in a SQLite file in WAL mode.
//!
//! Same design as the replay store ([`crate::sqlite`]): SQLite calls block, so one connection
//! lives on a dedicated writer thread that drains a channel of operations and runs everything
//! queued meanwhile in one `BEGIN IMMEDIATE` transaction. Group commit is what makes durable
//! enqueues cheap: with [`Durability::Always`] (`synchronous = FULL`) one fsync covers every
//! enqueue of the batch, and with [`Durability::Batch`] (`NORMAL`) a commit is an append to the
//! WAL that survives a process crash (not necessarily power loss). A caller hears `Ok` only after
//! the transaction holding its operation committed; a failed batch is rolled back and replayed
//! one operation per transaction so each caller gets its own outcome.
//!
//! The queue keeps its own tables (`queue_events`, `queue_requests`, `queue_meta`) and schema
//! version (in `queue_meta`, not `PRAGMA user_version`, which belongs to the replay store), so it
//! may share the replay store's file or have its own; an older queue schema is upgraded at open. `BEGIN IMMEDIATE` takes SQLite's write lock before
//! reading, so leases stay exclusive even with several processes on one file.
//!
//! Nothing is reset at start-up: an event leased when the process died is due again when its
//! lease ends (deadlines are absolute unix ms from the injected clock), which is also what makes
//! several processes sharing a file safe.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Row};
use tokio::sync::oneshot;

use crate::clock::{deadline, duration_ms, SharedClock, SystemClock};
use crate::queue::{
    received_cutoff, Enqueued, EventQueue, EventStatus, LeaseToken, Leased, ListFilter, QueueEntry,
    QueueStats, QueuedEvent, RouteStats, Settled, Settlement,
};
use crate::sqlite::{
    decode_headers, encode_headers, open_error, open_wal, query_error, to_sql_ms, Durability,
    SqliteError,
};
use crate::{group_commit, StoreError};

/// The queue schema this code writes, kept in `queue_meta`. A file of version 1 or 2 is upgraded
/// when opened; a newer one is refused, not misread.
pub const QUEUE_SCHEMA_VERSION: i64 = 3;

/// Most delivered events one purge step deletes, so a purge never stalls enqueues for long.
const PURGE_CHUNK: i64 = 2048;

/// WAL pages after which the writer checkpoints by itself: only a backstop for when the
/// checkpointer thread cannot keep up, since a checkpoint on the writer stalls every enqueue.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// How often the checkpointer thread copies committed WAL pages into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Tuning for [`SqliteQueue::open_with`].
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// When enqueues reach the disk.
    pub durability: Durability,
    /// How long to wait for another connection's lock before failing.
    pub busy_timeout: Duration,
    /// How long delivered events are kept (so a late provider retry is still recognised as a
    /// duplicate, and for `tollgate queue ls`) before the periodic purge deletes them.
    pub keep_delivered: Duration,
    /// How often the writer thread purges delivered events.
    pub purge_interval: Duration,
    /// Where "now" comes from.
    pub clock: SharedClock,
}

impl QueueOptions {
    /// Defaults with the given durability and the system clock.
    pub fn new(durability: Durability) -> Self {
        Self {
            durability,
            busy_timeout: Duration::from_secs(5),
            keep_delivered: Duration::from_secs(24 * 3600),
            purge_interval: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }

    /// The same options reading time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

/// SQLite-backed [`EventQueue`]. Cheap to share behind an `Arc`; dropping it stops the writer
/// thread once the operations already queued are done.
#[derive(Debug)]
pub struct SqliteQueue {
    tx: Option<mpsc::Sender<Request>>,
    /// Fires when the writer thread has closed the connection; taken by [`SqliteQueue::close`].
    closed: Option<oneshot::Receiver<()>>,
    path: PathBuf,
    /// How long the writer's periodic purge keeps delivered events, ms; only ever raised.
    keep_delivered_ms: Arc<AtomicU64>,
    /// Dropping it stops the checkpointer thread; its handle is joined by `close`.
    checkpointer: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue in the database at `path` with default options and
    /// the system clock. Blocks on file I/O: call it at start-up or inside `spawn_blocking`.
    ///
    /// `path` may be a `file:` URI (`file:/var/lib/tollgate/state.db?mode=ro` for inspection).
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(path, QueueOptions::new(durability))
    }

    /// [`SqliteQueue::open`] with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: QueueOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = open_wal(&path, options.durability, options.busy_timeout)?;
        migrate(&conn, &path)?;
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES};"
        ))
        .map_err(|e| open_error(&path, e))?;
        let checkpointer = spawn_checkpointer(&path, &options);
        let keep_delivered_ms = Arc::new(AtomicU64::new(duration_ms(options.keep_delivered)));
        let writer = Writer {
            conn,
            clock: options.clock,
            keep_delivered_ms: Arc::clone(&keep_delivered_ms),
            purge_interval: options.purge_interval,
            leased_rows: RefCell::new(HashMap::new()),
            recent: RefCell::new(RecentRequests::default()),
        };
        let (tx, closed_rx) = group_commit::spawn("tollgate-queue", writer)?;
        Ok(Self {
            tx: Some(tx),
            closed: Some(closed_rx),
            path,
            keep_delivered_ms,
            checkpointer,
        })
    }

    /// The path or URI this queue was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`), so a flood fills the cap
    /// rather than the disk; once full, enqueues fail with [`StoreError::Unavailable`] (the
    /// gateway answers 503). Returns the cap in force, never below the current size.
    pub async fn set_max_page_count(&self, pages: u64) -> Result<u64, StoreError> {
        match self.call(Op::MaxPageCount(pages)).await? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected("max_page_count", &other)),
        }
    }

    /// Finishes the queued operations, closes the database (checkpointing the WAL) and waits for
    /// the writer thread to end. Dropping the queue does the same without waiting.
    pub async fn close(mut self) {
        self.tx = None;
        if let Some(closed) = self.closed.take() {
            // An error only means the thread ended without signalling; it has ended either way.
            let _ = closed.await;
        }
        if let Some((stop, handle)) = self.checkpointer.take() {
            drop(stop);
            // The thread ends within one checkpoint; a panic there has nothing left to clean up.
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn call(&self, op: Op) -> Result<Reply, StoreError> {
        let stopped = || StoreError::Unavailable(Box::new(SqliteError::WriterStopped));
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn settle(&self, one: SettleOne) -> Result<Settled, StoreError> {
        match self.call(Op::Settle(vec![one])).await? {
            Reply::Settled(s) if s.len() == 1 => s
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt("queue writer answered no settlement".into())),
            other => Err(unexpected("settle", &other)),
        }
    }

    async fn flag(&self, op: Op) -> Result<bool, StoreError> {
        match self.call(op).await? {
            Reply::Flag(b) => Ok(b),
            other => Err(unexpected("flag", &other)),
        }
    }
}

/// Starts the thread that checkpoints the WAL on its own connection, so copying pages into the
/// database file (and its fsync) runs beside the writer instead of inside one of its commits.
/// `PASSIVE` never waits for the writer; the WAL restarts from its beginning whenever a
/// checkpoint has caught up. Without the thread (it could not start or open) the writer's own
/// backstop checkpoint still bounds the WAL.
fn spawn_checkpointer(
    path: &Path,
    options: &QueueOptions,
) -> Option<(mpsc::Sender<()>, thread::JoinHandle<()>)> {
    let conn = open_wal(path, options.durability, options.busy_timeout).ok()?;
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = thread::Builder::new()
        .name("tollgate-queue-ckpt".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                // A failed or partial checkpoint is simply tried again next round.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })
        .ok()?;
    Some((stop, handle))
}

/// The error `e` once more, for each settlement of a batch that failed as a whole.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        other => StoreError::Unavailable(other.to_string().into()),
    }
}

/// A reply of the wrong kind is a bug in the writer, reported rather than guessed around.
fn unexpected(what: &str, reply: &Reply) -> StoreError {
    StoreError::Corrupt(format!("queue writer answered {what} with {reply:?}"))
}

#[async_trait::async_trait]
impl EventQueue for SqliteQueue {
    async fn enqueue(&self, event: &QueuedEvent) -> Result<Enqueued, StoreError> {
        self.enqueue_owned(event.clone()).await
    }

    async fn enqueue_owned(&self, event: QueuedEvent) -> Result<Enqueued, StoreError> {
        match self.call(Op::Enqueue(Box::new(NewRow::of(event)))).await? {
            Reply::Enqueued(e) => Ok(e),
            other => Err(unexpected("enqueue", &other)),
        }
    }

    async fn lease(
        &self,
        route: Option<&str>,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Leased>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        match self
            .call(Op::Lease {
                route: route.map(str::to_owned),
                max,
                lease_for,
            })
            .await?
        {
            Reply::Leased(l) => Ok(l),
            other => Err(unexpected("lease", &other)),
        }
    }

    async fn ack(&self, lease: &Leased) -> Result<Settled, StoreError> {
        self.settle(SettleOne::of(lease, Settlement::Delivered))
            .await
    }

    async fn retry(
        &self,
        lease: &Leased,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<Settled, StoreError> {
        self.settle(SettleOne::of(
            lease,
            Settlement::Retry {
                at_ms: next_attempt_at_ms,
                error: error.to_owned(),
            },
        ))
        .await
    }

    async fn dead_letter(&self, lease: &Leased, error: &str) -> Result<Settled, StoreError> {
        self.settle(SettleOne::of(
            lease,
            Settlement::Dead {
                error: error.to_owned(),
            },
        ))
        .await
    }

    async fn settle_many(
        &self,
        batch: &[(Leased, Settlement)],
    ) -> Vec<Result<Settled, StoreError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        let ops = batch
            .iter()
            .map(|(lease, to)| SettleOne::of(lease, to.clone()))
            .collect();
        match self.call(Op::Settle(ops)).await {
            Ok(Reply::Settled(done)) if done.len() == batch.len() => {
                done.into_iter().map(Ok).collect()
            }
            Ok(other) => batch
                .iter()
                .map(|_| Err(unexpected("settle", &other)))
                .collect(),
            // One transaction: none of them was applied.
            Err(e) => batch.iter().map(|_| Err(same_error(&e))).collect(),
        }
    }

    async fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        match self
            .call(Op::List {
                filter: filter.clone(),
                limit,
            })
            .await?
        {
            Reply::Entries(e) => Ok(e),
            other => Err(unexpected("list", &other)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        match self.call(Op::Get(id.to_owned())).await? {
            Reply::Entry(e) => Ok(e.map(|b| *b)),
            other => Err(unexpected("get", &other)),
        }
    }

    async fn requeue(&self, id: &str) -> Result<bool, StoreError> {
        self.flag(Op::Requeue(id.to_owned())).await
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        self.flag(Op::Remove(id.to_owned())).await
    }

    async fn purge_delivered(&self, older_than: Duration) -> Result<u64, StoreError> {
        match self.call(Op::PurgeDelivered(older_than)).await? {
            Reply::Count(n) => Ok(n),
            other => Err(unexpected("purge", &other)),
        }
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        match self.call(Op::Stats).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected("stats", &other)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self.call(Op::Ping).await? {
            Reply::Flag(_) => Ok(()),
            other => Err(unexpected("ping", &other)),
        }
    }

    fn retain_delivered(&self, at_least: Duration) {
        self.keep_delivered_ms
            .fetch_max(duration_ms(at_least), Ordering::Relaxed);
    }
}

/// The queue's tables and indexes beside `queue_meta`, as this version writes them.
///
/// status: 0 pending, 1 leased, 2 delivered, 3 dead. `due_ms` is when a live event is next due
/// (next_attempt_at_ms when pending, lease_until_ms when leased) and NULL otherwise, so one
/// partial index serves `lease`. `seq` is receipt order: a new row's is above every row's in the
/// table, which is all that per-key lines and lease order need. (No AUTOINCREMENT: a number freed
/// by removing the newest event may come back, and AUTOINCREMENT cost a `sqlite_sequence` write
/// per enqueue. Files created before keep their AUTOINCREMENT; both work alike.)
///
/// The request (method, URL, headers, body) lives in `queue_requests`, apart from the small row
/// that leases and settlements rewrite: SQLite writes whole pages to the WAL and again into the
/// file at the checkpoint, so with a 1.3 KB request in the row every lease and every settlement
/// rewrote a third of a page per event. The request is deleted when the event is delivered: the
/// delivered event stays (for `dedupe_ttl_secs`) only as the small row holding its id.
const TABLES: &str = "
    CREATE TABLE queue_events (
        seq                INTEGER PRIMARY KEY,
        id                 TEXT NOT NULL UNIQUE,
        route              TEXT NOT NULL,
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
    CREATE TABLE queue_requests (
        seq     INTEGER PRIMARY KEY,
        method  TEXT NOT NULL,
        url     TEXT NOT NULL,
        headers BLOB NOT NULL,
        body    BLOB NOT NULL
    );";

/// The indexes of [`TABLES`]. Delivered events, the bulk of the table, are in none but the one
/// the purge reads.
///
/// The due index also carries what `stats` counts of live events (route, status, received_at_ms)
/// after its key: a lease rewrites an event's entry anyway (its `due_ms` changes), so the counts
/// cost no index write of their own. (Version 2 kept them in an index of their own keyed by
/// status, which every enqueue, lease and settlement wrote to, each a search through entries
/// equal in status and route: a sixth of the writer's instructions.) Dead events are counted
/// from an index of their own, which only dying, requeued and removed events write to.
const INDEXES: &str = "
    CREATE INDEX queue_events_due ON queue_events (due_ms, seq, route, status, received_at_ms)
        WHERE status IN (0, 1);
    CREATE INDEX queue_events_line ON queue_events (route, order_key, seq)
        WHERE status IN (0, 1) AND order_key IS NOT NULL;
    CREATE INDEX queue_events_dead ON queue_events (route) WHERE status = 3;
    CREATE INDEX queue_events_finished ON queue_events (finished_at_ms) WHERE status = 2;";

/// Version 2 had the status index and a due index without the counted columns; the tables are
/// unchanged (a file created by version 2 keeps its AUTOINCREMENT).
const UPGRADE_FROM_V2: &str = "
    DROP INDEX queue_events_undelivered;
    DROP INDEX queue_events_due;
    CREATE INDEX queue_events_due ON queue_events (due_ms, seq, route, status, received_at_ms)
        WHERE status IN (0, 1);
    CREATE INDEX queue_events_dead ON queue_events (route) WHERE status = 3;";

/// Version 1 kept the request in `queue_events`, and every event in the status index. The
/// rows keep their `seq` (receipt order, which per-key lines and lease order follow); requests
/// of delivered events are not carried over.
const UPGRADE_FROM_V1: &str = "
    DROP INDEX queue_events_due;
    DROP INDEX queue_events_line;
    DROP INDEX queue_events_stats;
    DROP INDEX queue_events_finished;
    ALTER TABLE queue_events RENAME TO queue_events_v1;";

const COPY_FROM_V1: &str = "
    INSERT INTO queue_events (seq, id, route, received_at_ms, order_key, status, attempts,
                              next_attempt_at_ms, lease_until_ms, lease_token, due_ms,
                              last_error, finished_at_ms)
        SELECT seq, id, route, received_at_ms, order_key, status, attempts, next_attempt_at_ms,
               lease_until_ms, lease_token, due_ms, last_error, finished_at_ms
        FROM queue_events_v1 ORDER BY seq;
    INSERT INTO queue_requests (seq, method, url, headers, body)
        SELECT seq, method, url, headers, body FROM queue_events_v1 WHERE status <> 2
        ORDER BY seq;
    DROP TABLE queue_events_v1;";

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |e| open_error(path, e);
    // Read first, outside a transaction, so a read-only file whose queue is current opens
    // without attempting a write.
    if schema_version(conn, path)? == Some(QUEUE_SCHEMA_VERSION) {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    // Asked again under the write lock: another process may have created or upgraded the queue
    // since.
    let upgraded = schema_version(conn, path).and_then(|v| {
        let script = match v {
            Some(QUEUE_SCHEMA_VERSION) => return Ok(()),
            None => format!(
                "CREATE TABLE queue_meta (
                     name  TEXT PRIMARY KEY NOT NULL,
                     value INTEGER NOT NULL
                 ) WITHOUT ROWID;
                 INSERT INTO queue_meta (name, value)
                     VALUES ('schema_version', {QUEUE_SCHEMA_VERSION}), ('next_lease_token', 0);
                 {TABLES}
                 {INDEXES}"
            ),
            Some(1) => format!(
                "{UPGRADE_FROM_V1}
                 {TABLES}
                 {COPY_FROM_V1}
                 {INDEXES}
                 UPDATE queue_meta SET value = {QUEUE_SCHEMA_VERSION}
                     WHERE name = 'schema_version';"
            ),
            Some(2) => format!(
                "{UPGRADE_FROM_V2}
                 UPDATE queue_meta SET value = {QUEUE_SCHEMA_VERSION}
                     WHERE name = 'schema_version';"
            ),
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has queue schema version {v}; this tollgate reads up to \
                     {QUEUE_SCHEMA_VERSION}",
                    path.display()
                )))
            }
        };
        conn.execute_batch(&script).map_err(err)
    });
    match upgraded.and_then(|()| conn.execute_batch("COMMIT").map_err(err)) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Leave no half-open transaction behind on the connection we return an error for.
            group_commit::rollback(conn);
            Err(e)
        }
    }
}

/// The queue schema version recorded in the file; `None` when it has no queue yet.
fn schema_version(conn: &Connection, path: &Path) -> Result<Option<i64>, StoreError> {
    let err = |e| open_error(path, e);
    let exists: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'queue_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if !exists {
        return Ok(None);
    }
    conn.query_row(
        "SELECT value FROM queue_meta WHERE name = 'schema_version'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map_err(err)?
    .map(Some)
    .ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{} has a queue_meta table without a schema version",
            path.display()
        ))
    })
}

fn status_code(s: EventStatus) -> i64 {
    match s {
        EventStatus::Pending => 0,
        EventStatus::Leased => 1,
        EventStatus::Delivered => 2,
        EventStatus::Dead => 3,
    }
}

fn status_from_code(c: i64) -> Result<EventStatus, StoreError> {
    match c {
        0 => Ok(EventStatus::Pending),
        1 => Ok(EventStatus::Leased),
        2 => Ok(EventStatus::Delivered),
        3 => Ok(EventStatus::Dead),
        other => Err(StoreError::Corrupt(format!(
            "queued event has status {other}"
        ))),
    }
}

/// Columns [`RawEntry::read`] expects, in order, from [`ENTRY_FROM`].
const ENTRY_COLUMNS: &str = "e.id, e.route, r.method, r.url, r.headers, r.body, e.received_at_ms, \
     e.order_key, e.status, e.attempts, e.next_attempt_at_ms, e.lease_until_ms, e.last_error";

/// An event with its request, if still kept.
const ENTRY_FROM: &str = "queue_events e LEFT JOIN queue_requests r ON r.seq = e.seq";

/// A row as SQLite typed it; [`RawEntry::decode`] checks what SQLite cannot.
struct RawEntry {
    id: String,
    route: String,
    request: Option<RawRequest>,
    received_at_ms: i64,
    order_key: Option<String>,
    status: i64,
    attempts: i64,
    next_attempt_at_ms: i64,
    lease_until_ms: Option<i64>,
    last_error: Option<String>,
}

struct RawRequest {
    method: String,
    url: String,
    headers: Vec<u8>,
    body: Vec<u8>,
}

impl RawEntry {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        // The request's columns are all NULL or none: they come from one row of its table.
        let request = match r.get::<_, Option<String>>(2)? {
            Some(method) => Some(RawRequest {
                method,
                url: r.get(3)?,
                headers: r.get(4)?,
                body: r.get(5)?,
            }),
            None => None,
        };
        Ok(Self {
            id: r.get(0)?,
            route: r.get(1)?,
            request,
            received_at_ms: r.get(6)?,
            order_key: r.get(7)?,
            status: r.get(8)?,
            attempts: r.get(9)?,
            next_attempt_at_ms: r.get(10)?,
            lease_until_ms: r.get(11)?,
            last_error: r.get(12)?,
        })
    }

    fn decode(self) -> Result<QueueEntry, StoreError> {
        let ms = |what: &str, v: i64| {
            u64::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("queued event has {what} = {v}")))
        };
        let status = status_from_code(self.status)?;
        let (method, url, headers, body) = match (self.request, status) {
            (Some(r), _) => (r.method, r.url, decode_headers(&r.headers)?, r.body),
            // Dropped on delivery: only the id is needed to recognise a late retry.
            (None, EventStatus::Delivered) => Default::default(),
            (None, _) => {
                return Err(StoreError::Corrupt(format!(
                    "queued event {:?} ({status}) has no stored request",
                    self.id
                )))
            }
        };
        Ok(QueueEntry {
            event: QueuedEvent {
                headers,
                received_at_ms: ms("received_at_ms", self.received_at_ms)?,
                id: self.id,
                route: self.route,
                method,
                url,
                body,
                order_key: self.order_key,
            },
            status,
            attempts: u32::try_from(self.attempts).map_err(|_| {
                StoreError::Corrupt(format!("queued event has attempts = {}", self.attempts))
            })?,
            next_attempt_at_ms: ms("next_attempt_at_ms", self.next_attempt_at_ms)?,
            lease_until_ms: self
                .lease_until_ms
                .map(|v| ms("lease_until_ms", v))
                .transpose()?,
            last_error: self.last_error,
        })
    }
}

/// One lease to settle: the event, the lease's token, and how.
#[derive(Debug)]
struct SettleOne {
    id: String,
    token: LeaseToken,
    to: Settlement,
}

impl SettleOne {
    fn of(lease: &Leased, to: Settlement) -> Self {
        Self {
            id: lease.event.id.clone(),
            token: lease.token,
            to,
        }
    }
}

/// An event as its row is written: the headers are encoded on the caller's thread, so the writer
/// only binds (and they are copied once, into one blob, not header by header). The event itself
/// is shared with the writer's [`RecentRequests`], so a lease soon after can hand it out without
/// reading it back.
#[derive(Debug)]
struct NewRow {
    event: Arc<QueuedEvent>,
    headers: Vec<u8>,
    received_at_ms: i64,
}

impl NewRow {
    fn of(e: QueuedEvent) -> Self {
        Self {
            headers: encode_headers(&e.headers),
            received_at_ms: to_sql_ms(e.received_at_ms),
            event: Arc::new(e),
        }
    }
}

#[derive(Debug)]
enum Op {
    Enqueue(Box<NewRow>),
    Lease {
        route: Option<String>,
        max: usize,
        lease_for: Duration,
    },
    /// Settlements applied in order, answered together.
    Settle(Vec<SettleOne>),
    List {
        filter: ListFilter,
        limit: usize,
    },
    Get(String),
    Requeue(String),
    Remove(String),
    PurgeDelivered(Duration),
    Stats,
    MaxPageCount(u64),
    /// Answers once the writer has opened a write transaction: the file takes writes now.
    Ping,
}

#[derive(Debug)]
enum Reply {
    Enqueued(Enqueued),
    Leased(Vec<Leased>),
    Settled(Vec<Settled>),
    Entries(Vec<QueueEntry>),
    Entry(Option<Box<QueueEntry>>),
    Flag(bool),
    Count(u64),
    Stats(QueueStats),
}

type Request = group_commit::Request<Op, Reply>;

struct Writer {
    conn: Connection,
    clock: SharedClock,
    keep_delivered_ms: Arc<AtomicU64>,
    purge_interval: Duration,
    /// The row (`seq`) of each lease this writer handed out and not yet settled, by token, so
    /// a settlement goes straight to its row instead of through the id index. Only a hint: the
    /// settlement still matches the token in the row, and falls back to the id.
    leased_rows: RefCell<HashMap<u64, i64>>,
    recent: RefCell<RecentRequests>,
}

/// Most lease hints kept; past it they are dropped (leases that were never settled, such as
/// deliveries abandoned at shutdown, would otherwise accumulate).
const MAX_LEASE_HINTS: usize = 1 << 16;

/// Most events [`RecentRequests`] holds, and about the most bytes of requests. With delivery
/// keeping up it holds the few hundred events between their enqueue and their lease; with a
/// backlog it holds the oldest events stored since it last had room, which are leased first.
const RECENT_MAX_EVENTS: usize = 1024;
const RECENT_MAX_BYTES: usize = 2 << 20;

/// The events this writer stored and no lease has taken yet, by row, so that leasing an event
/// enqueued moments before hands out the event as received instead of reading its request back
/// from the file and decoding it (about a fifth of the writer's work per event).
///
/// Only ever a copy of what the committed row holds: rows inserted by a transaction that rolls
/// back are forgotten ([`Work::rolled_back`](group_commit::Work::rolled_back)), an entry is
/// used only if the row's id matches it, it is dropped when its row or request is deleted, and
/// everything is forgotten when another connection (another process on the file, `tollgate
/// queue`) has committed since this writer last looked (`PRAGMA data_version`), since a
/// sequence number freed there may have been given to another event.
#[derive(Default)]
struct RecentRequests {
    by_seq: HashMap<i64, Arc<QueuedEvent>>,
    bytes: usize,
    /// Rows inserted by the open transaction.
    uncommitted: Vec<i64>,
    /// `PRAGMA data_version` when this writer last looked.
    data_version: Option<i64>,
}

impl RecentRequests {
    fn size(e: &QueuedEvent) -> usize {
        // Allocation overhead counted roughly, so many small headers still add up.
        e.id.len()
            + e.route.len()
            + e.method.len()
            + e.url.len()
            + e.body.len()
            + e.headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 64)
                .sum::<usize>()
            + 160
    }

    /// Keeps `event` as row `seq`'s, if there is room.
    fn keep(&mut self, seq: i64, event: &Arc<QueuedEvent>) {
        let size = Self::size(event);
        if self.by_seq.len() >= RECENT_MAX_EVENTS || self.bytes + size > RECENT_MAX_BYTES {
            return;
        }
        if let Some(old) = self.by_seq.insert(seq, Arc::clone(event)) {
            self.bytes -= Self::size(&old);
        }
        self.bytes += size;
        self.uncommitted.push(seq);
    }

    /// Row `seq`'s event if kept and its id is `id`; either way it is no longer kept.
    fn take(&mut self, seq: i64, id: &str) -> Option<Arc<QueuedEvent>> {
        let e = self.forget(seq)?;
        (e.id == id).then_some(e)
    }

    fn forget(&mut self, seq: i64) -> Option<Arc<QueuedEvent>> {
        let e = self.by_seq.remove(&seq)?;
        self.bytes -= Self::size(&e);
        Some(e)
    }

    fn clear(&mut self) {
        self.by_seq.clear();
        self.bytes = 0;
        self.uncommitted.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_seq.len()
    }
}

/// The statements of the frequent operations, by [`Stmts::get`] index.
#[derive(Clone, Copy)]
enum Sql {
    InsertEvent,
    InsertRequest,
    LeaseSelect,
    ReadRequest,
    LeaseToken,
    LeaseUpdate,
    SettleDelivered,
    SettleRetry,
    SettleDead,
    DropRequest,
    SeqById,
    DataVersion,
}

const SQL_COUNT: usize = Sql::DataVersion as usize + 1;

impl Sql {
    fn text(self) -> &'static str {
        match self {
            Sql::InsertEvent => {
                "INSERT INTO queue_events (id, route, received_at_ms, order_key, status, attempts,
                     next_attempt_at_ms, due_ms)
                 VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?5)
                 ON CONFLICT (id) DO NOTHING"
            }
            // OR REPLACE: without AUTOINCREMENT a sequence number can come back after its
            // event was removed; a request row left behind for it must not make every
            // enqueue fail from then on.
            Sql::InsertRequest => {
                "INSERT OR REPLACE INTO queue_requests (seq, method, url, headers, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)"
            }
            // Only a line's head qualifies: an event is skipped while an earlier event of its
            // (route, order_key) is pending or leased. Evaluated on one snapshot, so one call
            // never returns two events of a line either. The due index is forced: without
            // statistics the planner prefers the status index, which visits every pending and
            // leased row and sorts them, so a backlog made each lease cost as much as the
            // backlog; the due index yields due events in order, and reading stops after `max`.
            // (Not a `LIMIT ?`: SQLite plans with a bound LIMIT's value, so every new value
            // made it prepare the statement again.) The request is read apart, and only for
            // events the writer does not still hold.
            Sql::LeaseSelect => {
                "SELECT e.seq, e.id, e.attempts, e.route, e.received_at_ms, e.order_key
                 FROM queue_events e INDEXED BY queue_events_due
                 WHERE e.status IN (0, 1) AND e.due_ms <= ?1
                   AND (?2 IS NULL OR e.route = ?2)
                   AND (e.order_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM queue_events h
                        WHERE h.route = e.route AND h.order_key = e.order_key
                          AND h.status IN (0, 1) AND h.seq < e.seq))
                 ORDER BY e.due_ms, e.seq"
            }
            Sql::ReadRequest => {
                "SELECT method, url, headers, body FROM queue_requests WHERE seq = ?1"
            }
            // Tokens come from a counter in the file, so they stay unique across restarts and
            // across processes sharing the file (the write lock is held).
            Sql::LeaseToken => {
                "UPDATE queue_meta SET value = value + ?1 WHERE name = 'next_lease_token'
                 RETURNING value"
            }
            Sql::LeaseUpdate => {
                "UPDATE queue_events SET status = 1, attempts = attempts + 1,
                     lease_until_ms = ?2, due_ms = ?2, lease_token = ?3
                 WHERE seq = ?1"
            }
            Sql::SettleDelivered => {
                "UPDATE queue_events SET status = 2, finished_at_ms = ?3, due_ms = NULL,
                     lease_until_ms = NULL, lease_token = NULL
                 WHERE seq = ?1 AND status = 1 AND lease_token = ?2"
            }
            Sql::SettleRetry => {
                "UPDATE queue_events SET status = 0, next_attempt_at_ms = ?3, due_ms = ?3,
                     last_error = ?4, lease_until_ms = NULL, lease_token = NULL
                 WHERE seq = ?1 AND status = 1 AND lease_token = ?2"
            }
            Sql::SettleDead => {
                "UPDATE queue_events SET status = 3, finished_at_ms = ?3, last_error = ?4,
                     due_ms = NULL, lease_until_ms = NULL, lease_token = NULL
                 WHERE seq = ?1 AND status = 1 AND lease_token = ?2"
            }
            Sql::DropRequest => "DELETE FROM queue_requests WHERE seq = ?1",
            Sql::SeqById => "SELECT seq FROM queue_events WHERE id = ?1",
            Sql::DataVersion => "PRAGMA data_version",
        }
    }
}

/// The statements one batch has used so far, held until the batch ends: rusqlite's statement
/// cache costs about 2.5 k instructions a use (a hash of the SQL text, a lookup, the return),
/// and an event used five statements.
struct Stmts<'c> {
    conn: &'c Connection,
    held: [Option<CachedStatement<'c>>; SQL_COUNT],
}

impl<'c> Stmts<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            held: std::array::from_fn(|_| None),
        }
    }

    fn get(&mut self, sql: Sql) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let slot = &mut self.held[sql as usize];
        let stmt = match slot.take() {
            Some(s) => s,
            None => self.conn.prepare_cached(sql.text())?,
        };
        Ok(slot.insert(stmt))
    }
}

/// A row the lease statement chose.
struct LeaseRow {
    seq: i64,
    attempts: i64,
    /// The event as this writer stored it, or the row's columns to read it back with.
    event: Result<Arc<QueuedEvent>, (String, String, i64, Option<String>)>,
}

impl group_commit::Work for Writer {
    type Op = Op;
    type Reply = Reply;

    fn conn(&self) -> &Connection {
        &self.conn
    }

    fn apply(&self, op: &Op) -> Result<Reply, StoreError> {
        self.apply_all(std::iter::once(op))?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("queue writer answered nothing".into()))
    }

    fn apply_all<'a>(&self, ops: impl Iterator<Item = &'a Op>) -> Result<Vec<Reply>, StoreError> {
        let mut st = Stmts::new(&self.conn);
        self.begun(&mut st)?;
        ops.map(|op| self.apply_op(&mut st, op)).collect()
    }

    fn housekeeping(&self) {
        // A failed purge is retried next interval; delivered rows only take space meanwhile.
        let _ = self.purge_periodically();
    }

    fn housekeeping_interval(&self) -> Duration {
        self.purge_interval
    }

    fn rolled_back(&self) {
        let mut recent = self.recent.borrow_mut();
        for seq in std::mem::take(&mut recent.uncommitted) {
            recent.forget(seq);
        }
    }
}

impl Writer {
    /// A transaction has begun: what the writer knows of the rows is still true only if no
    /// other connection committed since its last transaction.
    fn begun(&self, st: &mut Stmts<'_>) -> Result<(), StoreError> {
        let version: i64 = st
            .get(Sql::DataVersion)
            .and_then(|s| s.query_row([], |r| r.get(0)))
            .map_err(|e| query_error("data_version", e))?;
        let mut recent = self.recent.borrow_mut();
        recent.uncommitted.clear();
        if recent.data_version != Some(version) {
            recent.clear();
            recent.data_version = Some(version);
        }
        Ok(())
    }

    fn apply_op(&self, st: &mut Stmts<'_>, op: &Op) -> Result<Reply, StoreError> {
        let now = self.clock.now_ms();
        match op {
            Op::Enqueue(event) => self.enqueue(st, event, now).map(Reply::Enqueued),
            Op::Lease {
                route,
                max,
                lease_for,
            } => self
                .lease(st, route.as_deref(), *max, *lease_for, now)
                .map(Reply::Leased),
            Op::Settle(batch) => batch
                .iter()
                .map(|one| self.settle(st, one, now))
                .collect::<Result<_, _>>()
                .map(Reply::Settled),
            Op::List { filter, limit } => self.list(filter, *limit, now).map(Reply::Entries),
            Op::Get(id) => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM {ENTRY_FROM} WHERE e.id = ?1"
                ))
                .and_then(|mut s| s.query_row(params![id], RawEntry::read).optional())
                .map_err(|e| query_error("get", e))?
                .map(|raw| raw.decode().map(Box::new))
                .transpose()
                .map(Reply::Entry),
            Op::Requeue(id) => self
                .conn
                .prepare_cached(
                    "UPDATE queue_events SET status = 0, attempts = 0, next_attempt_at_ms = ?2,
                         due_ms = ?2, lease_until_ms = NULL, lease_token = NULL,
                         finished_at_ms = NULL
                     WHERE id = ?1 AND status IN (0, 3)",
                )
                .and_then(|mut s| s.execute(params![id, to_sql_ms(now)]))
                .map(|n| Reply::Flag(n > 0))
                .map_err(|e| query_error("requeue", e)),
            Op::Remove(id) => self.remove(st, id).map(Reply::Flag),
            Op::PurgeDelivered(older_than) => self
                .purge(now.saturating_sub(duration_ms(*older_than)), i64::MAX)
                .map(Reply::Count),
            Op::Stats => self.stats(now).map(Reply::Stats),
            // The batch's `BEGIN IMMEDIATE` already waited for the write lock; a read-only
            // file takes that lock but no write, so it is asked about, and a read of the
            // schema checks that the file is still a readable queue.
            Op::Ping => {
                let read_only = self
                    .conn
                    .is_readonly(rusqlite::MAIN_DB)
                    .map_err(|e| query_error("ping", e))?;
                if read_only {
                    return Err(query_error(
                        "ping",
                        rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                            Some("the queue database is read-only".into()),
                        ),
                    ));
                }
                self.conn
                    .query_row("SELECT count(*) FROM queue_meta", [], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|_| Reply::Flag(true))
                    .map_err(|e| query_error("ping", e))
            }
            Op::MaxPageCount(pages) => self
                .conn
                .query_row(
                    &format!("PRAGMA max_page_count = {}", to_sql_ms(*pages)),
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| Reply::Count(u64::try_from(n).unwrap_or(0)))
                .map_err(|e| query_error("max_page_count", e)),
        }
    }

    fn enqueue(&self, st: &mut Stmts<'_>, row: &NewRow, now: u64) -> Result<Enqueued, StoreError> {
        let e = &row.event;
        let n = st
            .get(Sql::InsertEvent)
            .and_then(|s| {
                s.execute(params![
                    e.id,
                    e.route,
                    row.received_at_ms,
                    e.order_key,
                    to_sql_ms(now)
                ])
            })
            .map_err(|err| query_error("enqueue", err))?;
        if n == 0 {
            return Ok(Enqueued::Duplicate);
        }
        let seq = self.conn.last_insert_rowid();
        st.get(Sql::InsertRequest)
            .and_then(|s| s.execute(params![seq, e.method, e.url, row.headers, e.body]))
            .map_err(|err| query_error("enqueue", err))?;
        self.recent.borrow_mut().keep(seq, e);
        Ok(Enqueued::New)
    }

    fn lease(
        &self,
        st: &mut Stmts<'_>,
        route: Option<&str>,
        max: usize,
        lease_for: Duration,
        now: u64,
    ) -> Result<Vec<Leased>, StoreError> {
        let select_err = |e| query_error("lease select", e);
        let rows = {
            let mut recent = self.recent.borrow_mut();
            let stmt = st.get(Sql::LeaseSelect).map_err(select_err)?;
            let mut rows = stmt
                .query(params![to_sql_ms(now), route])
                .map_err(select_err)?;
            let mut out = Vec::new();
            while out.len() < max {
                let Some(r) = rows.next().map_err(select_err)? else {
                    break;
                };
                let seq: i64 = r.get(0).map_err(select_err)?;
                let id = r
                    .get_ref(1)
                    .and_then(|v| Ok(v.as_str()?))
                    .map_err(select_err)?;
                let event = match recent.take(seq, id) {
                    Some(e) => Ok(e),
                    None => Err((
                        id.to_owned(),
                        r.get(3).map_err(select_err)?,
                        r.get(4).map_err(select_err)?,
                        r.get(5).map_err(select_err)?,
                    )),
                };
                out.push(LeaseRow {
                    seq,
                    attempts: r.get(2).map_err(select_err)?,
                    event,
                });
            }
            out
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let last_token: i64 = st
            .get(Sql::LeaseToken)
            .and_then(|s| s.query_row(params![rows.len() as i64], |r| r.get(0)))
            .map_err(|e| query_error("lease token", e))?;
        let first_token = last_token - rows.len() as i64 + 1;
        let lease_until_ms = deadline(now, lease_for);
        let mut out = Vec::with_capacity(rows.len());
        let mut hints = self.leased_rows.borrow_mut();
        if hints.len() + rows.len() > MAX_LEASE_HINTS {
            hints.clear();
        }
        for (i, row) in rows.into_iter().enumerate() {
            let token = first_token + i as i64;
            let event = match row.event {
                // The enqueue's own copy is gone once its caller has been answered.
                Ok(e) => Arc::unwrap_or_clone(e),
                Err(columns) => self.read_event(st, row.seq, columns)?,
            };
            st.get(Sql::LeaseUpdate)
                .and_then(|s| s.execute(params![row.seq, to_sql_ms(lease_until_ms), token]))
                .map_err(|e| query_error("lease update", e))?;
            let token = u64::try_from(token)
                .map_err(|_| StoreError::Corrupt(format!("lease token counter is at {token}")))?;
            hints.insert(token, row.seq);
            let attempts = u32::try_from(row.attempts).map_err(|_| {
                StoreError::Corrupt(format!("queued event has attempts = {}", row.attempts))
            })?;
            out.push(Leased {
                attempts: attempts.saturating_add(1),
                event,
                lease_until_ms,
                token: LeaseToken::new(token),
            });
        }
        Ok(out)
    }

    /// Event `seq` of the lease statement's row, its request read back from the file.
    fn read_event(
        &self,
        st: &mut Stmts<'_>,
        seq: i64,
        (id, route, received_at_ms, order_key): (String, String, i64, Option<String>),
    ) -> Result<QueuedEvent, StoreError> {
        let request = st
            .get(Sql::ReadRequest)
            .and_then(|s| {
                s.query_row(params![seq], |r| {
                    Ok(RawRequest {
                        method: r.get(0)?,
                        url: r.get(1)?,
                        headers: r.get(2)?,
                        body: r.get(3)?,
                    })
                })
                .optional()
            })
            .map_err(|e| query_error("lease select", e))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("queued event {id:?} has no stored request"))
            })?;
        Ok(QueuedEvent {
            received_at_ms: u64::try_from(received_at_ms).map_err(|_| {
                StoreError::Corrupt(format!(
                    "queued event has received_at_ms = {received_at_ms}"
                ))
            })?,
            headers: decode_headers(&request.headers)?,
            id,
            route,
            method: request.method,
            url: request.url,
            body: request.body,
            order_key,
        })
    }

    fn settle(&self, st: &mut Stmts<'_>, one: &SettleOne, now: u64) -> Result<Settled, StoreError> {
        let hint = self.leased_rows.borrow_mut().remove(&one.token.get());
        if let Some(seq) = hint {
            if self.settle_row(st, seq, one, now)? {
                return Ok(Settled::Applied);
            }
        }
        // Every settlement matches on the token, so a superseded lease changes nothing.
        let seq: Option<i64> = st
            .get(Sql::SeqById)
            .and_then(|s| s.query_row(params![one.id], |r| r.get(0)).optional())
            .map_err(|e| query_error("settle", e))?;
        Ok(match seq {
            Some(seq) if Some(seq) != hint && self.settle_row(st, seq, one, now)? => {
                Settled::Applied
            }
            _ => Settled::Stale,
        })
    }

    /// Settles row `seq` if it is still leased under `one`'s token; whether it was.
    fn settle_row(
        &self,
        st: &mut Stmts<'_>,
        seq: i64,
        one: &SettleOne,
        now: u64,
    ) -> Result<bool, StoreError> {
        let token = to_sql_ms(one.token.get());
        let now = to_sql_ms(now);
        let n = match &one.to {
            Settlement::Delivered => st
                .get(Sql::SettleDelivered)
                .and_then(|s| s.execute(params![seq, token, now])),
            Settlement::Retry { at_ms, error } => st
                .get(Sql::SettleRetry)
                .and_then(|s| s.execute(params![seq, token, to_sql_ms(*at_ms), error])),
            Settlement::Dead { error } => st
                .get(Sql::SettleDead)
                .and_then(|s| s.execute(params![seq, token, now, error])),
        }
        .map_err(|e| query_error("settle", e))?;
        if n == 0 {
            return Ok(false);
        }
        if one.to == Settlement::Delivered {
            self.drop_request(st, seq)?;
        }
        Ok(true)
    }

    fn drop_request(&self, st: &mut Stmts<'_>, seq: i64) -> Result<(), StoreError> {
        self.recent.borrow_mut().forget(seq);
        st.get(Sql::DropRequest)
            .and_then(|s| s.execute(params![seq]))
            .map(drop)
            .map_err(|e| query_error("drop request", e))
    }

    fn remove(&self, st: &mut Stmts<'_>, id: &str) -> Result<bool, StoreError> {
        let seq: Option<i64> = st
            .get(Sql::SeqById)
            .and_then(|s| s.query_row(params![id], |r| r.get(0)).optional())
            .map_err(|e| query_error("remove", e))?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        self.conn
            .prepare_cached("DELETE FROM queue_events WHERE seq = ?1")
            .and_then(|mut s| s.execute(params![seq]))
            .map_err(|e| query_error("remove", e))?;
        self.drop_request(st, seq).map(|()| true)
    }

    fn list(
        &self,
        filter: &ListFilter,
        limit: usize,
        now: u64,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let cutoff = filter
            .older_than
            .map(|d| to_sql_ms(received_cutoff(now, d)));
        self.conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM {ENTRY_FROM}
                 WHERE (?1 IS NULL OR e.route = ?1) AND (?2 IS NULL OR e.status = ?2)
                   AND (?3 IS NULL OR e.received_at_ms <= ?3)
                 ORDER BY e.seq LIMIT ?4"
            ))
            .and_then(|mut s| {
                s.query_map(
                    params![
                        filter.route,
                        filter.status.map(status_code),
                        cutoff,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    RawEntry::read,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| query_error("list", e))?
            .into_iter()
            .map(RawEntry::decode)
            .collect()
    }

    fn stats(&self, now: u64) -> Result<QueueStats, StoreError> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT route, status, count(*), min(received_at_ms)
                     FROM queue_events INDEXED BY queue_events_due
                     WHERE status IN (0, 1) GROUP BY route, status
                 UNION ALL
                 SELECT route, 3, count(*), 0 FROM queue_events INDEXED BY queue_events_dead
                     WHERE status = 3 GROUP BY route
                 ORDER BY 1",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| query_error("stats", e))?;
        let mut out: Vec<RouteStats> = Vec::new();
        for (route, status, count, oldest) in rows {
            if out.last().is_none_or(|r| r.route != route) {
                out.push(RouteStats {
                    route,
                    ..RouteStats::default()
                });
            }
            let Some(r) = out.last_mut() else {
                continue;
            };
            let count = u64::try_from(count).unwrap_or(0);
            match status_from_code(status)? {
                EventStatus::Pending => r.pending = count,
                EventStatus::Leased => r.leased = count,
                EventStatus::Dead => {
                    r.dead = count;
                    continue;
                }
                EventStatus::Delivered => continue,
            }
            let age = Duration::from_millis(now.saturating_sub(u64::try_from(oldest).unwrap_or(0)));
            r.oldest_undelivered_age = Some(r.oldest_undelivered_age.map_or(age, |a| a.max(age)));
        }
        Ok(QueueStats { routes: out })
    }

    /// Deletes up to `limit` delivered events finished at or before `cutoff_ms`, in chunks.
    fn purge(&self, cutoff_ms: u64, limit: i64) -> Result<u64, StoreError> {
        let mut total: u64 = 0;
        loop {
            let chunk = PURGE_CHUNK.min(limit.saturating_sub(i64::try_from(total).unwrap_or(0)));
            if chunk <= 0 {
                return Ok(total);
            }
            let n = self
                .conn
                .prepare_cached(
                    "DELETE FROM queue_events WHERE seq IN
                         (SELECT seq FROM queue_events
                          WHERE status = 2 AND finished_at_ms <= ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![to_sql_ms(cutoff_ms), chunk]))
                .map_err(|e| query_error("purge", e))?;
            total += n as u64;
            if (n as i64) < chunk {
                return Ok(total);
            }
        }
    }

    /// The periodic purge: one chunk per transaction so queued enqueues interleave with it.
    fn purge_periodically(&self) -> Result<(), StoreError> {
        loop {
            let cutoff = self
                .clock
                .now_ms()
                .saturating_sub(self.keep_delivered_ms.load(Ordering::Relaxed));
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| query_error("begin", e))?;
            let n = self
                .purge(cutoff, PURGE_CHUNK)
                .inspect_err(|_| group_commit::rollback(&self.conn))?;
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| query_error("commit", e))
                .inspect_err(|_| group_commit::rollback(&self.conn))?;
            if n < PURGE_CHUNK as u64 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod writer_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::group_commit::Work;
    use crate::queue_conformance::event;

    fn writer(path: &Path) -> Writer {
        let options = QueueOptions::new(Durability::Batch);
        let conn = open_wal(path, options.durability, options.busy_timeout).unwrap();
        migrate(&conn, path).unwrap();
        Writer {
            conn,
            clock: options.clock,
            keep_delivered_ms: Arc::new(AtomicU64::new(0)),
            purge_interval: options.purge_interval,
            leased_rows: RefCell::default(),
            recent: RefCell::default(),
        }
    }

    fn run(w: &Writer, op: Op) -> Reply {
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let reply = w.apply(&op).unwrap();
        w.conn.execute_batch("COMMIT").unwrap();
        reply
    }

    fn lease_one(w: &Writer) -> QueuedEvent {
        let op = Op::Lease {
            route: None,
            max: 10,
            lease_for: Duration::from_secs(30),
        };
        match run(w, op) {
            Reply::Leased(mut l) if l.len() == 1 => l.pop().unwrap().event,
            other => panic!("{other:?}"),
        }
    }

    /// An event enqueued moments before is leased from the writer's memory, as received.
    #[test]
    fn a_lease_hands_out_the_event_as_enqueued() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir.path().join("queue.db"));
        let e = crate::queue_conformance::awkward_event("a");
        run(&w, Op::Enqueue(Box::new(NewRow::of(e.clone()))));
        assert_eq!(w.recent.borrow().len(), 1);
        assert_eq!(lease_one(&w), e);
        assert_eq!(w.recent.borrow().len(), 0);
    }

    /// A request kept by a transaction that rolled back is forgotten: the file never held it,
    /// and its row number may go to another event (or the same event with another request).
    #[test]
    fn recent_requests_are_forgotten_on_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir.path().join("queue.db"));
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        w.apply(&Op::Enqueue(Box::new(NewRow::of(event("a", "voice")))))
            .unwrap();
        group_commit::rollback(&w.conn);
        w.rolled_back();
        assert_eq!(w.recent.borrow().len(), 0);

        // The same event id at the same row, stored with another body by this connection
        // (so nothing else tells the writer the row changed).
        let other = QueuedEvent {
            body: b"another body".to_vec(),
            ..event("a", "voice")
        };
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        w.conn
            .execute(
                "INSERT INTO queue_events (seq, id, route, received_at_ms, status, attempts,
                     next_attempt_at_ms, due_ms)
                 VALUES (1, 'a', 'voice', ?1, 0, 0, 0, 0)",
                params![to_sql_ms(other.received_at_ms)],
            )
            .unwrap();
        w.conn
            .execute(
                "INSERT INTO queue_requests (seq, method, url, headers, body)
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![
                    other.method,
                    other.url,
                    encode_headers(&other.headers),
                    other.body
                ],
            )
            .unwrap();
        w.conn.execute_batch("COMMIT").unwrap();
        assert_eq!(lease_one(&w), other);
    }

    /// Another connection's commit (another process on the file) makes the writer forget what
    /// it kept: a row it knew may now hold something else.
    #[test]
    fn recent_requests_are_forgotten_when_another_connection_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let w = writer(&path);
        run(&w, Op::Enqueue(Box::new(NewRow::of(event("a", "voice")))));
        assert_eq!(w.recent.borrow().len(), 1);
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute("UPDATE queue_requests SET body = x'00ff'", [])
            .unwrap();
        assert_eq!(lease_one(&w).body, [0x00, 0xff]);
    }

    /// The cache stays within its bounds however many events wait.
    #[test]
    fn recent_requests_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir.path().join("queue.db"));
        w.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in 0..RECENT_MAX_EVENTS + 10 {
            let e = event(&format!("e{i}"), "voice");
            w.apply(&Op::Enqueue(Box::new(NewRow::of(e)))).unwrap();
        }
        w.conn.execute_batch("COMMIT").unwrap();
        assert_eq!(w.recent.borrow().len(), RECENT_MAX_EVENTS);
        let mut big = event("big", "voice");
        big.body = vec![b'x'; RECENT_MAX_BYTES];
        let mut recent = RecentRequests::default();
        recent.keep(1, &Arc::new(big));
        assert_eq!(recent.len(), 0);
    }
}
