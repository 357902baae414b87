//! The embedded default backend: the in-process [`Index`](crate::index) decides every claim, and
//! one SQLite file in WAL mode keeps the *completed* answers so a restart still replays them.
//!
//! Why claims never touch the disk: an in-flight claim only matters while its process lives.
//! After a crash nothing is in flight any more, and the provider's retry must be forwarded again,
//! which is exactly what a fresh index does. So [`ReplayStore::claim`] and
//! [`ReplayStore::release`] are a hash-map operation, and [`ReplayStore::complete`] appends one
//! small row (key hash, deadline, answer id) to `replay_done`; each distinct answer is written once to
//! `replay_answers`, keyed by its content hash. On open the live rows are loaded back into the index.
//!
//! Because the index is per process, a database file is owned by one process: [`SqliteStore`]
//! holds an exclusive `flock` on `<path>.lock` for its lifetime and refuses to open a file another
//! process holds (several instances share state through `backend = "redis"` instead).
//!
//! SQLite calls block, so none runs on the tokio runtime: completions go to the single writer
//! thread of [`group_commit`], which commits whatever has queued in one transaction. With
//! [`Durability::Always`] a completion is fsynced before `complete` returns; with
//! [`Durability::Batch`] it is committed (it survives a crash of tollgate, not of the machine).
//! WAL checkpoints run on a separate thread with its own connection, so the writer never stalls on
//! one.
//!
//! Fail closed: when SQLite refuses a completion (disk full, read-only file, I/O error), `complete`
//! returns the error, the index still remembers the answer (this process keeps replaying it), the
//! row is kept for a retry, and the store counts as broken: `claim` of a new key answers
//! [`StoreError::Unavailable`] and `ping` fails until a write (the kept rows, or a probe if there
//! are none) commits again. A store that cannot write at open (a read-only file) starts broken.
//!
//! Expiry is by deadlines in unix milliseconds, read against the injected
//! [`Clock`](crate::clock::Clock); the index sweeps as it is used, and the writer thread
//! periodically deletes expired rows and purges the index.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

use crate::clock::{deadline, SharedClock, SystemClock};
use crate::index::{Answer, Index, KeyHash, Seen};
use crate::{group_commit, Claim, ReplayStore, StoreError, StoredResponse};

/// The schema this code writes, kept in `PRAGMA user_version`. A file with a newer version is
/// refused rather than misread; version 1 (one row per claim, answer inline) is migrated.
pub const SCHEMA_VERSION: i64 = 2;

/// Most expired rows one purge step deletes, so a purge never stalls completions for long.
const PURGE_CHUNK: i64 = 2048;

/// An answer row's deadline runs this far past the latest completion that used it, so a
/// frequently used answer's row is rewritten once per this interval, not on every completion.
const ANSWER_SLACK_MS: u64 = 60_000;

/// Most answers the writer remembers as stored (see `Writer::stored`); ≈ 40 bytes each.
const STORED_ANSWERS_MAX: usize = 4096;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// A WAL longer than this many pages is restarted by the checkpointer even under steady writes.
const WAL_RESTART_FRAMES: i64 = 8192;

/// The WAL is truncated back to this size when it restarts after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// How often a refused lock is tried again while waiting for a previous owner to exit.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// When a completion is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: a completion is on disk before the caller hears of it; survives
    /// power loss. Group commit amortises the fsync over every completion queued meanwhile.
    #[default]
    Always,
    /// `synchronous = NORMAL`: in WAL mode, committed completions survive a process crash but the
    /// last moments may be lost on power loss or an OS crash (a redelivery may then be forwarded
    /// twice).
    Batch,
}

