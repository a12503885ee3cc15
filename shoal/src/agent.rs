//! `shoal agent`: the node agent. It runs the pods bound to its node
//! (containers with runc, a network namespace and IP per pod), or with
//! `--simulate` registers simulated nodes that only pretend to.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use shoal_core::duration::parse as parse_duration;

#[derive(Args)]
pub struct AgentArgs {
    /// kubeconfig of the cluster to join. With --bootstrap-kubeconfig it
    /// is written by the agent (the node's own certificate).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// A kubeconfig with a bootstrap token (the kubelet's
    /// `--bootstrap-kubeconfig`): without a valid certificate of this
    /// node in <data-dir>/pki/client.{crt,key}, the agent asks for one
    /// with it through the CSR API (`CN=system:node:<node>`,
    /// `O=system:nodes`; approved and signed by the controllers), keeps it
    /// there and writes --kubeconfig to use it (a --kubeconfig that is not
    /// the agent's own is refused, not overwritten). It renews the
    /// certificate with less than 30 days left, at a start.
    #[arg(long, env = "SHOAL_BOOTSTRAP_KUBECONFIG")]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// The Node's name (default: this machine's hostname).
    #[arg(long, env = "SHOAL_NODE_NAME")]
    node_name: Option<String>,
    /// Where images, containers, pod volumes and logs live.
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = shoal_agent::image::DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
    /// The node's InternalIP (default: the address of the default route).
    #[arg(long, env = "SHOAL_NODE_IP")]
    node_ip: Option<IpAddr>,
    /// Extra node labels, `k=v,k2=v2`.
    #[arg(long, env = "SHOAL_NODE_LABELS", value_delimiter = ',')]
    labels: Vec<String>,
    /// Cluster DNS servers for pods with dnsPolicy ClusterFirst
    /// (comma-separated). Without one, such pods get the host's
    /// resolv.conf, as the kubelet does.
    #[arg(long, env = "SHOAL_CLUSTER_DNS", value_delimiter = ',')]
    cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, env = "SHOAL_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// First delay before restarting a crashed container (and before
    /// retrying a missing image); it doubles up to the maximum.
    #[arg(long, env = "SHOAL_BACKOFF_INITIAL", default_value = "10s", value_parser = parse_duration)]
    restart_backoff_initial: Duration,
    #[arg(long, env = "SHOAL_BACKOFF_MAX", default_value = "300s", value_parser = parse_duration)]
    restart_backoff_max: Duration,
    /// Port of the HTTPS endpoint for logs, exec and attach (the
    /// kubelet's).
    #[arg(long, env = "SHOAL_AGENT_PORT", default_value_t = 10250)]
    port: u16,
    /// Address that endpoint listens on.
    #[arg(long, env = "SHOAL_AGENT_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Serving certificate and key of that endpoint; the apiserver checks
    /// it against its --kubelet-certificate-authority. Default: asked for
    /// through the CSR API (signer kubernetes.io/kubelet-serving, for the
    /// node's name and address) and kept in <data-dir>/pki/serving.{crt,key}.
    #[arg(long, env = "SHOAL_AGENT_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, env = "SHOAL_AGENT_TLS_KEY_FILE")]
    tls_private_key_file: Option<PathBuf>,
    /// A file holding a bearer token let in without a review (the
    /// apiserver's --kubelet-token-file). Every agent given it lets its
    /// holder in, so it is for one agent (shoal up's own); others let the
    /// apiserver in by its client certificate (--authorization-mode).
    #[arg(long, env = "SHOAL_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Callers with a certificate this CA signed are authenticated as its
    /// subject (kubelet's --client-ca-file). Default: the CA --kubeconfig
    /// trusts (the cluster CA, which signs the apiserver's client
    /// certificate), copied to <data-dir>/pki/client-ca.crt.
    #[arg(long, env = "SHOAL_AGENT_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Webhook: callers other than --token-file's are named by their
    /// certificate or a TokenReview, and each request is authorized by a
    /// SubjectAccessReview for this node's nodes/proxy, nodes/metrics,
    /// ... (kubelet's --authorization-mode=Webhook with
    /// --authentication-token-webhook). AlwaysAllow: --token-file's
    /// token only, or anyone without one.
    #[arg(long, env = "SHOAL_AGENT_AUTHORIZATION_MODE", default_value = "Webhook", value_parser = ["Webhook", "AlwaysAllow"])]
    authorization_mode: String,
    /// A container's log rotates when it would grow past this size
    /// (kubelet's --container-log-max-size).
    #[arg(long, env = "SHOAL_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container, the current one included.
    #[arg(long, env = "SHOAL_CONTAINER_LOG_MAX_FILES", default_value_t = 5)]
    container_log_max_files: u32,
    /// Kill every container of this node when the agent stops (by default
    /// they keep running, and the next agent on this data dir re-adopts
    /// them).
    #[arg(long, env = "SHOAL_STOP_PODS_ON_EXIT")]
    stop_pods_on_exit: bool,
    /// UDP port of the overlay's QUIC tunnels to the other nodes.
    #[arg(long, env = "SHOAL_OVERLAY_PORT", default_value_t = shoal_overlay::tunnel::DEFAULT_PORT)]
    overlay_port: u16,
    /// This node's overlay certificate and key (issued by the cluster CA
    /// for `CN=system:node:<node>` with the DNS name `<node>`), and the CA
    /// peers' certificates must chain to. Without them the agent asks for
    /// a certificate through the CSR API (signer `shoal.dev/node-overlay`,
    /// signed by the controllers' `--cluster-signing-cert-file`).
    #[arg(long, env = "SHOAL_OVERLAY_CERT_FILE")]
    overlay_cert_file: Option<PathBuf>,
    #[arg(long, env = "SHOAL_OVERLAY_KEY_FILE")]
    overlay_key_file: Option<PathBuf>,
    #[arg(long, env = "SHOAL_OVERLAY_CA_FILE")]
    overlay_ca_file: Option<PathBuf>,
    /// The whole pod network (the controllers' `--cluster-cidr`): traffic
    /// to it never leaves by the default route.
    #[arg(long, env = "SHOAL_CLUSTER_CIDR", default_value = "10.244.0.0/16", value_parser = shoal_core::cidr::Ipv4Cidr::parse_masked)]
    cluster_cidr: shoal_core::cidr::Ipv4Cidr,
    /// Run no tunnels: this node's pods reach only each other.
    #[arg(long, env = "SHOAL_NO_OVERLAY")]
    no_overlay: bool,
    /// Run no service proxy: Services are not reachable from this node.
    #[arg(long, env = "SHOAL_NO_PROXY")]
    no_proxy: bool,
    /// The smallest time between two syncs of the service rules (as
    /// kube-proxy's `--min-sync-period`): changes within it are applied
    /// together.
    #[arg(long, env = "SHOAL_PROXY_MIN_SYNC_PERIOD", default_value = "100ms", value_parser = parse_duration)]
    proxy_min_sync_period: Duration,
    /// Run no cluster DNS: this node's pods cannot resolve cluster names.
    #[arg(long, env = "SHOAL_NO_DNS")]
    no_dns: bool,
    #[command(flatten)]
    ingress: IngressFlags,
    /// Do not make images from Debian packages when a pod names one this
    /// node lacks (nginx, postgres): such pods wait in ImagePullBackOff.
    /// Builds need apt-get and dpkg-deb; nodes without them never build.
    #[arg(long, env = "SHOAL_NO_IMAGE_BUILDS")]
    no_image_builds: bool,
    /// Image archives made by `shoal image build -o` (each `*.tar` with
    /// its `.id` file) in this folder, loaded when a pod first names one:
    /// the node's "registry".
    #[arg(long, env = "SHOAL_IMAGE_ARCHIVES")]
    image_archives: Option<std::path::PathBuf>,
    /// The port the node's DNS answers on, at the node's bridge address.
    #[arg(long, env = "SHOAL_DNS_PORT", default_value_t = 53)]
    dns_port: u16,
    /// The TTL of the cluster's records, in seconds.
    #[arg(long, env = "SHOAL_DNS_TTL", default_value_t = shoal_dns::server::DEFAULT_TTL)]
    dns_ttl: u32,
    /// Name servers for names outside the cluster (`ip` or `ip:port`,
    /// comma-separated). Default: those of the host's /etc/resolv.conf.
    #[arg(long, env = "SHOAL_DNS_UPSTREAM", value_delimiter = ',', value_parser = crate::dns::parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
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
    /// Pods a node takes.
    #[arg(long, default_value = "110")]
    max_pods: String,
    /// How often the node reports its and its pods' usage for `kubectl
    /// top` and the HPA: from cgroups on a real node; on simulated nodes
    /// from the `simulate.shoal.dev/cpu-usage` and `memory-usage`
    /// annotations, a report written only when it changed.
    #[arg(long, env = "SHOAL_METRICS_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    metrics_interval: Duration,
}

