//! `shoal container-shim` (hidden): the process that watches one
//! container for the runtime (see `shoal_agent::runtime::shim`).

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct ShimArgs {
    /// The container's folder (`<data-dir>/containers/<id>`).
    dir: PathBuf,
}

pub fn run(args: &ShimArgs) -> anyhow::Result<()> {
    shoal_agent::runtime::shim::main(&args.dir)?;
    Ok(())
}