/// Tuning for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// When writes reach the disk.
    pub durability: Durability,
    /// How long to wait for another connection's lock before failing; also how long opening
    /// waits for a previous owner of the file to let go of it.
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
    /// The lock file next to the database could not be created or locked.
    #[error("cannot lock {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another process owns the database.
    #[error(
        "{database} is in use by another tollgate process ({holder}, holding {lock}); \
         a SQLite state file belongs to one process: run several instances with \
         [state] backend = \"redis\""
    )]
    Locked {
        /// The database.
        database: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// Who holds it, as far as the lock file says.
        holder: String,
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
    /// The last write failed and none has succeeded since: new claims are refused, because their
    /// answers could not be kept.
    #[error("the SQLite database refused the last write; new claims wait until a write succeeds")]
    Broken,
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
        Reply::Unit => Err(StoreError::Corrupt(
            "writer answered a count with nothing".into(),
        )),
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

/// One completion as written to `replay_done`.
#[derive(Debug, Clone)]
struct Row {
    key: KeyHash,
    until_ms: u64,
    answer: Arc<Answer>,
}

/// What the store and its writer thread share.
#[derive(Debug, Default)]
struct Shared {
    index: Index,
    /// The last write failed and none has succeeded since.
    broken: AtomicBool,
    /// A recovery probe is on its way to the writer.
    probing: AtomicBool,
    /// Completions SQLite refused, written again by the next probe.
    pending: Mutex<Vec<Row>>,
}

impl Shared {
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Keeps a refused completion for the next probe and refuses new claims until then.
    fn defer(&self, row: Row) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.push(row);
        self.broken.store(true, Ordering::Release);
    }
}

