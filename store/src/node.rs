//! One member of a store cluster: opens its RocksDB, runs Raft, serves the
//! etcd API to clients and the peer RPCs to other members.
//!
//! ```text
//!  client ──gRPC (etcd v3)──► services ──read──► Shared (MVCC in memory)
//!                                │  write / read index / lease / member
//!                                ▼
//!                          Node::leader_call ──(not leader)──► peer Forward ──► leader
//!                                │ (leader)
//!                                ▼
//!                       openraft ──► log (RocksDB) ──► StateMachine::apply ──► Shared
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::proto::etcdserverpb::ResponseHeader;
use crate::raft::log_store::{decode, encode};
use crate::raft::network::{NetworkFactory, Peers};
use crate::raft::types::{Member, MemberAttrs, NodeId, Raft, Request, Response};
use crate::shared::Shared;

/// How a member starts, named as etcd names its flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url` pairs; empty for a member that runs alone.
    pub initial_cluster: Vec<(String, String)>,
    /// `new` bootstraps a cluster; `existing` joins one through `member add`.
    pub initial_cluster_state_existing: bool,
    pub initial_cluster_token: String,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] crate::raft::OpenError),
    #[error("cannot start raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {url}: {source}")]
    Listen {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

/// A member id, as every member computes it from the member's peer URLs
/// and the cluster token: the same member always gets the same id.
pub fn member_id(peer_urls: &[String], token: &str) -> NodeId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    fnv1a(format!("{}|{}", urls.join(","), token).as_bytes()).max(1)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Parses `http://host:port` into a socket address to bind.
pub fn socket_addr(url: &str) -> Result<SocketAddr, StartError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| StartError::Config(format!("{url}: only http:// URLs are supported")))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .map_err(|e| StartError::Config(format!("{url}: {e}")))
}

/// Is `url` an `http(s)://host:port` URL (a peer URL may name a host)?
fn valid_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.port_u16().is_some()
            && u.host().is_some_and(|h| !h.is_empty())
    })
}

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

pub(crate) const NOT_LEADER: &str = "etcdserver: not leader";
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
pub(crate) const TIMED_OUT: &str = "etcdserver: request timed out";

/// How long a request may wait for a leader before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(5);

pub struct Node {
    pub id: NodeId,
    pub cluster_id: u64,
    pub config: Config,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub peers: Peers,
    shutdown: watch::Sender<bool>,
    reads: std::sync::Mutex<ReadBatch>,
    writes: std::sync::Mutex<WriteBatch>,
    proposals: std::sync::Mutex<WriteBatch>,
}

/// Writes waiting to be sent, and how many batches are in flight.
#[derive(Default)]
struct WriteBatch {
    waiting: Vec<(
        Request,
        tokio::sync::oneshot::Sender<Result<Response, Status>>,
    )>,
    in_flight: usize,
}

/// Where writes are batched: on their way to the leader, and on the leader
/// on their way into the log.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Forward,
    Propose,
}

/// Batches in flight at once per stage: enough to overlap one batch's
/// replication with the next one's log sync.
const MAX_WRITE_BATCHES_IN_FLIGHT: usize = 2;
/// Largest batch, so that a full append RPC (`max_payload_entries` of them)
/// stays within the peer message limit.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Callers waiting for the next read-index round.
#[derive(Default)]
struct ReadBatch {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, Status>>>,
    driving: bool,
}

impl Node {
    /// Opens the data dir, starts Raft and bootstraps or rejoins the cluster.
    /// Serving is started separately ([`crate::server::serve`]).
    pub async fn start(config: Config) -> Result<Arc<Node>, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;

        if config.initial_advertise_peer_urls.is_empty() {
            return Err(StartError::Config(
                "--initial-advertise-peer-urls is empty".into(),
            ));
        }
        let token = config.initial_cluster_token.clone();
        let id = member_id(&config.initial_advertise_peer_urls, &token);
        let cluster_id = fnv1a(token.as_bytes());

        let shared = Arc::new(Shared::default());
        let (log, sm) = crate::raft::open_storage(&config.data_dir.join("db"), shared.clone())?;
        let peers = Peers::default();

