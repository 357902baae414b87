//! `tollgate keygen`: not implemented yet.

use std::process::ExitCode;

/// Arguments of `tollgate keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tollgate keygen` is not implemented yet")
}