/// Clears the probing flag however the probe ends (a cancelled caller included).
struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// SQLite-backed [`ReplayStore`]. Cheap to share behind an `Arc`; dropping it stops the writer
/// thread once the operations already queued are done.
#[derive(Debug)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    clock: SharedClock,
    durability: Durability,
    tx: Option<mpsc::Sender<Request>>,
    /// Fires when the writer thread has closed the connection; taken by [`SqliteStore::close`].
    closed: Option<oneshot::Receiver<()>>,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: Option<mpsc::Sender<()>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default options and the system
    /// clock. Blocks on file I/O: call it at start-up or inside `spawn_blocking`.
    ///
    /// `path` may be a `file:` URI (for example `file:/var/lib/tollgate/state.db?mode=ro`).
    /// A missing or unwritable directory, a file that is not a database, a schema newer than
    /// this code, or a file another process owns is an error here rather than at the first claim.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::new(durability))
    }

    /// [`SqliteStore::open`] with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = lock_database(&path, options.busy_timeout)?;
        let now = options.clock.now_ms();
        let conn = open_connection(&path, &options, now)?;
        let shared = Arc::new(Shared::default());
        load(&conn, &shared.index, now).map_err(|e| match e {
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
            other => other,
        })?;
        // A file we cannot write (read-only, full) still opens, so `/readyz` can say why; it
        // starts broken, and claims fail closed until a write succeeds.
        if probe(&conn, now).is_err() {
            shared.broken.store(true, Ordering::Release);
        }
        let checkpointer = spawn_checkpointer(&path, &options);
        // Without the checkpointer thread the writer checkpoints as SQLite normally does.
        let autocheckpoint = if checkpointer.is_some() { 0 } else { 1000 };
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {autocheckpoint};
             PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))
        .map_err(|e| open_error(&path, e))?;
        let writer = Writer {
            conn,
            shared: Arc::clone(&shared),
            clock: options.clock.clone(),
            purge_interval: options.purge_interval,
            stored: RefCell::default(),
            _lock: lock,
        };
        let (tx, closed_rx) = group_commit::spawn("tollgate-sqlite", writer)?;
        Ok(Self {
            shared,
            clock: options.clock,
            durability: options.durability,
            tx: Some(tx),
            closed: Some(closed_rx),
            _checkpointer: checkpointer,
            path,
        })
    }

    /// The path or URI this store was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops every expired entry from memory and every expired row from disk now (both also
    /// happen as the store is used and periodically); returns how many entries were dropped.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let dropped = self.shared.index.purge(self.clock.now_ms());
        self.call(Op::Purge).await.and_then(count)?;
        Ok(dropped as u64)
    }

    /// Number of keys held in memory (in flight or done), live or expired-but-not-yet-purged.
    pub async fn len(&self) -> Result<u64, StoreError> {
        Ok(self.shared.index.len() as u64)
    }

    /// Whether no key is held.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        self.len().await.map(|n| n == 0)
    }

    /// Number of completion rows on disk, live or expired-but-not-yet-purged.
    pub async fn persisted_len(&self) -> Result<u64, StoreError> {
        self.call(Op::Count).await.and_then(count)
    }

    /// Number of distinct answers held in memory (identical answers are stored once).
    pub fn distinct_answers(&self) -> usize {
        self.shared.index.answers()
    }

    /// Caps the database at `pages` pages (`PRAGMA max_page_count`; a page is 4 KiB by default),
    /// so a flood of distinct answers fills the cap rather than the disk. Once full, completions
    /// fail with [`StoreError::Unavailable`] (and new claims with them) until rows expire and are
    /// purged or the cap is raised. Returns the cap in force, which SQLite never sets below the
    /// current size.
    pub async fn set_max_page_count(&self, pages: u64) -> Result<u64, StoreError> {
        self.call(Op::MaxPageCount(pages)).await.and_then(count)
    }

    /// Finishes the queued operations, closes the database (checkpointing the WAL), releases the
    /// file's lock and waits for the writer thread to end. Dropping the store does the same
    /// without waiting.
    pub async fn close(mut self) {
        self.tx = None;
        self._checkpointer = None;
        if let Some(closed) = self.closed.take() {
            // An error only means the thread ended without signalling; it has ended either way.
            let _ = closed.await;
        }
    }

    /// The index learns the answer first and keeps it whatever the disk says: this process must
    /// replay it either way; only its survival of a restart depends on writing the returned row.
    fn remember(&self, key: &str, response: &StoredResponse, ttl: Duration) -> Row {
        let now = self.clock.now_ms();
        let row = Row {
            key: KeyHash::of(key),
            until_ms: deadline(now, ttl),
            answer: self.shared.index.intern_response(response),
        };
        self.shared
            .index
            .complete(&row.key, now, row.until_ms, Arc::clone(&row.answer));
        row
    }

    async fn call(&self, op: Op) -> Result<Reply, StoreError> {
        self.send(op)?.await.map_err(|_| writer_stopped())?
    }

    /// Queues `op` for the writer; its answer arrives on the receiver. Dropping the receiver
    /// makes the op fire-and-forget (see `group_commit`).
    fn send(&self, op: Op) -> Result<oneshot::Receiver<Result<Reply, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(Request { op, reply })
            .map_err(|_| writer_stopped())?;
        Ok(rx)
    }

    /// While broken, writes the refused completions again (or a probe row if there are none);
    /// one probe at a time, so a broken disk sees one write attempt per writer round trip rather
    /// than one per request.
    async fn recover(&self) {
        if self.shared.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let _guard = ProbeGuard(&self.shared.probing);
        let rows = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let written = rows.len();
        if self.call(Op::Probe(rows)).await.is_ok() {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Rows refused while the probe ran came after the ones it wrote; they stay.
            let written = written.min(pending.len());
            pending.drain(..written);
            if pending.is_empty() {
                self.shared.broken.store(false, Ordering::Release);
            }
        }
    }
}

#[async_trait::async_trait]
impl ReplayStore for SqliteStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let key = KeyHash::of(key);
        if self.shared.is_broken() {
            self.recover().await;
        }
        let may_claim = !self.shared.is_broken();
        match self
            .shared
            .index
            .claim(&key, self.clock.now_ms(), lease, may_claim)
        {
            Seen::Claimed => Ok(Claim::Claimed),
            Seen::InFlight => Ok(Claim::InFlight),
            Seen::Done(answer) => Ok(Claim::Done(answer.response.clone())),
            Seen::Free => Err(StoreError::Unavailable(Box::new(SqliteError::Broken))),
        }
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let row = self.remember(key, response, ttl);
        match self.call(Op::Complete(row.clone())).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.shared.defer(row);
                Err(e)
            }
        }
    }

    /// With [`Durability::Batch`] the caller does not wait for the commit: the index has the
    /// answer at once (so this process's duplicates are answered from it), and the row follows
    /// in the writer's next group commit. A refused write is kept for the recovery probe and
    /// makes the store refuse new claims, exactly as when `complete` fails. With
    /// [`Durability::Always`] this is `complete`.
    async fn complete_soon(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if self.durability == Durability::Always {
            return self.complete(key, response, ttl).await;
        }
        let row = self.remember(key, response, ttl);
        // The receiver is dropped at once: the writer sees nobody waits (and may linger to
        // group more of these), and hands a refused row to `Writer::unanswered`.
        match self.send(Op::Complete(row.clone())) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.shared.defer(row);
                Err(e)
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.shared.index.release(&KeyHash::of(key));
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.shared.is_broken() {
            self.recover().await;
            if self.shared.is_broken() {
                return Err(StoreError::Unavailable(Box::new(SqliteError::Broken)));
            }
        }
        self.call(Op::Ping).await.map(drop)
    }
}

