//! `shoal up`: a whole cluster on this machine from one command: a
//! 3-member store and an apiserver in this process, a kubeconfig for
//! kubectl, and a clean stop on Ctrl-C/SIGTERM. Running it again on the same
//! data dir brings the same cluster back with its data.
//!
//! ```text
//!   DIR/cluster.json    the ports chosen on the first run (member ids
//!                       derive from peer URLs, so they must not change)
//!   DIR/store/s{1,2,3}  the store members' data
//!   DIR/store/pki/      the store's own CA, the members' certificate
//!                       (client and peer TLS) and the apiserver's client
//!                       certificate
//!   DIR/apiserver/      generated CA and serving certificate
//!   DIR/tokens.csv      the admin's bearer token
//!   DIR/kubeconfig      for kubectl (CA, server, token)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::store::StoreTls;
use anyhow::{bail, Context};
use base64::Engine;
use clap::Args;
use rand::Rng;
use serde::{Deserialize, Serialize};
use shoal_store::{Config as StoreConfig, Node};

#[derive(Args)]
pub struct UpArgs {
    /// Where the cluster keeps its data, certificates and kubeconfig.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
    data_dir: PathBuf,
    /// HTTPS port of the apiserver (0 picks a free one; the kubeconfig
    /// says which).
    #[arg(long, env = "SHOAL_PORT", default_value_t = 6443)]
    port: u16,
    /// Address the apiserver listens on.
    #[arg(long, env = "SHOAL_BIND_ADDRESS", default_value = "127.0.0.1")]
    bind_address: String,
    /// Run the store and the apiserver only, without the scheduler and the
    /// control loops (to measure the API alone, or run them elsewhere with
    /// `shoal controllers`).
    #[arg(long, env = "SHOAL_NO_CONTROLLERS")]
    no_controllers: bool,
    #[command(flatten)]
    controllers: crate::controllers::ControllerFlags,
    /// Run no node agent (pods stay Pending until nodes join, e.g. with
    /// `shoal agent --simulate`). Without root or runc there is none
    /// either.
    #[arg(long, env = "SHOAL_NO_AGENT")]
    no_agent: bool,
    /// Node agents to run. One runs in this process on this machine's
    /// network; more (root) each run in a network namespace of their own
    /// acting as a separate host (address NODE_SUBNET.11, .12, ...), joined
    /// by the overlay's QUIC tunnels, named node-1 .. node-N (or
    /// NODE_NAME-1 ..).
    #[arg(long, env = "SHOAL_NODES", default_value_t = 1)]
    nodes: usize,
    /// The network the nodes' namespaces share (with `--nodes` above 1);
    /// this machine takes its first address.
    #[arg(long, env = "SHOAL_NODE_SUBNET", default_value = "172.29.0.0/24")]
    node_subnet: String,
    /// The name of this machine's node (default: its hostname).
    #[arg(long, env = "SHOAL_NODE_NAME")]
    node_name: Option<String>,
    /// Port of the agent's HTTPS endpoint (logs, exec, attach); 0 picks a
    /// free one.
    #[arg(long, env = "SHOAL_AGENT_PORT", default_value_t = 10250)]
    agent_port: u16,
    /// Restart back-off of crashed containers: first delay and maximum.
    #[arg(long, env = "SHOAL_BACKOFF_INITIAL", default_value = "10s", value_parser = shoal_core::duration::parse)]
    restart_backoff_initial: Duration,
    #[arg(long, env = "SHOAL_BACKOFF_MAX", default_value = "300s", value_parser = shoal_core::duration::parse)]
    restart_backoff_max: Duration,
    /// How often the node agent reports its node's and pods' usage (from
    /// cgroups) for `kubectl top` and the HPA (metrics-server's 15 s).
    #[arg(long, env = "SHOAL_METRICS_INTERVAL", default_value = "15s", value_parser = shoal_core::duration::parse)]
    metrics_interval: Duration,
    /// Kill the pods' containers when `shoal up` stops (by default they
    /// keep running and the next `shoal up` on this data dir re-adopts
    /// them).
    #[arg(long, env = "SHOAL_STOP_PODS_ON_EXIT")]
    stop_pods_on_exit: bool,
    #[command(flatten)]
    ingress: crate::agent::IngressFlags,
    /// Name servers the nodes' cluster DNS forwards outside names to (`ip`
    /// or `ip:port`, comma-separated). Default: this machine's
    /// /etc/resolv.conf.
    #[arg(long, env = "SHOAL_DNS_UPSTREAM", value_delimiter = ',', value_parser = crate::dns::parse_upstream)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// An `EncryptionConfiguration` (kube-apiserver's format): Secrets (or
    /// what it names) are encrypted in the store.
    #[arg(long, env = "SHOAL_ENCRYPTION_PROVIDER_CONFIG")]
    encryption_provider_config: Option<PathBuf>,
    /// Where the apiserver appends its audit log (one JSON line per
    /// request, level Metadata; `-` for standard output).
    #[arg(long, env = "SHOAL_AUDIT_LOG_PATH")]
    audit_log_path: Option<PathBuf>,
    /// An audit `Policy` (audit.k8s.io/v1) saying what is logged.
    #[arg(long, env = "SHOAL_AUDIT_POLICY_FILE", requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// How the apiserver authorizes requests: `Node,RBAC` (the default),
    /// `RBAC` or `AlwaysAllow` (any authenticated request).
    #[arg(long, env = "SHOAL_AUTHORIZATION_MODE", default_value = "Node,RBAC", value_parser = ["Node,RBAC", "RBAC", "AlwaysAllow"])]
    authorization_mode: String,
}

