//! When to stand for election: etcd's pre-vote, on top of openraft.
//!
//! openraft's own election timer is switched off. A member that has not
//! heard from a leader for its election timeout (etcd's `--election-timeout`
//! E, randomized to 1–1.25 E) first asks the others whether they would vote
//! for it; only when a majority would does it start a real election (with a
//! new term). A member back from a partition or a pause therefore cannot
//! depose a leader the others still hear from: they refuse its pre-vote,
//! its term stays where it was, and the leader's next heartbeat brings it
//! back in line.
//!
//! ```text
//!  heard from a leader ◀── AppendEntries (peer service), a granted vote
//!        │ silent for 1–1.25 E
//!        ▼
//!  PreVote ──▶ each voter: grants if it has not heard from a leader for E
//!        │      and the candidate's log is at least as up to date as its own
//!        │ majority
//!        ▼
//!  raft.trigger().elect()
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Node;
use crate::raft::log_store::{decode, encode};
use crate::raft::types::{LogId, NodeId};

/// What a would-be candidate asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The candidate's last log entry.
    pub last_log: Option<LogId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
}

/// When this member last heard from a leader (or granted a vote).
#[derive(Debug)]
pub(super) struct Heard(std::sync::Mutex<Instant>);

impl Default for Heard {
    fn default() -> Heard {
        Heard(std::sync::Mutex::new(Instant::now()))
    }
}

impl Heard {
    pub(super) fn now(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn elapsed(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// Whether a candidate whose log ends at `candidate` is at least as up to
/// date as a member whose log ends at `own` (Raft's election rule).
pub fn log_up_to_date(candidate: Option<&LogId>, own: Option<&LogId>) -> bool {
    candidate >= own
}

impl Node {
    /// A leader was heard from: the election timer starts again.
    pub fn heard_from_leader(&self) {
        self.heard.now();
    }

    /// The last entry of this member's log (none when it is empty or
    /// cannot be read).
    async fn last_log_id(&self) -> Option<LogId> {
        let mut log = self.log.clone();
        log.get_log_state()
            .await
            .ok()
            .and_then(|state| state.last_log_id)
    }

    /// Answers a pre-vote: granted when this member has not heard from a
    /// leader for a whole election timeout (and does not lead itself), and
    /// the candidate's log is at least as up to date as this member's.
    pub async fn pre_vote(&self, req: PreVoteRequest) -> PreVoteResponse {
        let leading = self.raft.metrics().borrow().state == ServerState::Leader;
        let quiet = self.heard.elapsed() >= self.config.election_timeout;
        if leading || !quiet {
            return PreVoteResponse { granted: false };
        }
        let own = self.last_log_id().await;
        PreVoteResponse {
            granted: log_up_to_date(req.last_log.as_ref(), own.as_ref()),
        }
    }

    /// Stands for election whenever the leader has been silent for an
    /// election timeout and a majority would vote for this member.
    pub(super) async fn election_loop(self: Arc<Self>) {
        self.raft.runtime_config().elect(false);
        let mut stop = self.shutdown.subscribe();
        let mut timeout = randomized(self.config.election_timeout);
        // When this member last asked: a refused pre-vote waits a whole
        // timeout again, but leaves `heard` alone, so that it still grants
        // the others' pre-votes (two members that reset each other's
        // timers would refuse each other forever).
        let mut asked: Option<Instant> = None;
        loop {
            let (state, voter, alone) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
                (m.state, voters.contains(&self.id), voters == [self.id])
            };
            let since_asked = asked.map_or(Duration::MAX, |t| t.elapsed());
            // A member alone has nobody to wait for or to ask.
            let wait = if state == ServerState::Leader {
                timeout
            } else if alone {
                Duration::ZERO
            } else {
                timeout
                    .saturating_sub(self.heard.elapsed())
                    .max(timeout.saturating_sub(since_asked))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
                _ = stop.changed() => return,
            }
            if state == ServerState::Leader || !voter {
                // Leading counts as hearing from the leader: one that steps
                // down waits a whole timeout before it stands again.
                self.heard.now();
                continue;
            }
            let due =
                self.heard.elapsed() >= timeout && asked.is_none_or(|t| t.elapsed() >= timeout);
            if !alone && !due {
                continue;
            }
            asked = Some(Instant::now());
            timeout = randomized(self.config.election_timeout);
            if self.pre_vote_won().await {
                tracing::info!(
                    "the leader is silent and a majority would vote: standing for election"
                );
                if let Err(e) = self.raft.trigger().elect().await {
                    tracing::warn!(error = %e, "cannot start an election");
                }
            }
        }
    }

    /// Asks every other voter; true when a majority (this member included)
    /// would vote for it.
    async fn pre_vote_won(self: &Arc<Self>) -> bool {
        let voters: Vec<(NodeId, crate::raft::types::Member)> = self
            .members()
            .into_iter()
            .filter(|(_, _, learner)| !learner)
            .map(|(id, m, _)| (id, m))
            .collect();
        let needed = voters.len() / 2 + 1;
        let last_log = self.last_log_id().await;
        let req = PreVoteRequest {
            candidate: self.id,
            last_log,
        };
        let Ok(data) = encode(&req) else {
            return false;
        };
        let asks = voters
            .iter()
            .filter(|(id, _)| *id != self.id)
            .filter_map(|(_, member)| self.peers.client(member).ok())
            .map(|mut client| {
                let mut request = tonic::Request::new(crate::proto::peer::Payload {
                    data: data.clone().into(),
                });
                request.set_timeout(self.config.election_timeout / 2);
                async move {
                    let reply = client.pre_vote(request).await.ok()?;
                    let resp: PreVoteResponse = decode(&reply.into_inner().data).ok()?;
                    Some(resp.granted)
                }
            });
        let granted = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|g| *g == Some(true))
            .count();
        granted + 1 >= needed
    }
}

/// An election timeout drawn from [E, 1.25 E], so that members whose timers
/// started together do not all stand at once.
fn randomized(election_timeout: Duration) -> Duration {
    let spread = election_timeout / 4;
    let extra = rand::thread_rng().gen_range(0..=spread.as_millis().max(1) as u64);
    election_timeout + Duration::from_millis(extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn a_log_is_as_up_to_date_by_last_term_then_index() {
        assert!(log_up_to_date(Some(&log(2, 5)), Some(&log(2, 5))));
        assert!(log_up_to_date(Some(&log(3, 1)), Some(&log(2, 9))));
        assert!(!log_up_to_date(Some(&log(2, 4)), Some(&log(2, 5))));
        assert!(!log_up_to_date(Some(&log(1, 9)), Some(&log(2, 1))));
        assert!(log_up_to_date(Some(&log(1, 1)), None));
        assert!(!log_up_to_date(None, Some(&log(1, 1))));
    }

    #[test]
    fn timeouts_are_spread_over_a_quarter() {
        let e = Duration::from_millis(1000);
        for _ in 0..100 {
            let t = randomized(e);
            assert!(t >= e && t <= e + e / 4, "{t:?}");
        }
    }
}
