//! The real `tollgate serve` binary in queue mode on SQLite: `kill -9` while it acknowledges a
//! stream of callbacks loses none it acknowledged, and `tollgate queue` inspects and redelivers.
//! Every child process is killed by a guard; every wait is a bounded poll.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_verify::{find_provider, Options, Secret, SignInput};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const APP_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `tollgate serve`, killed (SIGKILL) when dropped if still running.
struct Serve(Child);

impl Serve {
    fn start(config: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("KEY", KEY)
            .env("APP_SECRET", APP_SECRET)
            .env("TOLLGATE_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tollgate serve");
        Serve(child)
    }

    fn kill_9(&mut self) {
        self.0.kill().expect("SIGKILL");
        let status = self.0.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < end, "tollgate did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// An upstream that records every Idempotency-Key; `refuse(key)` answers 404 while set.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    refuse: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(Mutex::new(BTreeSet::new()));
        let (h, r) = (hits.clone(), refuse.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, r) = (h.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (h, r) = (h.clone(), r.clone());
                        async move {
                            let key = req
                                .headers()
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let _ = req.into_body().collect().await;
                            let refused = r.lock().expect("lock").contains(&key);
                            h.lock().expect("lock").push(key);
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = if refused {
                                http::StatusCode::NOT_FOUND
                            } else {
                                http::StatusCode::NO_CONTENT
                            };
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
            refuse,
            task,
        }
    }

    fn unique(&self) -> BTreeSet<String> {
        self.hits.lock().expect("lock").iter().cloned().collect()
    }
}

fn write_config(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    up: SocketAddr,
    fsync: &str,
) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"
reload_poll_secs = 0
drain_timeout_secs = 2

[state]
backend = "sqlite"
path = "{db}"
fsync = "{fsync}"

[[route]]
name = "hooks"
path = "/hooks"
provider = "standard-webhooks"
keys = [ {{ label = "k1", secret = "env:KEY" }} ]
upstream = "http://{up}/app"
app_secret = "env:APP_SECRET"
upstream_timeout_ms = 1000
mode = "queue"
response = {{ status = 200, content_type = "text/xml", body = "<Response/>" }}
retry_initial_ms = 20
retry_max_ms = 200
"#,
        db = dir.join("state.db").display(),
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A signed standard-webhooks request with event id `nonce`, as raw HTTP/1.1.
fn request(gw: SocketAddr, nonce: &str) -> Vec<u8> {
    let spec = find_provider("standard-webhooks").expect("spec");
    let input = SignInput {
        method: "POST".into(),
        url: format!("http://{gw}/hooks/status"),
        content_type: Some("application/json".into()),
        body: format!(r#"{{"type":"call.completed","id":"{nonce}"}}"#).into_bytes(),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64,
        nonce: nonce.to_owned(),
    };
    let s = (spec.sign)(&Options::new(), &Secret::new(KEY), &input).expect("sign");
    let mut out = format!("POST /hooks/status HTTP/1.1\r\nhost: {gw}\r\nconnection: close\r\n");
    for (k, v) in &s.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", s.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&s.body);
    bytes
}

/// The status of the answer, or `None` if the connection failed or broke (not acknowledged).
async fn send(gw: SocketAddr, raw: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(gw).await.ok()?;
    s.write_all(raw).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines().next()?.split(' ').nth(1)?.parse().ok()
}

async fn wait_listening(addr: SocketAddr) {
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < end,
            "tollgate did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn queue_cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run tollgate queue");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_delivered_after_kill_9_and_restart() {
    const N: usize = 300;
    let dir = Scratch::new("qkill");
    let up = Upstream::start().await;
    let (listen, admin) = (free_port(), free_port());
    let config = write_config(&dir.0, listen, admin, up.addr, "batch");
    let mut serve = Serve::start(&config);
    wait_listening(listen).await;

    // Four concurrent senders stream the events; acknowledgements (2xx) are recorded. The kill
    // comes after a third of them were acknowledged.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let answers: Arc<Mutex<HashMap<u16, usize>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (acked, answers, next, killed) =
            (acked.clone(), answers.clone(), next.clone(), killed.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= N || killed.load(Ordering::SeqCst) {
                    return;
                }
                let nonce = format!("msg_kill_{i}");
                match send(listen, &request(listen, &nonce)).await {
                    Some(s) => {
                        *answers.lock().expect("lock").entry(s).or_default() += 1;
                        if (200..300).contains(&s) {
                            acked
                                .lock()
                                .expect("lock")
                                .insert(format!("hooks:id:{nonce}"));
                        }
                    }
                    None => return,
                }
            }
        }));
    }
    until(60, "a third acknowledged", || {
        acked.lock().expect("lock").len() >= N / 3
    })
    .await;
    serve.kill_9();
    killed.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.expect("sender");
    }
    let acked_before_kill = acked.lock().expect("lock").clone();
    assert!(
        acked_before_kill.len() >= N / 3 && acked_before_kill.len() < N,
        "{}",
        acked_before_kill.len()
    );
    assert_eq!(
        answers
            .lock()
            .expect("lock")
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [200],
        "only acknowledgements before the kill"
    );

    // Restart on the same database; the provider retries whatever was not acknowledged.
    let mut serve = Serve::start(&config);
    wait_listening(listen).await;
    for i in 0..N {
        let id = format!("hooks:id:msg_kill_{i}");
        if acked.lock().expect("lock").contains(&id) {
            continue;
        }
        // An event claimed when the kill came answers 409 (in flight) until its claim's lease
        // ends; the provider retries until it gets a 2xx.
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let status = send(listen, &request(listen, &format!("msg_kill_{i}"))).await;
            if status == Some(200) {
                break;
            }
            assert_eq!(status, Some(409), "retry of {id}");
            assert!(Instant::now() < end, "{id} still in flight");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked.lock().expect("lock").insert(id);
    }
    let all: BTreeSet<String> = (0..N).map(|i| format!("hooks:id:msg_kill_{i}")).collect();
    assert_eq!(*acked.lock().expect("lock"), all);

    // Every acknowledged event reaches the app: at least once; exactly once after dedupe.
    until(90, "every acknowledged event delivered", || {
        up.unique().is_superset(&acked_before_kill) && up.unique() == all
    })
    .await;
    let hits = up.hits.lock().expect("lock").len();
    assert!(hits >= N, "{hits}");
    assert_eq!(
        up.unique(),
        all,
        "the deduplicated deliveries are exactly the acknowledged events"
    );
    eprintln!(
        "kill -9: {} acknowledged before the kill, {hits} deliveries for {N} events",
        acked_before_kill.len()
    );

    // The operator's view agrees (while serve runs on the same file).
    until(30, "every event marked delivered", || {
        let (code, out, _) = queue_cli(&config, &["ls", "--status", "delivered"]);
        code == 0 && out.lines().count() == N
    })
    .await;
    let (code, out, _) = queue_cli(&config, &["ls", "--status", "dead"]);
    assert_eq!((code, out.as_str()), (0, ""));

    assert!(serve.terminate().success(), "clean exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_cli_shows_without_secrets_and_retry_redelivers_a_dead_letter() {
    let dir = Scratch::new("qcli");
    let up = Upstream::start().await;
    up.refuse
        .lock()
        .expect("lock")
        .insert("hooks:id:msg_cli".into());
    let (listen, admin) = (free_port(), free_port());
    let config = write_config(&dir.0, listen, admin, up.addr, "always");
    let mut serve = Serve::start(&config);
    wait_listening(listen).await;
    let raw = request(listen, "msg_cli");
    assert_eq!(send(listen, &raw).await, Some(200));
    let id = "hooks:id:msg_cli";
    until(30, "dead letter", || {
        let (code, out, _) = queue_cli(&config, &["ls", "--status", "dead", "--route", "hooks"]);
        code == 0 && out.starts_with(&format!("{id}\thooks\tdead\t1\t"))
    })
    .await;
    let (_, out, _) = queue_cli(&config, &["ls", "--status", "dead"]);
    assert!(out.trim_end().ends_with("\tupstream answered 404"), "{out}");
    assert_eq!(queue_cli(&config, &["ls", "--older-than", "1d"]).1, "");

    let (code, out, err) = queue_cli(&config, &["show", id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status:        dead\n"), "{out}");
    assert!(
        out.contains("last error:    upstream answered 404\n"),
        "{out}"
    );
    assert!(out.contains("  content-type: application/json\n"), "{out}");
    assert!(
        out.contains("  webhook-signature: [") && out.contains(" bytes, not shown]"),
        "{out}"
    );
    let text = String::from_utf8_lossy(&raw);
    let signature = text
        .lines()
        .find_map(|l| l.strip_prefix("webhook-signature: "))
        .expect("signature header");
    assert!(
        !out.contains(signature),
        "show printed the received signature"
    );
    assert!(!out.contains(KEY) && !out.contains(APP_SECRET));

    // Retry: the app now accepts it.
    up.refuse.lock().expect("lock").clear();
    let (code, out, _) = queue_cli(&config, &["retry", id]);
    assert_eq!(
        (code, out.as_str()),
        (0, "hooks:id:msg_cli: pending, due now\n")
    );
    until(30, "redelivery", || {
        let (_, out, _) = queue_cli(&config, &["ls", "--status", "delivered"]);
        out.starts_with(id)
    })
    .await;
    assert_eq!(*up.hits.lock().expect("lock"), [id, id]);
    // A delivered event cannot be retried; unknown ids exit 1; drop removes.
    assert_eq!(queue_cli(&config, &["retry", id]).0, 1);
    assert_eq!(queue_cli(&config, &["show", "nope"]).0, 1);
    assert_eq!(queue_cli(&config, &["drop", "nope"]).0, 1);
    assert_eq!(
        queue_cli(&config, &["drop", id]),
        (0, format!("{id}: dropped\n"), String::new())
    );
    assert_eq!(queue_cli(&config, &["show", id]).0, 1);
    assert_eq!(queue_cli(&config, &["ls", "--status", "nonsense"]).0, 2);
    assert!(serve.terminate().success());
    // A config whose queue file does not exist is an I/O error, not an empty queue.
    let other = Scratch::new("qcli-none");
    let none = write_config(&other.0, listen, admin, up.addr, "always");
    let (code, _, err) = queue_cli(&none, &["ls"]);
    assert_eq!(code, 2);
    assert!(err.contains("no queue database"), "{err}");
}
