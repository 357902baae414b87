//! `tollgate bench` (hidden): the load tool behind `bench/compare.sh`.
//!
//! - `tollgate bench load` pre-signs N distinct requests of a route's provider (distinct event id
//!   and, for Twilio, distinct `CallSid`, so deduplication never short-circuits) for the route's
//!   *public* URL, then drives a separate *target* (the upstream directly, nginx, tollgate, an
//!   Express app) over C keep-alive HTTP/1.1 connections for D seconds or until the N requests are
//!   sent, whichever comes first, optionally at a fixed offered rate. It reports throughput,
//!   p50/p99/p99.9 latency and the answers by status, and ends with one machine-readable
//!   `RESULT key=value ...` line.
//! - `tollgate bench upstream` is a minimal hyper app that reads the body and answers
//!   `<Response/>`: the upstream of the comparison, meant never to be the bottleneck.
//! - `tollgate bench hop` is a bare HTTP/1.1 reverse proxy on the same stack and threading as
//!   `tollgate serve` (hyper server and client, one single-threaded event loop per core, each
//!   with its own upstream connections) that verifies, deduplicates and logs nothing: the floor
//!   that stack puts under tollgate's cost, measured beside nginx's plain hop.
//!
//! Everything is bounded: a run stops by itself after `--duration` or `--requests`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tollgate_config::{load_route, ProcessEnv};
use tollgate_verify::SignInput;

/// Arguments of `tollgate bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Pre-sign requests and drive a target with them.
    Load(LoadArgs),
    /// A minimal upstream answering `<Response/>`.
    Upstream(UpstreamArgs),
    /// A bare reverse proxy on tollgate's HTTP stack (no verification): the stack's floor.
    Hop(HopArgs),
}

/// Arguments of `tollgate bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The config file holding the route (its provider, options and first key sign).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The route whose provider and first key sign the requests.
    #[arg(long)]
    route: String,
    /// The public URL the provider calls and signs (path and query are sent as they are here;
    /// its authority becomes the Host header).
    #[arg(long)]
    url: String,
    /// Where to connect: `http://host:port` (any path is ignored).
    #[arg(long)]
    target: String,
    /// Distinct pre-signed requests; the run stops when all are sent.
    #[arg(long, short = 'n', default_value_t = 20_000)]
    requests: usize,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Stop after this many seconds even if requests are left.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Offered rate in requests per second over all connections (open loop: request i is due at
    /// start + i/rate); unset = as fast as the target answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Makes event ids and CallSids distinct between runs (default: random).
    #[arg(long)]
    seed: Option<String>,
    /// Runtime worker threads of the load tool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Label printed in the RESULT line.
    #[arg(long, default_value = "run")]
    label: String,
}

/// Arguments of `tollgate bench upstream`.
#[derive(Debug, clap::Args)]
pub struct UpstreamArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Arguments of `tollgate bench hop`.
#[derive(Debug, clap::Args)]
pub struct HopArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Where to forward (plain HTTP/1.1).
    #[arg(long)]
    upstream: SocketAddr,
    /// Serving threads, each with its own event loop (as `[server] workers`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.cmd {
        Sub::Load(a) => load(a),
        Sub::Upstream(a) => upstream(a),
        Sub::Hop(a) => hop(a),
    }
}

// ---------------------------------------------------------------------------------------------
// upstream

