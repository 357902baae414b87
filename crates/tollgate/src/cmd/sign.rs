//! `tollgate sign`: prints a raw HTTP/1.1 request signed exactly as the provider would sign it, to
//! feed `tollgate verify`, `nc`, or `curl --data-binary`. `--tamper` alters one thing after (or
//! instead of) correct signing, so an operator can watch the gateway refuse it for the right reason.
//!
//! The output is written as bytes: the body is never passed through a lossy UTF-8 conversion.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use tollgate_verify::url::Url;
use tollgate_verify::{
    form, KeyRing, Options, ProviderSpec, Request, Secret, Settings, SignInput, Signed,
};

use super::verify::{find_provider, now_or_clock, parse_sets, secret_from_env};

/// Arguments of `tollgate sign`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("body").args(["form", "json_body", "body_file", "sample"])))]
pub struct Args {
    /// Provider scheme to sign with.
    #[arg(long, value_name = "NAME")]
    provider: String,
    /// Environment variable holding the signing key (for Ed25519 schemes: the private key).
    #[arg(long = "secret-env", value_name = "VAR")]
    secret_env: String,
    /// The URL the provider would call.
    #[arg(long, value_name = "URL")]
    url: String,
    /// Method (default POST, or the sample's method with `--sample`).
    #[arg(long)]
    method: Option<String>,
    /// A form parameter `name=value` (body `application/x-www-form-urlencoded`). Repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    form: Vec<String>,
    /// Send this file's bytes as an `application/json` body.
    #[arg(long, value_name = "FILE")]
    json_body: Option<PathBuf>,
    /// Send this file's bytes as the body, with `--content-type`.
    #[arg(long, value_name = "FILE", requires = "content_type")]
    body_file: Option<PathBuf>,
    /// Content type of `--body-file`.
    #[arg(long, value_name = "CT", requires = "body_file")]
    content_type: Option<String>,
    /// Sign the provider's realistic sample webhook.
    #[arg(long)]
    sample: bool,
    /// A provider option, `key=value` (JSON when it parses, else a string). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Signing time (unix seconds); default: the system clock.
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Message id / nonce; default: 16 random bytes as hex.
    #[arg(long, value_name = "STR")]
    nonce: Option<String>,
    /// Alter the request so that it must be refused: `body` (one byte flipped after signing),
    /// `param` (one form value changed after signing), `signature` (one digit of the signature
    /// changed), `timestamp` (signed an hour ago), `url` (signed for another path).
    #[arg(long, value_enum, value_name = "WHAT")]
    tamper: Option<Tamper>,
}

/// What `--tamper` alters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tamper {
    /// Flip one byte of the body after signing (append one to an empty body).
    Body,
    /// Change one form parameter's value after signing.
    Param,
    /// Change one character of the signature, keeping it decodable.
    Signature,
    /// Sign with a time one hour in the past.
    Timestamp,
    /// Sign for the URL with `x` appended to the path, send to the original URL.
    Url,
}