/// `<database>.lock` for a path or `file:` URI; `None` for an in-memory database.
fn lock_path(path: &Path) -> Option<PathBuf> {
    let text = path.to_string_lossy();
    let file = match text.strip_prefix("file:") {
        Some(uri) => uri.split(['?', '#']).next().unwrap_or(""),
        None => &text,
    };
    if file.is_empty() || file == ":memory:" {
        return None;
    }
    Some(PathBuf::from(format!("{file}.lock")))
}

/// Takes the exclusive lock that makes this process the database's only user, waiting up to
/// `wait` for a previous owner (a process shutting down) to release it.
fn lock_database(path: &Path, wait: Duration) -> Result<Option<File>, StoreError> {
    let Some(lock) = lock_path(path) else {
        return Ok(None);
    };
    let lock_err = |source| {
        StoreError::Unavailable(Box::new(SqliteError::Lock {
            path: lock.clone(),
            source,
        }))
    };
    // A read-only database (a `mode=ro` URI, a read-only mount) may still have a lock file we
    // can only read; flock works on a read-only descriptor.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .or_else(|e| File::open(&lock).map_err(|_| e))
        .map_err(lock_err)?;
    let give_up = Instant::now() + wait;
    loop {
        match try_flock(&file) {
            Ok(true) => break,
            Ok(false) if Instant::now() < give_up => std::thread::sleep(LOCK_RETRY),
            Ok(false) => {
                let holder = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"));
                return Err(StoreError::Unavailable(Box::new(SqliteError::Locked {
                    database: path.to_path_buf(),
                    lock,
                    holder,
                })));
            }
            Err(e) => return Err(lock_err(e)),
        }
    }
    // Only to name the owner in the error another process gets; failing to write it is harmless.
    let _ = write_pid(&file);
    Ok(Some(file))
}

#[cfg(unix)]
fn try_flock(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn try_flock(_file: &File) -> std::io::Result<bool> {
    // No advisory lock here; one process per file is then the operator's to ensure.
    Ok(true)
}

fn write_pid(mut file: &File) -> std::io::Result<()> {
    use std::io::Write;
    file.set_len(0)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
}

/// A write transaction that changes one `replay_meta` row: succeeds only if the file takes writes now.
fn probe(conn: &Connection, now: u64) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| query_error("begin", e))?;
    let result = write_probe(conn, now).and_then(|()| {
        conn.execute_batch("COMMIT")
            .map_err(|e| query_error("commit", e))
    });
    if result.is_err() {
        group_commit::rollback(conn);
    }
    result
}

fn write_probe(conn: &Connection, now: u64) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO replay_meta (k, v) VALUES ('last_write_ms', ?1)")
        .and_then(|mut s| s.execute(params![to_sql_ms(now)]))
        .map_err(|e| query_error("probe", e))
        .map(drop)
}

