//! `shoal store`: one member of a store cluster, with etcd's flag names.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use shoal_store::{Config, Node};

#[derive(Clone, Copy, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: Option<StoreCommand>,
    /// Human-readable name of this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,
    /// Where the member keeps its data (default: NAME.etcd).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to serve clients on (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    listen_client_urls: Vec<String>,
    /// Client URLs this member announces (default: the listen URLs).
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to serve the other members on (comma-separated).
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    listen_peer_urls: Vec<String>,
    /// Peer URLs this member announces (default: the listen peer URLs).
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Members of a new cluster: name=peer-url,... (empty: run alone).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", default_value = "")]
    initial_cluster: String,
    /// `new` to bootstrap a cluster, `existing` to join one after `member add`.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    initial_cluster_state: ClusterState,
    /// Token that tells clusters apart (it seeds member and cluster ids).
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Raft election timeout in milliseconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Applied entries between two snapshots (older log entries are purged).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 10_000)]
    snapshot_count: u64,
    /// Largest client request accepted, in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Most operations in one branch of a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// URLs to serve `/metrics` on over plain HTTP
    /// (comma-separated; kubeadm's etcd uses `http://127.0.0.1:2381`).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    listen_metrics_urls: Vec<String>,
    /// Certificate of the client port (PEM); `https://` client URLs need it.
    #[arg(long, env = "ETCD_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Key of `--cert-file` (PEM).
    #[arg(long, env = "ETCD_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// CA that signs the client certificates accepted.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Serve only clients presenting a certificate `--trusted-ca-file` signed.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH")]
    client_cert_auth: bool,
    /// Certificate of the peer port, also presented to other members.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", requires = "peer_key_file")]
    peer_cert_file: Option<PathBuf>,
    /// Key of `--peer-cert-file` (PEM).
    #[arg(long, env = "ETCD_PEER_KEY_FILE", requires = "peer_cert_file")]
    peer_key_file: Option<PathBuf>,
    /// CA of the other members' certificates (both ways).
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Accept only members presenting a certificate the peer CA signed.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH")]
    peer_client_cert_auth: bool,
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Make a new member's data dir from a snapshot taken with `etcdctl
    /// snapshot save`; then start every member of the new cluster (each
    /// restored from the same file) with `--initial-cluster-state new`.
    Restore(RestoreArgs),
    /// Make a store's TLS files in --dir, as `shoal up` does for its own:
    /// a CA of the store's own (`ca.crt`, `ca.key`, kept if there), one
    /// certificate every member serves and connects with (`member.crt`,
    /// `member.key`, for the given names and addresses) and a client
    /// certificate for apiservers and etcdctl (`client.crt`,
    /// `client.key`). Then: `--cert-file member.crt --key-file member.key
    /// --trusted-ca-file ca.crt --client-cert-auth` and the `--peer-*`
    /// ones.
    Certificates(CertificatesArgs),
}

#[derive(Args)]
struct CertificatesArgs {
    #[arg(long)]
    dir: PathBuf,
    /// DNS names of the members (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "localhost")]
    dns: Vec<String>,
    /// Addresses of the members (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    ip: Vec<std::net::IpAddr>,
}

/// A store's TLS files.
pub struct StoreTls {
    pub ca: PathBuf,
    /// Certificate and key of every member, for both ports.
    pub member: (PathBuf, PathBuf),
    /// The apiservers' (and etcdctl's) client certificate and key.
    pub client: (PathBuf, PathBuf),
}

impl StoreTls {
    /// A member's files, for its client or its peer port.
    pub fn member(&self) -> shoal_store::tls::TlsFiles {
        shoal_store::tls::TlsFiles {
            cert_file: Some(self.member.0.clone()),
            key_file: Some(self.member.1.clone()),
            trusted_ca_file: Some(self.ca.clone()),
            client_cert_auth: true,
        }
    }
}

/// The store's own CA in `pki` (made unless there) and, from it, the
/// members' certificate for `names` and `ips` (serving and connecting)
/// and a client certificate.
pub fn certificates(
    pki: &std::path::Path,
    names: &[String],
    ips: &[std::net::IpAddr],
) -> anyhow::Result<StoreTls> {
    use shoal_core::tls;
    let (ca_cert, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    let ca = tls::ensure_ca(&ca_cert, &ca_key).context("the store's CA")?;
    let member = (pki.join("member.crt"), pki.join("member.key"));
    let client = (pki.join("client.crt"), pki.join("client.key"));
    let (chain, key) = tls::issue_cert(&ca, "shoal-store", &[], names, ips, true, true)?;
    tls::write_pair(&member.0, &chain, &member.1, &key)?;
    let (chain, key) = tls::issue_cert(
        &ca,
        "kube-apiserver-etcd-client",
        &[],
        &[],
        &[],
        false,
        true,
    )?;
    tls::write_pair(&client.0, &chain, &client.1, &key)?;
    Ok(StoreTls {
        ca: ca_cert,
        member,
        client,
    })
}

#[derive(Args)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// The new member's data dir (must not exist yet).
    #[arg(long)]
    data_dir: PathBuf,
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let restored = shoal_store::snapshot::restore(&args.file, &args.data_dir)?;
    println!(
        "restored {} into {}: revision {}, {} key versions, {} leases",
        args.file.display(),
        args.data_dir.display(),
        restored.revision,
        restored.rows,
        restored.leases
    );
    Ok(())
}

