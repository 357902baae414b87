//! `tollgate verify`: not implemented yet.

use std::process::ExitCode;

/// Arguments of `tollgate verify`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tollgate verify` is not implemented yet")
}