/// Loads every live completion into `index`.
fn load(conn: &Connection, index: &Index, now: u64) -> Result<(), StoreError> {
    let now_sql = to_sql_ms(now);
    let mut answers = std::collections::HashMap::new();
    let mut stmt = conn
        .prepare("SELECT id, status, headers, body FROM replay_answers WHERE until_ms > ?1")
        .map_err(|e| query_error("load answers", e))?;
    let mut rows = stmt
        .query(params![now_sql])
        .map_err(|e| query_error("load answers", e))?;
    while let Some(r) = rows.next().map_err(|e| query_error("load answers", e))? {
        let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        };
        let (id, status, headers, body) = read(r).map_err(|e| query_error("load answers", e))?;
        let id = key_hash(&id, "answer id")?;
        let status = u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("stored status {status}")))?;
        let response = StoredResponse {
            status,
            headers: decode_headers(&headers)?,
            body,
        };
        answers.insert(id.0, index.intern(Answer::with_encoded(response, headers)));
    }
    let mut stmt = conn
        .prepare("SELECT key, until_ms, answer FROM replay_done WHERE until_ms > ?1 ORDER BY rowid")
        .map_err(|e| query_error("load completions", e))?;
    let mut rows = stmt
        .query(params![now_sql])
        .map_err(|e| query_error("load completions", e))?;
    while let Some(r) = rows
        .next()
        .map_err(|e| query_error("load completions", e))?
    {
        let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        };
        let (key, until_ms, answer) = read(r).map_err(|e| query_error("load completions", e))?;
        let key = key_hash(&key, "key hash")?;
        let answer = answers
            .get(&key_hash(&answer, "answer id")?.0)
            .ok_or_else(|| {
                StoreError::Corrupt("a completion refers to an answer that is not stored".into())
            })?;
        // Rows come oldest first, so a key completed twice ends with its latest answer.
        index.complete(
            &key,
            now,
            u64::try_from(until_ms).unwrap_or(0),
            Arc::clone(answer),
        );
    }
    Ok(())
}

fn key_hash(bytes: &[u8], what: &str) -> Result<KeyHash, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(KeyHash)
        .map_err(|_| StoreError::Corrupt(format!("a stored {what} has {} bytes", bytes.len())))
}

/// A WAL checkpointer on its own connection and thread, so checkpoint I/O never runs inside the
/// writer's transactions; `None` if it cannot open (the writer then checkpoints by itself).
fn spawn_checkpointer(path: &Path, options: &SqliteOptions) -> Option<mpsc::Sender<()>> {
    let conn = open_wal(path, options.durability, options.busy_timeout).ok()?;
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("tollgate-sqlite-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                // PASSIVE never waits for the writer and never blocks it; a failure (a read-only
                // file) is retried next interval and changes nothing meanwhile.
                let wal_frames = conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                    .unwrap_or(0);
                // The WAL only starts over when a write finds it fully copied, which steady
                // traffic may never allow; past a size, RESTART holds the writer back for the
                // last few frames so the next write starts it over (and `journal_size_limit`
                // trims the file).
                if wal_frames > WAL_RESTART_FRAMES {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
                }
            }
        })
        .ok()?;
    Some(stop)
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

