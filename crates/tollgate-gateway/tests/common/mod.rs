//! Test harness: a recording upstream, a gateway on an ephemeral port, signed requests, and a raw
//! HTTP/1.1 client that shows exactly what went over the wire.
#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tollgate_config::Config;
use tollgate_gateway::Gateway;
use tollgate_store::ReplayStore;
use tollgate_verify::{find_provider, Options, Secret, SignInput, Signed};

/// The provider the single-provider tests sign as (`PROVIDERS` lists the ones the provider-specific
/// accept/reject tests run for).
pub const PROVIDER: &str = STANDARD_WEBHOOKS.id;
pub const KEY: &str = STANDARD_WEBHOOKS.key;
pub const APP_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const APP_ANSWER: &str = "<Response><Say>hi</Say></Response>";

/// A provider the tests sign as, with what its accept/reject paths need.
#[derive(Debug, Clone, Copy)]
pub struct Provider {
    pub id: &'static str,
    /// The route's key, and the env var the config reads it from.
    pub key: &'static str,
    pub key_env: &'static str,
    /// A well-formed key that is not the route's.
    pub wrong_key: &'static str,
    /// The route's provider options; the same go to `sample` and `sign`.
    pub options: &'static [(&'static str, &'static str)],
    /// The header that carries the signature (removed for the 401 case).
    pub signature_header: &'static str,
    /// Whether the signature covers the URL (so `public_url` / `X-Forwarded-Proto` decide).
    pub signs_url: bool,
    /// Whether a timestamp is signed (so a stale request is refused).
    pub signs_time: bool,
    /// Whether the signer's nonce comes back as the verified event id.
    pub nonce_is_event_id: bool,
}

/// JSON body, `webhook-id` / `webhook-timestamp` / `webhook-signature`; the URL is not signed.
pub const STANDARD_WEBHOOKS: Provider = Provider {
    id: "standard-webhooks",
    key: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    key_env: "KEY",
    wrong_key: "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    options: &[],
    signature_header: "webhook-signature",
    signs_url: false,
    signs_time: true,
    nonce_is_event_id: true,
};

/// Classic Twilio: a form POST, HMAC-SHA1 over the URL it called + the sorted params. The signer's
/// nonce goes into the unsigned `I-Twilio-Idempotency-Token`, which is deliberately not the event
/// id: duplicates are recognised by method, public URL and body.
pub const TWILIO: Provider = Provider {
    id: "twilio",
    key: "9f86d081884c7d659a2feaa0c55ad015",
    key_env: "TWILIO_KEY",
    wrong_key: "00000000000000000000000000000000",
    options: &[("algorithm", "hmac-sha1")],
    signature_header: "x-twilio-signature",
    signs_url: true,
    signs_time: false,
    nonce_is_event_id: false,
};

pub const PROVIDERS: [Provider; 2] = [STANDARD_WEBHOOKS, TWILIO];

impl Provider {
    pub fn options(&self) -> Options {
        self.options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
            .collect()
    }

    /// A config for one route `/hooks` of this provider in front of `upstream`; `server` and
    /// `route` add keys.
    pub fn config_text(&self, upstream: SocketAddr, server: &str, route: &str) -> String {
        let options: String = self
            .options
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect();
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}

[state]
backend = "memory"

[[route]]
name = "hooks"
path = "/hooks"
provider = "{id}"
keys = [ {{ label = "k1", secret = "env:{key_env}" }} ]
upstream = "http://{upstream}/app"
app_secret = "env:APP_SECRET"
{options}{route}
"#,
            id = self.id,
            key_env = self.key_env,
        )
    }

    /// A sample request of this provider for `url`, signed at `at` with `key`, with event id /
    /// nonce `nonce`.
    pub fn signed_with(&self, key: &str, url: &str, nonce: &str, at: i64) -> Signed {
        let spec = find_provider(self.id).expect("provider");
        let opts = self.options();
        let mut input: SignInput = (spec.sample)(&opts, url);
        input.now = at;
        input.nonce = nonce.to_owned();
        (spec.sign)(&opts, &Secret::new(key), &input).expect("sign")
    }

    pub fn signed(&self, url: &str, nonce: &str) -> Signed {
        self.signed_with(self.key, url, nonce, now())
    }

    /// Signs for `/hooks/voice?x=1` on the gateway and sends it.
    pub async fn deliver(&self, gw: SocketAddr, nonce: &str, extra: &[(&str, &str)]) -> Answer {
        let host = gw.to_string();
        let s = self.signed(&format!("http://{host}/hooks/voice?x=1"), nonce);
        send_raw(gw, &raw_request(&s, "/hooks/voice?x=1", &host, extra)).await
    }
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// What the upstream does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer(u16),
    /// Never answers (for timeouts).
    Hang,
    /// Waits for `Upstream::release` (for in-flight duplicates).
    WaitForRelease,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub release: Arc<Notify>,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

