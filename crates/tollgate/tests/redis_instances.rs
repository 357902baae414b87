//! Fault test 3 of issue 4, on the real binary: two tollgate instances on one Redis act as one.
//! Proxy mode: the same provider retry sent to both, one after the other or at the same moment,
//! is forwarded once; every other copy gets the first answer replayed, or 409 while it is in
//! flight. Queue mode: events an instance acknowledged and was delivering when it was killed
//! (SIGKILL) are claimed by the other once their leases run out, and delivered. The Redis URL
//! carries a password, which no log line may show.
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use redis_support::{send, signed_request, upstream, Answer, Tollgate, APP_ANSWER};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tollgate_store::redis_server::RedisServer;

const PASSWORD: &str = "s3cret-redis-pw";

/// A private server requiring [`PASSWORD`].
fn redis_with_password() -> (RedisServer, String) {
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("{e}"));
    let reply = redis
        .command(&format!("CONFIG SET requirepass {PASSWORD}"))
        .unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port());
    (redis, url)
}

fn is_first(a: &Answer) -> bool {
    a.status == 200 && a.body == APP_ANSWER && !a.replayed()
}

fn is_replay(a: &Answer) -> bool {
    a.status == 200 && a.body == APP_ANSWER && a.replayed()
}

fn is_in_flight(a: &Answer) -> bool {
    a.status == 409 && a.body.contains("in_flight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_on_the_other_instance_is_recognised_sequentially() {
    let (redis, url) = redis_with_password();
    let (up, recorded) = upstream(Duration::ZERO).await;
    let a = Tollgate::start(&url, up).await;
    let b = Tollgate::start(&url, up).await;

    for i in 0..10 {
        let id = format!("seq-{i}");
        // Alternate which instance sees the event first.
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let bytes = signed_request(&id, first.addr);
        let one = send(first.addr, &bytes).await;
        assert!(is_first(&one), "{id} first: {one:?}");
        // The provider's retry: the very same bytes, landing on the other instance.
        let two = send(second.addr, &bytes).await;
        assert!(is_replay(&two), "{id} retry on the other instance: {two:?}");
        let three = send(first.addr, &bytes).await;
        assert!(
            is_replay(&three),
            "{id} retry on the same instance: {three:?}"
        );
        assert_eq!(recorded.count(&id), 1, "{id}");
    }
    assert_eq!(recorded.ids().len(), 10);
    for t in [&a, &b] {
        let log = t.log();
        assert!(
            !log.contains(PASSWORD),
            "the Redis password is in a log:\n{log}"
        );
    }
    drop((a, b, redis));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_copies_on_both_instances_are_forwarded_once() {
    const EVENTS: usize = 8;
    const COPIES_PER_INSTANCE: usize = 3;
    let (redis, url) = redis_with_password();
    // The app takes a moment, so copies arriving meanwhile find the event in flight.
    let (up, recorded) = upstream(Duration::from_millis(200)).await;
    let a = Tollgate::start(&url, up).await;
    let b = Tollgate::start(&url, up).await;

    let copies = EVENTS * 2 * COPIES_PER_INSTANCE;
    let barrier = Arc::new(Barrier::new(copies));
    let mut tasks = Vec::new();
    for e in 0..EVENTS {
        let id = format!("conc-{e}");
        let bytes = Arc::new(signed_request(&id, a.addr));
        for addr in [a.addr, b.addr] {
            for _ in 0..COPIES_PER_INSTANCE {
                let (id, bytes, barrier) = (id.clone(), Arc::clone(&bytes), Arc::clone(&barrier));
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    (id, send(addr, &bytes).await)
                }));
            }
        }
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for e in 0..EVENTS {
        let id = format!("conc-{e}");
        let mine: Vec<&Answer> = answers
            .iter()
            .filter(|(x, _)| *x == id)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(mine.len(), 2 * COPIES_PER_INSTANCE);
        let firsts = mine.iter().filter(|a| is_first(a)).count();
        assert_eq!(firsts, 1, "{id}: {mine:?}");
        for a in &mine {
            assert!(
                is_first(a) || is_replay(a) || is_in_flight(a),
                "{id}: unexpected answer {a:?}"
            );
        }
        assert_eq!(recorded.count(&id), 1, "{id} forwarded more than once");
        // Once the first answer is stored, every later retry, on either instance, replays it.
        for t in [&a, &b] {
            let later = send(t.addr, &signed_request(&id, t.addr)).await;
            assert!(is_replay(&later), "{id} later: {later:?}");
        }
    }
    assert_eq!(recorded.ids().len(), EVENTS);
    for t in [&a, &b] {
        assert!(
            !t.log().contains(PASSWORD),
            "the Redis password is in a log"
        );
    }
    drop((a, b, redis));
}