fn upstream(args: UpstreamArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("bench upstream listening on http://{}", args.listen);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    // Read the whole body, as an app would.
                    let _ = req.into_body().collect().await;
                    let mut resp = http::Response::new(Full::new(Bytes::from_static(
                        b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>",
                    )));
                    resp.headers_mut()
                        .insert("content-type", http::HeaderValue::from_static("text/xml"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// hop

/// Idle upstream connections of one serving thread.
type Idle = Arc<Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>>;

fn hop(args: HopArgs) -> anyhow::Result<ExitCode> {
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    listener.set_nonblocking(true)?;
    println!("bench hop listening on http://{}", args.listen);
    let threads = (0..args.threads.max(1))
        .map(|_| {
            let listener = listener.try_clone()?;
            let upstream = args.upstream;
            Ok(std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                runtime.block_on(hop_loop(listener, upstream))
            }))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for t in threads {
        t.join()
            .map_err(|_| anyhow!("a hop thread panicked"))?
            .context("hop thread")?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn hop_loop(listener: std::net::TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let idle: Idle = Arc::default();
    let host = http::HeaderValue::from_str(&upstream.to_string())?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (idle, host) = (Arc::clone(&idle), host.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (idle, host) = (Arc::clone(&idle), host.clone());
                async move {
                    Ok::<_, Infallible>(match hop_one(req, upstream, &idle, host).await {
                        Ok(resp) => resp,
                        Err(_) => {
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                            r
                        }
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Forwards one request: body read whole, hop-by-hop headers dropped, origin-form target.
async fn hop_one(
    req: http::Request<hyper::body::Incoming>,
    upstream: SocketAddr,
    idle: &Idle,
    host: http::HeaderValue,
) -> anyhow::Result<http::Response<Full<Bytes>>> {
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
    ] {
        parts.headers.remove(name);
    }
    parts.headers.insert(http::header::HOST, host);
    let mut out = http::Request::new(Full::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = parts.uri;
    *out.headers_mut() = parts.headers;
    let kept = idle.lock().map_err(|_| anyhow!("poisoned"))?.pop();
    let mut sender = match kept {
        Some(s) if !s.is_closed() => s,
        _ => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    let resp = sender.send_request(out).await?;
    let (mut parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    idle.lock().map_err(|_| anyhow!("poisoned"))?.push(sender);
    parts.headers.remove("connection");
    parts.headers.remove("transfer-encoding");
    Ok(http::Response::from_parts(parts, Full::new(body)))
}

// ---------------------------------------------------------------------------------------------
// load

type Req = http::Request<Full<Bytes>>;

/// Per-connection tallies, merged at the end.
#[derive(Default)]
struct Tally {
    /// Latency of each answered request, microseconds.
    lat_us: Vec<u32>,
    status: BTreeMap<u16, u64>,
    replayed: u64,
    errors: u64,
    reconnects: u64,
    /// Requests that started later than due by more than 1 ms (rate mode: the tool fell behind).
    late: u64,
}

fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.requests == 0 || args.connections == 0 || args.duration <= 0.0 {
        bail!("--requests, --connections and --duration must be positive");
    }
    if let Some(r) = args.rate {
        if r <= 0.0 {
            bail!("--rate must be positive");
        }
    }
    let target: http::Uri = args.target.parse().context("--target")?;
    if target.scheme_str() != Some("http") {
        bail!("--target must be http://host:port");
    }
    let authority = target
        .authority()
        .ok_or_else(|| anyhow!("--target has no host:port"))?
        .clone();
    let public: http::Uri = args.url.parse().context("--url")?;
    let host = public
        .authority()
        .ok_or_else(|| anyhow!("--url has no host"))?
        .as_str()
        .to_owned();

    let t_sign = Instant::now();
    let reqs = presign(&args, &host)?;
    eprintln!(
        "bench: pre-signed {} requests in {:.2} s ({} bytes of body each)",
        reqs.len(),
        t_sign.elapsed().as_secs_f64(),
        reqs.first().map(body_len).unwrap_or(0)
    );
    let slots: Arc<Vec<Mutex<Option<Req>>>> =
        Arc::new(reqs.into_iter().map(|r| Mutex::new(Some(r))).collect());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let (tally, elapsed, sent) = runtime.block_on(async {
        let addr = tokio::net::lookup_host(authority.as_str())
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        // Open every connection before the clock starts.
        let mut senders = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            senders.push(connect(addr).await?);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(args.duration);
        let mut workers = Vec::with_capacity(senders.len());
        for sender in senders {
            let (slots, next) = (slots.clone(), next.clone());
            let rate = args.rate;
            workers.push(tokio::spawn(async move {
                drive(sender, addr, slots, next, start, deadline, rate).await
            }));
        }
        let mut total = Tally::default();
        for w in workers {
            let t = w.await.map_err(|e| anyhow!("worker: {e}"))?;
            total.lat_us.extend_from_slice(&t.lat_us);
            for (s, n) in t.status {
                *total.status.entry(s).or_default() += n;
            }
            total.replayed += t.replayed;
            total.errors += t.errors;
            total.reconnects += t.reconnects;
            total.late += t.late;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let sent = next.load(Ordering::Relaxed).min(slots.len());
        anyhow::Ok((total, elapsed, sent))
    })?;
    report(&args, tally, elapsed, sent);
    Ok(ExitCode::SUCCESS)
}

fn body_len(r: &Req) -> usize {
    use hyper::body::Body;
    r.body().size_hint().exact().unwrap_or(0) as usize
}

/// Signs `args.requests` distinct requests for the public URL.
fn presign(args: &LoadArgs, host: &str) -> anyhow::Result<Vec<Req>> {
    let setup = load_route(&args.config, &args.route, &ProcessEnv).map_err(|e| anyhow!("{e}"))?;
    let key = setup.keys.keys()[0].secret.clone();
    let seed = match &args.seed {
        Some(s) => s.clone(),
        None => {
            let mut b = [0u8; 4];
            getrandom::getrandom(&mut b).map_err(|e| anyhow!("randomness: {e}"))?;
            hex::encode(b)
        }
    };
    // 32 hex digits stand in for the 32 of a CallSid; the seed's share keeps runs apart.
    let seed_hex: String = hex::encode(seed.as_bytes()).chars().take(12).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let base: SignInput = (setup.spec.sample)(&setup.options, &args.url);
    let callsid_at = find(&base.body, b"CallSid=CA").map(|i| i + b"CallSid=CA".len());
    let mut out = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let mut input = base.clone();
        input.now = now;
        input.nonce = format!("bench-{seed}-{i:09}");
        if let Some(at) = callsid_at {
            let sid = format!("{seed_hex:0>12}{i:020x}");
            if let Some(dst) = input.body.get_mut(at..at + 32) {
                dst.copy_from_slice(&sid.as_bytes()[..32]);
            }
        }
        let s = (setup.spec.sign)(&setup.options, &key, &input).map_err(|e| anyhow!("{e}"))?;
        let uri: http::Uri = s.url.parse().context("signed URL")?;
        let pq = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let mut req = http::Request::builder()
            .method(s.method.as_str())
            .uri(pq)
            .header("host", host);
        for (k, v) in &s.headers {
            req = req.header(k, v);
        }
        out.push(req.body(Full::new(Bytes::from(s.body)))?);
    }
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn drive(
    mut sender: Sender,
    addr: SocketAddr,
    slots: Arc<Vec<Mutex<Option<Req>>>>,
    next: Arc<AtomicUsize>,
    start: Instant,
    deadline: Instant,
    rate: Option<f64>,
) -> Tally {
    let mut t = Tally {
        lat_us: Vec::with_capacity(4096),
        ..Tally::default()
    };
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= slots.len() {
            break;
        }
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / r);
            if due >= deadline {
                break;
            }
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            } else if now - due > Duration::from_millis(1) {
                t.late += 1;
            }
        }
        let Some(req) = slots[i].lock().ok().and_then(|mut s| s.take()) else {
            continue;
        };
        if sender.is_closed() || sender.ready().await.is_err() {
            match connect(addr).await {
                Ok(s) => {
                    sender = s;
                    t.reconnects += 1;
                }
                Err(_) => {
                    t.errors += 1;
                    continue;
                }
            }
        }
        let t0 = Instant::now();
        match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.headers().contains_key("tollgate-replayed") {
                    t.replayed += 1;
                }
                if resp.into_body().collect().await.is_err() {
                    t.errors += 1;
                    continue;
                }
                t.lat_us
                    .push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
                *t.status.entry(status).or_default() += 1;
            }
            Err(_) => t.errors += 1,
        }
    }
    t
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn report(args: &LoadArgs, mut t: Tally, elapsed: f64, sent: usize) {
    t.lat_us.sort_unstable();
    let done = t.lat_us.len();
    let rps = done as f64 / elapsed;
    let ok: u64 = t
        .status
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let (p50, p99, p999) = (
        pct(&t.lat_us, 0.50),
        pct(&t.lat_us, 0.99),
        pct(&t.lat_us, 0.999),
    );
    let max = t
        .lat_us
        .last()
        .map(|&m| f64::from(m) / 1000.0)
        .unwrap_or(0.0);
    let mean = if done == 0 {
        0.0
    } else {
        t.lat_us.iter().map(|&l| f64::from(l)).sum::<f64>() / done as f64 / 1000.0
    };
    let offered = args
        .rate
        .map(|r| format!("{r:.0} rps offered"))
        .unwrap_or_else(|| "closed loop".into());
    println!(
        "{}: {} -> {} c={} {}",
        args.label, args.url, args.target, args.connections, offered
    );
    println!(
        "  {done} answered of {sent} sent in {elapsed:.2} s: {rps:.0} rps; latency ms p50 {p50:.3} p99 {p99:.3} p99.9 {p999:.3} max {max:.3} mean {mean:.3}"
    );
    let statuses: Vec<String> = t.status.iter().map(|(s, n)| format!("{s} x{n}")).collect();
    println!(
        "  status {}; replayed {}; errors {}; reconnects {}; late {}",
        statuses.join(", "),
        t.replayed,
        t.errors,
        t.reconnects,
        t.late
    );
    println!(
        "RESULT label={} rps={rps:.0} p50_ms={p50:.3} p99_ms={p99:.3} p999_ms={p999:.3} max_ms={max:.3} answered={done} ok={ok} non2xx={} errors={} replayed={} late={} elapsed_s={elapsed:.3}",
        args.label,
        done as u64 - ok,
        t.errors,
        t.replayed,
        t.late
    );
}
