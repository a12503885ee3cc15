//! The agent that runs pods for real: shoal's kubelet.
//!
//! ```text
//!  run(client, config)
//!    node.rs      register the Node, renew its Lease, keep Ready, wait for podCIDR
//!    overlay      the node's bridge; one network namespace + IP per pod;
//!                 QUIC tunnels to the other nodes (overlay.rs); the host
//!                 firewall's accepts for the bridge and the tunnel device
//!    pods.rs      watch pods with spec.nodeName = this node; one worker per pod,
//!                 the newest object handed over (updates merged, never queued)
//!    worker/      a pod's life by stage (Setup → Initializing → Running →
//!                 Ended, or Terminating): sandbox → volumes → init containers
//!                 → containers → (probes, restarts, back-off) → termination;
//!                 status patched whenever what it computes (status.rs, pure)
//!                 changes
//!    dns.rs       the node's cluster DNS (shoal_dns) on the bridge address,
//!                 published as this node's endpoint of kube-system/kube-dns
//!                 (endpoint.rs; the ingress likewise of kube-system/shoal-ingress)
//!    proxy.rs     the service proxy and NetworkPolicy: Services,
//!                 EndpointSlices, NetworkPolicies, Pods, Namespaces → the
//!                 node's nftables table (shoal_overlay::proxy)
//!    server/      HTTPS for the apiserver's logs/exec/attach proxy: query
//!                 parsing, logs (CRI files read with runtime/log.rs), and
//!                 exec/attach (remotecommand)
//! ```
//!
//! Everything the agent runs is found again from files after a restart:
//! containers by the runtime (`<data-dir>/containers`), sandboxes by the
//! overlay (`<data-dir>/network`), so a restarted agent re-adopts its pods
//! and removes what belongs to pods deleted while it was away.

pub mod certificates;
pub mod dns;
pub mod endpoint;
pub mod env;
pub mod events;
pub mod node;
pub mod overlay;
pub mod pods;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod sandbox_files;
pub mod server;
pub mod status;
pub mod usage;
pub mod volumes;
pub mod worker;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::runtime::reflector;
use shoal_core::cache;

use crate::runtime::Runtime;

/// How an agent runs; flags of `shoal agent`.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    /// The node's InternalIP; default: the default-route address.
    pub node_ip: Option<IpAddr>,
    pub labels: Vec<(String, String)>,
    pub max_pods: u32,
    pub lease_interval: Duration,
    /// The cluster DNS servers pods with `dnsPolicy: ClusterFirst` use.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// Restart back-off of crashed containers (kubelet: 10 s doubling to
    /// 5 min), also used for image pulls.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The HTTPS endpoint for logs/exec/attach.
    pub server: server::ServerConfig,
    /// Container logs rotate when they would pass this size, keeping this
    /// many files (kubelet's containerLogMaxSize/containerLogMaxFiles).
    pub container_log_max_bytes: u64,
    pub container_log_max_files: u32,
    /// Kill every container of this node when the agent stops (`shoal
    /// up` in tests); by default they keep running and are re-adopted.
    pub stop_pods_on_exit: bool,
    /// The tunnels to other nodes; without them this node's pods reach
    /// only each other and the node.
    pub overlay: Option<overlay::OverlayConfig>,
    /// The service proxy; without it Services are not reachable from this
    /// node.
    pub proxy: Option<proxy::ProxyConfig>,
    /// The node's cluster DNS; without it this node's pods cannot resolve
    /// cluster names (the Service's traffic stays on each node).
    pub dns: Option<dns::DnsConfig>,
    /// The node's Ingress controller (HTTP and HTTPS ports); without it
    /// Ingresses are not served on this node.
    pub ingress: Option<shoal_ingress::Settings>,
    /// Images the node makes from Debian packages when a pod names one it
    /// does not have (`nginx:1.25`, `postgres:15`), as a pull would fetch
    /// it; without it such a pod waits in ImagePullBackOff.
    pub image_builds: Option<Arc<crate::image::debian::Catalog>>,
    /// How often the node's and its pods' usage is reported for `kubectl
    /// top` and the HPA (metrics-server's 15 s); None reports nothing.
    pub metrics_interval: Option<Duration>,
}

