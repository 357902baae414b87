//! The embedded default backend: one SQLite file in WAL mode.
//!
//! SQLite calls block, so none runs on the tokio runtime. [`SqliteStore`] owns one connection on a
//! dedicated writer thread that drains a channel of operations and runs everything it has queued
//! in one `BEGIN IMMEDIATE` transaction (group commit): with [`Durability::Always`] one fsync then
//! covers the whole batch, which is what makes tens of thousands of durable claims per second
//! possible. The single writer also serialises claims, and `BEGIN IMMEDIATE` takes SQLite's write
//! lock before the read, so "first one wins" holds even against other processes sharing the file.
//!
//! Fail closed: a caller hears `Ok` only after the transaction holding its operation committed.
//! Any SQLite error (read-only file, disk full, corrupt file, vanished directory) reaches the
//! caller as [`StoreError::Unavailable`] or [`StoreError::Corrupt`], never as a false
//! [`Claim::Claimed`]. A failed batch is rolled back and replayed one operation per transaction,
//! so one failing operation does not fail its neighbours.
//!
//! Expiry is by deadlines stored in unix milliseconds, read against the injected
//! [`Clock`](crate::clock::Clock);
//! expired rows are ignored at once and deleted by a periodic purge on the writer thread.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use crate::clock::{deadline, SharedClock, SystemClock};
use crate::{group_commit, Claim, ReplayStore, StoreError, StoredResponse};

/// The schema this code writes, kept in `PRAGMA user_version`. A file with a newer version is
/// refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;

/// Most expired rows one purge step deletes, so a purge never stalls claims for long.
const PURGE_CHUNK: i64 = 2048;

/// When a claim's write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: a claim is on disk before the caller hears of it; survives power
    /// loss. Group commit amortises the fsync over every claim queued meanwhile.
    #[default]
    Always,
    /// `synchronous = NORMAL`: in WAL mode, committed claims survive a process crash but the
    /// last moments may be lost on power loss or an OS crash (a redelivery may then be forwarded
    /// twice).
    Batch,
}

/// Tuning for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// When writes reach the disk.
    pub durability: Durability,
    /// How long to wait for another connection's lock before failing.
    pub busy_timeout: Duration,
    /// How often the writer thread deletes expired rows.
    pub purge_interval: Duration,
    /// Where "now" comes from.
    pub clock: SharedClock,
}

impl SqliteOptions {
    /// Defaults with the given durability and the system clock.
    pub fn new(durability: Durability) -> Self {
        Self {
            durability,
            busy_timeout: Duration::from_secs(5),
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

/// Why the SQLite backend failed; boxed as the source of a [`StoreError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// Opening or preparing the database file failed.
    #[error("cannot open SQLite database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("SQLite {operation} failed")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the SQLite writer thread")]
    Spawn(#[source] std::io::Error),
    /// The writer thread is gone (the store is closing, or the thread died).
    #[error("the SQLite writer thread has stopped")]
    WriterStopped,
}

/// The number a counting operation answered; any other answer is a bug in the writer.
fn count(reply: Reply) -> Result<u64, StoreError> {
    match reply {
        Reply::Count(n) => Ok(n),
        other => Err(StoreError::Corrupt(format!(
            "writer answered a count with {other:?}"
        ))),
    }
}

pub(crate) fn query_error(operation: &'static str, source: rusqlite::Error) -> StoreError {
    if is_corruption(&source) {
        StoreError::Corrupt(format!("SQLite {operation} failed: {source}"))
    } else {
        StoreError::Unavailable(Box::new(SqliteError::Query { operation, source }))
    }
}

pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// SQLite-backed [`ReplayStore`]. Cheap to share behind an `Arc`; dropping it stops the writer
/// thread once the operations already queued are done.
#[derive(Debug)]
pub struct SqliteStore {
    tx: Option<mpsc::Sender<Request>>,
    /// Fires when the writer thread has closed the connection; taken by [`SqliteStore::close`].
    closed: Option<oneshot::Receiver<()>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options and the system
    /// clock. Blocks on file I/O: call it at start-up or inside `spawn_blocking`.
    ///
    /// `path` may be a `file:` URI (for example `file:/var/lib/tollgate/state.db?mode=ro`).
    /// A missing or unwritable directory, a file that is not a database, or a schema newer than
    /// this code is an error here rather than at the first claim.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::new(durability))
    }

    /// [`SqliteStore::open`] with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path, &options)?;
        let writer = Writer {
            conn,
            clock: options.clock,
            purge_interval: options.purge_interval,
        };
        let (tx, closed_rx) = group_commit::spawn("tollgate-sqlite", writer)?;
        Ok(Self {
            tx: Some(tx),
            closed: Some(closed_rx),
            path,
        })
    }

    /// The path or URI this store was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes every expired row now (the writer thread also does this periodically); returns how
    /// many rows were deleted.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.call(Op::Purge).await.and_then(count)
    }