/// Every request an upstream received: the `Idempotency-Key` and when it arrived.
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// An upstream that never answers while `hang` is set (a hung app: deliveries stay in progress)
/// and answers 200 at once otherwise.
async fn hanging_upstream(hang: Arc<AtomicBool>) -> (SocketAddr, Arrivals) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals: Arrivals = Arc::default();
    let rec = Arc::clone(&arrivals);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (rec, hang) = (Arc::clone(&rec), Arc::clone(&hang));
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (rec, hang) = (Arc::clone(&rec), Arc::clone(&hang));
                    async move {
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("<none>")
                            .to_owned();
                        let _ = req.into_body().collect().await;
                        rec.lock().unwrap().push((key, Instant::now()));
                        if hang.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, arrivals)
}

/// Queue mode on Redis; `upstream_timeout_ms = 5000` (from the harness) makes the lease 10 s.
const QUEUE_ROUTE: &str = r#"mode = "queue"
response = { status = 200, content_type = "text/xml", body = "<Response/>" }
concurrency = 16
retry_initial_ms = 100
retry_max_ms = 500"#;

/// The lease a delivery holds: `upstream_timeout_ms` + 5 s.
const LEASE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_of_an_instance_killed_mid_delivery_are_claimed_and_delivered_by_the_other() {
    const EVENTS: usize = 8;
    let (redis, url) = redis_with_password();
    let hang = Arc::new(AtomicBool::new(true));
    let (up, arrivals) = hanging_upstream(Arc::clone(&hang)).await;
    let mut a = Tollgate::start_with(&url, up, 200, QUEUE_ROUTE).await;

    // A acknowledges every event (stored durably), then leases and posts each to the hung app.
    let mut acked = Vec::new();
    for i in 0..EVENTS {
        let id = format!("qkill-{i}");
        let answer = a.send(&id).await;
        assert_eq!(answer.status, 200, "{id}: {answer:?}");
        assert_eq!(answer.body, "<Response/>");
        acked.push(format!("hooks:id:{id}"));
    }
    let end = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().unwrap().len() < EVENTS {
        assert!(Instant::now() < end, "A never posted every event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_post = arrivals.lock().unwrap()[0].1;

    // B joins while A holds every lease, then A dies mid-delivery; the app recovers.
    let b = Tollgate::start_with(&url, up, 200, QUEUE_ROUTE).await;
    assert!(
        first_post.elapsed() < Duration::from_secs(4),
        "A's deliveries timed out before the kill; the test would not be mid-delivery"
    );
    a.kill();
    let killed = Instant::now();
    let before_kill = arrivals.lock().unwrap().len();
    assert_eq!(before_kill, EVENTS, "B delivered while A held the leases");
    hang.store(false, Ordering::SeqCst);

    // B claims each event once its lease has run out and delivers it: every acknowledged event
    // reaches the app, and a deduplicating app (by Idempotency-Key) sees each exactly once more.
    let end = killed + LEASE + Duration::from_secs(15);
    loop {
        let after: Vec<String> = arrivals.lock().unwrap()[before_kill..]
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        if acked.iter().all(|id| after.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "not every acknowledged event was redelivered: {after:?}\nB's log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let any stray duplicate show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = arrivals.lock().unwrap().clone();
    let after = &all[before_kill..];
    for id in &acked {
        assert_eq!(
            all[..before_kill].iter().filter(|(k, _)| k == id).count(),
            1,
            "{id}: A's delivery"
        );
        assert_eq!(
            after.iter().filter(|(k, _)| k == id).count(),
            1,
            "{id}: B's redelivery"
        );
    }
    assert_eq!(after.len(), EVENTS, "only acknowledged events: {after:?}");
    // Not before the leases ran out: B took over A's leases, it did not deliver beside A.
    for (id, at) in after {
        assert!(
            at.duration_since(first_post) >= LEASE - Duration::from_millis(500),
            "{id} redelivered {:?} after A's first post, before the lease ran out",
            at.duration_since(first_post)
        );
    }
    assert!(
        !b.log().contains(PASSWORD) && !a.log().contains(PASSWORD),
        "the Redis password is in a log"
    );
    drop((a, b, redis));
}