        let election = config.election_timeout.as_millis() as u64;
        let raft_config = openraft::Config {
            cluster_name: token.clone(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            install_snapshot_timeout: 10_000,
            // Bounded so that one append RPC stays under the peer message
            // limit even when every entry is a maximal request.
            max_payload_entries: 100,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: config.snapshot_count.min(5000),
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let raft = Raft::new(
            id,
            raft_config,
            NetworkFactory {
                peers: peers.clone(),
            },
            log,
            sm,
        )
        .await?;

        if !raft.is_initialized().await? && !config.initial_cluster_state_existing {
            let mut members = BTreeMap::new();
            if config.initial_cluster.is_empty() {
                members.insert(
                    id,
                    Member {
                        peer_urls: config.initial_advertise_peer_urls.clone(),
                    },
                );
            } else {
                let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for (name, url) in &config.initial_cluster {
                    by_name.entry(name).or_default().push(url.clone());
                }
                if !by_name.contains_key(config.name.as_str()) {
                    return Err(StartError::Config(format!(
                        "--initial-cluster has no member named {:?}",
                        config.name
                    )));
                }
                for urls in by_name.into_values() {
                    members.insert(member_id(&urls, &token), Member { peer_urls: urls });
                }
                if !members.contains_key(&id) {
                    return Err(StartError::Config(
                        "--initial-advertise-peer-urls does not match this member's URLs in --initial-cluster".into(),
                    ));
                }
            }
            // Every member initializes with the same membership, which
            // openraft allows; whichever wins the first election leads.
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(error = %e, "initialize skipped");
            }
        }

        let (shutdown, _) = watch::channel(false);
        let node = Arc::new(Node {
            id,
            cluster_id,
            config,
            raft,
            shared,
            peers,
            shutdown,
            reads: Default::default(),
            writes: Default::default(),
            proposals: Default::default(),
        });
        tokio::spawn(node.clone().lease_loop());
        tokio::spawn(node.clone().publish_loop());
        Ok(node)
    }

