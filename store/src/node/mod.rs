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
//!
//! `leader` holds what only the leader serves (and the forwarding to it),
//! `batch` the batching of writes and read-index rounds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use crate::proto::etcdserverpb::ResponseHeader;
use crate::raft::network::{NetworkFactory, Peers};
use crate::raft::types::{Member, MemberAttrs, NodeId, Raft, Request};
use crate::shared::Shared;

mod batch;
mod election;
mod leader;

use batch::{ReadBatch, WriteBatch};
pub use election::{PreVoteRequest, PreVoteResponse};
pub use leader::{never_connected, LeaderRequest, LeaderResponse, WireStatus};

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
    /// TLS of the client port (`https://` client URLs).
    pub client_tls: crate::tls::TlsFiles,
    /// TLS between members (`https://` peer URLs), both ways.
    pub peer_tls: crate::tls::TlsFiles,
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
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            StartError::Config(format!(
                "{url}: only http:// and https:// URLs are supported"
            ))
        })?;
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

pub(crate) const NOT_LEADER: &str = "etcdserver: not leader";
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
pub(crate) const TIMED_OUT: &str = "etcdserver: request timed out";

/// How long a request may wait for a leader before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// openraft's election timers for etcd's `--election-timeout` E.
///
/// When to stand is decided by the pre-vote loop (`election.rs`); what is
/// left to openraft is its leader lease (`election_timeout_max`): a member
/// that heard from a leader less than 5/8 E ago refuses to vote for anyone
/// else. The pre-vote waits a whole E, so a real election after it always
/// finds the voters' leases expired.
pub fn election_timers(election_timeout: Duration) -> (u64, u64) {
    let e = election_timeout.as_millis().min(u128::from(u32::MAX)) as u64;
    ((e * 3 / 8).max(1), (e * 5 / 8).max(2))
}

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
    heard: election::Heard,
    /// The Raft log (a handle on the one openraft writes), read by the
    /// pre-vote.
    log: crate::raft::log_store::LogStore,
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
        if config.election_timeout < config.heartbeat_interval * 5 {
            return Err(StartError::Config(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                config.election_timeout.as_millis(),
                config.heartbeat_interval.as_millis()
            )));
        }
        let token = config.initial_cluster_token.clone();
        let id = member_id(&config.initial_advertise_peer_urls, &token);
        let cluster_id = fnv1a(token.as_bytes());

        let shared = Arc::new(Shared::default());
        let (log, sm) = crate::raft::open_storage(&config.data_dir.join("db"), shared.clone())?;
        let peer_tls = if config.peer_tls.enabled() || config.peer_tls.trusted_ca_file.is_some() {
            Some(
                config
                    .peer_tls
                    .client_config()
                    .map_err(StartError::Config)?,
            )
        } else {
            None
        };
        let peers = Peers::with_tls(peer_tls);

        let (election_timeout_min, election_timeout_max) = election_timers(config.election_timeout);
        let raft_config = openraft::Config {
            cluster_name: token.clone(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min,
            election_timeout_max,
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
        let log_handle = log.clone();
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
        // Elections are started by the pre-vote loop (election.rs) only.
        raft.runtime_config().elect(false);

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
            heard: Default::default(),
            log: log_handle,
        });
        tokio::spawn(node.clone().election_loop());
        tokio::spawn(node.clone().lease_loop());
        tokio::spawn(node.clone().publish_loop());
        tokio::spawn(node.clone().leader_watch());
        Ok(node)
    }

    /// Resolves once the member is told to stop ([`Node::stop`]).
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
        let raft_term = self.raft.metrics().borrow().current_term;
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term,
        }
    }

    /// A response header at the current revision.
    pub fn current_header(&self) -> ResponseHeader {
        let revision = self.shared.mvcc().revision();
        self.header(revision)
    }

    fn leader(&self) -> Option<(NodeId, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
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

    /// Counts the leaders this member sees come to power (etcd's
    /// `leader_changes_seen`: the first one included).
    async fn leader_watch(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut stop = self.shutdown.subscribe();
        let mut leader = None;
        loop {
            let now = metrics.borrow_and_update().current_leader;
            if now.is_some() && now != leader {
                self.shared.metrics.leader_changes.inc();
            }
            leader = now;
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }

    /// This member's `/metrics` (etcd's names, see [`crate::metrics`]).
    pub fn render_metrics(&self) -> String {
        let metrics = &self.shared.metrics;
        {
            let raft = self.raft.metrics();
            let raft = raft.borrow();
            metrics
                .has_leader
                .set(i64::from(raft.current_leader.is_some()));
            metrics
                .is_leader
                .set(i64::from(raft.state == ServerState::Leader));
        }
        metrics.render()
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
        assert_eq!(
            socket_addr("https://0.0.0.0:2379").unwrap(),
            "0.0.0.0:2379".parse().unwrap()
        );
        assert!(socket_addr("ftp://0.0.0.0:2379").is_err());
    }
}