/// The node bridge.
pub const BRIDGE: &str = "shoal0";
/// The agent's chain in the host's iptables FORWARD.
pub const FIREWALL_CHAIN: &str = "SHOAL-FORWARD";

/// What every pod worker shares.
pub struct Shared {
    pub client: kube::Client,
    pub config: Config,
    pub runtime: Arc<Runtime>,
    pub network: Arc<shoal_overlay::Network>,
    pub registry: Arc<registry::Registry>,
    pub events: events::Recorder,
    /// The node's address, for `status.hostIP`.
    pub host_ip: IpAddr,
    /// The node's allocatable cpu (millicores) and memory (bytes), for
    /// resourceFieldRef without limits.
    pub allocatable: (u64, u64),
    /// The host's `/etc/resolv.conf`, for `dnsPolicy: Default`.
    pub host_resolv_conf: String,
    /// Container starts running at once.
    pub starts: Arc<tokio::sync::Semaphore>,
    /// Every Service of the cluster, kept by a watch: the containers'
    /// service variables are made from it, as the kubelet's lister does,
    /// rather than from a list per pod.
    pub services: reflector::Store<Service>,
}

/// What can stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
    #[error("setting up the pod network: {0}")]
    Network(#[from] shoal_overlay::Error),
    #[error("watching pods: {0}")]
    Watch(String),
    #[error("agent server: {0}")]
    Server(#[from] server::ServerError),
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the agent until `shutdown` resolves. Pods keep running when it
/// stops (a restarted agent re-adopts them).
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let runtime = Arc::new(Runtime::new(&config.data_dir)?);
    let machine = node::Machine::read();
    let host_ip = match config.node_ip {
        Some(ip) => ip,
        None => node::default_address().ok_or_else(|| {
            Error::Config("cannot tell this machine's address; pass --node-ip".into())
        })?,
    };
    // As the kubelet, the agent keeps trying to register (an apiserver
    // not up yet, a node identity not yet authorized).
    let mut shutdown = Box::pin(shutdown);
    let mut backoff = Duration::from_millis(200);
    let registered = loop {
        match node::register(&client, &config, &machine, host_ip).await {
            Ok(registered) => break registered,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "registering the node; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(7));
            }
        }
    };
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        config.clone(),
        machine.clone(),
        host_ip,
    ));
    let pod_cidr = node::wait_for_pod_cidr(&client, &config.node_name, registered).await;
    let underlay_mtu = shoal_overlay::tunnel::underlay_mtu(host_ip).await;
    let network = Arc::new(
        shoal_overlay::Network::new(shoal_overlay::NodeNetwork {
            bridge: BRIDGE.into(),
            pod_cidr: pod_cidr.clone(),
            state_dir: config.data_dir.join("network"),
            mtu: match config.overlay {
                Some(_) => shoal_overlay::tunnel::pod_mtu(underlay_mtu),
                None => underlay_mtu,
            },
        })
        .await?,
    );
    let firewall = shoal_overlay::firewall::HostFirewall::new(
        FIREWALL_CHAIN,
        &[BRIDGE, shoal_overlay::tunnel::DEVICE],
    );
    if let Err(e) = firewall.install() {
        tracing::warn!(error = %e, "could not accept the pods' traffic in the host firewall; a FORWARD policy of DROP (Docker's) will drop it");
    }
    if let Some(settings) = &config.overlay {
        if let Err(e) = shoal_overlay::tunnel::guard_pod_network(settings.cluster_cidr).await {
            tracing::warn!(error = %e, "packets for other nodes' pods may leave by the default route until the tunnels are up");
        }
    }
    // The tunnels come up in the background (a certificate may have to be
    // asked for first); pods start meanwhile.
    let tunnel_slot: Arc<std::sync::OnceLock<Arc<shoal_overlay::tunnel::Tunnel>>> = Arc::default();
    let node_overlay = match config.overlay.clone() {
        Some(settings) => {
            let slot = tunnel_slot.clone();
            let client = client.clone();
            let node = config.node_name.clone();
            let data_dir = config.data_dir.clone();
            let gateway = network.gateway();
            Some(tokio::spawn(async move {
                match overlay::start(
                    &client,
                    &node,
                    host_ip,
                    gateway,
                    underlay_mtu,
                    &settings,
                    &data_dir,
                )
                .await
                {
                    // Held until the agent stops (the task is aborted).
                    Ok(running) => {
                        let _ = slot.set(running.tunnel.clone());
                        futures::future::pending::<()>().await;
                        drop(running);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "no tunnels to other nodes: pods of this node reach only this node's pods")
                    }
                }
            }))
        }
        None => {
            tracing::info!("overlay disabled: pods of this node reach only this node's pods");
            None
        }
    };
    let registry = Arc::new(registry::Registry::default());
    // One node without the overlay: its own range is the whole pod network.
    let cluster_cidr = config
        .overlay
        .as_ref()
        .map(|o| o.cluster_cidr)
        .or_else(|| pod_cidr.parse().ok());
    let proxy_settings = match (config.proxy.clone(), cluster_cidr) {
        (Some(settings), Some(cluster_cidr)) => Some((settings, cluster_cidr)),
        (Some(_), None) => {
            tracing::error!(pod_cidr = %pod_cidr, "no service proxy: the node's podCIDR is not an IPv4 range");
            None
        }
        (None, _) => {
            tracing::info!("service proxy disabled: Services are not reachable from this node");
            None
        }
    };
    if config.dns.is_none() {
        tracing::info!("cluster DNS disabled: this node's pods cannot resolve cluster names");
    }
    // The agent's caches: Services feed the containers' variables, the
    // proxy and the DNS; EndpointSlices and Pods the proxy and the DNS;
    // NetworkPolicies and Namespaces the proxy. Each change wakes those
    // that read the kind.
    let proxy_changed = Arc::new(tokio::sync::Notify::new());
    let dns_changed = Arc::new(tokio::sync::Notify::new());
    let ingress_changed = Arc::new(tokio::sync::Notify::new());
    let mut readers = Vec::new();
    if config.ingress.is_some() {
        readers.push(ingress_changed.clone());
    }
    if proxy_settings.is_some() {
        readers.push(proxy_changed.clone());
    }
    if config.dns.is_some() {
        readers.push(dns_changed.clone());
    }
    let (services, services_watch) = cache::watched::<Service>(&client, &readers);
    let (slices, slices_watch) = cache::watched::<EndpointSlice>(&client, &readers);
    let (pods_cache, pods_watch) = cache::watched::<Pod>(&client, &readers);
    let mut watches = vec![tokio::spawn(services_watch)];
    if !readers.is_empty() {
        watches.push(tokio::spawn(slices_watch));
        watches.push(tokio::spawn(pods_watch));
    }
    let proxy_metrics: Arc<std::sync::Mutex<String>> = Arc::default();
    let proxy_task = proxy_settings.map(|(settings, cluster_cidr)| {
        let readers = std::slice::from_ref(&proxy_changed);
        let (policies, policies_watch) = cache::watched::<NetworkPolicy>(&client, readers);
        let (namespaces, namespaces_watch) = cache::watched::<Namespace>(&client, readers);
        let node = shoal_overlay::proxy::NodeContext {
            node_name: config.node_name.clone(),
            cluster_cidr,
            tunnel: config
                .overlay
                .as_ref()
                .map(|_| (shoal_overlay::tunnel::DEVICE.to_string(), network.gateway())),
        };
        let inputs = proxy::Inputs {
            services: services.clone(),
            slices: slices.clone(),
            policies,
            pods: pods_cache.clone(),
            namespaces,
            changed: proxy_changed.clone(),
        };
        let sync = proxy::run(inputs, node, settings, proxy_metrics.clone());
        tokio::spawn(async move {
            tokio::join!(policies_watch, namespaces_watch, sync);
        })
    });
    let dns_metrics = Arc::new(shoal_dns::Metrics::new());
    let dns_task = config.dns.clone().map(|settings| {
        let sources = shoal_dns::Sources {
            services: services.clone(),
            slices: slices.clone(),
            pods: pods_cache.clone(),
            changed: dns_changed.clone(),
        };
        tokio::spawn(dns::run(
            client.clone(),
            config.node_name.clone(),
            IpAddr::V4(network.gateway()),
            config.cluster_domain.clone(),
            settings,
            sources,
            dns_metrics.clone(),
        ))
    });
    let ingress_metrics = Arc::new(shoal_ingress::metrics::Metrics::default());
    let ingress_task = config.ingress.clone().map(|settings| {
        let readers = std::slice::from_ref(&ingress_changed);
        // The Secrets the Ingresses name are watched one by one: a node may
        // read those (the Node authorizer) but not list every Secret.
        let tls_named = Arc::new(tokio::sync::Notify::new());
        let (ingresses, ingresses_watch) =
            cache::watched::<Ingress>(&client, &[ingress_changed.clone(), tls_named.clone()]);
        let (classes, classes_watch) = cache::watched::<IngressClass>(&client, readers);
        let (wanted_tx, wanted) = tokio::sync::watch::channel(Default::default());
        let follow_tls = {
            let ingresses = ingresses.clone();
            async move {
                loop {
                    tls_named.notified().await;
                    let now = shoal_ingress::tls_secrets(&ingresses.state());
                    wanted_tx.send_if_modified(|w| {
                        let differs = *w != now;
                        *w = now;
                        differs
                    });
                }
            }
        };
        // Only TLS Secrets keep their data: the certificates.
        let (secrets, secrets_watch) =
            cache::named::<Secret, _>(&client, readers, wanted, |secret: &mut Secret| {
                secret.metadata.managed_fields = None;
                if secret.type_.as_deref() != Some("kubernetes.io/tls") {
                    secret.data = None;
                    secret.string_data = None;
                }
            });
        let sources = shoal_ingress::Sources {
            ingresses,
            classes,
            services: services.clone(),
            slices: slices.clone(),
            secrets,
            changed: ingress_changed.clone(),
        };
        let metrics = ingress_metrics.clone();
        let (client, node) = (client.clone(), config.node_name.clone());
        tokio::spawn(async move {
            let watches = async {
                tokio::join!(ingresses_watch, classes_watch, secrets_watch, follow_tls);
            };
            // Announced as this node's endpoint of kube-system/shoal-ingress
            // once the ports are taken.
            let served = async {
                let bound = shoal_ingress::bind(&settings).await?;
                let own = endpoint::ingress(host_ip, bound.http_port(), bound.https_port());
                let publish = async {
                    if let Some(own) = own {
                        own.publish(&client, &node).await;
                    }
                };
                // Serving ends only on an error, which is not kept waiting
                // for the endpoint to be published.
                let serve = shoal_ingress::serve(bound, sources, metrics);
                tokio::pin!(serve);
                tokio::select! {
                    result = &mut serve => result,
                    () = publish => serve.await,
                }
            };
            tokio::select! {
                () = watches => {}
                result = served => if let Err(e) = result {
                    tracing::error!(error = %e, "no Ingress controller on this node");
                },
            }
        })
    });
    if config.ingress.is_none() {
        tracing::info!("ingress disabled: this node serves no Ingresses");
    }
    let shared = Arc::new(Shared {
        services,
        events: events::Recorder::new(client.clone(), &config.node_name),
        client: client.clone(),
        runtime: runtime.clone(),
        network,
        registry: registry.clone(),
        host_ip,
        allocatable: (machine.cpu_millis, machine.memory_bytes),
        host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        starts: Arc::new(tokio::sync::Semaphore::new(concurrent_starts())),
        config: config.clone(),
    });
    let usage_reports = config
        .metrics_interval
        .map(|interval| tokio::spawn(usage::report(shared.clone(), interval)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config_dns = config.dns.is_some();
    let config_ingress = config.ingress.is_some();
    let own = {
        let runtime = runtime.clone();
        let registry = registry.clone();
        move || {
            let proxy = proxy_metrics.lock().map(|m| m.clone()).unwrap_or_default();
            let tunnel = tunnel_slot
                .get()
                .map(|tunnel| tunnel.metrics())
                .unwrap_or_default();
            let dns = if config_dns {
                dns_metrics.render()
            } else {
                String::new()
            };
            let agent = crate::metrics::render(&agent_now(&registry, &runtime));
            let ingress = if config_ingress {
                ingress_metrics.render()
            } else {
                String::new()
            };
            shoal_core::metrics::join(&[&agent, &proxy, &tunnel, &dns, &ingress])
        }
    };
    let resource = {
        let runtime = runtime.clone();
        let registry = registry.clone();
        move || usage::resource_exposition(&registry.snapshot(), &runtime)
    };
    let metrics = server::Metrics {
        own: Arc::new(own),
        resource: Arc::new(resource),
    };
    let server = {
        let client = client.clone();
        let settings = config.server.clone();
        let node = config.node_name.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if settings.request_certificate {
                let mut ips = vec![host_ip];
                if !settings.bind.is_unspecified() && settings.bind != host_ip {
                    ips.push(settings.bind);
                }
                let request =
                    certificates::serving(&client, &node, &ips, &settings.cert, &settings.key);
                tokio::select! {
                    result = request => if let Err(e) = result {
                        tracing::error!(error = %e, "no serving certificate: kubectl logs and exec will not reach this node");
                        return Err(server::ServerError::Certificate(e));
                    },
                    () = wait_true(stop.clone()) => return Ok(()),
                }
            }
            let webhook = settings
                .webhook
                .then(|| Arc::new(server::auth::Webhook::new(client.clone(), node.clone())));
            server::serve(
                settings,
                webhook,
                registry,
                runtime,
                metrics,
                wait_true(stop),
            )
            .await
        })
    };
    let pods = tokio::spawn(pods::run(shared.clone(), wait_true(stop_rx)));
    shutdown.await;
    let _ = stop_tx.send(true);
    heartbeat.abort();
    if let Some(task) = usage_reports {
        task.abort();
    }
    for watch in watches {
        watch.abort();
    }
    if let Some(task) = proxy_task {
        task.abort();
    }
    if let Some(task) = dns_task {
        task.abort();
    }
    if let Some(task) = ingress_task {
        task.abort();
    }
    let pods = pods.await;
    let server = server.await;
    if config.stop_pods_on_exit {
        pods::remove_orphans(&shared, &Default::default()).await;
        if config.proxy.is_some() {
            if let Err(e) = shoal_overlay::proxy::remove_table().await {
                tracing::warn!(error = %e, "removing the service rules");
            }
        }
    }
    if let Some(task) = node_overlay {
        task.abort();
        let _ = task.await;
    }
    if let Err(e) = firewall.remove() {
        tracing::warn!(error = %e, "removing the host firewall accepts");
    }
    match pods {
        Ok(result) => result?,
        Err(e) => return Err(Error::Watch(e.to_string())),
    }
    match server {
        Ok(result) => result?,
        Err(e) => return Err(Error::Config(e.to_string())),
    }
    Ok(())
}

/// What the agent's own `/metrics` reads at each scrape: the pods and
/// containers running, the image store's size.
fn agent_now(registry: &registry::Registry, runtime: &Runtime) -> crate::metrics::Now {
    let pods = registry.snapshot();
    let mut running_pods = 0;
    let mut running_containers = 0;
    for pod in &pods {
        let running = pod
            .runs
            .iter()
            .filter(|(_, id)| {
                matches!(
                    runtime.status(id),
                    Ok(crate::runtime::Status::Running { .. })
                )
            })
            .count() as u64;
        running_containers += running;
        running_pods += u64::from(running > 0);
    }
    let images = runtime.images().list().unwrap_or_default();
    crate::metrics::Now {
        running_pods,
        running_containers,
        images: images.len() as u64,
        image_bytes: images.iter().map(|i| i.size).sum(),
    }
}

/// Container starts at once: a few per core (runc is CPU-bound).
fn concurrent_starts() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

async fn wait_true(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
