//! `tollgate keygen`: a strong random secret or an Ed25519 key pair from the operating system's
//! random number generator, in the text forms the providers' keys take. It prints key material on
//! purpose (that is its job) and only to stdout, never into a file or a log.

use std::process::ExitCode;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

/// Arguments of `tollgate keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to generate: `hmac` (base64 of random bytes: an HMAC secret), `ed25519` (base64 seed
    /// and public key, as Telnyx uses them), `whsec` (Standard Webhooks HMAC secret) or `whsk`
    /// (Standard Webhooks Ed25519 signing key `whsk_` and public key `whpk_`).
    #[arg(long, value_enum, default_value_t = Kind::Hmac)]
    kind: Kind,
    /// Random bytes for `hmac` and `whsec` secrets (32 to 64). Ed25519 seeds are always 32.
    #[arg(long, value_name = "N")]
    bytes: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Key kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Hmac,
    Ed25519,
    Whsec,
    Whsk,
}

const DEFAULT_BYTES: usize = 32;

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = args.bytes.unwrap_or(DEFAULT_BYTES);
    if !(32..=64).contains(&bytes) {
        anyhow::bail!("--bytes must be between 32 and 64 (got {bytes})");
    }
    if matches!(args.kind, Kind::Ed25519 | Kind::Whsk) && args.bytes.is_some_and(|b| b != 32) {
        anyhow::bail!("Ed25519 seeds are always 32 bytes; drop --bytes");
    }

    let out = match args.kind {
        Kind::Hmac => Out::Secret {
            kind: "hmac",
            secret: STANDARD.encode(random(bytes)?.as_slice()),
        },
        Kind::Whsec => Out::Secret {
            kind: "whsec",
            secret: format!("whsec_{}", STANDARD.encode(random(bytes)?.as_slice())),
        },
        Kind::Ed25519 | Kind::Whsk => {
            let seed: [u8; 32] = random(32)?
                .as_slice()
                .try_into()
                .context("random seed has the wrong length")?;
            let sk = SigningKey::from_bytes(&seed);
            let private = STANDARD.encode(seed);
            let public = STANDARD.encode(sk.verifying_key().as_bytes());
            if args.kind == Kind::Whsk {
                Out::Pair {
                    kind: "whsk",
                    private_key: format!("whsk_{private}"),
                    public_key: format!("whpk_{public}"),
                }
            } else {
                Out::Pair {
                    kind: "ed25519",
                    private_key: private,
                    public_key: public,
                }
            }
        }
    };

    if args.json {
        let value = match &out {
            Out::Secret { kind, secret } => serde_json::json!({ "kind": kind, "secret": secret }),
            Out::Pair {
                kind,
                private_key,
                public_key,
            } => serde_json::json!({
                "kind": kind,
                "private_key": private_key,
                "public_key": public_key,
            }),
        };
        println!("{value}");
    } else {
        match &out {
            // A bare line, so `export TOKEN=$(tollgate keygen)` works.
            Out::Secret { secret, .. } => println!("{secret}"),
            Out::Pair {
                kind,
                private_key,
                public_key,
            } => {
                let (signs, verifies) = if *kind == "whsk" {
                    (
                        "sender signs with it (tollgate sign --provider standard-webhooks)",
                        "the route verifies with it (standard-webhooks key)",
                    )
                } else {
                    (
                        "sender signs with it (tollgate sign --provider telnyx)",
                        "the route verifies with it (telnyx public key)",
                    )
                };
                println!("private_key: {private_key}");
                println!("# private: keep secret; the {signs}");
                println!("public_key: {public_key}");
                println!("# public: not secret; {verifies}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum Out {
    Secret {
        kind: &'static str,
        secret: String,
    },
    Pair {
        kind: &'static str,
        private_key: String,
        public_key: String,
    },
}

fn random(n: usize) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; n]);
    getrandom::getrandom(buf.as_mut_slice())
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(buf)
}