/// How far in the past `--tamper timestamp` signs: far outside any sane tolerance.
const STALE_SECS: i64 = 3600;

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = find_provider(&args.provider)?;
    let opts = parse_sets(&args.set)?;
    let secret = secret_from_env(&args.secret_env)?;
    Url::parse(&args.url)
        .map_err(|_| anyhow::anyhow!("--url {:?} is not an absolute http(s) URL", args.url))?;

    let mut input = base_input(spec, &opts, &args)?;
    input.now = now_or_clock(args.now)?;
    input.nonce = match &args.nonce {
        Some(n) => n.clone(),
        None => random_nonce()?,
    };
    if let Some(m) = &args.method {
        input.method = m.clone();
    }

    let signed = match args.tamper {
        None => sign(spec, &opts, &secret, &input)?,
        Some(t) => tamper(t, spec, &opts, &secret, input)?,
    };
    let bytes = render(&signed)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn base_input(spec: &ProviderSpec, opts: &Options, args: &Args) -> anyhow::Result<SignInput> {
    let mut input = SignInput {
        method: "POST".into(),
        url: args.url.clone(),
        content_type: None,
        body: Vec::new(),
        now: 0,
        nonce: String::new(),
    };
    if args.sample {
        input = (spec.sample)(opts, &args.url);
    } else if !args.form.is_empty() {
        let pairs = args
            .form
            .iter()
            .map(|p| {
                p.split_once('=')
                    .with_context(|| format!("--form {p:?}: expected NAME=VALUE"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        input.body = form::encode_pairs(&pairs).into_bytes();
        input.content_type = Some("application/x-www-form-urlencoded".into());
    } else if let Some(f) = &args.json_body {
        input.body = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        input.content_type = Some("application/json".into());
    } else if let (Some(f), Some(ct)) = (&args.body_file, &args.content_type) {
        input.body = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        input.content_type = Some(ct.clone());
    }
    Ok(input)
}

fn sign(
    spec: &ProviderSpec,
    opts: &Options,
    secret: &Secret,
    input: &SignInput,
) -> anyhow::Result<Signed> {
    (spec.sign)(opts, secret, input)
        .map_err(|e| anyhow::anyhow!("cannot sign for {}: {e}", spec.id))
}

fn tamper(
    what: Tamper,
    spec: &ProviderSpec,
    opts: &Options,
    secret: &Secret,
    mut input: SignInput,
) -> anyhow::Result<Signed> {
    let now = input.now;
    let tampered = match what {
        Tamper::Body => {
            let mut signed = sign(spec, opts, secret, &input)?;
            let mid = signed.body.len() / 2;
            match signed.body.get_mut(mid) {
                Some(b) => *b ^= 0x01,
                None => signed.body.push(b'x'),
            }
            signed
        }
        Tamper::Param => {
            let mut signed = sign(spec, opts, secret, &input)?;
            signed.body = tamper_param(&input, &signed)?;
            signed
        }
        Tamper::Signature => tamper_signature(spec, opts, secret, &input)?,
        Tamper::Timestamp => {
            // Decided by behaviour, not by `spec.signs_time`: whether a scheme signs a time can
            // depend on its options (the generic `hmac` with `{timestamp}.{body}`).
            let fresh = sign(spec, opts, secret, &input)?;
            input.now = input.now.saturating_sub(STALE_SECS);
            let stale = sign(spec, opts, secret, &input)?;
            if stale == fresh {
                anyhow::bail!(
                    "--tamper timestamp: {} with these options signs no timestamp (signing an hour \
                     earlier gives the same request), so a stale request cannot be told apart",
                    spec.id
                );
            }
            stale
        }
        Tamper::Url => {
            if !signs_url(spec, opts, secret)? {
                anyhow::bail!(
                    "--tamper url: {} does not sign the URL, so a changed URL cannot be detected",
                    spec.id
                );
            }
            let original = input.url.clone();
            input.url = path_plus_x(&original)?;
            let mut signed = sign(spec, opts, secret, &input)?;
            // The scheme may add to the URL it was given (Twilio's bodySHA256), so send to what it
            // returned minus our `x`, not to the original string.
            signed.url = strip_path_x(&signed.url)
                .context("--tamper url: the signer changed the URL path; cannot undo the change")?;
            signed
        }
    };
    ensure_refused(what, spec, opts, secret, &tampered, now)?;
    Ok(tampered)
}

/// A `--tamper` output that the scheme still accepts would tell the operator nothing (Plivo V2 and
/// `basic` sign no body, for instance): check it against the route's own verifier at the signing
/// time and refuse to print it.
fn ensure_refused(
    what: Tamper,
    spec: &ProviderSpec,
    opts: &Options,
    secret: &Secret,
    tampered: &Signed,
    now: i64,
) -> anyhow::Result<()> {
    let key = (spec.verify_key_for)(opts, secret)
        .map_err(|e| anyhow::anyhow!("cannot derive the verification key: {e}"))?;
    let verifier = (spec.build)(opts, &KeyRing::single(key), &Settings::default())
        .map_err(|e| anyhow::anyhow!("cannot use these keys/options for {}: {e}", spec.id))?;
    let headers = tampered.header_map();
    let req = Request {
        method: &tampered.method,
        url: &tampered.url,
        headers: &headers,
        body: &tampered.body,
    };
    if verifier.verify(&req, now).is_ok() {
        let part = match what {
            Tamper::Body => "the body",
            Tamper::Param => "the form parameters",
            Tamper::Signature => "the signature",
            Tamper::Timestamp => "the time",
            Tamper::Url => "the URL",
        };
        anyhow::bail!(
            "--tamper {}: the altered request still verifies: {} with these options does not sign {part}",
            what.name(),
            spec.id
        );
    }
    Ok(())
}

impl Tamper {
    fn name(self) -> &'static str {
        match self {
            Tamper::Body => "body",
            Tamper::Param => "param",
            Tamper::Signature => "signature",
            Tamper::Timestamp => "timestamp",
            Tamper::Url => "url",
        }
    }
}

/// Whether this provider's verifier, with these options, covers the URL.
fn signs_url(spec: &ProviderSpec, opts: &Options, secret: &Secret) -> anyhow::Result<bool> {
    let key = (spec.verify_key_for)(opts, secret)
        .map_err(|e| anyhow::anyhow!("cannot derive the verification key: {e}"))?;
    let verifier = (spec.build)(opts, &KeyRing::single(key), &Settings::default())
        .map_err(|e| anyhow::anyhow!("cannot use these keys/options for {}: {e}", spec.id))?;
    Ok(verifier.signs_url())
}

/// Changes the value of the first form parameter the caller supplied (not one the scheme added,
/// such as Vonage's `sig`, which would be a signature tamper).
fn tamper_param(input: &SignInput, signed: &Signed) -> anyhow::Result<Vec<u8>> {
    let is_form = signed
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
        .or(input.content_type.as_deref())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let supplied = form::parse(&input.body);
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = form::parse(&signed.body)
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let target = pairs
        .iter_mut()
        .find(|(k, _)| supplied.iter().any(|(s, _)| s.as_ref() == k.as_slice()))
        .filter(|_| is_form)
        .context(
            "--tamper param needs a form body (use --form or a provider whose sample is a form)",
        )?;
    target.1.push(b'0');
    Ok(form::encode_pairs(&pairs).into_bytes())
}

/// Locates the signature without a per-provider table: signing the same input with another key
/// changes exactly the signature (and nothing the key does not touch), so the headers whose value
/// differs between the two signings carry the signature. In each of them (Plivo sends the same
/// signature twice, `-V3` and `-Ma-V3`: changing one would leave the other valid) the first
/// differing character is changed within its alphabet, which keeps the value decodable, so the
/// verifier must compare and refuse.
fn tamper_signature(
    spec: &ProviderSpec,
    opts: &Options,
    secret: &Secret,
    input: &SignInput,
) -> anyhow::Result<Signed> {
    let mut signed = sign(spec, opts, secret, input)?;
    let other = sign_with_other_key(spec, opts, secret, input, &signed)?;
    let not_found = || {
        anyhow::anyhow!(
            "--tamper signature: cannot locate the signature of {}",
            spec.id
        )
    };

    let same_names = signed.headers.len() == other.headers.len()
        && signed
            .headers
            .iter()
            .zip(&other.headers)
            .all(|((ka, _), (kb, _))| ka == kb);
    let mut changed = false;
    if same_names {
        for ((_, va), (_, vb)) in signed.headers.iter_mut().zip(&other.headers) {
            if va == vb {
                continue;
            }
            let mut bytes = std::mem::take(va).into_bytes();
            if !alter_first_difference(&mut bytes, vb.as_bytes()) {
                return Err(not_found());
            }
            *va = String::from_utf8(bytes).map_err(|_| not_found())?;
            changed = true;
        }
    }
    if signed.url != other.url {
        let mut bytes = std::mem::take(&mut signed.url).into_bytes();
        if !alter_first_difference(&mut bytes, other.url.as_bytes()) {
            return Err(not_found());
        }
        signed.url = String::from_utf8(bytes).map_err(|_| not_found())?;
        changed = true;
    }
    if signed.body != other.body {
        if !alter_first_difference(&mut signed.body, &other.body) {
            return Err(not_found());
        }
        changed = true;
    }
    if !changed {
        return Err(not_found());
    }
    Ok(signed)
}

/// Signs `input` again with a key other than `secret` that the scheme accepts and that changes the
/// output. The candidates, in order: one alphanumeric character changed within its class after any
/// `xxx_` prefix (a base64, hex, `whsec_` or `user:password` key stays a key of its kind), the same
/// anywhere in the key, then for keys with no such character (`joy~_𝄞é:`, used as raw bytes by the
/// HMAC schemes) the last byte's low bit flipped, or a `0` appended.
fn sign_with_other_key(
    spec: &ProviderSpec,
    opts: &Options,
    secret: &Secret,
    input: &SignInput,
    signed: &Signed,
) -> anyhow::Result<Signed> {
    let key = secret.expose();
    let after_prefix = key.iter().position(|&b| b == b'_').map_or(0, |i| i + 1);
    let candidates = [
        rotate_from(key, after_prefix),
        rotate_from(key, 0),
        flip_last_bit(key),
        Some(Secret::new([key, b"0"].concat())),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|k| (spec.sign)(opts, &k, input).ok())
        .find(|other| other != signed)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--tamper signature: cannot sign with a second key to locate the signature of {}",
                spec.id
            )
        })
}

