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
    #[command(flatten)]
    pub flags: ControllerFlags,
}

/// The tunables of the control loops, shared by `shoal controllers`,
/// `shoal apiserver` and `shoal up`.
#[derive(Args, Clone)]
pub struct ControllerFlags {
    /// How long a node's Lease may go unrenewed before the node and its
    /// pods turn Unknown (`5s`, `40s`, `1m`).
    #[arg(long, env = "SHOAL_NODE_MONITOR_GRACE_PERIOD", default_value = "5s", value_parser = shoal_core::duration::parse)]
    node_monitor_grace_period: std::time::Duration,
    /// How long after that the pods of an unreachable node are deleted
    /// (unless they tolerate the unreachable taint for longer).
    #[arg(long, env = "SHOAL_POD_EVICTION_TIMEOUT", default_value = "5s", value_parser = shoal_core::duration::parse)]
    pod_eviction_timeout: std::time::Duration,
    /// Addresses for LoadBalancer Services, as a CIDR (`172.18.255.0/24`);
    /// without it they stay `<pending>`.
    #[arg(long, env = "SHOAL_LOADBALANCER_IP_POOL")]
    loadbalancer_ip_pool: Option<String>,
    /// The pod network: each node gets a part of it for its pods.
    #[arg(long, env = "SHOAL_CLUSTER_CIDR", default_value = "10.244.0.0/16", value_parser = shoal_core::cidr::Ipv4Cidr::parse_masked)]
    pub cluster_cidr: shoal_core::cidr::Ipv4Cidr,
    /// The prefix length of each node's part of the pod network.
    #[arg(long, env = "SHOAL_NODE_CIDR_MASK_SIZE", default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How often each HorizontalPodAutoscaler is synced (`15s`, as
    /// Kubernetes).
    #[arg(long, env = "SHOAL_HPA_SYNC_PERIOD", default_value = "15s", value_parser = shoal_core::duration::parse)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// The cluster CA (certificate and key, PEM) that signs node overlay
    /// certificates requested through the CSR API (signer
    /// `shoal.dev/node-overlay`). `shoal up` uses the CA it made; without
    /// one such requests stay pending.
    #[arg(long, env = "SHOAL_CLUSTER_SIGNING_CERT_FILE")]
    cluster_signing_cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "SHOAL_CLUSTER_SIGNING_KEY_FILE")]
    cluster_signing_key_file: Option<std::path::PathBuf>,
    /// The cluster DNS Service's address: `kube-system/kube-dns` is made
    /// there (every agent answers it on its own node).
    #[arg(long, env = "SHOAL_CLUSTER_DNS", default_value = "10.96.0.10")]
    cluster_dns: std::net::IpAddr,
    /// Make no `kube-system/kube-dns` Service.
    #[arg(long)]
    no_cluster_dns_service: bool,
    /// Where to serve the controllers' `/metrics` over plain HTTP (such as
    /// `127.0.0.1:10257`); `shoal up` picks a free port without it.
    #[arg(long, env = "SHOAL_METRICS_BIND_ADDRESS")]
    pub metrics_bind_address: Option<std::net::SocketAddr>,
}

impl ControllerFlags {
    pub fn settings(&self) -> anyhow::Result<shoal_controllers::Settings> {
        let pod_network = shoal_controllers::nodeipam::PodNetwork::new(
            self.cluster_cidr,
            self.node_cidr_mask_size,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(shoal_controllers::Settings {
            node_monitor_grace_period: self.node_monitor_grace_period,
            pod_eviction_timeout: self.pod_eviction_timeout,
            loadbalancer_ip_pool: self.loadbalancer_ip_pool.clone(),
            pod_network,
            horizontal_pod_autoscaler_sync_period: self
                .horizontal_pod_autoscaler_sync_period
                .max(std::time::Duration::from_secs(1)),
            cluster_signing: self.cluster_signing()?,
            cluster_dns: (!self.no_cluster_dns_service).then_some(self.cluster_dns),
            ..Default::default()
        })
    }

    /// The cluster signing CA's certificate and key files, when given.
    pub fn signing_files(&self) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
        Some((
            self.cluster_signing_cert_file.clone()?,
            self.cluster_signing_key_file.clone()?,
        ))
    }

    fn cluster_signing(&self) -> anyhow::Result<Option<std::sync::Arc<shoal_core::tls::Ca>>> {
        match (
            &self.cluster_signing_cert_file,
            &self.cluster_signing_key_file,
        ) {
            (Some(cert), Some(key)) => Ok(Some(std::sync::Arc::new(
                shoal_core::tls::Ca::load(cert, key)
                    .map_err(|e| anyhow::anyhow!("--cluster-signing-cert-file: {e}"))?,
            ))),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "--cluster-signing-cert-file and --cluster-signing-key-file go together"
            ),
        }
    }
}

/// Serves the controllers' `/metrics` (work queues, scheduler attempts)
/// on `address` for as long as the process runs; returns where.
pub async fn serve_metrics(address: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--metrics-bind-address {address}"))?;
    let bound = listener.local_addr()?;
    let render: shoal_core::metrics::Render =
        std::sync::Arc::new(shoal_controllers::metrics::render);
    tokio::spawn(shoal_core::metrics::serve(
        listener,
        render,
        std::future::pending::<()>(),
    ));
    Ok(bound)
}

/// A name that tells replicas apart in the Lease.
pub fn identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}_{}", host.trim(), std::process::id())
}

pub async fn run(args: ControllersArgs) -> anyhow::Result<()> {
    shoal_controllers::check()?;
    let settings = args.flags.settings()?;
    if let Some(address) = args.flags.metrics_bind_address {
        serve_metrics(address).await?;
    }
    let client = shoal_core::client::from_file(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    tokio::select! {
        () = shoal_controllers::run_elected(client, identity(), settings) => {}
        result = crate::apiserver::wait_for_signal() => result?,
    }
    Ok(())
}