/// What must stay the same from one run to the next.
#[derive(Serialize, Deserialize)]
struct Layout {
    /// (client port, peer port) of each member.
    members: Vec<(u16, u16)>,
    token: String,
    /// The store speaks TLS with client certificates on both ports
    /// (member ids derive from peer URLs, so a cluster made before this
    /// existed keeps plain HTTP).
    #[serde(default)]
    store_tls: bool,
}

/// A free port below Linux's ephemeral range (32768+), so that outgoing
/// connections cannot take it before the member binds it.
fn free_port() -> anyhow::Result<u16> {
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between 20000 and 32000 on 127.0.0.1")
}

fn layout(dir: &Path) -> anyhow::Result<Layout> {
    let path = dir.join("cluster.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", path.display()));
    }
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push((free_port()?, free_port()?));
    }
    let token: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let layout = Layout {
        members,
        token,
        store_tls: true,
    };
    std::fs::write(&path, serde_json::to_vec_pretty(&layout)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(layout)
}

/// The store's own CA (`DIR/store/pki/ca.{crt,key}`, apart from the
/// cluster CA that signs users and nodes, as kubeadm gives etcd its own)
/// and, from it, the members' certificate (serving and connecting,
/// 127.0.0.1) and the apiserver's client certificate.
fn store_certificates(dir: &Path) -> anyhow::Result<StoreTls> {
    crate::store::certificates(
        &dir.join("store").join("pki"),
        &["localhost".to_string()],
        &["127.0.0.1".parse()?],
    )
}

fn step(text: &str) {
    print!("{text} ... ");
    let _ = std::io::stdout().flush();
}

fn done() {
    println!("ok");
}

pub fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: shoal
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: shoal
  context:
    cluster: shoal
    user: admin
    namespace: default