/// The key with its first alphanumeric character at or after `start` changed within its class.
fn rotate_from(key: &[u8], start: usize) -> Option<Secret> {
    let mut bytes = key.to_vec();
    let changed = bytes
        .iter_mut()
        .skip(start)
        .find_map(|b| rotate(*b).map(|r| *b = r))
        .is_some();
    let out = Secret::new(bytes);
    changed.then_some(out)
}

/// The key with the low bit of its last byte flipped.
fn flip_last_bit(key: &[u8]) -> Option<Secret> {
    let mut bytes = key.to_vec();
    *bytes.last_mut()? ^= 0x01;
    Some(Secret::new(bytes))
}

/// Changes the first byte where `a` differs from `b` and that [`rotate`] can change.
fn alter_first_difference(a: &mut [u8], b: &[u8]) -> bool {
    for (i, x) in a.iter_mut().enumerate() {
        if b.get(i) != Some(x) {
            if let Some(r) = rotate(*x) {
                *x = r;
                return true;
            }
        }
    }
    false
}

/// Another character of the same class; hex digits stay hex digits.
fn rotate(b: u8) -> Option<u8> {
    Some(match b {
        b'9' => b'0',
        b'0'..=b'8' => b + 1,
        b'f' => b'a',
        b'a'..=b'e' => b + 1,
        b'F' => b'A',
        b'A'..=b'E' => b + 1,
        b'g'..=b'z' => b'a',
        b'G'..=b'Z' => b'A',
        _ => return None,
    })
}

