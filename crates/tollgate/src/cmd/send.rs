//! `tollgate send`: fire freshly signed sample webhooks of a route's provider (optionally
//! tampered) at a deployment and report what it answered, by status and error code. A large
//! `--count` shows a progress bar on stderr when stderr is a terminal; the summary on stdout is the
//! same either way, so scripts and pipes see only it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tollgate_config::{load_route, ProcessEnv};
use tollgate_verify::{Options, ProviderSpec, Secret, SignInput, Signed};

/// How to spoil the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tamper {
    /// Flip one bit of the body after signing.
    Body,
    /// Sign with a timestamp an hour old.
    Stale,
    /// Drop every header whose name contains "signature".
    Unsigned,
    /// Send the same signed request every time (duplicates).
    Replay,
}

/// Arguments of `tollgate send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The route whose provider and first key sign the requests.
    #[arg(long)]
    pub route: String,
    /// Where to send (the public URL of the route, as the provider would call it).
    #[arg(long)]
    pub url: String,
    /// How many requests.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Spoil the requests this way.
    #[arg(long, value_enum)]
    pub tamper: Option<Tamper>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u64,
    /// Environment variable holding the signing key, for asymmetric schemes (the route only has
    /// the public key).
    #[arg(long, value_name = "VAR")]
    pub signing_key_env: Option<String>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let setup = load_route(&args.config, &args.route, &ProcessEnv).map_err(|e| anyhow!("{e}"))?;
    let key = match &args.signing_key_env {
        Some(var) => {
            Secret::new(std::env::var(var).with_context(|| format!("env var {var} is not set"))?)
        }
        None => setup.keys.keys()[0].secret.clone(),
    };
    if args.count == 0 || args.concurrency == 0 {
        bail!("--count and --concurrency must be at least 1");
    }
    let ctx = Arc::new(Ctx {
        spec: setup.spec,
        options: setup.options,
        key,
        url: args.url.clone(),
        tamper: args.tamper,
        fixed: Mutex::new(None),
    });
    // Sign once up front so a key that cannot sign fails before anything is sent.
    ctx.make()
        .context("signing a sample (asymmetric schemes need --signing-key-env)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let progress = progress_bar(args.count, std::io::stderr().is_terminal());
    let tally = runtime.block_on(fire(ctx, args.count, args.concurrency, progress.clone()));
    // Cleared, not left behind: the summary below is the whole report.
    progress.finish_and_clear();
    let mut accepted = 0;
    for ((status, code), n) in &tally {
        println!("{status} {code} x{n}");
        if (200..300).contains(status) {
            accepted += n;
        }
    }
    // Success means the deployment behaved: genuine requests accepted, spoiled ones refused
    // (a replay is accepted once and answered from the store after that).
    let ok = match args.tamper {
        None => accepted == args.count,
        // Concurrent copies may meet the first in flight (409); at least one must get through.
        Some(Tamper::Replay) => accepted >= 1,
        Some(_) => accepted == 0,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// From this many requests on, a terminal gets a progress bar (fewer finish before it would help).
const PROGRESS_FROM: u64 = 50;

/// Whether `count` requests deserve a bar on a stderr that is (or is not) a terminal.
fn wants_progress(count: u64, stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && count >= PROGRESS_FROM
}

/// A bar on stderr, or a hidden one that costs nothing when not wanted.
fn progress_bar(count: u64, stderr_is_terminal: bool) -> ProgressBar {
    if !wants_progress(count, stderr_is_terminal) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(count), ProgressDrawTarget::stderr());
    // The template is a constant; if indicatif ever refused it, the default style is fine.
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} sent, {per_sec}, eta {eta} {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

struct Ctx {
    spec: &'static ProviderSpec,
    options: Options,
    key: Secret,
    url: String,
    tamper: Option<Tamper>,
    fixed: Mutex<Option<Signed>>,
}

impl Ctx {
    fn make(&self) -> anyhow::Result<Signed> {
        if self.tamper == Some(Tamper::Replay) {
            if let Some(s) = self.fixed.lock().map_err(|_| anyhow!("poisoned"))?.clone() {
                return Ok(s);
            }
        }
        let mut input: SignInput = (self.spec.sample)(&self.options, &self.url);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        input.now = if self.tamper == Some(Tamper::Stale) {
            now - 3600
        } else {
            now
        };
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| anyhow!("randomness: {e}"))?;
        input.nonce = format!("msg_{}", hex::encode(nonce));
        let mut s =
            (self.spec.sign)(&self.options, &self.key, &input).map_err(|e| anyhow!("{e}"))?;
        match self.tamper {
            Some(Tamper::Body) => match s.body.first_mut() {
                Some(b) => *b ^= 1,
                None => s.url.push_str(if s.url.contains('?') {
                    "&tampered=1"
                } else {
                    "?tampered=1"
                }),
            },
            Some(Tamper::Unsigned) => s
                .headers
                .retain(|(k, _)| !k.to_ascii_lowercase().contains("signature")),
            Some(Tamper::Replay) => {
                *self.fixed.lock().map_err(|_| anyhow!("poisoned"))? = Some(s.clone())
            }
            _ => {}
        }
        Ok(s)
    }
}

type Tally = BTreeMap<(u16, String), u64>;

async fn fire(ctx: Arc<Ctx>, count: u64, concurrency: u64, progress: ProgressBar) -> Tally {
    let client = tollgate_gateway::stage::forward::client();
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::new()));
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(count) {
        let (ctx, client, next, tally, progress) = (
            ctx.clone(),
            client.clone(),
            next.clone(),
            tally.clone(),
            progress.clone(),
        );
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let key = match one(&ctx, &client).await {
                    Ok(k) => k,
                    Err(e) => (0, format!("error: {e:#}")),
                };
                let refused = !(200..300).contains(&key.0);
                if let Ok(mut t) = tally.lock() {
                    *t.entry(key).or_default() += 1;
                    if refused {
                        let n: u64 = t
                            .iter()
                            .filter(|((status, _), _)| !(200..300).contains(status))
                            .map(|(_, n)| n)
                            .sum();
                        progress.set_message(format!("({n} not 2xx)"));
                    }
                }
                progress.inc(1);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let t = tally.lock().map(|t| t.clone()).unwrap_or_default();
    t
}

async fn one(
    ctx: &Ctx,
    client: &tollgate_gateway::stage::forward::Client,
) -> anyhow::Result<(u16, String)> {
    let s = ctx.make()?;
    let mut req = http::Request::builder()
        .method(s.method.as_str())
        .uri(s.url.as_str());
    for (k, v) in &s.headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(s.body)))?)
        .await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    // Show tollgate's reason code when the answer is its small JSON error.
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok((status, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_for_large_counts_on_a_terminal() {
        assert!(
            !wants_progress(1_000_000, false),
            "never into a pipe or file"
        );
        assert!(!wants_progress(PROGRESS_FROM - 1, true));
        assert!(wants_progress(PROGRESS_FROM, true));
        assert!(progress_bar(1_000, false).is_hidden());
        assert!(progress_bar(3, true).is_hidden());
    }

    #[test]
    fn a_shown_bar_counts_to_the_total() {
        let bar = progress_bar(PROGRESS_FROM, true);
        assert_eq!(bar.length(), Some(PROGRESS_FROM));
        assert_eq!(bar.position(), 0);
        bar.inc(1);
        assert_eq!(bar.position(), 1);
        bar.finish_and_clear();
    }
}