    /// Resolves once the member is told to stop (or was removed from the
    /// cluster).
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    pub async fn shutdown_raft(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        let m = self.raft.metrics().borrow().clone();
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: m.current_term,
        }
    }

    /// A response header at the current revision.
    pub fn current_header(&self) -> ResponseHeader {
        let revision = self.shared.mvcc().revision();
        self.header(revision)
    }

    fn leader(&self) -> Option<(NodeId, Member)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Runs `req` on the leader, here or through the peer link, waiting up
    /// to a few seconds for a leader to exist. A request is sent again only
    /// when the member it reached was not the leader (so it was not
    /// proposed there): writes are never applied twice.
    pub async fn leader_call(
        self: &Arc<Self>,
        req: LeaderRequest,
    ) -> Result<LeaderResponse, Status> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.id => self.serve_leader(req.clone()).await,
                Some((_, member)) => self.forward(&member, &req).await,
                None => Err(Status::unavailable(NO_LEADER)),
            };
            match attempt {
                Err(s)
                    if s.code() == Code::Unavailable
                        && (s.message() == NOT_LEADER || s.message() == NO_LEADER)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn forward(
        &self,
        leader: &Member,
        req: &LeaderRequest,
    ) -> Result<LeaderResponse, Status> {
        let mut client = self
            .peers
            .client(leader)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let data = encode(req).map_err(|e| Status::internal(e.to_string()))?;
        let mut request = tonic::Request::new(crate::proto::peer::Payload { data: data.into() });
        request.set_timeout(LEADER_WAIT + Duration::from_secs(2));
        let reply = client.forward(request).await.map_err(|s| {
            if s.code() == Code::Unavailable {
                // The leader could not be reached; whether it got the request
                // is unknown, as with a timeout.
                Status::unavailable(TIMED_OUT)
            } else {
                s
            }
        })?;
        let result: Result<LeaderResponse, WireStatus> =
            decode(&reply.into_inner().data).map_err(|e| Status::internal(e.to_string()))?;
        result.map_err(Status::from)
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

    /// Makes the next local read linearizable: confirms with a quorum who
    /// leads and waits until this member has applied what the leader had
    /// committed at that moment.
    ///
    /// Concurrent callers share rounds: a caller joins the next round to
    /// start, never one already in flight (whose index may predate it).
    pub async fn read_index(self: &Arc<Self>) -> Result<(), Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_driver = {
            let mut b = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            b.waiting.push(tx);
            !std::mem::replace(&mut b.driving, true)
        };
        if start_driver {
            tokio::spawn(self.clone().drive_reads());
        }
        let index = rx
            .await
            .unwrap_or_else(|_| Err(Status::unavailable(TIMED_OUT)))?;
        self.raft
            .wait(Some(LEADER_WAIT))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|_| Status::unavailable(TIMED_OUT))?;
        Ok(())
    }

    /// Runs read-index rounds while callers are waiting.
    async fn drive_reads(self: Arc<Self>) {
        loop {
            let batch = {
                let mut b = self.reads.lock().unwrap_or_else(|e| e.into_inner());
                if b.waiting.is_empty() {
                    b.driving = false;
                    return;
                }
                std::mem::take(&mut b.waiting)
            };
            let index = match self.leader_call(LeaderRequest::ReadIndex).await {
                Ok(LeaderResponse::ReadIndex(i)) => Ok(i),
                Ok(_) => Err(Status::internal("unexpected reply to read index")),
                Err(e) => Err(e),
            };
            for tx in batch {
                let _ = tx.send(index.clone());
            }
        }
    }

    /// Replicates a command and returns what applying it answered.
    pub async fn write(self: &Arc<Self>, req: Request) -> Result<Response, Status> {
        self.batched(Stage::Forward, req).await
    }

    /// Sends `req` on at `stage` together with whatever else waits there.
    ///
    /// Commands that arrive while earlier ones are in flight travel together
    /// as one [`Request::Batch`]: each member batches what it sends to the
    /// leader, and the leader batches what it proposes (its own and every
    /// member's batches) into one Raft entry. openraft syncs the log once per
    /// entry before taking the next, so this is what lets throughput grow
    /// with load.
    async fn batched(self: &Arc<Self>, stage: Stage, req: Request) -> Result<Response, Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start_driver = {
            let mut b = self.batch(stage).lock().unwrap_or_else(|e| e.into_inner());
            b.waiting.push((req, tx));
            if b.in_flight < MAX_WRITE_BATCHES_IN_FLIGHT {
                b.in_flight += 1;
                true
            } else {
                false
            }
        };
        if start_driver {
            tokio::spawn(self.clone().drive_writes(stage));
        }
        rx.await
            .unwrap_or_else(|_| Err(Status::unavailable(TIMED_OUT)))
    }

    /// Proposes a command on this member, the leader (batched). Boxed:
    /// batching and forwarding call each other, and a boxed future with a
    /// named `Send` bound ends the cycle for the compiler.
    fn propose(
        self: &Arc<Self>,
        req: Request,
    ) -> futures::future::BoxFuture<'static, Result<Response, Status>> {
        let node = self.clone();
        Box::pin(async move { node.batched(Stage::Propose, req).await })
    }

    fn batch(&self, stage: Stage) -> &std::sync::Mutex<WriteBatch> {
        match stage {
            Stage::Forward => &self.writes,
            Stage::Propose => &self.proposals,
        }
    }

    /// Sends batches of waiting writes until none is left.
    async fn drive_writes(self: Arc<Self>, stage: Stage) {
        loop {
            let batch = {
                let mut b = self.batch(stage).lock().unwrap_or_else(|e| e.into_inner());
                if b.waiting.is_empty() {
                    b.in_flight -= 1;
                    return;
                }
                // At least one request, and no more than fits a peer message.
                let mut bytes = 0;
                let n = b
                    .waiting
                    .iter()
                    .take_while(|(r, _)| {
                        bytes += r.approx_size();
                        bytes <= MAX_BATCH_BYTES
                    })
                    .count()
                    .max(1);
                b.waiting.drain(..n).collect::<Vec<_>>()
            };
            let (reqs, txs): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
            let single = reqs.len() == 1;
            let req = if single {
                reqs.into_iter()
                    .next()
                    .unwrap_or(Request::Batch(Vec::new()))
            } else {
                Request::Batch(reqs)
            };
            let result = match stage {
                Stage::Forward => match self.leader_call(LeaderRequest::Write(req)).await {
                    Ok(LeaderResponse::Write(r)) => Ok(r),
                    Ok(_) => Err(Status::internal("unexpected reply to write")),
                    Err(e) => Err(e),
                },
                Stage::Propose => tokio::time::timeout(LEADER_WAIT, self.raft.client_write(req))
                    .await
                    .map_err(|_| Status::unavailable(TIMED_OUT))
                    .and_then(|r| r.map(|r| r.data).map_err(write_error)),
            };
            match result {
                Ok(r) if single => {
                    for tx in txs {
                        let _ = tx.send(Ok(r.clone()));
                    }
                }
                Ok(r) if r.batch.len() == txs.len() => {
                    for (tx, r) in txs.into_iter().zip(r.batch) {
                        let _ = tx.send(Ok(r));
                    }
                }
                Ok(_) => {
                    for tx in txs {
                        let _ = tx.send(Err(Status::internal("batch answered out of shape")));
                    }
                }
                Err(e) => {
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn membership(&self) -> openraft::Membership<NodeId, Member> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// The members, in id order: (id, peer URLs, learner?).
    pub fn members(&self) -> Vec<(NodeId, Member, bool)> {
        let m = self.membership();
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        m.nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect()
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

    /// The leader revokes leases whose clock ran out; a member that becomes
    /// leader first restarts every clock (the old leader's keep-alives are
    /// not known here).
    async fn lease_loop(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut was_leader = false;
        let mut stop = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = metrics.changed() => {}
                _ = stop.changed() => return,
            }
            let leader = metrics.borrow().state == ServerState::Leader;
            if leader && !was_leader {
                let leases: Vec<(i64, i64)> = self
                    .shared
                    .mvcc()
                    .leases()
                    .map(|(id, l)| (id, l.ttl))
                    .collect();
                self.shared.leases.reset(leases);
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            for id in self.shared.leases.expired() {
                let node = self.clone();
                // Drop the clock now so that the lease is revoked once, even
                // if the revocation takes a while to commit.
                self.shared.leases.revoked(id);
                tokio::spawn(async move {
                    if let Err(e) = node.write(Request::LeaseRevoke { id }).await {
                        tracing::warn!(lease = id, error = %e, "revoking expired lease failed");
                        // Try again soon if the lease is still there.
                        let ttl = node.shared.mvcc().lease(id).map(|l| l.ttl);
                        if let Some(ttl) = ttl {
                            node.shared.leases.arm(id, ttl, 1);
                        }
                    }
                });
            }
        }
    }

    /// Publishes this member's name and client URLs (etcd's member
    /// attributes) once it is part of the cluster, and again whenever they
    /// differ from what the cluster has.
    async fn publish_loop(self: Arc<Self>) {
        let attrs = MemberAttrs {
            name: self.config.name.clone(),
            client_urls: self.config.advertise_client_urls.clone(),
        };
        let mut stop = self.shutdown.subscribe();
        loop {
            let known = self.members().iter().any(|(id, _, _)| *id == self.id);
            if known && self.shared.members().get(&self.id) == Some(&attrs) {
                return;
            }
            if known {
                let req = Request::Publish {
                    id: self.id,
                    attrs: attrs.clone(),
                };
                if let Err(e) = self.write(req).await {
                    tracing::debug!(error = %e, "publish member attributes");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// A failed Raft write in the client's terms.
fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Status {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_depend_on_peer_urls_and_token_only() {
        let a = member_id(&["http://a:2380".into(), "http://b:2380".into()], "t");
        let b = member_id(&["http://b:2380".into(), "http://a:2380".into()], "t");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:2380".into()], "t"));
        assert_ne!(
            a,
            member_id(&["http://a:2380".into(), "http://b:2380".into()], "u")
        );
    }

    #[test]
    fn urls_are_checked_as_etcd_would() {
        assert!(valid_url("http://s1:2380"));
        assert!(valid_url("http://127.0.0.1:2380"));
        assert!(!valid_url("s1:2380"));
        assert!(!valid_url("http://s1"));
        assert!(!valid_url("ftp://s1:2380"));
        assert_eq!(
            socket_addr("http://localhost:2379").unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert!(socket_addr("https://0.0.0.0:2379").is_err());
    }
}
