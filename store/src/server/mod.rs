//! The gRPC front of a member: etcd's v3 services for clients on the client
//! URLs, the peer service on the peer URLs.

mod authority;
mod cluster;
mod kv;
mod lease;
mod maintenance;
mod peer;
mod watch;

use std::sync::Arc;

use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic::Status;

use crate::mvcc::MvccError;
use crate::node::{socket_addr, Node, StartError};
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::peer::peer_server::PeerServer;
use crate::raft::network::MAX_PEER_MESSAGE;

/// gRPC framing allowance on top of `--max-request-bytes`, as etcd allows:
/// a request between the two gets etcd's "request is too large" error, a
/// bigger one is refused by gRPC itself.
const GRPC_OVERHEAD: usize = 512 * 1024;

/// Binds every client and peer URL and serves until the member stops.
pub async fn serve(node: Arc<Node>) -> Result<Vec<JoinHandle<()>>, StartError> {
    use tokio_stream::StreamExt;
    let mut tasks = Vec::new();
    let max = node.config.max_request_bytes + GRPC_OVERHEAD;
    for url in node.config.listen_client_urls.clone() {
        let listener = bind(&url).await?;
        let n = node.clone();
        let router = Server::builder()
            .tcp_nodelay(true)
            .add_service(KvServer::new(kv::Kv(n.clone())).max_decoding_message_size(max))
            .add_service(WatchServer::new(watch::Watch(n.clone())).max_decoding_message_size(max))
            .add_service(LeaseServer::new(lease::Lease(n.clone())).max_decoding_message_size(max))
            .add_service(
                ClusterServer::new(cluster::Cluster(n.clone())).max_decoding_message_size(max),
            )
            .add_service(
                MaintenanceServer::new(maintenance::Maintenance(n.clone()))
                    .max_decoding_message_size(max),
            );
        if url.starts_with("https://") {
            let config = node
                .config
                .client_tls
                .server_config()
                .map_err(|e| StartError::Config(format!("client TLS ({url}): {e}")))?;
            let incoming = crate::tls::incoming(listener, config)
                .map(|conn| conn.map(authority::FixAuthority::new));
            tasks.push(spawn_server(router, incoming, url, n));
        } else {
            let incoming = incoming(listener).map(|c| c.map(authority::FixAuthority::new));
            tasks.push(spawn_server(router, incoming, url, n));
        }
    }
    for url in node.config.listen_peer_urls.clone() {
        let listener = bind(&url).await?;
        let n = node.clone();
        let router = Server::builder().tcp_nodelay(true).add_service(
            PeerServer::new(peer::Peer(n.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE),
        );
        if url.starts_with("https://") {
            let config = node
                .config
                .peer_tls
                .server_config()
                .map_err(|e| StartError::Config(format!("peer TLS ({url}): {e}")))?;
            tasks.push(spawn_server(
                router,
                crate::tls::incoming(listener, config),
                url,
                n,
            ));
        } else {
            tasks.push(spawn_server(router, incoming(listener), url, n));
        }
    }
    Ok(tasks)
}

/// Serves `router` on the accepted connections until the member stops.
fn spawn_server<IO, S>(router: Router, incoming: S, url: String, node: Arc<Node>) -> JoinHandle<()>
where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    S: futures::Stream<Item = std::io::Result<IO>> + Send + 'static,
{
    tokio::spawn(async move {
        let stop = async move { node.stopped().await };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!(%url, error = %e, "gRPC server failed");
        }
    })
}

/// Accepted connections with Nagle's algorithm off: small gRPC replies
/// must not wait for the peer's delayed ACK (the builder's `tcp_nodelay`
/// only applies to listeners it binds itself).
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    })
}

async fn bind(url: &str) -> Result<TcpListener, StartError> {
    let addr = socket_addr(url)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen {
            url: url.to_string(),
            source,
        })
}

/// An MVCC failure as etcd reports it over gRPC.
pub(crate) fn mvcc_status(e: &MvccError) -> Status {
    match e {
        MvccError::Compacted { .. } | MvccError::FutureRevision { .. } => {
            Status::out_of_range(format!("etcdserver: {e}"))
        }
        MvccError::KeyNotFound => Status::invalid_argument(e.to_string()),
        MvccError::LeaseNotFound(_) => Status::not_found(e.to_string()),
        MvccError::LeaseExists(_) => Status::failed_precondition(e.to_string()),
    }
}

/// Refuses requests over `--max-request-bytes` as etcd does.
pub(crate) fn check_size<M: Message>(node: &Node, m: &M) -> Result<(), Status> {
    if m.encoded_len() > node.config.max_request_bytes {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    Ok(())
}

/// Decodes what applying a write answered.
pub(crate) fn applied<M: Message + Default>(
    resp: crate::raft::types::Response,
) -> Result<(i64, M), Status> {
    match resp.result {
        Some(Ok(bytes)) => {
            let m = M::decode(bytes.0.as_slice()).map_err(|e| Status::internal(e.to_string()))?;
            Ok((resp.revision, m))
        }
        Some(Err(e)) => Err(mvcc_status(&e)),
        None => Err(Status::internal("etcdserver: request was not applied")),
    }
}