current-context: shoal
"
    )
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let node_subnet = if args.nodes > 1 && !args.no_agent {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "--nodes {} runs each node in a network namespace of its own, which needs root; \
                 without root, run `shoal up --no-agent` and add simulated nodes with \
                 `shoal agent --simulate --count {}`",
                args.nodes,
                args.nodes
            );
        }
        let subnet: shoal_core::cidr::Ipv4Cidr = args
            .node_subnet
            .parse()
            .with_context(|| format!("--node-subnet {:?}", args.node_subnet))?;
        if subnet.size() < args.nodes as u64 + 12 {
            bail!(
                "--node-subnet {subnet} is too small for {} nodes",
                args.nodes
            );
        }
        Some(subnet)
    } else {
        None
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let layout = layout(&dir)?;
    // The apiserver's certificate names the nodes' gateway too.
    let tls_san: Vec<String> = node_subnet
        .and_then(|s| s.nth(1))
        .map(|gateway| vec![gateway.to_string()])
        .unwrap_or_default();
    let store_tls = if layout.store_tls {
        Some(store_certificates(&dir)?)
    } else {
        None
    };
    let scheme = if store_tls.is_some() { "https" } else { "http" };
    let initial_cluster: Vec<(String, String)> = layout
        .members
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| {
            (
                format!("s{}", i + 1),
                format!("{scheme}://127.0.0.1:{peer}"),
            )
        })
        .collect();

    let mut nodes: Vec<Arc<Node>> = Vec::new();
    let mut servers = Vec::new();
    let mut store_metrics = Vec::new();
    for (i, (client, peer)) in layout.members.iter().enumerate() {
        let name = format!("s{}", i + 1);
        step(&format!(
            "starting store member {name} on 127.0.0.1:{client}"
        ));
        let config = StoreConfig {
            name: name.clone(),
            data_dir: dir.join("store").join(&name),
            listen_client_urls: vec![format!("{scheme}://127.0.0.1:{client}")],
            advertise_client_urls: vec![format!("{scheme}://127.0.0.1:{client}")],
            listen_peer_urls: vec![format!("{scheme}://127.0.0.1:{peer}")],
            initial_advertise_peer_urls: vec![format!("{scheme}://127.0.0.1:{peer}")],
            initial_cluster: initial_cluster.clone(),
            initial_cluster_state_existing: false,
            initial_cluster_token: "shoal-up".into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 10_000,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            client_tls: store_tls.as_ref().map(StoreTls::member).unwrap_or_default(),
            peer_tls: store_tls.as_ref().map(StoreTls::member).unwrap_or_default(),
        };
        let node = Node::start(config)
            .await
            .with_context(|| format!("starting store member {name}"))?;
        servers.extend(
            shoal_store::server::serve(node.clone())
                .await
                .with_context(|| format!("serving store member {name}"))?,
        );
        let (task, metrics) =
            crate::store::serve_metrics(node.clone(), "http://127.0.0.1:0").await?;
        servers.push(task);
        store_metrics.push(format!("{name} http://{metrics}/metrics"));
        nodes.push(node);
        done();
    }

    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{},admin,admin,\"system:masters\"\n", layout.token),
    )?;
    // The token the apiserver presents to the agent's endpoint.
    let agent_token_file = dir.join("agent-token");
    if !agent_token_file.exists() {
        let token: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        std::fs::write(&agent_token_file, token)?;
    }
    step("starting the apiserver");
    let config = shoal_apiserver::Config {
        etcd_servers: layout
            .members
            .iter()
            .map(|(client, _)| format!("{scheme}://127.0.0.1:{client}"))
            .collect(),
        etcd_cafile: store_tls.as_ref().map(|t| t.ca.clone()),
        etcd_certfile: store_tls.as_ref().map(|t| t.client.0.clone()),
        etcd_keyfile: store_tls.as_ref().map(|t| t.client.1.clone()),
        bind_address: args.bind_address.clone(),
        secure_port: args.port,
        service_cluster_ip_range: "10.96.0.0/12".into(),
        service_node_port_range: "30000-32767".into(),
        tls_cert_file: None,
        tls_private_key_file: None,
        token_auth_file: Some(tokens),
        client_ca_file: None,
        tls_san: tls_san.clone(),
        etcd_compaction_interval: Duration::from_secs(300),
        kubelet_certificate_authority: None,
        // Only this process's own agent takes the token: the agents of
        // --nodes let the apiserver in by its client certificate.
        kubelet_token_file: node_subnet.is_none().then(|| agent_token_file.clone()),
        kubelet_client_certificate: None,
        kubelet_client_key: None,
        kubelet_client_signer: None,
        encryption_provider_config: args.encryption_provider_config.clone(),
        audit_log_path: args.audit_log_path.clone(),
        audit_policy_file: args.audit_policy_file.clone(),
        authorization_mode: args.authorization_mode.clone(),
        anonymous_auth: true,
        enable_bootstrap_token_auth: true,
        service_account_signing_key_file: None,
        service_account_issuer: "https://kubernetes.default.svc.cluster.local".into(),
        api_audiences: Vec::new(),
        data_dir: dir.join("apiserver"),
    };
    let apiserver = shoal_apiserver::start(config)
        .await
        .context("starting the apiserver")?;
    done();

    step("waiting for the store to elect a leader and the apiserver to be ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if apiserver.api.store.revision().await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the store did not become ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done();

    let host = if args.bind_address == "0.0.0.0" {
        "127.0.0.1"
    } else {
        args.bind_address.as_str()
    };
    let server = format!("https://{host}:{}", apiserver.addr.port());
    let ca = apiserver.ca_pem.clone().unwrap_or_default();
    let kubeconfig_path = dir.join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig(&server, &ca, &layout.token))
        .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
    println!();
    println!("shoal is up: apiserver at {server}");
    println!("  export KUBECONFIG={}", kubeconfig_path.display());
    println!("  kubectl get namespaces");
    println!("  kubectl get --raw /metrics    (the apiserver's metrics)");
    println!("store metrics: {}", store_metrics.join(", "));
    let endpoints: Vec<String> = layout
        .members
        .iter()
        .map(|(client, _)| format!("{scheme}://127.0.0.1:{client}"))
        .collect();
    match &store_tls {
        Some(tls) => println!(
            "store: etcdctl --endpoints {} --cacert {} --cert {} --key {} member list",
            endpoints.join(","),
            tls.ca.display(),
            tls.client.0.display(),
            tls.client.1.display()
        ),
        None => println!(
            "store: etcdctl --endpoints {} member list",
            endpoints.join(",")
        ),
    }
    println!("Stop with Ctrl-C.");
    let _ = std::io::stdout().flush();

    // The scheduler and the control loops, as a loopback client of the
    // apiserver, under leader election.
    let controllers = if args.no_controllers {
        None
    } else {
        let client = apiserver
            .loopback_client()
            .await
            .context("a client for the controllers")?;
        let mut settings = args.controllers.settings()?;
        if let (None, Some(subnet)) = (&settings.loadbalancer_ip_pool, node_subnet) {
            // LoadBalancer addresses from the last 16 of the nodes'
            // network, answered by the nodes on its bridge.
            if subnet.size() >= args.nodes as u64 + 12 + 16 {
                if let Some(pool) = shoal_core::cidr::Ipv4Cidr::containing(subnet.broadcast(), 28) {
                    settings.loadbalancer_ip_pool = Some(pool.to_string());
                }
            }
        }
        if settings.cluster_signing.is_none() {
            // Node overlay certificates are signed by the cluster CA.
            let ca = shoal_core::tls::Files::in_dir(&dir.join("apiserver"));
            match shoal_core::tls::Ca::load(&ca.ca_cert, &ca.ca_key) {
                Ok(ca) => settings.cluster_signing = Some(Arc::new(ca)),
                Err(e) => println!("node overlay certificates cannot be signed: {e}"),
            }
        }
        let address = args
            .controllers
            .metrics_bind_address
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let metrics = crate::controllers::serve_metrics(address).await?;
        println!("controllers metrics: http://{metrics}/metrics");
        Some(tokio::spawn(shoal_controllers::run_elected(
            client,
            crate::controllers::identity(),
            settings,
        )))
    };

    let mut hosts = None;
    let agent = match node_subnet {
        _ if args.no_agent => None,
        Some(subnet) => {
            let names: Vec<String> = (1..=args.nodes)
                .map(|i| match &args.node_name {
                    Some(name) => format!("{name}-{i}"),
                    None => format!("node-{i}"),
                })
                .collect();
            step(&format!(
                "starting {} node agents, each in its own network namespace on {subnet}",
                args.nodes
            ));
            let nodes = crate::up_nodes::prepare(&names, subnet, &dir).await?;
            // The agents join with a bootstrap token (kept in the cluster
            // dir, renewed for a day at each start) and get their own
            // certificates through the CSR API.
            let token_file = dir.join("bootstrap-token");
            let bootstrap_token = match std::fs::read_to_string(&token_file) {
                Ok(token) => token.trim().to_string(),
                Err(_) => {
                    let token = crate::token::generate();
                    crate::token::write_private(&token_file, &token)?;
                    token
                }
            };
            let client = apiserver
                .loopback_client()
                .await
                .context("a client for the bootstrap token")?;
            crate::token::create(
                &client,
                &bootstrap_token,
                Some(Duration::from_secs(24 * 3600)),
                "the agents of shoal up --nodes join with it",
            )
            .await
            .context("the agents' bootstrap token")?;
            let settings = crate::up_nodes::AgentSettings {
                cluster_dir: &dir,
                apiserver: std::net::SocketAddr::new(host.parse()?, apiserver.addr.port()),
                ca_pem: &ca,
                bootstrap_token: &bootstrap_token,
                stop_pods_on_exit: args.stop_pods_on_exit,
                backoff_initial: args.restart_backoff_initial,
                backoff_max: args.restart_backoff_max.max(args.restart_backoff_initial),
                cluster_cidr: args.controllers.cluster_cidr,
                dns_upstream: &args.dns_upstream,
                metrics_interval: args.metrics_interval.max(Duration::from_secs(1)),
                ingress: args.ingress.argv(),
            };
            hosts = Some(crate::up_nodes::Hosts::start(nodes, subnet, settings).await?);
            done();
            for node in hosts.iter().flat_map(|h| &h.nodes) {
                println!(
                    "  {} at {} (ip netns exec {} ...; log {}/agent.log)",
                    node.name,
                    node.address,
                    node.netns,
                    node.dir.display()
                );
            }
            None
        }
        None => start_agent(&args, &dir, &server, &agent_token_file).await?,
    };

    let signal = crate::apiserver::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            result = &mut signal => {
                result?;
                break;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(hosts) = hosts.as_mut() {
                    hosts.restart_exited();
                }
            }
        }
    }
    println!("stopping");
    if let Some(hosts) = hosts {
        hosts.stop(args.stop_pods_on_exit).await;
    }
    if let Some((stop, task)) = agent {
        let _ = stop.send(());
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Err(e))) => eprintln!("node agent: {e:#}"),
            Ok(_) => {}
            Err(_) => eprintln!("node agent: did not stop within 30 s"),
        }
    }
    if let Some(controllers) = controllers {
        controllers.abort();
    }
    apiserver.stop().await;
    for node in &nodes {
        node.stop();
        node.shutdown_raft().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(servers)).await;
    Ok(())
}

