//! The Lease service. Grants and revocations go through Raft; keep-alives
//! and remaining TTLs are the leader's clock (as in etcd).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::mvcc_status;
use crate::node::{LeaderRequest, LeaderResponse, Node};
use crate::proto::etcdserverpb::{
    lease_server, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::raft::types::Request as Command;

pub struct Lease(pub Arc<Node>);

/// etcd's largest lease TTL.
const MAX_TTL: i64 = 9_000_000_000;

impl Lease {
    /// The shortest TTL: a lease must outlive a leader election (etcd's
    /// rule: 1.5 election timeouts, rounded up to seconds).
    fn min_ttl(&self) -> i64 {
        let ms = self.0.config.election_timeout.as_millis() as i64 * 3 / 2;
        (ms + 999) / 1000
    }

    async fn lease_call(&self, req: LeaderRequest) -> Result<Option<(i64, i64)>, Status> {
        match self.0.leader_call(req).await? {
            LeaderResponse::Lease(l) => Ok(l),
            _ => Err(Status::internal("unexpected reply to a lease request")),
        }
    }
}

#[tonic::async_trait]
impl lease_server::Lease for Lease {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        if req.ttl > MAX_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let ttl = req.ttl.max(self.min_ttl());
        // The id is chosen before proposing: applying must be deterministic.
        let id = if req.id != 0 {
            req.id
        } else {
            rand::random::<i64>().abs().max(1)
        };
        let resp = self.0.write(Command::LeaseGrant { id, ttl }).await?;
        if let Some(Err(e)) = &resp.result {
            return Err(mvcc_status(e));
        }
        Ok(Response::new(LeaseGrantResponse {
            header: Some(self.0.header(resp.revision)),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let resp = self.0.write(Command::LeaseRevoke { id }).await?;
        if let Some(Err(e)) = &resp.result {
            return Err(mvcc_status(e));
        }
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.0.header(resp.revision)),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let node = self.0.clone();
        tokio::spawn(async move {
            let this = Lease(node);
            loop {
                let msg = tokio::select! {
                    msg = inbound.next() => msg,
                    _ = this.0.stopped() => break,
                };
                let Some(Ok(msg)) = msg else { break };
                let reply = match this.lease_call(LeaderRequest::LeaseKeepAlive(msg.id)).await {
                    // An unknown lease answers TTL 0: the client reports it
                    // expired or revoked.
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(this.0.current_header()),
                        id: msg.id,
                        ttl: ttl.map_or(0, |(t, _)| t),
                    }),
                    Err(s) => Err(s),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        let clock = self
            .lease_call(LeaderRequest::LeaseTimeToLive(req.id))
            .await?;
        self.0.read_index().await?;
        let mvcc = self.0.shared.mvcc();
        let header = Some(self.0.header(mvcc.revision()));
        let (Some((granted, left)), Some(lease)) = (clock, mvcc.lease(req.id)) else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            }));
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: left,
            granted_ttl: granted,
            keys: if req.keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.0.read_index().await?;
        let mvcc = self.0.shared.mvcc();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.0.header(mvcc.revision())),
            leases: mvcc.leases().map(|(id, _)| LeaseStatus { id }).collect(),
        }))
    }
}
