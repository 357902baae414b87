//! `tollgate send`: not implemented yet.

use std::process::ExitCode;

/// Arguments of `tollgate send`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tollgate send` is not implemented yet")
}
