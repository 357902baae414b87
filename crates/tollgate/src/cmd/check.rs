//! `tollgate check`: not implemented yet.

use std::process::ExitCode;

/// Arguments of `tollgate check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tollgate check` is not implemented yet")
}
