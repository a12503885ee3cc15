//! `shoal agent`: the node agent. Today only its simulated nodes run
//! (`--simulate`); the agent that runs pods comes with its own issue.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

#[derive(Args)]
pub struct AgentArgs {
    /// kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Register simulated nodes that report their pods Running without
    /// running them (as kwok does).
    #[arg(long)]
    simulate: bool,
    /// Simulated nodes to register.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Simulated nodes are named PREFIX-0 .. PREFIX-(count-1).
    #[arg(long, default_value = "sim")]
    name_prefix: String,
    /// How often each node renews its Lease, in seconds.
    #[arg(long, default_value_t = 1)]
    lease_interval: u64,
    /// Capacity of each simulated node.
    #[arg(long, default_value = "4")]
    cpu: String,
    #[arg(long, default_value = "8Gi")]
    memory: String,
    #[arg(long, default_value = "110")]
    max_pods: String,
    /// How often simulated nodes report their pods' usage (from the
    /// `simulate.shoal.dev/cpu-usage` and `memory-usage` annotations) for
    /// `kubectl top` and the HPA; a report is written only when it changed.
    #[arg(long, env = "SHOAL_METRICS_INTERVAL", default_value = "15s", value_parser = shoal_apiserver::server::parse_duration)]
    metrics_interval: Duration,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if !args.simulate {
        bail!("shoal agent runs simulated nodes only for now (--simulate); the agent that runs pods is not built yet");
    }
    let client = shoal_apiserver::controllers::client_from_kubeconfig(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = shoal_agent::simulate::Config {
        count: args.count,
        name_prefix: args.name_prefix,
        lease_interval: Duration::from_secs(args.lease_interval.max(1)),
        cpu: args.cpu,
        memory: args.memory,
        pods: args.max_pods,
        metrics_interval: args.metrics_interval.max(Duration::from_secs(1)),
    };
    tokio::select! {
        result = shoal_agent::simulate::run(client, config) => result.context("simulated nodes")?,
        result = crate::apiserver::wait_for_signal() => result?,
    }
    Ok(())
}
