//! Raft RPCs between members over tonic gRPC (the `shoal.peer.Peer`
//! service): the client side openraft uses to reach other members, and the
//! server side that hands incoming RPCs to the local Raft.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::log_store::{decode, encode};
use super::types::{Member, NodeId, TypeConfig};
use crate::proto::peer::peer_client::PeerClient;
use crate::proto::peer::Payload;

/// Largest peer message: a snapshot chunk or a batch of entries.
pub const MAX_PEER_MESSAGE: usize = 256 * 1024 * 1024;

/// Channels to other members, one per peer URL, shared by Raft replication
/// and request forwarding.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The client side of peer TLS (`https://` peer URLs).
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("member has no peer URL")]
    NoUrl,
    #[error("invalid peer URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
}

impl Peers {
    /// Peers reached over TLS with `tls` where their URLs say `https://`.
    pub fn with_tls(tls: Option<Arc<rustls::ClientConfig>>) -> Peers {
        Peers {
            channels: Arc::default(),
            tls,
        }
    }

    pub fn client(&self, member: &Member) -> Result<PeerClient<Channel>, PeerError> {
        let url = member.peer_urls.first().ok_or(PeerError::NoUrl)?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(url) {
            Some(c) => c.clone(),
            None => {
                let c = crate::tls::channel(url, self.tls.as_ref(), |endpoint| {
                    endpoint
                        .connect_timeout(Duration::from_millis(500))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5))
                })
                .map_err(|reason| PeerError::BadUrl {
                    url: url.clone(),
                    reason,
                })?;
                channels.insert(url.clone(), c.clone());
                c
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }
}

pub struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        Connection {
            target,
            client: self.peers.client(node),
        }
    }
}

pub struct Connection {
    target: NodeId,
    client: Result<PeerClient<Channel>, PeerError>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Transport(String);

/// The Raft RPCs of the peer service.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Connection {
    /// Sends one RPC; the reply is the remote's `Result<Resp, Err>`.
    async fn call<Req, Resp, Err>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, Err>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        Err: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&Transport(
                    e.to_string(),
                ))))
            }
        };
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(Payload { data: data.into() });
        request.set_timeout(option.hard_ttl());
        let mut client = client;
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let e = Transport(format!(
                "{rpc:?} to {:x}: {}",
                self.target,
                status.message()
            ));
            match status.code() {
                tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let result: Result<Resp, Err> = decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