/// Parses `--initial-cluster` (`name=url,name=url`).
fn parse_initial_cluster(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, url)) if !name.is_empty() && !url.is_empty() => {
                Ok((name.to_string(), url.to_string()))
            }
            _ => bail!("--initial-cluster: {pair:?} is not name=peer-url"),
        })
        .collect()
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    if let Some(StoreCommand::Certificates(c)) = &args.command {
        let made = certificates(&c.dir, &c.dns, &c.ip)?;
        println!(
            "made {}, {}, {}",
            made.ca.display(),
            made.member.0.display(),
            made.client.0.display()
        );
        return Ok(());
    }
    if let Some(StoreCommand::Restore(restore_args)) = &args.command {
        return restore(restore_args);
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", args.name)));
    let advertise_client_urls = if args.advertise_client_urls.is_empty() {
        args.listen_client_urls.clone()
    } else {
        args.advertise_client_urls.clone()
    };
    let initial_advertise_peer_urls = if args.initial_advertise_peer_urls.is_empty() {
        args.listen_peer_urls.clone()
    } else {
        args.initial_advertise_peer_urls.clone()
    };
    let config = Config {
        name: args.name.clone(),
        data_dir,
        listen_client_urls: args.listen_client_urls,
        advertise_client_urls,
        listen_peer_urls: args.listen_peer_urls,
        initial_advertise_peer_urls,
        initial_cluster: parse_initial_cluster(&args.initial_cluster)?,
        initial_cluster_state_existing: matches!(
            args.initial_cluster_state,
            ClusterState::Existing
        ),
        initial_cluster_token: args.initial_cluster_token,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval),
        election_timeout: Duration::from_millis(args.election_timeout),
        snapshot_count: args.snapshot_count,
        max_request_bytes: args.max_request_bytes,
        max_txn_ops: args.max_txn_ops,
        client_tls: shoal_store::tls::TlsFiles {
            cert_file: args.cert_file,
            key_file: args.key_file,
            trusted_ca_file: args.trusted_ca_file,
            client_cert_auth: args.client_cert_auth,
        },
        peer_tls: shoal_store::tls::TlsFiles {
            cert_file: args.peer_cert_file,
            key_file: args.peer_key_file,
            trusted_ca_file: args.peer_trusted_ca_file,
            client_cert_auth: args.peer_client_cert_auth,
        },
    };
    let node = Node::start(config)
        .await
        .context("starting the store member")?;
    let mut tasks = shoal_store::server::serve(node.clone())
        .await
        .context("serving")?;
    for url in &args.listen_metrics_urls {
        tasks.push(serve_metrics(node.clone(), url).await?.0);
    }
    tracing::info!(
        member = %format!("{:x}", node.id),
        name = %node.config.name,
        clients = %node.config.advertise_client_urls.join(","),
        "store member ready"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = term.recv() => tracing::info!("terminated, stopping"),
        _ = node.stopped() => {}
    }
    node.stop();
    node.shutdown_raft().await;
    // Servers finish their requests in flight; a client that holds a
    // connection open does not keep the member from exiting.
    let servers = futures::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(5), servers)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 5 s; exiting anyway");
    }
    Ok(())
}

/// Serves the member's `/metrics` (etcd's names) on `url` (`http://host:port`)
/// until it stops; returns the task and where it listens.
pub async fn serve_metrics(
    node: std::sync::Arc<Node>,
    url: &str,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, std::net::SocketAddr)> {
    if !url.starts_with("http://") {
        anyhow::bail!("--listen-metrics-urls {url}: /metrics is served over plain http://");
    }
    let address = shoal_store::node::socket_addr(url)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--listen-metrics-urls {url}"))?;
    let bound = listener.local_addr()?;
    let render: shoal_core::metrics::Render = {
        let node = node.clone();
        std::sync::Arc::new(move || node.render_metrics())
    };
    let task = tokio::spawn(async move {
        let stopped = node.clone();
        shoal_core::metrics::serve(listener, render, async move { stopped.stopped().await }).await;
    });
    Ok((task, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_like_etcd() {
        let c = parse_initial_cluster("s1=http://a:2380,s2=http://b:2380").unwrap();
        assert_eq!(c[1], ("s2".to_string(), "http://b:2380".to_string()));
        assert!(parse_initial_cluster("s1").is_err());
        assert!(parse_initial_cluster("").unwrap().is_empty());
    }
}
