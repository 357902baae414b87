//! The shared backend: replay/idempotency claims in Redis, so several tollgate instances behind a
//! load balancer recognise a provider retry whichever instance it lands on.
//!
//! Each event key is one Redis hash, `<prefix>{<key>}:claim`, holding the state (in flight or
//! done), the deadline in unix milliseconds and, once done, the stored response. Every operation
//! is one Lua script on that one key (`EVALSHA`, falling back to `EVAL` on `NOSCRIPT`), so "first
//! one wins" is decided inside Redis, atomically, across every instance sharing it. Because a
//! script touches only the key it is given, the store runs unchanged on one node or a Redis
//! Cluster ([`RedisTarget`]); the `{…}` hash tag keeps any future per-event keys in the same slot.
//!
//! Time: expiry is decided by comparing the stored deadline with the `now_ms` the caller's
//! [`Clock`](crate::clock::Clock) passes into the script, exactly as the other backends do, so a
//! lease or TTL means the same thing everywhere and tests can move time. Server-side `PEXPIRE` is
//! set only for garbage collection, to the remaining time plus a margin
//! ([`RedisOptions::expiry_margin`]) that must exceed the clock skew between instances: a key
//! Redis drops early would let a retry through twice.
//!
//! Fail closed: every failure (refused connection, lost connection, TLS handshake refused,
//! timeout, Redis error, a cluster slot without a primary) is [`StoreError::Unavailable`] and
//! never a [`Claim::Claimed`]. A claim whose reply was lost may still have been recorded; the
//! retry then sees it in flight until its lease ends, which costs one lease of delay, never a
//! duplicate. The connection reconnects by itself; each operation is bounded by
//! [`RedisOptions::operation_timeout`] so a dead or frozen server cannot hold a request.
//!
//! What it does not do: Sentinel (see the deployment notes for why); durability is Redis's own
//! (`appendonly`/`appendfsync`, and replication is asynchronous, so a failover may lose the last
//! writes).

use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;

use crate::clock::{deadline, SharedClock, SystemClock};
use crate::redis_client::{Connection, Lua, RedisTarget};
use crate::{Claim, ReplayStore, StoreError, StoredResponse};

/// Lua numbers are doubles: deadlines are clamped to the largest integer a double holds exactly
/// (year 287 396), so the script's comparisons are exact.
const MAX_EXACT_MS: u64 = (1 << 53) - 1;

/// The longest server-side expiry set (about 100 years); Redis refuses expiries that overflow.
const MAX_PEXPIRE_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Claims `KEYS[1]` unless a live record is there. ARGV: now_ms, deadline_ms, pexpire_ms.
/// Replies `{"claimed"}`, `{"inflight"}`, `{"done", status, body, name1, value1, …}` or
/// `{"corrupt", why}`.
const CLAIM_LUA: &str = r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' then
  if t ~= 'hash' then return {'corrupt', 'key holds a ' .. t} end
  local rec = redis.call('HMGET', KEYS[1], 's', 'u')
  local until_ms = tonumber(rec[2])
  if not rec[1] or not until_ms then return {'corrupt', 'record misses its state or deadline'} end
  if until_ms > tonumber(ARGV[1]) then
    if rec[1] == '0' then return {'inflight'} end
    if rec[1] ~= '1' then return {'corrupt', 'unknown state ' .. rec[1]} end
    local r = redis.call('HMGET', KEYS[1], 'st', 'b', 'n')
    local n = tonumber(r[3])
    if not r[1] or not r[2] or not n then return {'corrupt', 'done record misses its response'} end
    local out = {'done', r[1], r[2]}
    for i = 0, n - 1 do
      local h = redis.call('HMGET', KEYS[1], 'hn' .. i, 'hv' .. i)
      if not h[1] or not h[2] then return {'corrupt', 'done record misses header ' .. i} end
      out[#out + 1] = h[1]
      out[#out + 1] = h[2]
    end
    return out
  end
  -- Expired: whatever was there counts as absent, and its response fields must not linger.
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 's', '0', 'u', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'claimed'}
"#;

/// Records the answer at `KEYS[1]`. ARGV: deadline_ms, pexpire_ms, status, body, then header
/// name/value pairs. Headers are fields `hn<i>`/`hv<i>` so raw bytes, order and duplicates survive
/// without an encoding of our own.
const COMPLETE_LUA: &str = r#"
redis.call('DEL', KEYS[1])
local n = (#ARGV - 4) / 2
redis.call('HSET', KEYS[1], 's', '1', 'u', ARGV[1], 'st', ARGV[3], 'b', ARGV[4], 'n', tostring(n))
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], 'hn' .. i, ARGV[5 + 2 * i], 'hv' .. i, ARGV[6 + 2 * i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Drops `KEYS[1]` only while it is an in-flight claim: a late release must not erase an answer.
const RELEASE_LUA: &str = r#"
if redis.call('TYPE', KEYS[1]).ok == 'hash' and redis.call('HGET', KEYS[1], 's') == '0' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Tuning for [`RedisStore::connect_with`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prepended to every key, so several deployments (or tests) can share one Redis. Every
    /// instance of one deployment must use the same prefix. Keep `{` and `}` out of it: Redis
    /// Cluster would take the prefix as the hash tag and put every key in one slot.
    pub key_prefix: String,
    /// Longest wait for one TCP connection attempt.
    pub connect_timeout: Duration,
    /// Longest wait for one reply on an established connection.
    pub response_timeout: Duration,
    /// Longest any store operation may take, reconnection included; past it the operation fails
    /// with [`StoreError::Unavailable`]. Keep it well below the provider's webhook timeout.
    pub operation_timeout: Duration,
    /// Added to a record's remaining time for its server-side expiry. Must exceed the clock skew
    /// between instances.
    pub expiry_margin: Duration,
    /// Where "now" comes from.
    pub clock: SharedClock,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: "tollgate:".into(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(800),
            operation_timeout: Duration::from_secs(1),
            expiry_margin: Duration::from_secs(300),
            clock: Arc::new(SystemClock),
        }
    }
}

impl RedisOptions {
    /// The defaults: prefix `tollgate:`, 0.5 s connect, 0.8 s reply, 1 s per operation, 5 min
    /// expiry margin, system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same options reading time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The same options with another key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }
}

/// Why the Redis backend failed; boxed as the source of a [`StoreError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL is not a Redis URL this build can use, or its TLS material does not parse.
    #[error("invalid Redis URL or TLS material")]
    Url(#[source] ::redis::RedisError),
    /// The connection settings contradict each other (TLS material for a `redis://` URL, a
    /// database other than 0 on a cluster, certificate checks turned off).
    #[error("invalid Redis connection settings: {0}")]
    Config(String),
    /// Redis refused or failed the operation, or the connection failed.
    #[error("Redis {operation} failed")]
    Command {
        /// What was being done.
        operation: &'static str,
        /// What the client said.
        #[source]
        source: ::redis::RedisError,
    },
    /// The operation did not finish within [`RedisOptions::operation_timeout`].
    #[error("Redis {operation} took longer than {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The limit.
        after: Duration,
    },
}

