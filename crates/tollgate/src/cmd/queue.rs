//! `tollgate queue ls|show|retry|drop`: inspect and redeliver the events of `mode = "queue"`
//! routes, against the state store named by the config's `[state]` (the routes' secrets are not
//! needed). Safe while `tollgate serve` runs on the same store.
//!
//! `show` prints an event's metadata, header *names* and body size; header values only for a short
//! allow list that cannot carry credentials (an `Authorization` or signature header could), and
//! never the body.
//!
//! Exit codes: 0 done, 1 no such event, 2 usage or I/O error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tollgate_config::{Fsync, StateBackend};
use tollgate_store::{EventQueue, EventStatus, ListFilter, QueueEntry};

/// Arguments of `tollgate queue`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file whose `[state]` holds the queue.
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// List events, oldest first (tab-separated: id, route, status, attempts, age, last error).
    Ls {
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Only this status: pending, leased, delivered or dead.
        #[arg(long)]
        status: Option<String>,
        /// Only events received at least this long ago (`90s`, `15m`, `2h`, `1d`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print one event's metadata (header names, body size; no secrets).
    Show {
        /// The event id.
        id: String,
    },
    /// Redeliver a dead or pending event now, with its attempts reset.
    Retry {
        /// The event id.
        id: String,
    },
    /// Delete an event in any status.
    Drop {
        /// The event id.
        id: String,
    },
}

/// Header values `show` prints; any other header is shown by name only.
const SAFE_HEADERS: &[&str] = &[
    ":target",
    "content-type",
    "content-encoding",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "tollgate-verified",
];

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config else {
        bail!("--config FILE is required (its [state] names the queue)");
    };
    let state = tollgate_config::load_state(&config, &tollgate_config::ProcessEnv)
        .map_err(|e| anyhow!("invalid config:\n{e}"))?;
    let queue = open_existing(&state)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let code = match args.command {
            Sub::Ls {
                route,
                status,
                older_than,
                limit,
            } => {
                let status = status
                    .map(|s| {
                        EventStatus::from_name(&s).ok_or_else(|| {
                            anyhow!("--status {s:?}: use pending, leased, delivered or dead")
                        })
                    })
                    .transpose()?;
                let older_than = older_than.as_deref().map(parse_age).transpose()?;
                let filter = ListFilter {
                    route,
                    status,
                    older_than,
                };
                let now = now_ms();
                for e in queue.list(&filter, limit).await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        e.event.id,
                        e.event.route,
                        e.status,
                        e.attempts,
                        age(now, e.event.received_at_ms),
                        e.last_error.as_deref().unwrap_or("-")
                    );
                }
                ExitCode::SUCCESS
            }
            Sub::Show { id } => match queue.get(&id).await? {
                Some(e) => {
                    print!("{}", show(&e, now_ms()));
                    ExitCode::SUCCESS
                }
                None => not_found(&id),
            },
            Sub::Retry { id } => {
                if queue.requeue(&id).await? {
                    println!("{id}: pending, due now");
                    ExitCode::SUCCESS
                } else {
                    match queue.get(&id).await? {
                        Some(e) => {
                            eprintln!(
                                "tollgate: {id} is {}; only dead or pending events can be retried",
                                e.status
                            );
                            ExitCode::from(1)
                        }
                        None => not_found(&id),
                    }
                }
            }
            Sub::Drop { id } => {
                if queue.remove(&id).await? {
                    println!("{id}: dropped");
                    ExitCode::SUCCESS
                } else {
                    not_found(&id)
                }
            }
        };
        Ok(code)
    })
}

fn not_found(id: &str) -> ExitCode {
    eprintln!("tollgate: no event {id:?}");
    ExitCode::from(1)
}

/// The queue file that belongs with the replay store at `db`: `tollgate.db` → `tollgate.queue.db`.
pub fn queue_path(db: &Path) -> PathBuf {
    let stem = db
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tollgate".to_owned());
    let name = match db.extension() {
        Some(ext) => format!("{stem}.queue.{}", ext.to_string_lossy()),
        None => format!("{stem}.queue"),
    };
    db.with_file_name(name)
}

/// The queue named by `[state]`, for `tollgate serve` (created if missing).
pub fn open(state: &StateBackend) -> anyhow::Result<Arc<dyn EventQueue>> {
    match state {
        StateBackend::Memory => Ok(Arc::new(tollgate_store::MemoryQueue::new())),
        StateBackend::Sqlite { path, fsync } => {
            let path = queue_path(path);
            let q = tollgate_store::SqliteQueue::open(&path, durability(*fsync))
                .with_context(|| format!("cannot open the queue database {}", path.display()))?;
            Ok(Arc::new(q))
        }
        StateBackend::Redis(redis) => {
            // Connects on first use, like the replay store: serving starts even while Redis is down.
            let target = super::serve::redis_target(redis)?;
            let q = tollgate_store::RedisQueue::at(&target, super::serve::redis_options(redis))
                .map_err(|e| {
                    anyhow::anyhow!("redis queue at {}: {e}", super::serve::redis_shown(redis))
                })?;
            Ok(Arc::new(q))
        }
    }
}

