//! The peer service: Raft RPCs from other members, and requests they
//! forward to this member as leader.

use std::sync::Arc;

use serde::Serialize;
use tonic::{Request, Response, Status};

use openraft::raft::AppendEntriesResponse;

use crate::node::{LeaderRequest, Node, PreVoteRequest, WireStatus};
use crate::proto::peer::{peer_server, Payload};
use crate::raft::log_store::{decode, encode};

pub struct Peer(pub Arc<Node>);

fn reply<T: Serialize>(v: &T) -> Result<Response<Payload>, Status> {
    let data = encode(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { data: data.into() }))
}

fn payload<T: serde::de::DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed peer message: {e}")))
}

#[tonic::async_trait]
impl peer_server::Peer for Peer {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = payload(req)?;
        let result = self.0.raft.append_entries(rpc).await;
        // A leader this member follows (not one it has a newer vote than).
        if matches!(&result, Ok(resp) if !matches!(resp, AppendEntriesResponse::HigherVote(_))) {
            self.0.heard_from_leader();
        }
        reply(&result)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = payload(req)?;
        let result = self.0.raft.vote(rpc).await;
        if matches!(&result, Ok(resp) if resp.vote_granted) {
            self.0.heard_from_leader();
        }
        reply(&result)
    }

    async fn pre_vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: PreVoteRequest = payload(req)?;
        reply(&self.0.pre_vote(req).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = payload(req)?;
        reply(&self.0.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: LeaderRequest = payload(req)?;
        let result = self
            .0
            .serve_leader(req)
            .await
            .map_err(|s| WireStatus::from(&s));
        reply(&result)
    }
}