/// Redis-backed [`ReplayStore`]. Cheap to clone and share: clones use the same connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    claim: Arc<Lua>,
    complete: Arc<Lua>,
    release: Arc<Lua>,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection holds the URL, which may carry a password: never print it.
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the single node at `url` (`redis://[user:password@]host:port/db`, or
    /// `rediss://` for TLS) with default options reading time from `clock`. Fails with
    /// [`StoreError::Unavailable`] if the server cannot be reached within the operation timeout;
    /// once connected, the store reconnects by itself.
    pub async fn connect(url: &str, clock: SharedClock) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisOptions::new().with_clock(clock)).await
    }

    /// [`RedisStore::connect`] with explicit options.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        Self::connect_to(&RedisTarget::node(url)?, options).await
    }

    /// Connects to `target`: one node or a cluster, with or without TLS.
    pub async fn connect_to(
        target: &RedisTarget,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let conn = target.client(&options)?.connect(&options).await?;
        Ok(Self {
            conn,
            claim: Arc::new(Lua::new(CLAIM_LUA)),
            complete: Arc::new(Lua::new(COMPLETE_LUA)),
            release: Arc::new(Lua::new(RELEASE_LUA)),
            options,
        })
    }

    /// The options in force.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The Redis key holding `key`'s record: `<prefix>{<key>}:claim`. Prefix and suffix are
    /// fixed, so distinct event keys always give distinct Redis keys, whatever bytes they hold.
    pub fn redis_key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.options.key_prefix.len() + key.len() + 8);
        k.extend_from_slice(self.options.key_prefix.as_bytes());
        k.push(b'{');
        k.extend_from_slice(key.as_bytes());
        k.extend_from_slice(b"}:claim");
        k
    }

    /// `(now, deadline, server-side expiry)` in ms for a record living `d` from now.
    fn times(&self, d: Duration) -> (u64, u64, u64) {
        let now = self.options.clock.now_ms().min(MAX_EXACT_MS);
        let until = deadline(now, d).min(MAX_EXACT_MS);
        let margin = crate::clock::duration_ms(self.options.expiry_margin);
        // At least 1: PEXPIRE 0 would delete the key at once.
        let pexpire = (until - now)
            .saturating_add(margin)
            .clamp(1, MAX_PEXPIRE_MS);
        (now, until, pexpire)
    }
}

