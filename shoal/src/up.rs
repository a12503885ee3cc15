//! `shoal up`: a whole cluster on this machine from one command: a
//! 3-member store and an apiserver in this process, a kubeconfig for
//! kubectl, and a clean stop on Ctrl-C/SIGTERM. Running it again on the same
//! data dir brings the same cluster back with its data.
//!
//! ```text
//!   DIR/cluster.json    the ports chosen on the first run (member ids
//!                       derive from peer URLs, so they must not change)
//!   DIR/store/s{1,2,3}  the store members' data
//!   DIR/apiserver/      generated CA and serving certificate
//!   DIR/tokens.csv      the admin's bearer token
//!   DIR/kubeconfig      for kubectl (CA, server, token)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
}

/// What must stay the same from one run to the next.
#[derive(Serialize, Deserialize)]
struct Layout {
    /// (client port, peer port) of each member.
    members: Vec<(u16, u16)>,
    token: String,
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
    let layout = Layout { members, token };
    std::fs::write(&path, serde_json::to_vec_pretty(&layout)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(layout)
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
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let layout = layout(&dir)?;
    let initial_cluster: Vec<(String, String)> = layout
        .members
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| (format!("s{}", i + 1), format!("http://127.0.0.1:{peer}")))
        .collect();

    let mut nodes: Vec<Arc<Node>> = Vec::new();
    let mut servers = Vec::new();
    for (i, (client, peer)) in layout.members.iter().enumerate() {
        let name = format!("s{}", i + 1);
        step(&format!(
            "starting store member {name} on 127.0.0.1:{client}"
        ));
        let config = StoreConfig {
            name: name.clone(),
            data_dir: dir.join("store").join(&name),
            listen_client_urls: vec![format!("http://127.0.0.1:{client}")],
            advertise_client_urls: vec![format!("http://127.0.0.1:{client}")],
            listen_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
            initial_advertise_peer_urls: vec![format!("http://127.0.0.1:{peer}")],
            initial_cluster: initial_cluster.clone(),
            initial_cluster_state_existing: false,
            initial_cluster_token: "shoal-up".into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 10_000,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
        };
        let node = Node::start(config)
            .await
            .with_context(|| format!("starting store member {name}"))?;
        servers.extend(
            shoal_store::server::serve(node.clone())
                .await
                .with_context(|| format!("serving store member {name}"))?,
        );
        nodes.push(node);
        done();
    }

    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{},admin,admin,\"system:masters\"\n", layout.token),
    )?;
    step("starting the apiserver");
    let config = shoal_apiserver::Config {
        etcd_servers: layout
            .members
            .iter()
            .map(|(client, _)| format!("http://127.0.0.1:{client}"))
            .collect(),
        bind_address: args.bind_address.clone(),
        secure_port: args.port,
        service_cluster_ip_range: "10.96.0.0/12".into(),
        service_node_port_range: "30000-32767".into(),
        tls_cert_file: None,
        tls_private_key_file: None,
        token_auth_file: Some(tokens),
        tls_san: vec![],
        etcd_compaction_interval: Duration::from_secs(300),
        kubelet_certificate_authority: None,
        kubelet_token_file: None,
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
        Some(tokio::spawn(shoal_apiserver::controllers::run_elected(
            client,
            crate::controllers::identity(),
            args.controllers.settings(),
        )))
    };

    crate::apiserver::wait_for_signal().await?;
    println!("stopping");
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