fn open_connection(
    path: &Path,
    options: &SqliteOptions,
    now: u64,
) -> Result<Connection, StoreError> {
    let conn = open_wal(path, options.durability, options.busy_timeout)?;
    migrate(&conn, now).map_err(|e| match e {
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

/// Schema 2. `replay_answers`: each distinct answer once, by content hash; its `until_ms` is at least
/// that of every completion using it. `replay_done`: one appended row per completion (a rowid table, so an
/// insert is an append rather than a B-tree insert at a random key); a key completed twice has two
/// rows, the later one wins on load. Both are purged by deadline through an index whose inserts
/// also land at its end (deadlines grow with time).
const SCHEMA_2: &str = "
    CREATE TABLE IF NOT EXISTS replay_answers (
        id       BLOB PRIMARY KEY NOT NULL,
        until_ms INTEGER NOT NULL,
        status   INTEGER NOT NULL,
        headers  BLOB NOT NULL,
        body     BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS replay_answers_until ON replay_answers (until_ms);
    CREATE TABLE IF NOT EXISTS replay_done (
        key      BLOB NOT NULL,
        until_ms INTEGER NOT NULL,
        answer   BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS replay_done_until ON replay_done (until_ms);
    CREATE TABLE IF NOT EXISTS replay_meta (k TEXT PRIMARY KEY NOT NULL, v) WITHOUT ROWID;
    PRAGMA user_version = 2;";

fn migrate(conn: &Connection, now: u64) -> Result<(), Migrate> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(Migrate::TooNew(version));
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        conn.execute_batch(SCHEMA_2)?;
        if version == 1 {
            let (kept, dropped) = migrate_v1(conn, now)?;
            tracing::warn!(
                kept,
                dropped,
                "replay database upgraded to schema 2: completed answers still in their dedupe \
                 window were kept, in-flight claims and unreadable rows were dropped"
            );
        }
        conn.execute_batch("COMMIT")
    })();
    if result.is_err() {
        // Leave no half-open transaction behind on the connection we return an error for.
        group_commit::rollback(conn);
    }
    Ok(result?)
}

/// Moves schema 1's live completed rows (`claims`, one row per key with the answer inline) into
/// schema 2 and drops `claims`; returns how many completions were kept and dropped.
fn migrate_v1(conn: &Connection, now: u64) -> rusqlite::Result<(u64, u64)> {
    let mut old = conn.prepare(
        "SELECT key, until_ms, status, headers, body FROM claims
         WHERE state = 1 AND until_ms > ?1",
    )?;
    let mut rows = old.query(params![to_sql_ms(now)])?;
    let (mut kept, mut dropped) = (0, 0);
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        let until_ms: i64 = r.get(1)?;
        let decoded = (
            r.get::<_, Option<i64>>(2)?
                .and_then(|s| u16::try_from(s).ok()),
            r.get::<_, Option<Vec<u8>>>(3)?
                .and_then(|h| decode_headers(&h).ok()),
            r.get::<_, Option<Vec<u8>>>(4)?,
        );
        let (Some(status), Some(headers), Some(body)) = decoded else {
            dropped += 1;
            continue;
        };
        let answer = Answer::new(&StoredResponse {
            status,
            headers,
            body,
        });
        write_row(
            conn,
            &KeyHash::of(&key),
            u64::try_from(until_ms).unwrap_or(0),
            &answer,
        )?;
        kept += 1;
    }
    drop(rows);
    drop(old);
    conn.execute_batch("DROP TABLE claims")?;
    Ok((kept, dropped))
}

/// Appends one completion; writes its answer unless it is already stored for long enough.
fn write_row(
    conn: &Connection,
    key: &KeyHash,
    until_ms: u64,
    answer: &Answer,
) -> rusqlite::Result<()> {
    write_answer(conn, until_ms, answer)?;
    write_done(conn, key, until_ms, answer)
}

/// Stores `answer` until at least `until_ms`: inserts it, or pushes its deadline to `until_ms`
/// plus [`ANSWER_SLACK_MS`] if it was earlier than `until_ms` (so a steady stream of completions
/// rewrites it once a slack, not every time). Returns whether the row was written.
fn write_answer(conn: &Connection, until_ms: u64, answer: &Answer) -> rusqlite::Result<bool> {
    let answer_until = to_sql_ms(until_ms.saturating_add(ANSWER_SLACK_MS));
    let changed = conn
        .prepare_cached(
            "INSERT INTO replay_answers (id, until_ms, status, headers, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET until_ms = excluded.until_ms
                 WHERE replay_answers.until_ms < excluded.until_ms - ?6",
        )?
        .execute(params![
            &answer.id.0[..],
            answer_until,
            answer.response.status,
            answer.encoded_headers,
            answer.response.body,
            to_sql_ms(ANSWER_SLACK_MS),
        ])?;
    Ok(changed > 0)
}

const INSERT_DONE: &str = "INSERT INTO replay_done (key, until_ms, answer) VALUES (?1, ?2, ?3)";

/// Appends the completion row itself.
fn write_done(
    conn: &Connection,
    key: &KeyHash,
    until_ms: u64,
    answer: &Answer,
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(INSERT_DONE)?;
    write_done_with(&mut insert, key, until_ms, answer)
}

/// [`write_done`] with the statement already prepared.
fn write_done_with(
    insert: &mut rusqlite::Statement<'_>,
    key: &KeyHash,
    until_ms: u64,
    answer: &Answer,
) -> rusqlite::Result<()> {
    insert.execute(params![&key.0[..], to_sql_ms(until_ms), &answer.id.0[..]])?;
    Ok(())
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable(Box::new(SqliteError::WriterStopped))
}

/// SQLite integers are signed; a saturated deadline of "forever" is clamped into range.
pub(crate) fn to_sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[derive(Debug)]
enum Op {
    Complete(Row),
    /// Writes the refused completions again, or just the probe row.
    Probe(Vec<Row>),
    Ping,
    Purge,
    Count,
    MaxPageCount(u64),
}

#[derive(Debug)]
enum Reply {
    Unit,
    Count(u64),
}

type Request = group_commit::Request<Op, Reply>;

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    clock: SharedClock,
    purge_interval: Duration,
    /// Deadlines this writer knows its answers are stored with (at least), so a completion whose
    /// answer is already stored for long enough costs one statement, not two. Forgotten when a
    /// transaction rolls back (what it wrote may be gone) and when it grows past
    /// [`STORED_ANSWERS_MAX`] (an app whose every answer differs gains nothing from it).
    stored: RefCell<HashMap<KeyHash, u64>>,
    /// Released only after `conn` is closed (fields drop in order), so a new owner never sees the
    /// file while this one may still write.
    _lock: Option<File>,
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

    /// Completions share one prepared insert a batch: a lookup in rusqlite's statement cache
    /// (hashing the SQL text) cost about as much as a tenth of the insert itself.
    fn apply_all<'a>(&self, ops: impl Iterator<Item = &'a Op>) -> Result<Vec<Reply>, StoreError> {
        let mut insert = None;
        ops.map(|op| match op {
            Op::Complete(row) => {
                let insert = match &mut insert {
                    Some(s) => s,
                    None => insert.insert(
                        self.conn
                            .prepare_cached(INSERT_DONE)
                            .map_err(|e| query_error("complete", e))?,
                    ),
                };
                self.complete(row, insert)
                    .map_err(|e| query_error("complete", e))?;
                Ok(Reply::Unit)
            }
            other => Writer::apply(self, other),
        })
        .collect()
    }

    fn housekeeping(&self) {
        let now = self.clock.now_ms();
        self.stored.borrow_mut().retain(|_, until| *until > now);
        self.shared.index.purge(now);
        // A failed purge is retried next interval; rows past their deadline are never loaded.
        let _ = self.purge_all();
    }

    fn housekeeping_interval(&self) -> Duration {
        self.purge_interval
    }

    fn rolled_back(&self) {
        self.stored.borrow_mut().clear();
    }

    /// A completion nobody waits for (`complete_soon`, or a caller that gave up) was refused:
    /// keep it for the recovery probe and refuse new claims until a write succeeds.
    fn unanswered(&self, op: Op, error: &StoreError) {
        if let Op::Complete(row) = op {
            tracing::error!(%error, "replay store refused a completion; new claims are refused until a write succeeds");
            self.shared.defer(row);
        }
    }
}

