//! `tollgate check`: load a config as `serve` would (the Redis TLS files included) and print its
//! weaknesses. Errors exit 1; warnings exit 0, or 1 with `--strict`.

use std::path::PathBuf;
use std::process::ExitCode;

use tollgate_config::{lints, Config, ProcessEnv, StateBackend};

/// Arguments of `tollgate check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub strict: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config, &ProcessEnv) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    // The Redis TLS files are read at start: check them as serve would.
    if let StateBackend::Redis(redis) = &config.state {
        if let Err(e) = super::serve::redis_target(redis) {
            eprintln!("error: {}: {e:#}", args.config.display());
            return Ok(ExitCode::from(1));
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let warnings = lints(&config, now);
    for w in &warnings {
        eprintln!("warning: {}: {w}", args.config.display());
    }
    println!(
        "{}: {} route(s), {} warning(s)",
        args.config.display(),
        config.routes.len(),
        warnings.len()
    );
    Ok(if args.strict && !warnings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
