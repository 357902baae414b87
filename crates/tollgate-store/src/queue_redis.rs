//! The queue of `mode = "queue"` routes in Redis, shared by several tollgate instances: any
//! instance may acknowledge a callback, any instance's workers may deliver it, and a crashed
//! instance's leases run out and its events are delivered by the others.
//!
//! # Layout
//!
//! Each route's events live under one hash tag, `<prefix>{q:<route>}`, so every script touches
//! keys of one Cluster slot and is atomic:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `…{q:R}:e:<id>` | hash | the event as received, its status, attempts, due time, lease, token, last error |
//! | `…{q:R}:due` | sorted set | pending and leased events, scored by when they are due (retry time or lease end) |
//! | `…{q:R}:all` | sorted set | every event, in receipt order |
//! | `…{q:R}:l:<order key>` | sorted set | a per-key line: its pending and leased events in receipt order; only the first may be leased |
//! | `…{q:R}:dead` / `…{q:R}:done` | set / sorted set | dead letters; delivered events by delivery time (for purging) |
//! | `…{q:R}:tok` | counter | lease tokens: a fresh one per lease, never reused in the route |
//!
//! Members of the sorted sets are `<20-digit sequence><id>`, so ties sort in receipt order. The
//! sequence, the route list and the event-id index live outside the route's slot:
//! `<prefix>{qmeta}:seq`, `<prefix>{qmeta}:routes` and `<prefix>{qid:<id>}` (which route holds
//! the id, so a provider retry is a duplicate whatever route it arrives on, and `get`/`remove` by id
//! find the event).
//!
//! # Redis Cluster
//!
//! Every script and every pipeline stays within one slot, so the layout is the same on one node
//! and on a cluster ([`RedisTarget`](crate::RedisTarget)): an enqueue sends its id claim
//! (`{qid:<id>}`) and its sequence number and route listing (`{qmeta}`) as two pipelines at once,
//! then the route's script; forgetting ids is one multi-key `DEL`, which a cluster client splits
//! by slot. The steps of an enqueue were never one transaction, so splitting the first changes
//! nothing: a crash between them leaves the id pointing at its route with no event, and the
//! provider's retry, which arrives on the same route, stores it then.
//!
//! # Why not Streams and consumer groups
//!
//! The issue suggested XADD/XREADGROUP/XACK/XAUTOCLAIM. The queue contract needs more than a
//! consumer group gives: a due time per event (retries with backoff), per-key lines with one event
//! in flight, fenced lease tokens so a slow worker cannot settle a lease taken over since, and a
//! lease length chosen per call and measured on the injected clock (XAUTOCLAIM's idle time is the
//! server's clock). Each of those would need a side structure next to the stream, and the stream
//! would then only duplicate it; the sorted sets above do the whole job in single atomic scripts.
//! Ownership across instances is the same idea as a consumer group's pending list: a leased event
//! belongs to its leaser until its lease ends, then to whoever leases it next.
//!
//! # Guarantees and limits
//!
//! The [queue contract](crate::queue) holds, checked by the shared conformance suite. An enqueue
//! is "durable" once Redis has it: how durable depends on Redis's own persistence (`appendonly yes`
//! with `appendfsync always` for no loss on a crash; the default `everysec` can lose the last
//! second) and on replication (a failover may lose writes the replica had not received). With
//! `maxmemory-policy` other than `noeviction`, Redis may silently evict events: do not.
//! Everything fails closed: any error is [`StoreError::Unavailable`], so the gateway answers 503
//! and the provider retries. `stats` and `lease` without a route scan each route; `stats` is
//! linear in the route's depth.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Value;
use tokio::sync::OnceCell;

use crate::clock::{deadline, duration_ms};
use crate::queue::{
    received_cutoff, Enqueued, EventQueue, EventStatus, LeaseToken, Leased, ListFilter, QueueEntry,
    QueueStats, QueuedEvent, RouteStats, Settled, Settlement,
};
use crate::redis::{bounded, RedisError, RedisOptions};
use crate::redis_client::{Client, Connection, Lua, LuaCall, RedisTarget};
use crate::StoreError;

