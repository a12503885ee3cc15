//! `shoal dns`: the cluster DNS on its own (every `shoal agent` also runs
//! one for its node): the cluster zone from watches of Services,
//! EndpointSlices and Pods, other names forwarded upstream, and Prometheus
//! metrics over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use shoal_core::duration::parse as parse_duration;

#[derive(Args)]
pub struct DnsArgs {
    /// kubeconfig of the cluster whose names to serve.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where to answer (UDP and TCP); repeat for several addresses.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: Vec<SocketAddr>,
    /// The cluster's DNS domain.
    #[arg(long, env = "SHOAL_CLUSTER_DOMAIN", default_value = shoal_dns::server::DEFAULT_ZONE)]
    cluster_domain: String,
    /// The TTL of the cluster's records, in seconds.
    #[arg(long, default_value_t = shoal_dns::server::DEFAULT_TTL)]
    ttl: u32,
    /// Name servers for names outside the cluster (`ip` or `ip:port`;
    /// repeat for several). Default: those of --resolv-conf.
    #[arg(long = "upstream", value_parser = parse_upstream)]
    upstreams: Vec<SocketAddr>,
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// How long an upstream may take before the client gets SERVFAIL.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    upstream_timeout: Duration,
    /// The smallest time between two rebuilds of the zone.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    min_rebuild_period: Duration,
    /// Where `/metrics` is served over HTTP (CoreDNS' port: 9153).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// `ip` (port 53) or `ip:port`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{s:?} is not an address (ip or ip:port)"))
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let client = shoal_core::client::from_file(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let mut config = shoal_dns::Config::new(args.listen);
    config.zone = args.cluster_domain;
    config.ttl = args.ttl;
    config.upstreams = (!args.upstreams.is_empty()).then_some(args.upstreams);
    config.resolv_conf = args.resolv_conf;
    config.upstream_timeout = args.upstream_timeout;
    config.min_rebuild_period = args.min_rebuild_period;
    let metrics = Arc::new(shoal_dns::Metrics::new());
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for /metrics"))?;
        let metrics = metrics.clone();
        let render: shoal_core::metrics::Render = Arc::new(move || metrics.render());
        tokio::spawn(shoal_core::metrics::serve(
            listener,
            render,
            std::future::pending::<()>(),
        ));
    }
    let (sources, watches) = shoal_dns::watch(&client);
    let watches = tokio::spawn(watches);
    let shutdown = async {
        if let Err(e) = crate::apiserver::wait_for_signal().await {
            tracing::error!(error = %e, "waiting for a signal");
        }
    };
    let served = shoal_dns::serve(&config, sources, metrics, shutdown).await;
    watches.abort();
    Ok(served?)
}