    /// Number of rows held, live or expired-but-not-yet-purged.
    pub async fn len(&self) -> Result<u64, StoreError> {
        self.call(Op::Count).await.and_then(count)
    }

    /// Whether no row is held.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        self.len().await.map(|n| n == 0)
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`; a page is 4 KiB by default),
    /// so a flood of unique keys fills the cap rather than the disk. Once full, claims fail with
    /// [`StoreError::Unavailable`] until rows expire and are purged or the cap is raised. Returns
    /// the cap in force, which SQLite never sets below the current size.
    pub async fn set_max_page_count(&self, pages: u64) -> Result<u64, StoreError> {
        self.call(Op::MaxPageCount(pages)).await.and_then(count)
    }

    /// Finishes the queued operations, closes the database (checkpointing the WAL) and waits for
    /// the writer thread to end. Dropping the store does the same without waiting.
    pub async fn close(mut self) {
        self.tx = None;
        if let Some(closed) = self.closed.take() {
            // An error only means the thread ended without signalling; it has ended either way.
            let _ = closed.await;
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
}

#[async_trait::async_trait]
impl ReplayStore for SqliteStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        match self
            .call(Op::Claim {
                key: key.to_owned(),
                lease,
            })
            .await?
        {
            Reply::Claim(c) => Ok(c),
            other => Err(StoreError::Corrupt(format!(
                "writer answered a claim with {other:?}"
            ))),
        }
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.call(Op::Complete {
            key: key.to_owned(),
            response: response.clone(),
            ttl,
        })
        .await
        .map(drop)
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.call(Op::Release {
            key: key.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(Op::Ping).await.map(drop)
    }
}

/// An error while opening `path`: corrupt if the file is not a database, otherwise retryable.
pub(crate) fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    if is_corruption(&source) {
        StoreError::Corrupt(format!(
            "{} is not a usable database: {source}",
            path.display()
        ))
    } else {
        StoreError::Unavailable(Box::new(SqliteError::Open {
            path: path.to_path_buf(),
            source,
        }))
    }
}

fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let conn = open_wal(path, options.durability, options.busy_timeout)?;
    migrate(&conn).map_err(|e| match e {
        Migrate::Sqlite(source) => open_error(path, source),
        Migrate::TooNew(v) => StoreError::Corrupt(format!(
            "{} has schema version {v}; this tollgate reads up to {SCHEMA_VERSION}",
            path.display()
        )),
    })?;
    Ok(conn)
}

/// Opens `path` (a file or `file:` URI) in WAL mode with the synchronous level `durability`
/// asks for; shared by every SQLite-backed structure so they agree on what "durable" means.
pub(crate) fn open_wal(
    path: &Path,
    durability: Durability,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let open_err = |source| open_error(path, source);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(busy_timeout).map_err(open_err)?;
    // WAL lets readers of other processes (backups, `tollgate queue`) proceed during writes and
    // makes a commit one sequential append. Setting it also reads the file header, so a file that
    // is not a database fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(Box::new(SqliteError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL could not be enabled"
            )),
        })));
    }
    let sync = match durability {
        Durability::Always => "FULL",
        Durability::Batch => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
        .map_err(open_err)?;
    Ok(conn)
}

enum Migrate {
    Sqlite(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for Migrate {
    fn from(e: rusqlite::Error) -> Self {
        Migrate::Sqlite(e)
    }
}

fn migrate(conn: &Connection) -> Result<(), Migrate> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        SCHEMA_VERSION => Ok(()),
        0 => {
            // `state`: 0 = in flight, 1 = done. `until_ms` is the unix-ms deadline after which the
            // row counts as absent. WITHOUT ROWID: the key is the only lookup path.
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS claims (
                     key      TEXT PRIMARY KEY NOT NULL,
                     state    INTEGER NOT NULL,
                     until_ms INTEGER NOT NULL,
                     status   INTEGER,
                     headers  BLOB,
                     body     BLOB
                 ) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS claims_until ON claims (until_ms);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )
            .inspect_err(|_| {
                // Leave no half-open transaction behind on the connection we return an error for.
                let _ = conn.execute_batch("ROLLBACK");
            })?;
            Ok(())
        }
        newer => Err(Migrate::TooNew(newer)),
    }
}

/// SQLite integers are signed; a saturated deadline of "forever" is clamped into range.
pub(crate) fn to_sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[derive(Debug)]
enum Op {
    Claim {
        key: String,
        lease: Duration,
    },
    Complete {
        key: String,
        response: StoredResponse,
        ttl: Duration,
    },
    Release {
        key: String,
    },
    Ping,
    Purge,
    Count,
    MaxPageCount(u64),
}

#[derive(Debug)]
enum Reply {
    Claim(Claim),
    Unit,
    Count(u64),
}

type Request = group_commit::Request<Op, Reply>;

struct Writer {
    conn: Connection,
    clock: SharedClock,
    purge_interval: Duration,
}

impl group_commit::Work for Writer {
    type Op = Op;
    type Reply = Reply;

    fn conn(&self) -> &Connection {
        &self.conn
    }

    fn apply(&self, op: &Op) -> Result<Reply, StoreError> {
        Writer::apply(self, op)
    }

    fn housekeeping(&self) {
        // A failed purge is retried next interval; claims past their deadline are ignored meanwhile.
        let _ = self.purge_all();
    }

    fn housekeeping_interval(&self) -> Duration {
        self.purge_interval
    }
}

impl Writer {
    fn apply(&self, op: &Op) -> Result<Reply, StoreError> {
        let now = self.clock.now_ms();
        match op {
            Op::Claim { key, lease } => self.claim(key, now, *lease).map(Reply::Claim),
            Op::Complete { key, response, ttl } => {
                let headers = encode_headers(&response.headers);
                self.conn
                    .prepare_cached(
                        "INSERT INTO claims (key, state, until_ms, status, headers, body)
                         VALUES (?1, 1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (key) DO UPDATE SET state = 1, until_ms = excluded.until_ms,
                             status = excluded.status, headers = excluded.headers,
                             body = excluded.body",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            key,
                            to_sql_ms(deadline(now, *ttl)),
                            response.status,
                            headers,
                            response.body
                        ])
                    })
                    .map_err(|e| query_error("complete", e))?;
                Ok(Reply::Unit)
            }
            Op::Release { key } => {
                // Only an in-flight claim is dropped: a release must never erase a stored answer.
                self.conn
                    .prepare_cached("DELETE FROM claims WHERE key = ?1 AND state = 0")
                    .and_then(|mut s| s.execute(params![key]))
                    .map_err(|e| query_error("release", e))?;
                Ok(Reply::Unit)
            }
            Op::Ping => {
                self.conn
                    .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                    .map_err(|e| query_error("ping", e))?;
                Ok(Reply::Unit)
            }
            Op::Purge => self.purge(now, i64::MAX).map(Reply::Count),
            Op::Count => self
                .conn
                .query_row("SELECT count(*) FROM claims", [], |r| r.get::<_, i64>(0))
                .map(|n| Reply::Count(u64::try_from(n).unwrap_or(0)))
                .map_err(|e| query_error("count", e)),
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

    fn claim(&self, key: &str, now: u64, lease: Duration) -> Result<Claim, StoreError> {
        let now_sql = to_sql_ms(now);
        let live = self
            .conn
            .prepare_cached(
                "SELECT state, status, headers, body FROM claims WHERE key = ?1 AND until_ms > ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![key, now_sql], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(|e| query_error("claim lookup", e))?;
        match live {
            Some((0, ..)) => Ok(Claim::InFlight),
            Some((1, Some(status), Some(headers), Some(body))) => {
                let status = u16::try_from(status)
                    .map_err(|_| StoreError::Corrupt(format!("stored status {status}")))?;
                Ok(Claim::Done(StoredResponse {
                    status,
                    headers: decode_headers(&headers)?,
                    body,
                }))
            }
            Some((state, ..)) => Err(StoreError::Corrupt(format!(
                "row for a claim has state {state} or misses its response"
            ))),
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO claims (key, state, until_ms, status, headers, body)
                         VALUES (?1, 0, ?2, NULL, NULL, NULL)
                         ON CONFLICT (key) DO UPDATE SET state = 0, until_ms = excluded.until_ms,
                             status = NULL, headers = NULL, body = NULL",
                    )
                    .and_then(|mut s| s.execute(params![key, to_sql_ms(deadline(now, lease))]))
                    .map_err(|e| query_error("claim insert", e))?;
                Ok(Claim::Claimed)
            }
        }
    }

    /// Deletes up to `limit` expired rows (in chunks); returns how many went.
    fn purge(&self, now: u64, limit: i64) -> Result<u64, StoreError> {
        let mut total: u64 = 0;
        loop {
            let chunk = PURGE_CHUNK.min(limit.saturating_sub(i64::try_from(total).unwrap_or(0)));
            if chunk <= 0 {
                return Ok(total);
            }
            let n = self
                .conn
                .prepare_cached(
                    "DELETE FROM claims WHERE key IN
                         (SELECT key FROM claims WHERE until_ms <= ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![to_sql_ms(now), chunk]))
                .map_err(|e| query_error("purge", e))?;
            total += n as u64;
            if (n as i64) < chunk {
                return Ok(total);
            }
        }
    }

    /// The periodic purge: one chunk per transaction so queued claims interleave with it.
    fn purge_all(&self) -> Result<(), StoreError> {
        loop {
            let now = self.clock.now_ms();
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| query_error("begin", e))?;
            let n = self
                .purge(now, PURGE_CHUNK)
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

/// Headers as `count, (name_len, name, value_len, value)*` with big-endian u32 lengths: values are
/// raw bytes (not necessarily UTF-8) and order and duplicates must survive the round trip.
pub(crate) fn encode_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let size: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&len_u32(headers.len()).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&len_u32(name.len()).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len_u32(value.len()).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

fn len_u32(n: usize) -> u32 {
    // A response header over 4 GiB cannot reach here: the gateway caps response sizes far below.
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
        if bytes.len() < n {
            return Err(StoreError::Corrupt("stored headers are truncated".into()));
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    fn take_len(bytes: &mut &[u8]) -> Result<usize, StoreError> {
        let raw = take(bytes, 4)?;
        let arr = [raw[0], raw[1], raw[2], raw[3]];
        usize::try_from(u32::from_be_bytes(arr))
            .map_err(|_| StoreError::Corrupt("stored header length overflows".into()))
    }
    let count = take_len(&mut bytes)?;
    // Each header needs at least 8 bytes, so a corrupt count cannot make us over-allocate.
    let mut headers = Vec::with_capacity(count.min(bytes.len() / 8));
    for _ in 0..count {
        let n = take_len(&mut bytes)?;
        let name = std::str::from_utf8(take(&mut bytes, n)?)
            .map_err(|_| StoreError::Corrupt("stored header name is not UTF-8".into()))?
            .to_owned();
        let n = take_len(&mut bytes)?;
        headers.push((name, take(&mut bytes, n)?.to_vec()));
    }
    if !bytes.is_empty() {
        return Err(StoreError::Corrupt(
            "stored headers have trailing bytes".into(),
        ));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_round_trip_raw_bytes_order_and_duplicates() {
        let headers = vec![
            ("content-type".to_owned(), b"text/xml".to_vec()),
            ("x-raw".to_owned(), vec![0xff, 0x00, 0xfe, b'\n']),
            ("x-raw".to_owned(), Vec::new()),
            ("x-\u{e9}".to_owned(), b"second".to_vec()),
        ];
        assert_eq!(decode_headers(&encode_headers(&headers)).unwrap(), headers);
        assert_eq!(decode_headers(&encode_headers(&[])).unwrap(), vec![]);
    }

    #[test]
    fn truncated_or_padded_headers_are_corrupt_not_a_panic() {
        let enc = encode_headers(&[("a".to_owned(), b"bc".to_vec())]);
        for cut in 0..enc.len() {
            assert!(matches!(
                decode_headers(&enc[..cut]),
                Err(StoreError::Corrupt(_))
            ));
        }
        let mut padded = enc.clone();
        padded.push(0);
        assert!(matches!(
            decode_headers(&padded),
            Err(StoreError::Corrupt(_))
        ));
        // A huge count with no data must not allocate for it.
        assert!(matches!(
            decode_headers(&[0xff, 0xff, 0xff, 0xff]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
