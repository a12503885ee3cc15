//! `shoal controllers`: the scheduler and the control loops as a process of
//! their own, against any apiserver; with several running, one leads.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ControllersArgs {
    /// kubeconfig of the cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
}

/// A name that tells replicas apart in the Lease.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}_{}", host.trim(), std::process::id())
}

pub async fn run(args: ControllersArgs) -> anyhow::Result<()> {
    shoal_apiserver::controllers::check()?;
    let client = shoal_apiserver::controllers::client_from_kubeconfig(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    tokio::select! {
        () = shoal_apiserver::controllers::run_elected(client, identity()) => {}
        result = crate::apiserver::wait_for_signal() => result?,
    }
    Ok(())
}
