//! `tollgate sign`: not implemented yet.

use std::process::ExitCode;

/// Arguments of `tollgate sign`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tollgate sign` is not implemented yet")
}