type AgentTask = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
);

/// This machine's node: an agent in this process, with a serving
/// certificate signed by the cluster CA and the busybox image loaded.
/// None (and a note) where it cannot run: not root, no runc.
async fn start_agent(
    args: &UpArgs,
    dir: &Path,
    server: &str,
    token_file: &Path,
) -> anyhow::Result<Option<AgentTask>> {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "no node agent: it needs root (runc, mounts, network namespaces); pods stay Pending"
        );
        return Ok(None);
    }
    let agent_dir = dir.join("agent");
    let runtime = match shoal_agent::runtime::Runtime::new(&agent_dir) {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("no node agent: {e}; pods stay Pending");
            return Ok(None);
        }
    };
    let busybox = Path::new("/bin/busybox");
    if busybox.exists() {
        step("loading the busybox image");
        match shoal_agent::image::busybox::ensure_loaded(runtime.images(), busybox) {
            Ok(_) => done(),
            Err(e) => println!("(skipped: {e})"),
        }
    }
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "node".into()),
    };
    let port = if args.agent_port == 0 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    } else {
        args.agent_port
    };
    let pki = agent_dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    let (cert, key) = (pki.join("agent.crt"), pki.join("agent.key"));
    let ca = shoal_core::tls::Files::in_dir(&dir.join("apiserver"));
    shoal_core::tls::issue_serving_cert(
        &ca.ca_cert,
        &ca.ca_key,
        std::slice::from_ref(&node_name),
        &["127.0.0.1".parse()?],
        &cert,
        &key,
    )
    .context("issuing the agent's serving certificate")?;
    let token = std::fs::read_to_string(token_file)?.trim().to_string();
    // The node's own identity (system:node:<name>), signed by the cluster
    // CA here as kubeadm writes the first node's kubelet.conf; the Node
    // authorizer keeps it to its own node.
    let client = {
        use base64::Engine;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let ca_key = shoal_core::tls::Ca::load(&ca.ca_cert, &ca.ca_key)?;
        let (chain, key_pem) = shoal_core::tls::issue_node_client_cert(&ca_key, &node_name)
            .context("issuing the agent's client certificate")?;
        let cluster = shoal_core::client::Cluster {
            server: server.to_string(),
            trust: format!("certificate-authority-data: {}", encode(ca_key.pem())),
        };
        let text = shoal_core::client::kubeconfig(
            &cluster,
            &[
                ("client-certificate-data", &encode(&chain)),
                ("client-key-data", &encode(&key_pem)),
            ],
        );
        shoal_core::client::from_yaml(&text)
            .await
            .context("a client for the node agent")?
    };
    let config = shoal_agent::agent::Config {
        node_name: node_name.clone(),
        data_dir: agent_dir,
        node_ip: Some("127.0.0.1".parse()?),
        labels: vec![],
        max_pods: 110,
        lease_interval: Duration::from_secs(1),
        // The Service address the cluster DNS gets (kube-dns's).
        cluster_dns: vec!["10.96.0.10".parse()?],
        cluster_domain: "cluster.local".into(),
        backoff_initial: args.restart_backoff_initial,
        backoff_max: args.restart_backoff_max.max(args.restart_backoff_initial),
        server: shoal_agent::agent::server::ServerConfig {
            port,
            bind: "127.0.0.1".parse()?,
            cert,
            key,
            request_certificate: false,
            token: Some(token),
            client_ca: Some(ca.ca_cert.clone()),
            webhook: true,
        },
        stop_pods_on_exit: args.stop_pods_on_exit,
        overlay: None,
        proxy: Some(Default::default()),
        // Answered on the pods' bridge address, port 53; the proxy sends
        // 10.96.0.10 there.
        dns: Some(shoal_agent::agent::dns::DnsConfig {
            upstreams: (!args.dns_upstream.is_empty()).then(|| args.dns_upstream.clone()),
            ..Default::default()
        }),
        container_log_max_bytes: 10 << 20,
        container_log_max_files: 5,
        // nginx and postgres made from Debian packages on first use.
        image_builds: shoal_agent::image::debian::node_catalog(true, None),
        metrics_interval: Some(args.metrics_interval.max(Duration::from_secs(1))),
        ingress: args.ingress.settings(),
    };
    step(&format!("starting the node agent ({node_name})"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let ended = shoal_agent::agent::run(client, config, async {
            let _ = stopped.await;
        })
        .await
        .context("node agent");
        if let Err(e) = &ended {
            tracing::error!(error = format!("{e:#}"), "the node agent stopped");
        }
        ended
    });
    done();
    Ok(Some((stop, task)))
}