fn path_plus_x(url: &str) -> anyhow::Result<String> {
    let u = Url::parse(url).map_err(|_| anyhow::anyhow!("--url {url:?} is malformed"))?;
    let path = if u.path.is_empty() { "/" } else { u.path };
    let path = format!("{path}x");
    Ok(Url { path: &path, ..u }.as_string())
}

fn strip_path_x(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    let path = u.path.strip_suffix('x')?;
    Some(Url { path, ..u }.as_string())
}

fn random_nonce() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(hex::encode(b))
}

/// The request as bytes: request line, Host, the signed headers, Content-Length, blank line, body.
fn render(signed: &Signed) -> anyhow::Result<Vec<u8>> {
    let u = Url::parse(&signed.url)
        .map_err(|_| anyhow::anyhow!("the signer returned a malformed URL"))?;
    let path = if u.path.is_empty() { "/" } else { u.path };
    let target = match u.query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let host = match u.port {
        Some(p) => format!("{}:{p}", u.host),
        None => u.host.to_owned(),
    };
    let method = &signed.method;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!("--method {method:?} is not an HTTP method");
    }
    let mut out = Vec::with_capacity(256 + signed.body.len());
    out.extend_from_slice(format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    for (k, v) in &signed.headers {
        // Framing is ours to write; a signer never signs these.
        if ["host", "content-length", "transfer-encoding"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            continue;
        }
        if k.bytes().chain(v.bytes()).any(|b| b == b'\r' || b == b'\n') {
            anyhow::bail!("header {k} contains a line break");
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", signed.body.len()).as_bytes());
    out.extend_from_slice(&signed.body);
    Ok(out)
}