/// The queue named by `[state]`, for inspection: never creates one.
fn open_existing(state: &StateBackend) -> anyhow::Result<Arc<dyn EventQueue>> {
    match state {
        StateBackend::Memory => bail!(
            "[state] backend = \"memory\": the queue lives inside the serving process; there is nothing to inspect"
        ),
        StateBackend::Sqlite { path, .. } => {
            let q = queue_path(path);
            if !q.exists() {
                bail!(
                    "no queue database at {} (has tollgate serve run with this config?)",
                    q.display()
                );
            }
            open(state)
        }
        StateBackend::Redis(_) => open(state),
    }
}

fn durability(f: Fsync) -> tollgate_store::Durability {
    match f {
        Fsync::Always => tollgate_store::Durability::Always,
        Fsync::Batch => tollgate_store::Durability::Batch,
    }
}

/// `show`'s text.
fn show(e: &QueueEntry, now: u64) -> String {
    use std::fmt::Write;
    let ev = &e.event;
    let mut s = String::new();
    let _ = writeln!(s, "id:            {}", ev.id);
    let _ = writeln!(s, "route:         {}", ev.route);
    let _ = writeln!(s, "status:        {}", e.status);
    let _ = writeln!(s, "attempts:      {}", e.attempts);
    let _ = writeln!(
        s,
        "received:      {} ms since epoch ({} ago)",
        ev.received_at_ms,
        age(now, ev.received_at_ms)
    );
    if e.status == EventStatus::Pending {
        let _ = writeln!(
            s,
            "next attempt:  in {}",
            fmt_ms(e.next_attempt_at_ms.saturating_sub(now))
        );
    }
    if let Some(until) = e.lease_until_ms {
        let _ = writeln!(s, "leased for:    {}", fmt_ms(until.saturating_sub(now)));
    }
    let _ = writeln!(
        s,
        "order key:     {}",
        ev.order_key.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        s,
        "last error:    {}",
        e.last_error.as_deref().unwrap_or("-")
    );
    if e.status == EventStatus::Delivered && ev.method.is_empty() {
        // The SQLite queue drops the request once the app has it; the id stays for dedupe.
        let _ = writeln!(s, "request:       not kept after delivery");
        return s;
    }
    let _ = writeln!(s, "method:        {}", ev.method);
    let _ = writeln!(s, "url:           {}", ev.url);
    let _ = writeln!(s, "body:          {} bytes", ev.body.len());
    let _ = writeln!(s, "headers:");
    for (k, v) in &ev.headers {
        if SAFE_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            let _ = writeln!(s, "  {k}: {}", String::from_utf8_lossy(v));
        } else {
            let _ = writeln!(s, "  {k}: [{} bytes, not shown]", v.len());
        }
    }
    s
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn age(now: u64, then: u64) -> String {
    fmt_ms(now.saturating_sub(then))
}

fn fmt_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `90`, `90s`, `15m`, `2h`, `1d`.
fn parse_age(s: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--older-than {s:?}: use e.g. 90s, 15m, 2h or 1d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--older-than {s:?}: use e.g. 90s, 15m, 2h or 1d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_file_sits_beside_the_replay_store() {
        assert_eq!(
            queue_path(Path::new("/var/lib/tollgate/state.db")),
            PathBuf::from("/var/lib/tollgate/state.queue.db")
        );
        assert_eq!(queue_path(Path::new("state")), PathBuf::from("state.queue"));
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_age("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_age("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_age("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_age("1w").is_err());
        assert!(parse_age("m").is_err());
    }

    #[test]
    fn show_says_when_the_request_was_dropped_on_delivery() {
        let event = tollgate_store::QueuedEvent {
            id: "twilio:id:1".into(),
            route: "twilio".into(),
            method: String::new(),
            url: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            received_at_ms: 1_000,
            order_key: None,
        };
        let delivered = QueueEntry {
            event,
            status: EventStatus::Delivered,
            attempts: 1,
            next_attempt_at_ms: 1_000,
            lease_until_ms: None,
            last_error: None,
        };
        let text = show(&delivered, 2_000);
        assert!(
            text.contains("request:       not kept after delivery"),
            "{text}"
        );
        assert!(!text.contains("body:"), "{text}");
        let dead = QueueEntry {
            status: EventStatus::Dead,
            ..delivered
        };
        assert!(show(&dead, 2_000).contains("body:          0 bytes"));
    }
}
