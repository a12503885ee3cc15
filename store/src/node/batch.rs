//! Batching: concurrent writes travel together as one Raft entry, and
//! concurrent linearizable reads share one read-index round.

use std::sync::Arc;

use tonic::Status;

use super::leader::write_error;
use super::{LeaderRequest, LeaderResponse, Node, LEADER_WAIT, TIMED_OUT};
use crate::raft::types::{Request, Response};

/// Writes waiting to be sent, and how many batches are in flight.
#[derive(Default)]
pub(super) struct WriteBatch {
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
/// Writes that may wait at one stage (e.g. while there is no leader); more
/// are refused with etcd's "too many requests".
const MAX_WAITING_WRITES: usize = 20_000;
/// Largest batch, so that a full append RPC (`max_payload_entries` of them)
/// stays within the peer message limit.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Callers waiting for the next read-index round.
#[derive(Default)]
pub(super) struct ReadBatch {
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, Status>>>,
    driving: bool,
}

impl Node {
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
        let metrics = &self.shared.metrics;
        // Counted as pending until it ends, or until its client gives up
        // (the future dropped).
        let _pending = crate::metrics::Pending::start(metrics.pending.clone());
        let result = self.batched(Stage::Forward, req).await;
        if result.is_err() {
            metrics.failed.inc();
        }
        result
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
            if b.waiting.len() >= MAX_WAITING_WRITES {
                return Err(Status::resource_exhausted("etcdserver: too many requests"));
            }
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
    pub(super) fn propose(
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
                // A caller that gave up (its client went away) no longer
                // waits for an answer: its write is not sent late.
                b.waiting.retain(|(_, tx)| !tx.is_closed());
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
}