/// Lua numbers are doubles: times are clamped to the largest integer a double holds exactly.
const MAX_EXACT_MS: u64 = (1 << 53) - 1;

/// Helpers every script starts with. `ARGV[1]` is always the route's key base `…{q:R}`.
const PRELUDE: &str = r#"
local B = ARGV[1]
local DUE, ALL, DEAD, DONE, TOK = B .. ':due', B .. ':all', B .. ':dead', B .. ':done', B .. ':tok'
local function ek(id) return B .. ':e:' .. id end
local function lk(key) return B .. ':l:' .. key end
local function entry(id)
  local e = ek(id)
  local f = redis.call('HMGET', e, 'm', 'u', 'b', 'r', 'hk', 'k', 's', 'a', 'n', 'lu', 't', 'he', 'e', 'q', 'hc')
  if not f[1] then return nil end
  local out = {id}
  for i = 1, 15 do out[#out + 1] = f[i] or '' end
  local hc = tonumber(f[15]) or 0
  for i = 0, hc - 1 do
    local h = redis.call('HMGET', e, 'hn' .. i, 'hv' .. i)
    out[#out + 1] = h[1] or ''
    out[#out + 1] = h[2] or ''
  end
  return out
end
-- Whether the due member `m` may be leased: pending or leased, and the head of its line.
local function ready(m)
  local f = redis.call('HMGET', ek(string.sub(m, 21)), 's', 'hk', 'k')
  if f[1] ~= 'p' and f[1] ~= 'l' then return false end
  if f[2] == '1' then
    return redis.call('ZRANGE', lk(f[3]), 0, 0)[1] == m
  end
  return true
end
-- Up to `max` leasable members due by `now`, earliest due first: {member, score, …}.
local function scan(now, max)
  local out, n, off = {}, 0, 0
  while n < max do
    local chunk = redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'WITHSCORES', 'LIMIT', off, 256)
    if #chunk == 0 then break end
    for i = 1, #chunk, 2 do
      if n < max and ready(chunk[i]) then
        out[#out + 1] = chunk[i]
        out[#out + 1] = chunk[i + 1]
        n = n + 1
      end
    end
    off = off + 256
  end
  return out
end
"#;

/// ARGV: base, member, id, method, url, body, received, has_key, key, now, header count, then
/// header name/value pairs. Replies 1 (stored) or 0 (the id is already held in this route).
const ENQUEUE_LUA: &str = r#"
local m, id = ARGV[2], ARGV[3]
local e = ek(id)
if redis.call('EXISTS', e) == 1 then return 0 end
local q = string.sub(m, 1, 20)
redis.call('HSET', e, 'm', ARGV[4], 'u', ARGV[5], 'b', ARGV[6], 'r', ARGV[7], 'hk', ARGV[8],
  'k', ARGV[9], 'q', q, 's', 'p', 'a', '0', 'n', ARGV[10], 'lu', '', 't', '0', 'he', '0', 'e', '',
  'hc', ARGV[11])
for i = 0, tonumber(ARGV[11]) - 1 do
  redis.call('HSET', e, 'hn' .. i, ARGV[12 + 2 * i], 'hv' .. i, ARGV[13 + 2 * i])
end
redis.call('ZADD', DUE, ARGV[10], m)
redis.call('ZADD', ALL, 0, m)
if ARGV[8] == '1' then redis.call('ZADD', lk(ARGV[9]), 0, m) end
return 1
"#;

/// ARGV: base, now, max. Replies {member, due, …} without changing anything.
const PEEK_LUA: &str = r#"
return scan(tonumber(ARGV[2]), tonumber(ARGV[3]))
"#;

/// ARGV: base, now, lease_ms, max, then optionally the members to lease (chosen by a peek over
/// several routes; each is checked again). Replies one entry per leased event.
const LEASE_LUA: &str = r#"
local now, lease, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local chosen = {}
if #ARGV > 4 then
  for i = 5, #ARGV do
    local s = redis.call('ZSCORE', DUE, ARGV[i])
    if s and tonumber(s) <= now and ready(ARGV[i]) then chosen[#chosen + 1] = ARGV[i] end
  end
else
  local found = scan(now, max)
  for i = 1, #found, 2 do chosen[#chosen + 1] = found[i] end
end
local out = {}
local untl = now + lease
for _, m in ipairs(chosen) do
  local id = string.sub(m, 21)
  local e = ek(id)
  local t = redis.call('INCR', TOK)
  redis.call('HINCRBY', e, 'a', 1)
  redis.call('HSET', e, 's', 'l', 'lu', untl, 't', t)
  redis.call('ZADD', DUE, untl, m)
  out[#out + 1] = entry(id)
end
return out
"#;

/// ARGV: base, id, token, op (`ack`, `retry`, `dead`), now, retry time, error. Replies 1 if the
/// lease was current and the event changed, else 0.
const SETTLE_LUA: &str = r#"
local id, op = ARGV[2], ARGV[4]
local e = ek(id)
local f = redis.call('HMGET', e, 's', 't', 'q', 'hk', 'k')
if f[1] ~= 'l' or f[2] ~= ARGV[3] then return 0 end
local m = f[3] .. id
if op == 'retry' then
  redis.call('HSET', e, 's', 'p', 'n', ARGV[6], 'lu', '', 'he', '1', 'e', ARGV[7])
  redis.call('ZADD', DUE, ARGV[6], m)
  return 1
end
redis.call('ZREM', DUE, m)
if f[4] == '1' then redis.call('ZREM', lk(f[5]), m) end
if op == 'ack' then
  redis.call('HSET', e, 's', 'd', 'lu', '')
  redis.call('ZADD', DONE, ARGV[5], m)
else
  redis.call('HSET', e, 's', 'x', 'lu', '', 'he', '1', 'e', ARGV[7])
  redis.call('SADD', DEAD, m)
end
return 1
"#;

/// ARGV: base, id. Replies the entry, or an empty array.
const GET_LUA: &str = r#"
return entry(ARGV[2]) or {}
"#;

/// ARGV: base, id, now. A dead or pending event becomes pending, due now, attempts reset.
const REQUEUE_LUA: &str = r#"
local id = ARGV[2]
local e = ek(id)
local f = redis.call('HMGET', e, 's', 'q', 'hk', 'k')
if f[1] ~= 'x' and f[1] ~= 'p' then return 0 end
local m = f[2] .. id
redis.call('HSET', e, 's', 'p', 'a', '0', 'n', ARGV[3], 'lu', '')
redis.call('SREM', DEAD, m)
redis.call('ZADD', DUE, ARGV[3], m)
if f[3] == '1' then redis.call('ZADD', lk(f[4]), 0, m) end
return 1
"#;

/// ARGV: base, id. Deletes the event and its index entries; replies 1 if it existed.
const REMOVE_LUA: &str = r#"
local id = ARGV[2]
local e = ek(id)
local f = redis.call('HMGET', e, 'q', 'hk', 'k')
if not f[1] then return 0 end
local m = f[1] .. id
redis.call('ZREM', DUE, m)
redis.call('ZREM', ALL, m)
redis.call('ZREM', DONE, m)
redis.call('SREM', DEAD, m)
if f[2] == '1' then redis.call('ZREM', lk(f[3]), m) end
redis.call('DEL', e)
return 1
"#;

/// ARGV: base, status letter or '', latest received time or '', limit. Replies up to `limit`
/// matching entries in receipt order.
const LIST_LUA: &str = r#"
local want, cutoff, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out, off = {}, 0
while #out < limit do
  local chunk = redis.call('ZRANGE', ALL, off, off + 255)
  if #chunk == 0 then break end
  for _, m in ipairs(chunk) do
    if #out < limit then
      local id = string.sub(m, 21)
      local f = redis.call('HMGET', ek(id), 's', 'r')
      if f[1] and (want == '' or f[1] == want) and (not cutoff or tonumber(f[2]) <= cutoff) then
        out[#out + 1] = entry(id)
      end
    end
  end
  off = off + 256
end
return out
"#;

/// ARGV: base. Replies {pending, leased, dead, oldest received time or ''}.
const STATS_LUA: &str = r#"
local p, l, oldest, off = 0, 0, nil, 0
while true do
  local chunk = redis.call('ZRANGE', DUE, off, off + 255)
  if #chunk == 0 then break end
  for _, m in ipairs(chunk) do
    local f = redis.call('HMGET', ek(string.sub(m, 21)), 's', 'r')
    if f[1] == 'p' then p = p + 1 elseif f[1] == 'l' then l = l + 1 end
    local r = tonumber(f[2])
    if r and (not oldest or r < oldest) then oldest = r end
  end
  off = off + 256
end
return {p, l, redis.call('SCARD', DEAD), oldest and string.format('%.0f', oldest) or ''}
"#;

/// ARGV: base, latest delivery time to purge. Deletes those delivered events; replies their ids.
const PURGE_LUA: &str = r#"
local gone = redis.call('ZRANGEBYSCORE', DONE, '-inf', ARGV[2])
local ids = {}
for _, m in ipairs(gone) do
  local id = string.sub(m, 21)
  redis.call('DEL', ek(id))
  redis.call('ZREM', ALL, m)
  redis.call('ZREM', DONE, m)
  ids[#ids + 1] = id
end
return ids
"#;

struct Scripts {
    enqueue: Lua,
    peek: Lua,
    lease: Lua,
    settle: Lua,
    get: Lua,
    requeue: Lua,
    remove: Lua,
    list: Lua,
    stats: Lua,
    purge: Lua,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Lua::new(&format!("{PRELUDE}{body}"));
        Self {
            enqueue: s(ENQUEUE_LUA),
            peek: s(PEEK_LUA),
            lease: s(LEASE_LUA),
            settle: s(SETTLE_LUA),
            get: s(GET_LUA),
            requeue: s(REQUEUE_LUA),
            remove: s(REMOVE_LUA),
            list: s(LIST_LUA),
            stats: s(STATS_LUA),
            purge: s(PURGE_LUA),
        }
    }
}

/// Redis-backed [`EventQueue`]. Connects on first use (so a process can start while Redis is
/// down and fail closed until it is up), then reconnects by itself. Cheap to clone.
#[derive(Clone)]
pub struct RedisQueue {
    client: Client,
    conn: Arc<OnceCell<Connection>>,
    scripts: Arc<Scripts>,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may carry a password, and the TLS client key: never
        // print them.
        f.debug_struct("RedisQueue")
            .field("key_prefix", &self.options.key_prefix)
            .finish_non_exhaustive()
    }
}

/// A status as stored in the event hash.
fn status_letter(s: EventStatus) -> &'static str {
    match s {
        EventStatus::Pending => "p",
        EventStatus::Leased => "l",
        EventStatus::Delivered => "d",
        EventStatus::Dead => "x",
    }
}

fn corrupt(why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("Redis queue record: {why}"))
}

fn bytes(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

fn text(v: Value, what: &str) -> Result<String, StoreError> {
    String::from_utf8(bytes(v)?).map_err(|_| corrupt(format_args!("{what} is not UTF-8")))
}

fn number(v: Value, what: &str) -> Result<u64, StoreError> {
    match v {
        Value::Int(i) => u64::try_from(i).map_err(|_| corrupt(format_args!("{what} is negative"))),
        other => {
            let t = text(other, what)?;
            t.parse::<u64>()
                .or_else(|_| t.parse::<f64>().map(|f| f as u64))
                .map_err(|_| corrupt(format_args!("{what} is not a number")))
        }
    }
}

fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// One entry as the scripts' `entry()` returns it.
struct Parsed {
    entry: QueueEntry,
    /// Receipt sequence number.
    seq: u64,
    /// The current lease's token (0 before the first lease).
    token: u64,
}

fn parse_entry(route: &str, v: Value) -> Result<Parsed, StoreError> {
    let mut it = array(v)?.into_iter();
    let mut next = |what: &str| it.next().ok_or_else(|| corrupt(format_args!("no {what}")));
    let id = text(next("id")?, "id")?;
    let method = text(next("method")?, "method")?;
    let url = text(next("url")?, "url")?;
    let body = bytes(next("body")?)?;
    let received_at_ms = number(next("received")?, "received")?;
    let has_key = bytes(next("key flag")?)? == b"1";
    let key = text(next("order key")?, "order key")?;
    let status = match bytes(next("status")?)?.as_slice() {
        b"p" => EventStatus::Pending,
        b"l" => EventStatus::Leased,
        b"d" => EventStatus::Delivered,
        b"x" => EventStatus::Dead,
        other => {
            return Err(corrupt(format_args!(
                "unknown status {:?}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let attempts = u32::try_from(number(next("attempts")?, "attempts")?)
        .map_err(|_| corrupt("attempts out of range"))?;
    let next_attempt_at_ms = number(next("due")?, "due")?;
    let lease_until = bytes(next("lease")?)?;
    let token = number(next("token")?, "token")?;
    let has_error = bytes(next("error flag")?)? == b"1";
    let error = text(next("error")?, "error")?;
    let seq = number(next("sequence")?, "sequence")?;
    let header_count = number(next("header count")?, "header count")?;
    let mut headers = Vec::new();
    for _ in 0..header_count {
        let name = text(next("header name")?, "header name")?;
        let value = bytes(next("header value")?)?;
        headers.push((name, value));
    }
    let lease_until_ms = match status {
        EventStatus::Leased => Some(
            std::str::from_utf8(&lease_until)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt("leased event without a lease end"))?,
        ),
        _ => None,
    };
    let entry = QueueEntry {
        event: QueuedEvent {
            id,
            route: route.to_owned(),
            method,
            url,
            headers,
            body,
            received_at_ms,
            order_key: has_key.then_some(key),
        },
        status,
        attempts,
        next_attempt_at_ms,
        lease_until_ms,
        last_error: has_error.then_some(error),
    };
    Ok(Parsed { entry, seq, token })
}

/// A leased entry as the lease script returns it.
fn parse_leased(route: &str, v: Value) -> Result<Leased, StoreError> {
    let Parsed { entry, token, .. } = parse_entry(route, v)?;
    let lease_until_ms = entry
        .lease_until_ms
        .ok_or_else(|| corrupt("leased event is not leased"))?;
    Ok(Leased {
        event: entry.event,
        attempts: entry.attempts,
        lease_until_ms,
        token: LeaseToken::new(token),
    })
}

impl RedisQueue {
    /// A queue on the single node at `url` (`redis://[user:password@]host:port/db`, or
    /// `rediss://` for TLS). Only checks the URL; the connection is made by the first operation
    /// (and remade by later ones after a failure).
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        Self::at(&RedisTarget::node(url)?, options)
    }

    /// A queue on `target` (one node or a cluster, with or without TLS). Checks the settings and
    /// the TLS material; connects on first use, like [`RedisQueue::new`].
    pub fn at(target: &RedisTarget, options: RedisOptions) -> Result<Self, StoreError> {
        Ok(Self {
            client: target.client(&options)?,
            conn: Arc::new(OnceCell::new()),
            scripts: Arc::new(Scripts::new()),
            options,
        })
    }

    /// [`RedisQueue::new`], then connects at once: fails if the server does not answer within
    /// the operation timeout.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        Self::connect_to(&RedisTarget::node(url)?, options).await
    }

    /// [`RedisQueue::at`], then connects at once.
    pub async fn connect_to(
        target: &RedisTarget,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let q = Self::at(target, options)?;
        q.conn().await?;
        Ok(q)
    }

    /// The options in force.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    async fn conn(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        // Callers queue behind one connection attempt; none waits longer than one operation may
        // take.
        let init = self
            .conn
            .get_or_try_init(|| self.client.connect(&self.options));
        let after = self.options.operation_timeout;
        match tokio::time::timeout(after, init).await {
            Ok(conn) => Ok(conn?.clone()),
            Err(_) => Err(StoreError::Unavailable(Box::new(RedisError::Timeout {
                operation: "connect",
                after,
            }))),
        }
    }

    fn now(&self) -> u64 {
        self.options.clock.now_ms().min(MAX_EXACT_MS)
    }

    /// `<prefix>{q:<route>}`: the base of every key of `route`.
    fn base(&self, route: &str) -> Vec<u8> {
        let mut k = self.options.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(b"{q:");
        k.extend_from_slice(route.as_bytes());
        k.push(b'}');
        k
    }

    /// A key of `route`'s slot, passed as the script's `KEYS[1]` so a Cluster client routes it.
    fn slot_key(&self, route: &str) -> Vec<u8> {
        let mut k = self.base(route);
        k.extend_from_slice(b":all");
        k
    }

    /// `<prefix>{qid:<id>}`: which route holds `id`.
    fn id_key(&self, id: &str) -> Vec<u8> {
        let mut k = self.options.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(b"{qid:");
        k.extend_from_slice(id.as_bytes());
        k.push(b'}');
        k
    }

    fn meta_key(&self, name: &str) -> String {
        format!("{}{{qmeta}}:{name}", self.options.key_prefix)
    }

    /// Runs `script` on `route`'s slot with `args` after the key base.
    async fn run(
        &self,
        operation: &'static str,
        script: &Lua,
        route: &str,
        args: impl FnOnce(&mut LuaCall<'_>),
    ) -> Result<Value, StoreError> {
        let mut conn = self.conn().await?;
        let mut call = script.call();
        call.key(self.slot_key(route)).arg(self.base(route));
        args(&mut call);
        bounded(
            operation,
            self.options.operation_timeout,
            call.invoke(&mut conn),
        )
        .await
    }

    async fn routes(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let routes: Vec<Vec<u8>> = bounded(
            "list routes",
            self.options.operation_timeout,
            ::redis::cmd("SMEMBERS")
                .arg(self.meta_key("routes"))
                .query_async(&mut conn),
        )
        .await?;
        let mut routes = routes
            .into_iter()
            .map(|r| String::from_utf8(r).map_err(|_| corrupt("route name is not UTF-8")))
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort();
        Ok(routes)
    }

    /// The route holding `id`, if any.
    async fn route_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn().await?;
        let route: Option<Vec<u8>> = bounded(
            "find event",
            self.options.operation_timeout,
            ::redis::cmd("GET")
                .arg(self.id_key(id))
                .query_async(&mut conn),
        )
        .await?;
        route
            .map(|r| String::from_utf8(r).map_err(|_| corrupt("route name is not UTF-8")))
            .transpose()
    }

    async fn forget_ids(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        // One command however many slots the ids hash to: a cluster client splits it by slot.
        let mut del = ::redis::cmd("DEL");
        for id in ids {
            del.arg(self.id_key(id));
        }
        let _: Value = bounded(
            "forget ids",
            self.options.operation_timeout,
            del.query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn settle(
        &self,
        lease: &Leased,
        op: &'static str,
        at: u64,
        error: &str,
    ) -> Result<Settled, StoreError> {
        let now = self.now();
        let reply = self
            .run(op, &self.scripts.settle, &lease.event.route, |c| {
                c.arg(lease.event.id.as_bytes())
                    .arg(lease.token.get())
                    .arg(op)
                    .arg(now)
                    .arg(at.min(MAX_EXACT_MS))
                    .arg(error.as_bytes());
            })
            .await?;
        Ok(if number(reply, "settle reply")? == 1 {
            Settled::Applied
        } else {
            Settled::Stale
        })
    }
}

#[async_trait::async_trait]
impl EventQueue for RedisQueue {
    async fn enqueue(&self, event: &QueuedEvent) -> Result<Enqueued, StoreError> {
        let conn = self.conn().await?;
        // Claim the id for this route (or learn which route holds it), and take a receipt
        // sequence number and list the route: two pipelines, because the id and the metadata are
        // in different slots, sent together so they cost one round trip. A crash after this and
        // before the event is stored leaves the id pointing at this route with no event: the
        // provider's retry, which arrives on the same route, stores it then.
        let mut claim = ::redis::pipe();
        claim
            .cmd("SET")
            .arg(self.id_key(&event.id))
            .arg(event.route.as_bytes())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(self.id_key(&event.id));
        let mut meta = ::redis::pipe();
        meta.cmd("INCR")
            .arg(self.meta_key("seq"))
            .cmd("SADD")
            .arg(self.meta_key("routes"))
            .arg(event.route.as_bytes())
            .ignore();
        let (mut c1, mut c2) = (conn.clone(), conn);
        let after = self.options.operation_timeout;
        let ((holder,), (seq,)): ((Option<Vec<u8>>,), (u64,)) = tokio::try_join!(
            bounded("enqueue", after, claim.query_async(&mut c1)),
            bounded("enqueue", after, meta.query_async(&mut c2)),
        )?;
        if holder.as_deref() != Some(event.route.as_bytes()) {
            return Ok(Enqueued::Duplicate);
        }
        let member = format!("{seq:020}{}", event.id);
        let now = self.now();
        let reply = self
            .run("enqueue", &self.scripts.enqueue, &event.route, |c| {
                c.arg(member.as_bytes())
                    .arg(event.id.as_bytes())
                    .arg(event.method.as_bytes())
                    .arg(event.url.as_bytes())
                    .arg(event.body.as_slice())
                    .arg(event.received_at_ms)
                    .arg(if event.order_key.is_some() { "1" } else { "0" })
                    .arg(event.order_key.as_deref().unwrap_or("").as_bytes())
                    .arg(now)
                    .arg(event.headers.len());
                for (name, value) in &event.headers {
                    c.arg(name.as_bytes()).arg(value.as_slice());
                }
            })
            .await?;
        Ok(if number(reply, "enqueue reply")? == 1 {
            Enqueued::New
        } else {
            Enqueued::Duplicate
        })
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
        let now = self.now();
        let lease_ms = deadline(now, lease_for).min(MAX_EXACT_MS) - now;
        let lease_in = |route: String, members: Vec<Vec<u8>>| async move {
            let reply = self
                .run("lease", &self.scripts.lease, &route, |c| {
                    c.arg(now).arg(lease_ms).arg(max);
                    for m in &members {
                        c.arg(m.as_slice());
                    }
                })
                .await?;
            array(reply)?
                .into_iter()
                .map(|v| parse_leased(&route, v))
                .collect::<Result<Vec<_>, _>>()
        };
        let routes = match route {
            Some(r) => return lease_in(r.to_owned(), Vec::new()).await,
            None => self.routes().await?,
        };
        if routes.len() == 1 {
            return lease_in(routes[0].clone(), Vec::new()).await;
        }
        // Several routes: look at each one's candidates, keep the `max` earliest due overall
        // (ties in receipt order), then lease those; each is checked again, so an event another
        // worker took meanwhile is skipped.
        let mut candidates = Vec::new();
        for r in &routes {
            let reply = self
                .run("lease", &self.scripts.peek, r, |c| {
                    c.arg(now).arg(max);
                })
                .await?;
            let mut it = array(reply)?.into_iter();
            while let (Some(m), Some(due)) = (it.next(), it.next()) {
                candidates.push((number(due, "due")?, bytes(m)?, r.clone()));
            }
        }
        candidates.sort();
        candidates.truncate(max);
        let mut per_route: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (_, m, r) in &candidates {
            per_route.entry(r.clone()).or_default().push(m.clone());
        }
        let mut leased = Vec::new();
        for (r, members) in per_route {
            leased.extend(lease_in(r, members).await?);
        }
        let order = |l: &Leased| {
            candidates
                .iter()
                .position(|(_, m, r)| *r == l.event.route && m[20..] == *l.event.id.as_bytes())
        };
        leased.sort_by_key(|l| order(l));
        Ok(leased)
    }

    async fn ack(&self, lease: &Leased) -> Result<Settled, StoreError> {
        self.settle(lease, "ack", 0, "").await
    }

    async fn retry(
        &self,
        lease: &Leased,
        next_attempt_at_ms: u64,
        error: &str,
    ) -> Result<Settled, StoreError> {
        self.settle(lease, "retry", next_attempt_at_ms, error).await
    }

    async fn dead_letter(&self, lease: &Leased, error: &str) -> Result<Settled, StoreError> {
        self.settle(lease, "dead", 0, error).await
    }

    /// All at once rather than one round trip after another: the connection is multiplexed, so
    /// the scripts go out back to back and Redis runs them in the order sent (on a cluster, each
    /// on its route's node; the events of one batch are distinct, so their order across nodes
    /// does not matter). Settled one by one, delivery on Redis fell seconds behind the
    /// acknowledgements under load.
    async fn settle_many(
        &self,
        batch: &[(Leased, Settlement)],
    ) -> Vec<Result<Settled, StoreError>> {
        futures_util::future::join_all(batch.iter().map(|(lease, to)| match to {
            Settlement::Delivered => self.settle(lease, "ack", 0, ""),
            Settlement::Retry { at_ms, error } => self.settle(lease, "retry", *at_ms, error),
            Settlement::Dead { error } => self.settle(lease, "dead", 0, error),
        }))
        .await
    }

    async fn list(&self, filter: &ListFilter, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let routes = match &filter.route {
            Some(r) => vec![r.clone()],
            None => self.routes().await?,
        };
        let want = filter.status.map_or("", status_letter);
        let cutoff = filter
            .older_than
            .map(|d| received_cutoff(now, d).to_string())
            .unwrap_or_default();
        let mut all = Vec::new();
        for r in &routes {
            let reply = self
                .run("list", &self.scripts.list, r, |c| {
                    c.arg(want).arg(cutoff.as_str()).arg(limit);
                })
                .await?;
            for v in array(reply)? {
                let p = parse_entry(r, v)?;
                all.push((p.seq, p.entry));
            }
        }
        all.sort_by_key(|(seq, _)| *seq);
        Ok(all
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| filter.matches(e, now))
            .take(limit)
            .collect())
    }

    async fn get(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        let Some(route) = self.route_of(id).await? else {
            return Ok(None);
        };
        let reply = self
            .run("get", &self.scripts.get, &route, |c| {
                c.arg(id.as_bytes());
            })
            .await?;
        let items = array(reply)?;
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(parse_entry(&route, Value::Array(items))?.entry))
    }

    async fn requeue(&self, id: &str) -> Result<bool, StoreError> {
        let Some(route) = self.route_of(id).await? else {
            return Ok(false);
        };
        let now = self.now();
        let reply = self
            .run("requeue", &self.scripts.requeue, &route, |c| {
                c.arg(id.as_bytes()).arg(now);
            })
            .await?;
        Ok(number(reply, "requeue reply")? == 1)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let Some(route) = self.route_of(id).await? else {
            return Ok(false);
        };
        let reply = self
            .run("remove", &self.scripts.remove, &route, |c| {
                c.arg(id.as_bytes());
            })
            .await?;
        let removed = number(reply, "remove reply")? == 1;
        if removed {
            self.forget_ids(&[id.to_owned()]).await?;
        }
        Ok(removed)
    }

    async fn purge_delivered(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = self.now().saturating_sub(duration_ms(older_than));
        let mut total = 0;
        for r in self.routes().await? {
            let reply = self
                .run("purge", &self.scripts.purge, &r, |c| {
                    c.arg(cutoff);
                })
                .await?;
            let ids = array(reply)?
                .into_iter()
                .map(|v| text(v, "id"))
                .collect::<Result<Vec<_>, _>>()?;
            total += ids.len() as u64;
            self.forget_ids(&ids).await?;
        }
        Ok(total)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let _: Value = bounded(
            "ping",
            self.options.operation_timeout,
            ::redis::cmd("PING").query_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let now = self.now();
        let mut routes = Vec::new();
        for r in self.routes().await? {
            let reply = self.run("stats", &self.scripts.stats, &r, |_| {}).await?;
            let mut it = array(reply)?.into_iter();
            let mut next = |what: &str| it.next().ok_or_else(|| corrupt(format_args!("no {what}")));
            let pending = number(next("pending")?, "pending")?;
            let leased = number(next("leased")?, "leased")?;
            let dead = number(next("dead")?, "dead")?;
            let oldest = bytes(next("oldest")?)?;
            if pending + leased + dead == 0 {
                continue;
            }
            let oldest_undelivered_age = if oldest.is_empty() {
                None
            } else {
                let at = std::str::from_utf8(&oldest)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| corrupt("oldest received time is not a number"))?;
                Some(Duration::from_millis(now.saturating_sub(at)))
            };
            routes.push(RouteStats {
                route: r,
                pending,
                leased,
                dead,
                oldest_undelivered_age,
            });
        }
        Ok(QueueStats { routes })
    }
}
