//! Requests only the leader serves: writes, read index, lease clocks and
//! membership changes, served here or forwarded to the leader.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use super::{member_id, valid_url, Node, LEADER_WAIT, NOT_LEADER, NO_LEADER, TIMED_OUT};
use crate::raft::log_store::{decode, encode};
use crate::raft::types::{Member, NodeId, Request, Response};

/// A request only the leader can serve; members that are not the leader
/// send it on over the peer `Forward` RPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderRequest {
    Write(Request),
    ReadIndex,
    LeaseKeepAlive(i64),
    LeaseTimeToLive(i64),
    MemberAdd {
        peer_urls: Vec<String>,
        learner: bool,
    },
    MemberRemove(NodeId),
    MemberPromote(NodeId),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderResponse {
    Write(Response),
    ReadIndex(u64),
    /// TTL granted (keep-alive) or (granted, remaining) seconds; None if
    /// the lease does not exist.
    Lease(Option<(i64, i64)>),
    /// The member changed and the membership after the change, as the
    /// leader has it (the asking member may not have applied it yet).
    Member(NodeId, Vec<(NodeId, Member, bool)>),
}

/// A gRPC status that crosses the peer link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireStatus {
    code: i32,
    message: String,
}

impl From<&Status> for WireStatus {
    fn from(s: &Status) -> Self {
        WireStatus {
            code: s.code() as i32,
            message: s.message().to_string(),
        }
    }
}

impl From<WireStatus> for Status {
    fn from(w: WireStatus) -> Self {
        Status::new(Code::from(w.code), w.message)
    }
}

/// How a try to reach the leader ended.
enum Attempt {
    /// Served (or refused) by a leader, or may have reached one.
    Done(Result<LeaderResponse, Status>),
    /// Certainly not proposed (no leader, not the leader, no connection):
    /// safe to try again.
    Unsent(Status),
}

impl From<Result<LeaderResponse, Status>> for Attempt {
    fn from(result: Result<LeaderResponse, Status>) -> Attempt {
        match result {
            Err(s)
                if s.code() == Code::Unavailable
                    && (s.message() == NOT_LEADER || s.message() == NO_LEADER) =>
            {
                Attempt::Unsent(s)
            }
            other => Attempt::Done(other),
        }
    }
}

/// How often a request waiting for a leader looks again.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Whether a gRPC call failed before a connection existed (refused, timed
/// out connecting): then the request was never sent, and sending it again
/// cannot apply it twice. (The apiserver's store client asks this too.)
///
/// tonic wraps what its connector fails with in `ConnectError`, but an
/// `https://` member is reached through our own connector (`tls::channel`)
/// and tonic puts its connect timeout around that one, outside the
/// wrapper: the timeout is an `io::Error` of kind `TimedOut` holding
/// tokio's `Elapsed` (no read or write timeout is set, so nothing else
/// fails so).
pub fn never_connected(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() || connect_timed_out(e) {
            return true;
        }
        source = e.source();
    }
    false
}

fn connect_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        io.kind() == std::io::ErrorKind::TimedOut
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<tokio::time::error::Elapsed>())
    })
}