/// The node's Ingress controller, shared by `shoal agent` and `shoal up`.
#[derive(clap::Args, Clone, Debug)]
pub struct IngressFlags {
    /// The port Ingresses are served on over HTTP, on every address of the
    /// node (0: none).
    #[arg(long, env = "SHOAL_INGRESS_HTTP_PORT", default_value_t = 80)]
    pub ingress_http_port: u16,
    /// The port Ingresses are served on over HTTPS (0: none).
    #[arg(long, env = "SHOAL_INGRESS_HTTPS_PORT", default_value_t = 443)]
    pub ingress_https_port: u16,
    /// Serve no Ingresses on this node.
    #[arg(long, env = "SHOAL_NO_INGRESS")]
    pub no_ingress: bool,
}

impl IngressFlags {
    pub fn settings(&self) -> Option<shoal_ingress::Settings> {
        let any = |port: u16| (port != 0).then(|| SocketAddr::from(([0, 0, 0, 0], port)));
        let settings = shoal_ingress::Settings {
            http: any(self.ingress_http_port),
            https: any(self.ingress_https_port),
        };
        (!self.no_ingress && (settings.http.is_some() || settings.https.is_some()))
            .then_some(settings)
    }

    /// The same flags for an agent process.
    pub fn argv(&self) -> Vec<String> {
        if self.no_ingress {
            return vec!["--no-ingress".into()];
        }
        vec![
            "--ingress-http-port".into(),
            self.ingress_http_port.to_string(),
            "--ingress-https-port".into(),
            self.ingress_https_port.to_string(),
        ]
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if !args.simulate {
        let node_name = match &args.node_name {
            Some(name) => name.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .context("reading this machine's hostname; pass --node-name")?
                .trim()
                .to_lowercase(),
        };
        let client = match &args.bootstrap_kubeconfig {
            Some(bootstrap) => {
                let pki = args.data_dir.join("pki");
                let files = shoal_agent::agent::certificates::ClientFiles {
                    kubeconfig: &args.kubeconfig,
                    bootstrap,
                    cert: &pki.join("client.crt"),
                    key: &pki.join("client.key"),
                };
                shoal_agent::agent::certificates::node_client(&files, &node_name)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("the node's client certificate")?
            }
            None => shoal_core::client::from_file(&args.kubeconfig)
                .await
                .with_context(|| format!("reading {}", args.kubeconfig.display()))?,
        };
        return run_real(client, node_name, args).await;
    }
    let client = shoal_core::client::from_file(&args.kubeconfig)
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

async fn run_real(client: kube::Client, node_name: String, args: AgentArgs) -> anyhow::Result<()> {
    let mut labels = Vec::new();
    for label in args.labels.iter().filter(|l| !l.is_empty()) {
        let Some((k, v)) = label.split_once('=') else {
            bail!("--labels: {label:?} is not key=value");
        };
        labels.push((k.to_string(), v.to_string()));
    }
    let max_pods: u32 = args
        .max_pods
        .parse()
        .with_context(|| format!("--max-pods: {:?} is not a number", args.max_pods))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let client_ca = match &args.client_ca_file {
        Some(path) => Some(path.clone()),
        None => match shoal_core::client::cluster_ca(&args.kubeconfig) {
            Ok(Some(pem)) => {
                let path = args.data_dir.join("pki").join("client-ca.crt");
                std::fs::create_dir_all(args.data_dir.join("pki"))?;
                std::fs::write(&path, pem)
                    .with_context(|| format!("writing {}", path.display()))?;
                Some(path)
            }
            Ok(None) => {
                if args.authorization_mode == "Webhook" {
                    tracing::warn!(
                        "{} names no CA and no --client-ca-file is given: callers with a certificate (the apiserver's, for logs and exec) are not recognized",
                        args.kubeconfig.display()
                    );
                }
                None
            }
            Err(e) => bail!("the CA of {}: {e}", args.kubeconfig.display()),
        },
    };
    // Without given files, the serving certificate is asked for through
    // the CSR API (signed by the cluster CA the apiserver checks agents
    // against), as kubelets with serverTLSBootstrap do.
    let (cert, key, request_certificate) = match (args.tls_cert_file, args.tls_private_key_file) {
        (Some(cert), Some(key)) => (cert, key, false),
        (None, None) => {
            let pki = args.data_dir.join("pki");
            (pki.join("serving.crt"), pki.join("serving.key"), true)
        }
        _ => bail!("--tls-cert-file and --tls-private-key-file go together"),
    };
    use shoal_agent::agent::overlay::{IdentitySource, OverlayConfig};
    let identity = match (
        args.overlay_cert_file,
        args.overlay_key_file,
        args.overlay_ca_file,
    ) {
        (Some(cert), Some(key), Some(ca)) => IdentitySource::Files { ca, cert, key },
        (None, None, None) => IdentitySource::Request,
        _ => bail!("--overlay-cert-file, --overlay-key-file and --overlay-ca-file go together"),
    };
    let overlay = (!args.no_overlay).then_some(OverlayConfig {
        port: args.overlay_port,
        identity,
        cluster_cidr: args.cluster_cidr,
    });
    let proxy = (!args.no_proxy).then_some(shoal_agent::agent::proxy::ProxyConfig {
        min_sync_period: args.proxy_min_sync_period,
    });
    let dns = (!args.no_dns).then(|| shoal_agent::agent::dns::DnsConfig {
        port: args.dns_port,
        ttl: args.dns_ttl,
        upstreams: (!args.dns_upstream.is_empty()).then_some(args.dns_upstream.clone()),
        ..Default::default()
    });
    let config = shoal_agent::agent::Config {
        overlay,
        proxy,
        dns,
        node_name,
        data_dir: args.data_dir.clone(),
        node_ip: args.node_ip,
        labels,
        max_pods,
        lease_interval: Duration::from_secs(args.lease_interval.max(1)),
        cluster_dns: args.cluster_dns,
        cluster_domain: args.cluster_domain,
        backoff_initial: args.restart_backoff_initial,
        backoff_max: args.restart_backoff_max.max(args.restart_backoff_initial),
        server: shoal_agent::agent::server::ServerConfig {
            port: args.port,
            bind: args.bind_address,
            cert,
            key,
            request_certificate,
            token,
            client_ca,
            webhook: args.authorization_mode == "Webhook",
        },
        stop_pods_on_exit: args.stop_pods_on_exit,
        container_log_max_bytes: shoal_core::quantity::parse_scaled(
            &args.container_log_max_size,
            1,
        )
        .filter(|b| *b > 0)
        .with_context(|| {
            format!(
                "--container-log-max-size: {:?} is not a size (e.g. 10Mi)",
                args.container_log_max_size
            )
        })?,
        container_log_max_files: args.container_log_max_files.max(1),
        metrics_interval: Some(args.metrics_interval.max(Duration::from_secs(1))),
        ingress: args.ingress.settings(),
        image_builds: shoal_agent::image::debian::node_catalog(
            !args.no_image_builds,
            args.image_archives.as_deref(),
        ),
    };
    // As `shoal up` does: the busybox image, from this machine's busybox.
    let busybox = std::path::Path::new("/bin/busybox");
    let runtime =
        shoal_agent::runtime::Runtime::new(&args.data_dir).context("the container runtime")?;
    if busybox.exists() {
        if let Err(e) = shoal_agent::image::busybox::ensure_loaded(runtime.images(), busybox) {
            tracing::warn!(error = %e, "the busybox image was not loaded");
        }
    }
    drop(runtime);
    let shutdown = async {
        if let Err(e) = crate::apiserver::wait_for_signal().await {
            tracing::warn!(error = %e, "waiting for signals");
        }
    };
    shoal_agent::agent::run(client, config, shutdown)
        .await
        .context("node agent")?;
    Ok(())
}
