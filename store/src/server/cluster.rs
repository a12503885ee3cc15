//! The Cluster service: membership changes go through Raft on the leader.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::{LeaderRequest, LeaderResponse, Node};
use crate::proto::etcdserverpb::{
    cluster_server, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

pub struct Cluster(pub Arc<Node>);

impl Cluster {
    /// Every member, in id order, with the attributes it published (a member
    /// that has not started yet has no name or client URLs).
    fn members(&self) -> Vec<Member> {
        self.with_attrs(self.0.members())
    }

    fn with_attrs(&self, members: Vec<(u64, crate::raft::types::Member, bool)>) -> Vec<Member> {
        let attrs = self.0.shared.members();
        members
            .into_iter()
            .map(|(id, m, learner)| {
                let a = attrs.get(&id).cloned().unwrap_or_default();
                Member {
                    id,
                    name: a.name,
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: a.client_urls,
                    is_learner: learner,
                }
            })
            .collect()
    }

    fn header(&self) -> Option<crate::proto::etcdserverpb::ResponseHeader> {
        Some(self.0.current_header())
    }

    /// Runs a membership change on the leader; returns the member id and
    /// the membership that includes the change.
    async fn change(&self, req: LeaderRequest) -> Result<(u64, Vec<Member>), Status> {
        match self.0.leader_call(req).await? {
            LeaderResponse::Member(id, members) => Ok((id, self.with_attrs(members))),
            _ => Err(Status::internal("unexpected reply to a membership change")),
        }
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Cluster {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = req.into_inner();
        let (id, members) = self
            .change(LeaderRequest::MemberAdd {
                peer_urls: req.peer_ur_ls.clone(),
                learner: req.is_learner,
            })
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let (_, members) = self
            .change(LeaderRequest::MemberRemove(req.into_inner().id))
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members,
        }))
    }

    async fn member_update(
        &self,
        _req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "member update is not supported: remove the member and add it with its new peer URLs",
        ))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if req.into_inner().linearizable {
            self.0.read_index().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let (_, members) = self
            .change(LeaderRequest::MemberPromote(req.into_inner().id))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members,
        }))
    }
}
