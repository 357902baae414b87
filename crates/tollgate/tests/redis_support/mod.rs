//! Harness for the Redis tests that run the real binary: a private `redis-server`, a recording
//! upstream, `tollgate serve` processes on loopback, and signed standard-webhooks requests.
//! Every process is killed when its handle drops.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_verify::{find_provider, Options, Secret, SignInput};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
/// The route's key (a test fixture).
pub const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const APP_ANSWER: &str = "<Response><Say>once</Say></Response>";
/// Longest wait for any single HTTP exchange.
const HTTP_CAP: Duration = Duration::from_secs(10);

/// What the upstream received: the event id (`webhook-id`) of each request, in arrival order.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<String>>>);

impl Recorded {
    pub fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn count(&self, id: &str) -> usize {
        self.ids().iter().filter(|x| *x == id).count()
    }
}

/// A recording upstream answering 200 [`APP_ANSWER`] after `delay`.
pub async fn upstream(delay: Duration) -> (SocketAddr, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = Recorded::default();
    let rec = recorded.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let rec = rec.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let rec = rec.clone();
                    async move {
                        let id = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("<none>")
                            .to_owned();
                        let _ = req.into_body().collect().await;
                        rec.0.lock().unwrap_or_else(|e| e.into_inner()).push(id);
                        tokio::time::sleep(delay).await;
                        let mut resp = http::Response::new(Full::new(Bytes::from(APP_ANSWER)));
                        resp.headers_mut()
                            .insert("content-type", "text/xml".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, recorded)
}

fn free_port() -> u16 {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tollgate serve` on a Redis state store.
pub struct Tollgate {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tollgate {
    /// Starts tollgate with `[state] backend = "redis"`, the URL given through the environment
    /// (as a deployment would, so a password stays out of the file), one standard-webhooks route
    /// `/hooks` in front of `upstream`, and waits until `/readyz` answers 200.
    pub async fn start(redis_url: &str, upstream: SocketAddr) -> Self {
        Self::start_until(redis_url, upstream, 200).await
    }

    /// Starts tollgate like [`Tollgate::start`] and waits until `/readyz` answers `status` (503:
    /// running but not ready).
    pub async fn start_until(redis_url: &str, upstream: SocketAddr, status: u16) -> Self {
        Self::start_with(redis_url, upstream, status, "").await
    }

    /// Starts tollgate like [`Tollgate::start_until`] with `route_extra` (TOML lines) appended to
    /// the route, e.g. queue-mode keys.
    pub async fn start_with(
        redis_url: &str,
        upstream: SocketAddr,
        status: u16,
        route_extra: &str,
    ) -> Self {
        Self::launch(redis_url, upstream, status, ["", route_extra], "info").await
    }

    /// Starts tollgate like [`Tollgate::start_with`] with `state_extra` (TOML lines) appended to
    /// `[state]` (TLS files, cluster keys), logging at debug level so that a secret in any log
    /// line, the Redis client's included, shows in [`Tollgate::log`].
    pub async fn start_full(
        redis_url: &str,
        upstream: SocketAddr,
        status: u16,
        state_extra: &str,
        route_extra: &str,
    ) -> Self {
        Self::launch(
            redis_url,
            upstream,
            status,
            [state_extra, route_extra],
            "debug",
        )
        .await
    }

    /// Starts with `[state extra, route extra]` and `RUST_LOG=rust_log`, and waits for `/readyz`.
    async fn launch(
        redis_url: &str,
        upstream: SocketAddr,
        status: u16,
        [state_extra, route_extra]: [&str; 2],
        rust_log: &str,
    ) -> Self {
        let mut last = String::new();
        // Ports are found by binding port 0 and letting go: another process may take one first,
        // then tollgate exits and we try fresh ports (bounded).
        for _ in 0..5 {
            let mut t = Self::spawn(redis_url, upstream, [state_extra, route_extra], rust_log);
            match t.wait_readyz(status).await {
                Ok(()) => return t,
                Err(e) => {
                    last = e;
                    t.kill();
                }
            }
        }
        panic!("tollgate did not become ready: {last}");
    }

    fn spawn(
        redis_url: &str,
        upstream: SocketAddr,
        [state_extra, route_extra]: [&str; 2],
        rust_log: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = format!(
            r#"
[server]
listen = "{addr}"
admin_listen = "{admin}"
log_format = "json"
reload_poll_secs = 0

[state]
backend = "redis"
url = "env:TOLLGATE_TEST_REDIS_URL"
key_prefix = "it:"
operation_timeout_ms = 500
{state_extra}

[[route]]
name = "hooks"
path = "/hooks"
provider = "standard-webhooks"
keys = [ {{ label = "k1", secret = "env:TOLLGATE_TEST_KEY" }} ]
upstream = "http://{upstream}/app"
upstream_timeout_ms = 5000
{route_extra}
"#
        );
        let path = dir.path().join("tollgate.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("tollgate.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(BIN)
            .env("RUST_LOG", rust_log)
            .args(["serve", "--config"])
            .arg(&path)
            .env("TOLLGATE_TEST_REDIS_URL", redis_url)
            .env("TOLLGATE_TEST_KEY", KEY)
            .env_remove("TOLLGATE_LISTEN")
            .env_remove("TOLLGATE_ADMIN_LISTEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            addr,
            admin,
            log,
            _dir: dir,
        }
    }

    /// Polls `/readyz` (bounded: 300 × 50 ms) until it answers `status`, or the process exits.
    async fn wait_readyz(&mut self, status: u16) -> Result<(), String> {
        for _ in 0..300 {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}: {}", self.log()));
                }
            }
            if self.readyz().await == Some(status) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("/readyz never answered {status}: {}", self.log()))
    }

    /// The status `/readyz` answers, `None` if the admin listener does not answer.
    pub async fn readyz(&self) -> Option<u16> {
        let request = b"GET /readyz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n";
        exchange(self.admin, request).await.map(|a| a.status)
    }

    /// Sends the standard-webhooks event `id` (signed now) to `/hooks/voice`.
    pub async fn send(&self, id: &str) -> Answer {
        send(self.addr, &signed_request(id, self.addr)).await
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process still runs (it was not restarted behind the test's back).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL) and waits for it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A signed standard-webhooks request with event id `id`, raw bytes for `Host: host`. The scheme
/// does not sign the URL, so the same bytes are valid on every instance: a provider retry that
/// the load balancer sends elsewhere.
pub fn signed_request(id: &str, host: SocketAddr) -> Vec<u8> {
    let spec = find_provider("standard-webhooks").unwrap();
    let opts = Options::default();
    let mut input: SignInput = (spec.sample)(&opts, &format!("http://{host}/hooks/voice"));
    input.now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    input.nonce = id.to_owned();
    let s = (spec.sign)(&opts, &Secret::new(KEY), &input).unwrap();
    let mut head = format!(
        "{} /hooks/voice HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n",
        s.method
    );
    for (k, v) in &s.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", s.body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&s.body);
    bytes
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn replayed(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("tollgate-replayed: true")
    }
}

/// Sends `bytes` to `addr`; panics if there is no answer within [`HTTP_CAP`].
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> Answer {
    exchange(addr, bytes)
        .await
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}"))
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Answer> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(bytes).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(HTTP_CAP, fut).await.ok().flatten()
}
