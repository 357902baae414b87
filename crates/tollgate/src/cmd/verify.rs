//! `tollgate verify`: checks one captured raw HTTP request against a provider's scheme, the way the
//! gateway would, and on a signature mismatch explains which proxy mistake (scheme, port, path,
//! body newline) would account for it. For people testing a setup; the gateway does not use it.
//!
//! It prints what verification established, or the reason code and message of the refusal; never a
//! key and never the received signature. Exit codes: 0 verified, 1 rejected, 2 usage or input error.
//! Also home of the helpers `sign` shares (`--secret-env`, `--set`, `--now`).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use tollgate_verify::diagnose::{verify_explained, Diagnosis, Hints};
use tollgate_verify::raw::RawRequest;
use tollgate_verify::{Key, KeyRing, Options, ProviderSpec, Request, Secret, Settings, Verified};

/// Arguments of `tollgate verify`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["provider", "config"])))]
pub struct Args {
    /// Provider scheme to verify with (see `tollgate verify --help` for the list).
    #[arg(long, value_name = "NAME", requires = "secret_env", help = provider_help())]
    provider: Option<String>,
    /// Environment variable holding a key; repeat for a rotation. The key is labelled with the
    /// variable's name in the output.
    #[arg(long = "secret-env", value_name = "VAR", conflicts_with_all = ["config", "route"])]
    secret_env: Vec<String>,
    /// A provider option, `key=value`; the value is read as JSON when it parses (numbers,
    /// booleans), else as a string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with_all = ["config", "route"])]
    set: Vec<String>,
    /// Take the provider, keys and options from a route of this config file (the gateway's).
    #[arg(long, value_name = "FILE", requires = "route")]
    config: Option<PathBuf>,
    /// The route of `--config` to use.
    #[arg(long, value_name = "NAME", requires = "config")]
    route: Option<String>,
    /// The public URL the provider called, when it differs from `http://` + Host + target (TLS
    /// terminated in front, a path-rewriting proxy).
    #[arg(long, value_name = "PUBLIC_URL")]
    url: Option<String>,
    /// Verify as if the time were this (unix seconds); default: the system clock.
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Freshness window, ± seconds, for schemes that sign a time.
    #[arg(long, value_name = "N")]
    tolerance_secs: Option<u64>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// The captured request (`-` or absent: stdin).
    #[arg(value_name = "FILE")]
    input: Option<PathBuf>,
}

