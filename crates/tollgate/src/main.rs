//! tollgate: a webhook firewall for voice and messaging providers. This file only parses the command
//! line and dispatches; each subcommand lives in `cmd/<name>.rs`.
//!
//! Exit codes: 0 success (verified), 1 rejected, 2 usage or I/O error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cmd;

/// Webhook firewall for Twilio, SignalWire, Plivo, Telnyx, Vonage, Sinch and Standard Webhooks senders.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: verify every callback and forward only authentic, fresh, first-time ones.
    Serve(cmd::serve::Args),
    /// Verify one captured raw HTTP request and explain why it fails.
    Verify(cmd::verify::Args),
    /// Print a raw HTTP request signed as the provider would sign it (optionally tampered).
    Sign(cmd::sign::Args),
    /// Send signed (and tampered) sample webhooks at a deployment and report its answers.
    Send(cmd::send::Args),
    /// Generate a strong random secret or an Ed25519 key pair.
    Keygen(cmd::keygen::Args),
    /// Inspect and redeliver queue-mode events: ls, show, retry, drop.
    Queue(cmd::queue::Args),
    /// Lint a config file: weak or inline secrets, weak algorithms, old keys, TLS settings.
    Check(cmd::check::Args),
    /// A tiny app that prints what tollgate forwards and checks tollgate's signature (quick start).
    #[command(hide = true)]
    DemoUpstream(cmd::demo::Args),
    /// Load tool and minimal upstream for bench/compare.sh.
    #[command(hide = true)]
    Bench(cmd::bench::Args),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => cmd::serve::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Sign(a) => cmd::sign::run(a),
        Command::Send(a) => cmd::send::run(a),
        Command::Keygen(a) => cmd::keygen::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Queue(a) => cmd::queue::run(a),
        Command::DemoUpstream(a) => cmd::demo::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "tollgate",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("tollgate: {e:#}");
        ExitCode::from(2)
    })
}