impl Node {
    /// Runs `req` on the leader, here or through the peer link, waiting up
    /// to a few seconds for a leader to exist and be reachable. A request
    /// is sent again only when it cannot have been proposed: the member it
    /// reached was not the leader, or the connection to the leader was
    /// never made (a leader that just died refuses connections until the
    /// others elect a new one). Writes are never applied twice; a request
    /// that may have reached a leader that then died answers "request
    /// timed out", as etcd does.
    pub async fn leader_call(
        self: &Arc<Self>,
        req: LeaderRequest,
    ) -> Result<LeaderResponse, Status> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    Attempt::from(self.serve_leader(req.clone()).await)
                }
                Some((_, member)) => self.forward(&member, &req).await,
                None => Attempt::Unsent(Status::unavailable(NO_LEADER)),
            };
            match attempt {
                Attempt::Done(result) => return result,
                Attempt::Unsent(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
                Attempt::Unsent(status) => return Err(status),
            }
        }
    }

    async fn forward(&self, leader: &Member, req: &LeaderRequest) -> Attempt {
        let mut client = match self.peers.client(leader) {
            Ok(client) => client,
            Err(e) => return Attempt::Done(Err(Status::unavailable(e.to_string()))),
        };
        let data = match encode(req) {
            Ok(data) => data,
            Err(e) => return Attempt::Done(Err(Status::internal(e.to_string()))),
        };
        let mut request = tonic::Request::new(crate::proto::peer::Payload { data: data.into() });
        request.set_timeout(LEADER_WAIT + Duration::from_secs(2));
        let reply = match client.forward(request).await {
            Ok(reply) => reply,
            // No connection, so nothing was sent: wait for a leader that
            // answers. After the deadline, the client hears what etcd
            // says when its leader is gone.
            Err(s) if never_connected(&s) => {
                return Attempt::Unsent(Status::unavailable(TIMED_OUT))
            }
            // The leader could not be reached; whether it got the request
            // is unknown, as with a timeout.
            Err(s) if s.code() == Code::Unavailable => {
                return Attempt::Done(Err(Status::unavailable(TIMED_OUT)))
            }
            Err(s) => return Attempt::Done(Err(s)),
        };
        let result: Result<LeaderResponse, WireStatus> = match decode(&reply.into_inner().data) {
            Ok(result) => result,
            Err(e) => return Attempt::Done(Err(Status::internal(e.to_string()))),
        };
        Attempt::from(result.map_err(Status::from))
    }

    /// Serves a leader-only request on this member, which believes it leads.
    pub async fn serve_leader(
        self: &Arc<Self>,
        req: LeaderRequest,
    ) -> Result<LeaderResponse, Status> {
        match req {
            LeaderRequest::Write(r) => Ok(LeaderResponse::Write(self.propose(r).await?)),
            LeaderRequest::ReadIndex => {
                let (read_log_id, _) = self.raft.get_read_log_id().await.map_err(|e| match e {
                    RaftError::APIError(_) => Status::unavailable(NOT_LEADER),
                    RaftError::Fatal(f) => Status::unavailable(f.to_string()),
                })?;
                // openraft's read log id is max(committed, this leader's first
                // entry); a leader restored from disk after a crash has
                // neither up to date, so its read could miss committed
                // writes. Reading after everything in the leader's log (a
                // superset of what is committed) is always safe.
                let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
                Ok(LeaderResponse::ReadIndex(
                    read_log_id.map_or(0, |l| l.index).max(last),
                ))
            }
            LeaderRequest::LeaseKeepAlive(id) => {
                self.ensure_leader()?;
                Ok(LeaderResponse::Lease(
                    self.shared.leases.refresh(id).map(|ttl| (ttl, ttl)),
                ))
            }
            LeaderRequest::LeaseTimeToLive(id) => {
                self.ensure_leader()?;
                Ok(LeaderResponse::Lease(self.shared.leases.remaining(id)))
            }
            LeaderRequest::MemberAdd { peer_urls, learner } => {
                self.member_add(peer_urls, learner).await
            }
            LeaderRequest::MemberRemove(id) => self.member_remove(id).await,
            LeaderRequest::MemberPromote(id) => self.member_promote(id).await,
        }
    }

    fn ensure_leader(&self) -> Result<(), Status> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Status::unavailable(NOT_LEADER))
        }
    }

    async fn member_add(
        &self,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<LeaderResponse, Status> {
        if peer_urls.is_empty() || !peer_urls.iter().all(|u| valid_url(u)) {
            return Err(Status::invalid_argument(
                "etcdserver: given member URLs are invalid",
            ));
        }
        let id = member_id(&peer_urls, &self.config.initial_cluster_token);
        let members = self.members();
        if members
            .iter()
            .any(|(mid, m, _)| *mid == id || m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        self.raft
            .add_learner(id, Member { peer_urls }, false)
            .await
            .map_err(write_error)?;
        if !learner {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
        }
        Ok(LeaderResponse::Member(id, self.members()))
    }

    async fn member_remove(&self, id: NodeId) -> Result<LeaderResponse, Status> {
        let Some((_, _, learner)) = self.members().into_iter().find(|(m, _, _)| *m == id) else {
            return Err(Status::not_found("etcdserver: member not found"));
        };
        let change = if learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        Ok(LeaderResponse::Member(id, self.members()))
    }

    async fn member_promote(&self, id: NodeId) -> Result<LeaderResponse, Status> {
        match self.members().into_iter().find(|(m, _, _)| *m == id) {
            None => return Err(Status::not_found("etcdserver: member not found")),
            Some((_, _, false)) => {
                return Err(Status::failed_precondition(
                    "etcdserver: can only promote a learner member",
                ))
            }
            Some(_) => {}
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(LeaderResponse::Member(id, self.members()))
    }
}

/// A failed Raft write in the client's terms.
pub(super) fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            Status::unavailable(NOT_LEADER)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::failed_precondition(format!("etcdserver: {c}"))
        }
        RaftError::Fatal(f) => Status::unavailable(format!("etcdserver: {f}")),
    }
}
