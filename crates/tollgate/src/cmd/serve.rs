//! `tollgate serve`: not implemented yet.

use std::process::ExitCode;

/// Arguments of `tollgate serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tollgate serve` is not implemented yet")
}
