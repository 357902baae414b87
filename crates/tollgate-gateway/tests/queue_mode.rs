//! Queue mode end to end on loopback: the gateway stores a verified event and answers the static
//! response, delivery workers post it to a recording upstream; retries, dead letters, ordering and
//! refusals when the event cannot be stored. Every wait is a bounded poll, never a fixed sleep
//! asserted on.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{config, now, parse, raw_request, APP_SECRET, KEY};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_gateway::delivery::{DeliveryHandle, DeliveryOptions};
use tollgate_gateway::Gateway;
use tollgate_store::{
    EventQueue, EventStatus, ListFilter, MemoryQueue, ReplayStore, SqliteQueue, StoreError,
};
use tollgate_verify::{find_provider, Options, Secret, SignInput, Signed};

/// One request the upstream received.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    uri: String,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Respond = Arc<dyn Fn(&Hit, usize) -> u16 + Send + Sync>;

/// A recording upstream: `respond(hit, earlier hits with the same Idempotency-Key)` picks the
/// status; each request is held `delay`, and overlapping requests of one `order` JSON field are
/// counted as ordering violations.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    overlaps: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }

    fn keys(&self) -> Vec<String> {
        self.hits()
            .iter()
            .filter_map(|h| h.header("idempotency-key").map(str::to_owned))
            .collect()
    }
}