pub async fn upstream(behaviour: Behaviour) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Notify::new());
    let (s, r) = (seen.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (s, r) = (s.clone(), r.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (s, r) = (s.clone(), r.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        s.lock().expect("lock").push(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let status = match behaviour {
                            Behaviour::Answer(s) => s,
                            Behaviour::Hang => std::future::pending().await,
                            Behaviour::WaitForRelease => {
                                r.notified().await;
                                200
                            }
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(APP_ANSWER)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                        resp.headers_mut()
                            .insert("content-type", "text/xml".parse().expect("hv"));
                        resp.headers_mut()
                            .insert("x-app", "yes".parse().expect("hv"));
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
        seen,
        release,
    }
}

pub fn env() -> HashMap<String, String> {
    PROVIDERS
        .iter()
        .map(|p| (p.key_env, p.key))
        .chain([("APP_SECRET", APP_SECRET)])
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A config for one standard-webhooks route `/hooks` in front of `upstream`; `server` and `route`
/// add keys.
pub fn config_text(upstream: SocketAddr, server: &str, route: &str) -> String {
    STANDARD_WEBHOOKS.config_text(upstream, server, route)
}

pub fn config(text: &str) -> Config {
    Config::from_toml(text, "test.toml", &env()).unwrap_or_else(|e| panic!("{e}"))
}

pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and waits for the drain.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            d.await.expect("serve task");
        }
    }
}

pub async fn start(config: Config, store: Arc<dyn ReplayStore>) -> Running {
    start_tls(config, store, None).await
}

pub async fn start_tls(
    config: Config,
    store: Arc<dyn ReplayStore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gateway = Gateway::new(config, store);
    let (stop, rx) = oneshot::channel();
    let gw = gateway.clone();
    let done = tokio::spawn(async move {
        gw.serve(listener, tls, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    Running {
        addr,
        gateway,
        stop: Some(stop),
        done: Some(done),
    }
}

pub fn memory() -> Arc<dyn ReplayStore> {
    Arc::new(tollgate_store::memory::MemoryStore::new())
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A standard-webhooks sample for `url`, signed at `at` with `key`, with event id `nonce`.
pub fn signed_with(key: &str, url: &str, nonce: &str, at: i64) -> Signed {
    STANDARD_WEBHOOKS.signed_with(key, url, nonce, at)
}

pub fn signed(url: &str, nonce: &str) -> Signed {
    STANDARD_WEBHOOKS.signed(url, nonce)
}

/// The raw bytes of `s` sent to `path` with `Host: host` and extra headers.
pub fn raw_request(s: &Signed, path: &str, host: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!(
        "{} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n",
        s.method
    );
    for (k, v) in s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().copied())
    {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n", s.body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&s.body);
    bytes
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes, reads until the server closes, parses the answer.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    parse(&buf)
}

pub fn parse(buf: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Signs (standard-webhooks) for `/hooks/voice?x=1` on the gateway and sends it.
pub async fn deliver(gw: SocketAddr, nonce: &str, extra: &[(&str, &str)]) -> Answer {
    STANDARD_WEBHOOKS.deliver(gw, nonce, extra).await
}