/// A capture larger than this is surely not one webhook.
const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (spec, verifier) = match (&args.config, &args.route) {
        (Some(path), Some(route)) => {
            let setup = tollgate_config::load_route(path, route, &tollgate_config::ProcessEnv)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let settings = match args.tolerance_secs {
                Some(tolerance_secs) => Settings { tolerance_secs },
                None => setup.settings,
            };
            let verifier = (setup.spec.build)(&setup.options, &setup.keys, &settings)
                .map_err(|e| anyhow::anyhow!("route {route:?}: {e}"))?;
            (setup.spec, verifier)
        }
        (Some(_), None) => anyhow::bail!("--config needs --route NAME"),
        _ => {
            let provider = args
                .provider
                .as_deref()
                .context("--provider or --config is required")?;
            let spec = find_provider(provider)?;
            let opts = parse_sets(&args.set)?;
            let ring = KeyRing::new(
                args.secret_env
                    .iter()
                    .map(|var| Ok(Key::new(var.as_str(), secret_from_env(var)?)))
                    .collect::<anyhow::Result<_>>()?,
            )?;
            let settings = match args.tolerance_secs {
                Some(tolerance_secs) => Settings { tolerance_secs },
                None => Settings::default(),
            };
            let verifier = (spec.build)(&opts, &ring, &settings).map_err(|e| {
                anyhow::anyhow!("cannot use these keys/options for {}: {e}", spec.id)
            })?;
            (spec, verifier)
        }
    };
    let now = now_or_clock(args.now)?;

    let input = read_input(args.input.as_deref())?;
    let raw = RawRequest::parse(&input).context("cannot read the input as an HTTP request")?;
    if raw.trailing_bytes > 0 {
        eprintln!(
            "tollgate: note: {} byte(s) after the Content-Length body are not part of the request",
            raw.trailing_bytes
        );
    }
    let url = raw.url(args.url.as_deref())?;

    // The Host the request arrived with and any X-Forwarded-Host are the usual "other" public hosts.
    let alt_hosts: Vec<String> = ["host", "x-forwarded-host"]
        .iter()
        .flat_map(|h| raw.headers.get_all(*h))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    let alt_refs: Vec<&str> = alt_hosts.iter().map(String::as_str).collect();
    let hints = Hints {
        alt_hosts: &alt_refs,
    };

    let req = Request {
        method: &raw.method,
        url: &url,
        headers: &raw.headers,
        body: &raw.body,
    };
    match verify_explained(verifier.as_ref(), &req, now, &hints) {
        Ok(v) => {
            print_verified(&v, now, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Err((reject, diagnosis)) => {
            print_rejected(spec.id, &reject, diagnosis.as_ref(), args.json);
            Ok(ExitCode::from(1))
        }
    }
}

fn print_verified(v: &Verified, now: i64, json: bool) {
    if json {
        let out = serde_json::json!({
            "outcome": "verified",
            "provider": v.provider(),
            "scheme": v.scheme(),
            "key": v.key_label(),
            "signed_at": v.signed_time(),
            "event_id": v.event_id_str(),
            "reason": null,
            "message": null,
            "diagnosis": null,
        });
        println!("{out}");
        return;
    }
    println!("verified");
    println!("  provider:  {}", v.provider());
    println!("  scheme:    {}", v.scheme());
    println!("  key:       {}", v.key_label());
    match v.signed_time() {
        Some(t) => println!("  signed at: {t} ({} s before now)", now.saturating_sub(t)),
        None => println!("  signed at: (this scheme signs no time)"),
    }
    println!("  event id:  {}", v.event_id_str().unwrap_or("(none)"));
}

fn print_rejected(
    provider: &str,
    reject: &tollgate_verify::Reject,
    diagnosis: Option<&Diagnosis>,
    json: bool,
) {
    if json {
        let diagnosis = diagnosis.map(|d| {
            serde_json::json!({
                "code": d.code,
                "signed_url": d.signed_url,
                "message": d.message,
            })
        });
        let out = serde_json::json!({
            "outcome": "rejected",
            "provider": provider,
            "scheme": null,
            "key": null,
            "signed_at": null,
            "event_id": null,
            "reason": reject.reason(),
            "message": reject.to_string(),
            "diagnosis": diagnosis,
        });
        println!("{out}");
        return;
    }
    println!("rejected: {}", reject.reason());
    println!("  provider:  {provider}");
    println!("  message:   {reject}");
    match diagnosis {
        Some(d) => {
            println!("  diagnosis: {}", d.code);
            if let Some(u) = &d.signed_url {
                println!("  signed url: {u}");
            }
            println!("  {}", d.message);
        }
        None if reject.reason() == "signature_mismatch" => println!(
            "  no URL or body variant matches either: a wrong key, or the request was altered"
        ),
        None => {}
    }
}

fn read_input(path: Option<&std::path::Path>) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match path {
        None => read_limited(std::io::stdin().lock(), &mut buf).context("cannot read stdin")?,
        Some(p) if p.as_os_str() == "-" => {
            read_limited(std::io::stdin().lock(), &mut buf).context("cannot read stdin")?
        }
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            read_limited(f, &mut buf).with_context(|| format!("cannot read {}", p.display()))?
        }
    }
    Ok(buf)
}

fn read_limited(r: impl std::io::Read, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    r.take(MAX_INPUT_BYTES + 1).read_to_end(buf)?;
    if buf.len() as u64 > MAX_INPUT_BYTES {
        anyhow::bail!("input is larger than {MAX_INPUT_BYTES} bytes");
    }
    Ok(())
}

fn provider_help() -> String {
    let ids: Vec<&str> = tollgate_verify::PROVIDERS.iter().map(|p| p.id).collect();
    format!("Provider scheme: {}", ids.join(", "))
}

/// The registry entry for `--provider`, or a usage error listing the known ones.
pub(crate) fn find_provider(id: &str) -> anyhow::Result<&'static ProviderSpec> {
    tollgate_verify::find_provider(id).ok_or_else(|| {
        let ids: Vec<&str> = tollgate_verify::PROVIDERS.iter().map(|p| p.id).collect();
        anyhow::anyhow!("unknown provider {id:?}; known: {}", ids.join(", "))
    })
}

/// A key from an environment variable. The error names the variable, never its value.
pub(crate) fn secret_from_env(var: &str) -> anyhow::Result<Secret> {
    match std::env::var_os(var) {
        None => anyhow::bail!("environment variable {var} is not set"),
        Some(v) if v.is_empty() => anyhow::bail!("environment variable {var} is empty"),
        Some(v) => Ok(Secret::new(v.into_encoded_bytes())),
    }
}

/// `--set key=value` options: JSON when the value parses as JSON, else a string.
pub(crate) fn parse_sets(sets: &[String]) -> anyhow::Result<Options> {
    let mut opts = Options::new();
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .with_context(|| format!("--set {s:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
        if opts.insert(k.trim().to_owned(), value).is_some() {
            anyhow::bail!("--set {k}: given twice");
        }
    }
    Ok(opts)
}

/// `--now`, or the system clock.
pub(crate) fn now_or_clock(now: Option<i64>) -> anyhow::Result<i64> {
    if let Some(n) = now {
        return Ok(n);
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    i64::try_from(secs).context("the system clock is out of range")
}