async fn upstream_on(
    listener: TcpListener,
    respond: Respond,
    delay: Duration,
    gated: bool,
) -> Upstream {
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(Mutex::new(Vec::<Hit>::new()));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(if gated { 0 } else { 1 << 20 }));
    let inflight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (h, o, g) = (hits.clone(), overlaps.clone(), gate.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (h, o, g, inf, respond) = (
                h.clone(),
                o.clone(),
                g.clone(),
                inflight.clone(),
                respond.clone(),
            );
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (h, o, g, inf, respond) = (
                        h.clone(),
                        o.clone(),
                        g.clone(),
                        inf.clone(),
                        respond.clone(),
                    );
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let hit = Hit {
                            at: Instant::now(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let order = serde_json::from_slice::<serde_json::Value>(&hit.body)
                            .ok()
                            .and_then(|v| {
                                v.get("order").and_then(|o| o.as_str().map(str::to_owned))
                            });
                        if let Some(k) = &order {
                            let mut m = inf.lock().expect("lock");
                            let n = m.entry(k.clone()).or_default();
                            *n += 1;
                            if *n > 1 {
                                o.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        let earlier = {
                            let mut all = h.lock().expect("lock");
                            let key = hit.header("idempotency-key").map(str::to_owned);
                            let n = all
                                .iter()
                                .filter(|x| x.header("idempotency-key").map(str::to_owned) == key)
                                .count();
                            all.push(hit.clone());
                            n
                        };
                        if let Ok(p) = g.acquire().await {
                            p.forget();
                            g.add_permits(1);
                        }
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let status = respond(&hit, earlier);
                        if let Some(k) = &order {
                            if let Some(n) = inf.lock().expect("lock").get_mut(k) {
                                *n -= 1;
                            }
                        }
                        let mut resp = http::Response::new(Full::new(Bytes::from_static(b"app")));
                        *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        overlaps,
        gate,
        task,
    }
}

async fn upstream(respond: Respond) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    upstream_on(l, respond, Duration::ZERO, false).await
}

fn always(status: u16) -> Respond {
    Arc::new(move |_, _| status)
}

/// A gateway with a queue and running delivery workers.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serve: Option<tokio::task::JoinHandle<()>>,
    delivery: Option<DeliveryHandle>,
}

impl Running {
    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.serve.take() {
            t.await.expect("serve");
        }
        if let Some(d) = self.delivery.take() {
            d.shutdown(Duration::from_secs(2)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.serve {
            t.abort();
        }
    }
}

async fn start(cfg_text: &str, store: Arc<dyn ReplayStore>, queue: Arc<dyn EventQueue>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gateway = Gateway::with_queue(config(cfg_text), store, Some(queue));
    let delivery = gateway.spawn_delivery(
        DeliveryOptions {
            poll: Duration::from_millis(20),
            ..DeliveryOptions::default()
        },
        Duration::from_secs(2),
    );
    let (stop, rx) = tokio::sync::oneshot::channel();
    let gw = gateway.clone();
    let serve = tokio::spawn(async move {
        gw.serve(listener, None, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    Running {
        addr,
        stop: Some(stop),
        serve: Some(serve),
        delivery,
    }
}

fn memory_store() -> Arc<dyn ReplayStore> {
    Arc::new(tollgate_store::MemoryStore::new())
}

const QUEUE_ROUTE: &str = r#"mode = "queue"
response = { status = 200, content_type = "text/xml", body = "<Response/>" }
upstream_timeout_ms = 2000
retry_initial_ms = 20
retry_max_ms = 200"#;

fn cfg(up: SocketAddr, extra: &str) -> String {
    common::config_text(up, "", &format!("{QUEUE_ROUTE}\n{extra}"))
}

/// A standard-webhooks request with a JSON `body`, event id `nonce`, for `/hooks/voice?x=1`.
fn signed_json(gw: SocketAddr, nonce: &str, body: &[u8]) -> (Signed, Vec<u8>) {
    let spec = find_provider("standard-webhooks").expect("spec");
    let host = gw.to_string();
    let input = SignInput {
        method: "POST".into(),
        url: format!("http://{host}/hooks/voice?x=1"),
        content_type: Some("application/json".into()),
        body: body.to_vec(),
        now: now(),
        nonce: nonce.to_owned(),
    };
    let s = (spec.sign)(&Options::new(), &Secret::new(KEY), &input).expect("sign");
    let raw = raw_request(&s, "/hooks/voice?x=1", &host, &[("x-custom", "kept")]);
    (s, raw)
}

async fn send(addr: SocketAddr, raw: &[u8]) -> common::Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    parse(&buf)
}

async fn deliver(gw: SocketAddr, nonce: &str) -> common::Answer {
    let body = format!(r#"{{"type":"call.completed","id":"{nonce}"}}"#);
    send(gw, &signed_json(gw, nonce, body.as_bytes()).1).await
}

/// Polls `f` every 10 ms until it is true; panics after `secs` seconds (a bound, not a timing).
async fn until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status(q: &dyn EventQueue, id: &str) -> Option<EventStatus> {
    q.get(id).await.expect("get").map(|e| e.status)
}

async fn count(q: &dyn EventQueue, s: EventStatus) -> usize {
    q.list(
        &ListFilter {
            status: Some(s),
            ..ListFilter::default()
        },
        100_000,
    )
    .await
    .expect("list")
    .len()
}

#[tokio::test]
async fn accepted_event_is_answered_at_once_while_the_upstream_is_slow_then_delivered_signed() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = upstream_on(l, always(200), Duration::ZERO, true).await;
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(&cfg(up.addr, ""), memory_store(), queue.clone()).await;
    let (s, raw) = signed_json(gw.addr, "msg_q1", br#"{"type":"call.completed"}"#);
    let a = send(gw.addr, &raw).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body, "<Response/>");
    assert_eq!(a.header("content-type"), Some("text/xml"));
    // The upstream holds every request until the gate opens: the answer above came first.
    let id = "hooks:id:msg_q1";
    until(
        10,
        "the first attempt to reach the held upstream",
        || async { up.hits().len() == 1 },
    )
    .await;
    assert_eq!(status(queue.as_ref(), id).await, Some(EventStatus::Leased));
    up.gate.add_permits(1);
    until(10, "delivery", || async {
        status(queue.as_ref(), id).await == Some(EventStatus::Delivered)
    })
    .await;

    let hits = up.hits();
    assert_eq!(hits.len(), 1);
    let h = &hits[0];
    assert_eq!(h.uri, "/app/hooks/voice?x=1");
    assert_eq!(h.body.as_ref(), s.body.as_slice(), "body byte-identical");
    assert_eq!(h.header("idempotency-key"), Some(id));
    assert_eq!(h.header("webhook-id"), Some(id));
    assert_eq!(h.header("x-custom"), Some("kept"));
    assert_eq!(
        h.header("tollgate-verified"),
        Some("provider=standard-webhooks; key=k1")
    );
    assert_eq!(h.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(h.header("content-type"), Some("application/json"));
    assert!(h.headers.keys().all(|k| !k.as_str().starts_with(':')));
    // tollgate's signature verifies with the app secret.
    let app_url = format!("http://{}/app/hooks/voice?x=1", up.addr);
    let req = tollgate_verify::Request {
        method: "POST",
        url: &app_url,
        headers: &h.headers,
        body: &h.body,
    };
    let spec = find_provider("standard-webhooks").expect("spec");
    let ring = tollgate_verify::KeyRing::single(Secret::new(APP_SECRET));
    let v = (spec.build)(&Options::new(), &ring, &Default::default()).expect("build");
    let verified = v.verify(&req, now()).expect("app signature verifies");
    assert_eq!(verified.event_id_str(), Some(id));
    gw.shutdown().await;
}

#[tokio::test]
async fn provider_retry_is_not_enqueued_twice() {
    let up = upstream(always(200)).await;
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(&cfg(up.addr, ""), memory_store(), queue.clone()).await;
    let (_, raw) = signed_json(gw.addr, "msg_dup", b"{}");
    let first = send(gw.addr, &raw).await;
    let second = send(gw.addr, &raw).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(second.body, "<Response/>");
    assert_eq!(second.header("tollgate-replayed"), Some("true"));
    until(10, "delivery", || async {
        count(queue.as_ref(), EventStatus::Delivered).await == 1
    })
    .await;
    // Another gateway on the same queue (a fresh replay store): the queue holds the id, so the
    // retry is acknowledged without a second copy.
    let forgetful = start(&cfg(up.addr, ""), memory_store(), queue.clone()).await;
    let (_, raw) = signed_json(forgetful.addr, "msg_dup", b"{}");
    let third = send(forgetful.addr, &raw).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.body, "<Response/>");
    assert_eq!(
        queue
            .list(&ListFilter::default(), 100)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(up.keys(), ["hooks:id:msg_dup"]);
    gw.shutdown().await;
    forgetful.shutdown().await;
}

/// A replay store that counts every call: queue-mode routes must not use it.
#[derive(Debug, Default)]
struct CountingStore {
    inner: tollgate_store::MemoryStore,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ReplayStore for CountingStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<tollgate_store::Claim, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.claim(key, lease).await
    }
    async fn complete(
        &self,
        key: &str,
        response: &tollgate_store::StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.complete(key, response, ttl).await
    }
    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.release(key).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn concurrent_duplicates_are_one_event_with_one_write_and_no_replay_claim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue: Arc<dyn EventQueue> = Arc::new(
        SqliteQueue::open(dir.path().join("q.db"), tollgate_store::Durability::Batch)
            .expect("open"),
    );
    let up = upstream(always(200)).await;
    let store = Arc::new(CountingStore::default());
    let gw = start(&cfg(up.addr, ""), store.clone(), queue.clone()).await;
    let (_, raw) = signed_json(gw.addr, "msg_race", b"{}");
    let answers = futures_join(
        (0..16)
            .map(|_| {
                let raw = raw.clone();
                let addr = gw.addr;
                tokio::spawn(async move { send(addr, &raw).await })
            })
            .collect(),
    )
    .await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.body == "<Response/>"));
    let fresh = answers
        .iter()
        .filter(|a| a.header("tollgate-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one request stored the event");
    until(10, "delivery", || async {
        count(queue.as_ref(), EventStatus::Delivered).await == 1
    })
    .await;
    // A retry after delivery is still recognised by the queue.
    let late = send(gw.addr, &raw).await;
    assert_eq!(late.status, 200);
    assert_eq!(late.header("tollgate-replayed"), Some("true"));
    assert_eq!(
        queue
            .list(&ListFilter::default(), 100)
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(up.keys(), ["hooks:id:msg_race"]);
    assert_eq!(
        store.calls.load(Ordering::SeqCst),
        0,
        "queue mode used the replay store"
    );
    gw.shutdown().await;
}

async fn futures_join<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn four_xx_dead_letters_at_once_and_a_requeue_redelivers() {
    let refuse = Arc::new(AtomicBool::new(true));
    let r = refuse.clone();
    let up = upstream(Arc::new(
        move |_, _| if r.load(Ordering::SeqCst) { 404 } else { 200 },
    ))
    .await;
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(&cfg(up.addr, ""), memory_store(), queue.clone()).await;
    assert_eq!(deliver(gw.addr, "msg_404").await.status, 200);
    let id = "hooks:id:msg_404";
    until(10, "dead letter", || async {
        status(queue.as_ref(), id).await == Some(EventStatus::Dead)
    })
    .await;
    let e = queue.get(id).await.expect("get").expect("event");
    assert_eq!(e.attempts, 1, "a 404 is not retried");
    assert_eq!(e.last_error.as_deref(), Some("upstream answered 404"));
    refuse.store(false, Ordering::SeqCst);
    assert!(queue.requeue(id).await.expect("requeue"));
    until(10, "redelivery", || async {
        status(queue.as_ref(), id).await == Some(EventStatus::Delivered)
    })
    .await;
    assert_eq!(up.keys(), [id, id]);
    gw.shutdown().await;
}

#[tokio::test]
async fn retryable_failures_back_off_and_408_429_5xx_are_retried_not_dead_lettered() {
    // Attempts 1-4 fail (408, 429, 500, 503), the fifth succeeds.
    let up = upstream(Arc::new(|_, earlier| {
        [408, 429, 500, 503].get(earlier).copied().unwrap_or(200)
    }))
    .await;
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(
        &common::config_text(
            up.addr,
            "",
            "mode = \"queue\"\nretry_initial_ms = 100\nretry_max_ms = 10000\nbreaker_failures = 0",
        ),
        memory_store(),
        queue.clone(),
    )
    .await;
    assert_eq!(deliver(gw.addr, "msg_backoff").await.status, 200);
    let id = "hooks:id:msg_backoff";
    until(20, "delivery", || async {
        status(queue.as_ref(), id).await == Some(EventStatus::Delivered)
    })
    .await;
    let hits = up.hits();
    assert_eq!(hits.len(), 5);
    // Equal jitter: the wait after attempt n is at least half of 100 ms · 2^(n-1), so the floors
    // double: 50, 100, 200, 400 ms.
    for (n, pair) in hits.windows(2).enumerate() {
        let gap = pair[1].at.duration_since(pair[0].at);
        let floor = Duration::from_millis(50 << n);
        assert!(
            gap >= floor,
            "gap {n} was {gap:?}, below the backoff floor {floor:?}"
        );
    }
    let e = queue.get(id).await.expect("get").expect("event");
    assert_eq!(e.attempts, 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn max_attempts_dead_letters_with_the_last_error() {
    let up = upstream(always(503)).await;
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(
        &cfg(up.addr, "max_attempts = 3\nbreaker_failures = 0"),
        memory_store(),
        queue.clone(),
    )
    .await;
    assert_eq!(deliver(gw.addr, "msg_give_up").await.status, 200);
    let id = "hooks:id:msg_give_up";
    until(20, "dead letter", || async {
        status(queue.as_ref(), id).await == Some(EventStatus::Dead)
    })
    .await;
    let e = queue.get(id).await.expect("get").expect("event");
    assert_eq!(e.attempts, 3);
    assert_eq!(
        e.last_error.as_deref(),
        Some("upstream answered 503 (gave up: max_attempts, 3 attempts)")
    );
    assert_eq!(up.hits().len(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_down_then_up_delivers_every_event_and_none_is_dead_lettered() {
    // The upstream's port refuses connections until the upstream starts on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(
        &cfg(
            port,
            "concurrency = 4\nbreaker_failures = 3\nbreaker_probe_ms = 50\nmax_attempts = 1000",
        ),
        memory_store(),
        queue.clone(),
    )
    .await;
    const N: usize = 40;
    for i in 0..N {
        assert_eq!(deliver(gw.addr, &format!("msg_down_{i}")).await.status, 200);
    }
    // Wait until the events have been tried and failed more than once while the upstream is down.
    until(20, "failed attempts while down", || async {
        let all = queue
            .list(&ListFilter::default(), 1000)
            .await
            .expect("list");
        all.iter().filter(|e| e.attempts >= 2).count() >= 3
    })
    .await;
    assert_eq!(count(queue.as_ref(), EventStatus::Delivered).await, 0);
    let listener = TcpListener::bind(port)
        .await
        .expect("rebind the upstream port");
    let up = upstream_on(listener, always(200), Duration::ZERO, false).await;
    until(30, "every event delivered", || async {
        count(queue.as_ref(), EventStatus::Delivered).await == N
    })
    .await;
    assert_eq!(count(queue.as_ref(), EventStatus::Dead).await, 0);
    let mut keys = up.keys();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), N, "every event reached the upstream");
    assert_eq!(
        up.hits().len(),
        N,
        "each exactly once once the upstream was up"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn events_sharing_an_order_key_are_delivered_one_at_a_time_in_receipt_order() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // Every third attempt fails once, so retries would reorder events if lines were not held.
    let up = upstream_on(
        l,
        Arc::new(|h, earlier| {
            let seq = serde_json::from_slice::<serde_json::Value>(&h.body)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
            if seq % 3 == 1 && earlier == 0 {
                503
            } else {
                200
            }
        }),
        Duration::from_millis(2),
        false,
    )
    .await;
    let queue: Arc<dyn EventQueue> = Arc::new(MemoryQueue::new());
    let gw = start(
        &cfg(
            up.addr,
            "concurrency = 8\norder_key = \"order\"\nbreaker_failures = 0",
        ),
        memory_store(),
        queue.clone(),
    )
    .await;
    const PER_KEY: u64 = 12;
    let keys = ["c1", "c2", "c3"];
    for seq in 0..PER_KEY {
        for k in keys {
            let body = format!(r#"{{"order":"{k}","seq":{seq}}}"#);
            let (_, raw) = signed_json(gw.addr, &format!("msg_{k}_{seq}"), body.as_bytes());
            assert_eq!(send(gw.addr, &raw).await.status, 200);
        }
    }
    let total = PER_KEY as usize * keys.len();
    until(30, "every event delivered", || async {
        count(queue.as_ref(), EventStatus::Delivered).await == total
    })
    .await;
    assert_eq!(
        up.overlaps.load(Ordering::SeqCst),
        0,
        "two events of one key were in flight at once"
    );
    let e = queue
        .get("hooks:id:msg_c1_0")
        .await
        .expect("get")
        .expect("event");
    assert_eq!(e.event.order_key.as_deref(), Some("c1"));
    // Delivered (2xx) order per key is receipt order.
    let mut delivered: HashMap<String, Vec<u64>> = HashMap::new();
    let hits = up.hits();
    for (i, h) in hits.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(&h.body).expect("json");
        let seq = v["seq"].as_u64().expect("seq");
        let key = h.header("idempotency-key").expect("key");
        let first_try = !hits[..i]
            .iter()
            .any(|x| x.header("idempotency-key") == Some(key));
        if !(seq % 3 == 1 && first_try) {
            delivered
                .entry(v["order"].as_str().expect("order").to_owned())
                .or_default()
                .push(seq);
        }
    }
    for k in keys {
        assert_eq!(delivered[k], (0..PER_KEY).collect::<Vec<_>>(), "key {k}");
    }
    gw.shutdown().await;
}

/// A queue whose `enqueue` fails while `fail` is set.
#[derive(Debug)]
struct Flaky {
    inner: MemoryQueue,
    fail: AtomicBool,
}

#[async_trait::async_trait]
impl EventQueue for Flaky {
    async fn enqueue(
        &self,
        e: &tollgate_store::QueuedEvent,
    ) -> Result<tollgate_store::Enqueued, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk on fire".into()));
        }
        self.inner.enqueue(e).await
    }
    async fn lease(
        &self,
        r: Option<&str>,
        max: usize,
        d: Duration,
    ) -> Result<Vec<tollgate_store::Leased>, StoreError> {
        self.inner.lease(r, max, d).await
    }
    async fn ack(&self, l: &tollgate_store::Leased) -> Result<tollgate_store::Settled, StoreError> {
        self.inner.ack(l).await
    }
    async fn retry(
        &self,
        l: &tollgate_store::Leased,
        at: u64,
        e: &str,
    ) -> Result<tollgate_store::Settled, StoreError> {
        self.inner.retry(l, at, e).await
    }
    async fn dead_letter(
        &self,
        l: &tollgate_store::Leased,
        e: &str,
    ) -> Result<tollgate_store::Settled, StoreError> {
        self.inner.dead_letter(l, e).await
    }
    async fn list(
        &self,
        f: &ListFilter,
        n: usize,
    ) -> Result<Vec<tollgate_store::QueueEntry>, StoreError> {
        self.inner.list(f, n).await
    }
    async fn get(&self, id: &str) -> Result<Option<tollgate_store::QueueEntry>, StoreError> {
        self.inner.get(id).await
    }
    async fn requeue(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.requeue(id).await
    }
    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
    async fn purge_delivered(&self, d: Duration) -> Result<u64, StoreError> {
        self.inner.purge_delivered(d).await
    }
    async fn stats(&self) -> Result<tollgate_store::QueueStats, StoreError> {
        self.inner.stats().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("flaky queue is failing".into()));
        }
        self.inner.ping().await
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_stored_is_refused_503_and_stored_on_the_retry() {
    let up = upstream(always(200)).await;
    let flaky = Arc::new(Flaky {
        inner: MemoryQueue::new(),
        fail: AtomicBool::new(true),
    });
    let gw = start(&cfg(up.addr, ""), memory_store(), flaky.clone()).await;
    let (_, raw) = signed_json(gw.addr, "msg_unstored", b"{}");
    let a = send(gw.addr, &raw).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body, r#"{"error":"queue_unavailable"}"#);
    assert_eq!(
        flaky
            .list(&ListFilter::default(), 10)
            .await
            .expect("list")
            .len(),
        0
    );
    // Nothing was held: the provider's retry is stored and acknowledged, not 409 or a replay.
    flaky.fail.store(false, Ordering::SeqCst);
    let b = send(gw.addr, &raw).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.header("tollgate-replayed"), None);
    until(10, "delivery", || async { up.hits().len() == 1 }).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_gateway_without_a_queue_refuses_queue_routes() {
    let up = upstream(always(200)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gateway = Gateway::new(config(&cfg(up.addr, "")), memory_store());
    assert!(gateway
        .spawn_delivery(DeliveryOptions::default(), Duration::ZERO)
        .is_none());
    let task = tokio::spawn(async move {
        let _ = gateway.serve(listener, None, std::future::pending()).await;
    });
    let a = deliver(addr, "msg_noqueue").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body, r#"{"error":"queue_unavailable"}"#);
    assert!(up.hits().is_empty());
    task.abort();
}

#[tokio::test]
async fn full_sqlite_queue_answers_503_never_2xx_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = Arc::new(
        SqliteQueue::open(dir.path().join("q.db"), tollgate_store::Durability::Batch)
            .expect("open"),
    );
    let cap = q.set_max_page_count(1).await.expect("cap");
    let up = upstream(always(200)).await;
    let gw = start(&cfg(up.addr, ""), memory_store(), q.clone()).await;
    // Fill the capped file until the queue refuses; every answer is 200 (stored) or 503 (not).
    let big = "x".repeat(3000);
    let mut refused = Vec::new();
    let mut acked = Vec::new();
    for i in 0..200 {
        let nonce = format!("msg_full_{i}");
        let body = format!(r#"{{"pad":"{big}","i":{i}}}"#);
        let (_, raw) = signed_json(gw.addr, &nonce, body.as_bytes());
        let a = send(gw.addr, &raw).await;
        match a.status {
            200 => acked.push(format!("hooks:id:{nonce}")),
            503 => {
                assert_eq!(a.body, r#"{"error":"queue_unavailable"}"#);
                refused.push(format!("hooks:id:{nonce}"));
            }
            s => panic!("unexpected {s}: {a:?} (cap {cap} pages)"),
        }
    }
    assert!(!refused.is_empty(), "the capped queue never filled");
    for id in &refused {
        assert_eq!(
            q.get(id).await.expect("get"),
            None,
            "{id} answered 503 but stored"
        );
    }
    for id in &acked {
        assert!(
            q.get(id).await.expect("get").is_some(),
            "{id} answered 200 but not stored"
        );
    }
    // Every acknowledged event is delivered.
    until(30, "acknowledged events delivered", || async {
        let mut keys = up.keys();
        keys.sort();
        keys.dedup();
        acked.iter().all(|id| keys.contains(id))
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn read_only_sqlite_queue_answers_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ro.db");
    SqliteQueue::open(&path, tollgate_store::Durability::Always)
        .expect("create")
        .close()
        .await;
    let uri = format!("file:{}?mode=ro", path.display());
    let q = Arc::new(SqliteQueue::open(&uri, tollgate_store::Durability::Always).expect("open ro"));
    let up = upstream(always(200)).await;
    let gw = start(&cfg(up.addr, ""), memory_store(), q.clone()).await;
    for i in 0..3 {
        let a = deliver(gw.addr, &format!("msg_ro_{i}")).await;
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.body, r#"{"error":"queue_unavailable"}"#);
    }
    assert!(q
        .list(&ListFilter::default(), 10)
        .await
        .expect("list")
        .is_empty());
    assert!(up.hits().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn readyz_is_503_while_the_event_queue_is_unreachable() {
    let up = upstream(always(200)).await;
    let flaky = Arc::new(Flaky {
        inner: MemoryQueue::new(),
        fail: AtomicBool::new(true),
    });
    let readyz = |gateway: Gateway| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            gateway
                .serve_admin(listener, None, std::future::pending())
                .await
        });
        let a = send(
            addr,
            b"GET /readyz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        task.abort();
        (a.status, a.body)
    };
    let queued = Gateway::with_queue(
        config(&cfg(up.addr, "")),
        memory_store(),
        Some(flaky.clone()),
    );
    assert_eq!(
        readyz(queued.clone()).await,
        (503, "event queue unavailable\n".to_owned())
    );
    // The queue only matters while a route is in queue mode.
    let proxy_only = Gateway::with_queue(
        config(&common::config_text(up.addr, "", "")),
        memory_store(),
        Some(flaky.clone()),
    );
    assert_eq!(readyz(proxy_only).await, (200, "ready\n".to_owned()));
    // Reachable again: ready, without a restart.
    flaky.fail.store(false, Ordering::SeqCst);
    assert_eq!(readyz(queued).await, (200, "ready\n".to_owned()));
}