impl Writer {
    /// [`write_row`], skipping the answer's statement when it is known to be stored long enough.
    fn complete(&self, row: &Row, insert: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
        let id = row.answer.id;
        let known = self.stored.borrow().get(&id).copied();
        if known.is_none_or(|until| until < row.until_ms) {
            let until = if write_answer(&self.conn, row.until_ms, &row.answer)? {
                row.until_ms.saturating_add(ANSWER_SLACK_MS)
            } else {
                // Already stored long enough by an earlier process: learn for how long.
                let stored: i64 = self
                    .conn
                    .prepare_cached("SELECT until_ms FROM replay_answers WHERE id = ?1")?
                    .query_row([&id.0[..]], |r| r.get(0))?;
                u64::try_from(stored).unwrap_or(0)
            };
            let mut known = self.stored.borrow_mut();
            if known.len() >= STORED_ANSWERS_MAX {
                known.clear();
            }
            known.insert(id, until);
        }
        write_done_with(insert, &row.key, row.until_ms, &row.answer)
    }

    fn apply(&self, op: &Op) -> Result<Reply, StoreError> {
        let now = self.clock.now_ms();
        match op {
            Op::Complete(row) => {
                self.conn
                    .prepare_cached(INSERT_DONE)
                    .and_then(|mut insert| self.complete(row, &mut insert))
                    .map_err(|e| query_error("complete", e))?;
                Ok(Reply::Unit)
            }
            Op::Probe(rows) => {
                for row in rows {
                    write_row(&self.conn, &row.key, row.until_ms, &row.answer)
                        .map_err(|e| query_error("complete", e))?;
                }
                write_probe(&self.conn, now)?;
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
                .query_row("SELECT count(*) FROM replay_done", [], |r| {
                    r.get::<_, i64>(0)
                })
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

    /// Deletes up to `limit` expired completion rows (in chunks) and the expired answers; returns
    /// how many completion rows went.
    fn purge(&self, now: u64, limit: i64) -> Result<u64, StoreError> {
        let mut total: u64 = 0;
        loop {
            let chunk = PURGE_CHUNK.min(limit.saturating_sub(i64::try_from(total).unwrap_or(0)));
            if chunk <= 0 {
                break;
            }
            let n = self
                .conn
                .prepare_cached(
                    "DELETE FROM replay_done WHERE rowid IN
                         (SELECT rowid FROM replay_done WHERE until_ms <= ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![to_sql_ms(now), chunk]))
                .map_err(|e| query_error("purge", e))?;
            total += n as u64;
            if (n as i64) < chunk {
                break;
            }
        }
        // An answer's deadline covers every completion using it, so none still refers to it.
        self.conn
            .prepare_cached(
                "DELETE FROM replay_answers WHERE id IN
                     (SELECT id FROM replay_answers WHERE until_ms <= ?1 LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![to_sql_ms(now), PURGE_CHUNK]))
            .map_err(|e| query_error("purge answers", e))?;
        Ok(total)
    }

    /// The periodic purge: one chunk per transaction so queued completions interleave with it.
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

#[cfg(test)]
mod writer_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::group_commit::Work;

    fn answers(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM replay_answers", [], |r| r.get(0))
            .unwrap()
    }

    /// What the writer learns about stored answers inside a transaction is forgotten when that
    /// transaction rolls back; otherwise a completion retried alone would skip its answer.
    #[test]
    fn stored_answers_are_forgotten_on_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let options = SqliteOptions::new(Durability::Batch);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            conn: open_connection(&path, &options, 0).unwrap(),
            shared: Arc::clone(&shared),
            clock: options.clock.clone(),
            purge_interval: options.purge_interval,
            stored: RefCell::default(),
            _lock: None,
        };
        let row = |key: &str, until_ms| Row {
            key: KeyHash::of(key),
            until_ms,
            answer: shared.index.intern_response(&StoredResponse {
                status: 200,
                headers: vec![],
                body: b"<Response/>".to_vec(),
            }),
        };
        let conn = writer.conn();

        conn.execute_batch("BEGIN").unwrap();
        Writer::apply(&writer, &Op::Complete(row("a", 10_000))).unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
        writer.rolled_back();
        conn.execute_batch("BEGIN").unwrap();
        // Through the batch path, as the writer thread runs it.
        let ops = [Op::Complete(row("b", 10_000))];
        group_commit::Work::apply_all(&writer, ops.iter()).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(
            answers(conn),
            1,
            "the answer is written again after the rollback"
        );

        // Known and stored long enough: the second completion adds only its own row.
        conn.execute_batch("DELETE FROM replay_answers").unwrap();
        conn.execute_batch("BEGIN").unwrap();
        Writer::apply(&writer, &Op::Complete(row("c", 10_000))).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(answers(conn), 0, "a known answer costs no statement");
        // Needed past what is known: written again.
        Writer::apply(
            &writer,
            &Op::Complete(row("d", 10_000 + ANSWER_SLACK_MS + 1)),
        )
        .unwrap();
        assert_eq!(answers(conn), 1);
    }
}
