//! The single writer thread behind both SQLite backends (the replay store and the queue). It
//! groups whatever operations queue up into one `BEGIN IMMEDIATE` transaction, so many callers
//! share one commit and one fsync, and answers each caller only after that commit. If a batch
//! fails it is rolled back and replayed one operation per transaction, so every caller gets its
//! own operation's outcome (on a nearly full disk a release may succeed where a claim fails).
//!
//! An operation whose sender dropped its receiver is fire-and-forget (the replay store's
//! completions with `fsync = "batch"`): its failure goes to [`Work::unanswered`], and after a batch
//! of only such operations the writer lingers [`LINGER`] before the next, so that a steady stream
//! of them costs one wake-up and one commit per linger rather than per operation.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::sqlite::{query_error, SqliteError};
use crate::StoreError;

/// Most operations one transaction takes; bounds the latency a batch adds to its first caller.
const MAX_BATCH: usize = 1024;

/// How long the writer waits after a batch nobody waited on. Each wake-up of the writer thread is
/// a futex call and a context switch on the sender's CPU, and each commit a WAL append and two
/// file locks; at thousands of completions a second those cost more than the inserts. A caller
/// that does wait (a ping, a completion with `fsync = "always"`) may wait this much longer.
const LINGER: Duration = Duration::from_millis(1);

/// What one backend does inside the writer's transactions.
pub(crate) trait Work: Send + 'static {
    /// An operation a caller sends.
    type Op: Send + 'static;
    /// Its answer.
    type Reply: Send + 'static;

    /// The connection the writer owns.
    fn conn(&self) -> &Connection;

    /// Runs one operation inside the current transaction.
    fn apply(&self, op: &Self::Op) -> Result<Self::Reply, StoreError>;

    /// Runs every operation of a batch, in order, inside the current transaction. A work that
    /// can share something across a batch (prepared statements) overrides it.
    fn apply_all<'a>(
        &self,
        ops: impl Iterator<Item = &'a Self::Op>,
    ) -> Result<Vec<Self::Reply>, StoreError>
    where
        Self::Op: 'a,
    {
        ops.map(|op| self.apply(op)).collect()
    }

    /// Periodic clean-up between batches; a failure is simply retried next interval.
    fn housekeeping(&self);

    /// How often [`Work::housekeeping`] runs.
    fn housekeeping_interval(&self) -> Duration;

    /// The open transaction was rolled back: forget anything learned inside it.
    fn rolled_back(&self) {}

    /// An operation failed and its caller no longer listens (fire-and-forget, or gave up); the
    /// work may keep it for a later attempt.
    fn unanswered(&self, _op: Self::Op, _error: &StoreError) {}
}

/// An operation and where its answer goes.
pub(crate) struct Request<O, R> {
    pub(crate) op: O,
    pub(crate) reply: oneshot::Sender<Result<R, StoreError>>,
}

/// The sending side of a writer, and a signal that fires once its thread has finished (after
/// the last sender is dropped and the connection is closed).
pub(crate) type Handle<W> = (
    mpsc::Sender<Request<<W as Work>::Op, <W as Work>::Reply>>,
    oneshot::Receiver<()>,
);

/// Starts the writer thread for `work`.
pub(crate) fn spawn<W: Work>(name: &str, work: W) -> Result<Handle<W>, StoreError> {
    let (tx, rx) = mpsc::channel();
    let (closed_tx, closed_rx) = oneshot::channel();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            run(work, rx);
            // The receiver is gone if the owner was dropped without `close`; nobody to tell.
            let _ = closed_tx.send(());
        })
        .map_err(|e| StoreError::Unavailable(Box::new(SqliteError::Spawn(e))))?;
    Ok((tx, closed_rx))
}

fn run<W: Work>(work: W, rx: mpsc::Receiver<Request<W::Op, W::Reply>>) {
    let interval = work.housekeeping_interval();
    let mut next_housekeeping = Instant::now() + interval;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Checked before waiting, not only on a receive timeout: under steady traffic the
        // channel is never empty and the timeout never fires.
        if Instant::now() >= next_housekeeping {
            work.housekeeping();
            next_housekeeping = Instant::now() + interval;
        }
        let wait = next_housekeeping.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(first) => batch.push(first),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Whatever queued while the previous batch committed goes into this one.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let unheard = batch.iter().all(|r| r.reply.is_closed());
        run_batch(&work, &mut batch);
        if unheard {
            std::thread::sleep(
                LINGER.min(next_housekeeping.saturating_duration_since(Instant::now())),
            );
        }
    }
    // Dropping the connection (with `work`) checkpoints the WAL into the main file.
}

/// Runs `batch` in one transaction and answers every request only once it committed.
fn run_batch<W: Work>(work: &W, batch: &mut Vec<Request<W::Op, W::Reply>>) {
    match try_batch(work, batch) {
        Ok(replies) => {
            for (req, reply) in batch.drain(..).zip(replies) {
                // A caller that gave up (its future was dropped) needs no answer.
                let _ = req.reply.send(Ok(reply));
            }
        }
        Err(_) => {
            rollback(work.conn());
            work.rolled_back();
            for req in batch.drain(..) {
                let result = try_batch(work, std::slice::from_ref(&req)).map_or_else(
                    |e| {
                        rollback(work.conn());
                        work.rolled_back();
                        Err(e)
                    },
                    |mut r| {
                        r.pop().ok_or_else(|| {
                            StoreError::Corrupt("empty reply from a batch of one".into())
                        })
                    },
                );
                if let Err(Err(e)) = req.reply.send(result) {
                    work.unanswered(req.op, &e);
                }
            }
        }
    }
}

/// Undoes an open transaction, if SQLite has not already.
pub(crate) fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        // SQLite may already have rolled back (it does on SQLITE_FULL); an error here only
        // means there was nothing left to undo.
        let _ = conn.execute_batch("ROLLBACK");
    }
}

fn try_batch<W: Work>(
    work: &W,
    batch: &[Request<W::Op, W::Reply>],
) -> Result<Vec<W::Reply>, StoreError> {
    // Cached statements: parsing BEGIN and COMMIT anew was a visible share of the writer's time.
    work.conn()
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
        .map_err(|e| query_error("begin", e))?;
    let replies = work.apply_all(batch.iter().map(|req| &req.op))?;
    work.conn()
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
        .map_err(|e| query_error("commit", e))?;
    Ok(replies)
}