/// Runs `fut` for at most `after`, mapping both failure kinds to a retryable error.
pub(crate) async fn bounded<T>(
    operation: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(StoreError::Unavailable(Box::new(RedisError::Command {
            operation,
            source,
        }))),
        Err(_) => Err(StoreError::Unavailable(Box::new(RedisError::Timeout {
            operation,
            after,
        }))),
    }
}

fn corrupt(why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("Redis claim record: {why}"))
}

fn bytes(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

/// Reads the claim script's reply.
fn parse_claim(reply: Value) -> Result<Claim, StoreError> {
    let Value::Array(items) = reply else {
        return Err(corrupt(format_args!("unexpected reply {reply:?}")));
    };
    let mut items = items.into_iter();
    let tag = items.next().map(bytes).transpose()?.unwrap_or_default();
    match tag.as_slice() {
        b"claimed" => Ok(Claim::Claimed),
        b"inflight" => Ok(Claim::InFlight),
        b"done" => {
            let status = items.next().map(bytes).transpose()?.unwrap_or_default();
            let status = std::str::from_utf8(&status)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| corrupt("stored status is not a number"))?;
            let body = items
                .next()
                .map(bytes)
                .transpose()?
                .ok_or_else(|| corrupt("missing body"))?;
            let mut headers = Vec::with_capacity(items.len() / 2);
            while let Some(name) = items.next() {
                let name = String::from_utf8(bytes(name)?)
                    .map_err(|_| corrupt("stored header name is not UTF-8"))?;
                let value = items
                    .next()
                    .map(bytes)
                    .transpose()?
                    .ok_or_else(|| corrupt("header without a value"))?;
                headers.push((name, value));
            }
            Ok(Claim::Done(StoredResponse {
                status,
                headers,
                body,
            }))
        }
        b"corrupt" => {
            let why = items.next().map(bytes).transpose()?.unwrap_or_default();
            Err(corrupt(String::from_utf8_lossy(&why)))
        }
        other => Err(corrupt(format_args!(
            "unknown reply {:?}",
            String::from_utf8_lossy(other)
        ))),
    }
}

#[async_trait::async_trait]
impl ReplayStore for RedisStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        let (now, until, pexpire) = self.times(lease);
        let mut conn = self.conn.clone();
        let mut call = self.claim.call();
        call.key(self.redis_key(key))
            .arg(now)
            .arg(until)
            .arg(pexpire);
        let reply = bounded(
            "claim",
            self.options.operation_timeout,
            call.invoke(&mut conn),
        )
        .await?;
        parse_claim(reply)
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (_, until, pexpire) = self.times(ttl);
        let mut conn = self.conn.clone();
        let mut call = self.complete.call();
        call.key(self.redis_key(key))
            .arg(until)
            .arg(pexpire)
            .arg(response.status)
            .arg(response.body.as_slice());
        for (name, value) in &response.headers {
            call.arg(name.as_bytes()).arg(value.as_slice());
        }
        bounded(
            "complete",
            self.options.operation_timeout,
            call.invoke(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut call = self.release.call();
        call.key(self.redis_key(key));
        bounded(
            "release",
            self.options.operation_timeout,
            call.invoke(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: Value = bounded(
            "ping",
            self.options.operation_timeout,
            ::redis::cmd("PING").query_async(&mut conn),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn done_reply_keeps_raw_bytes_order_and_duplicates() {
        let reply = Value::Array(vec![
            bulk(b"done"),
            bulk(b"203"),
            bulk(&[0, 0xff, b'\r']),
            bulk(b"x-raw"),
            bulk(&[0xfe]),
            bulk(b"x-raw"),
            bulk(b""),
        ]);
        assert_eq!(
            parse_claim(reply).unwrap(),
            Claim::Done(StoredResponse {
                status: 203,
                headers: vec![("x-raw".into(), vec![0xfe]), ("x-raw".into(), vec![])],
                body: vec![0, 0xff, b'\r'],
            })
        );
    }

    #[test]
    fn malformed_replies_are_corrupt_never_claimed() {
        let cases = vec![
            Value::Nil,
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![bulk(b"CLAIMED")]),
            Value::Array(vec![bulk(b"done")]),
            Value::Array(vec![bulk(b"done"), bulk(b"70000"), bulk(b"")]),
            Value::Array(vec![bulk(b"done"), bulk(b"200")]),
            Value::Array(vec![bulk(b"done"), bulk(b"200"), bulk(b""), bulk(b"h")]),
            Value::Array(vec![
                bulk(b"done"),
                bulk(b"200"),
                bulk(b""),
                bulk(&[0xff]),
                bulk(b"v"),
            ]),
            Value::Array(vec![bulk(b"corrupt"), bulk(b"why")]),
        ];
        for reply in cases {
            let shown = format!("{reply:?}");
            assert!(
                matches!(parse_claim(reply), Err(StoreError::Corrupt(_))),
                "{shown}"
            );
        }
    }
}
