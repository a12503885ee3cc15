//! The Maintenance service: status, alarms and defragmentation as etcdctl
//! uses them.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::proto::etcdserverpb::{
    maintenance_server, AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};

pub struct Maintenance(pub Arc<Node>);

/// The etcd API version this store speaks; clients gate features on it.
pub const API_VERSION: &str = "3.5.0";

/// Bytes per `Snapshot` message (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

#[tonic::async_trait]
impl maintenance_server::Maintenance for Maintenance {
    async fn alarm(&self, _req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // No quota or corruption alarms are raised by this store.
        Ok(Response::new(AlarmResponse {
            header: Some(self.0.current_header()),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.0.raft.metrics().borrow().clone();
        let (revision, size) = {
            let mvcc = self.0.shared.mvcc();
            (mvcc.revision(), mvcc.db_size())
        };
        let learner = self
            .0
            .members()
            .iter()
            .any(|(id, _, learner)| *id == self.0.id && *learner);
        let mut errors = Vec::new();
        if m.current_leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        Ok(Response::new(StatusResponse {
            header: Some(self.0.header(revision)),
            version: API_VERSION.to_string(),
            db_size: size,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: size,
            is_learner: learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // RocksDB compacts its files in the background; nothing to do.
        Ok(Response::new(DefragmentResponse {
            header: Some(self.0.current_header()),
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("hash is not supported"))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        // Local, as in etcd: each member answers for what it has applied.
        let mvcc = self.0.shared.mvcc();
        let hash = mvcc
            .hash_kv(req.into_inner().revision)
            .map_err(|e| super::mvcc_status(&e))?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.0.header(mvcc.revision())),
            hash,
            compact_revision: mvcc.compact_revision(),
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    /// This member's key space at one revision, sealed with its SHA-256
    /// (see `crate::snapshot`), in chunks as etcd sends them.
    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let revision = self.0.shared.mvcc().revision();
        let bytes = crate::snapshot::save(&self.0.shared)
            .map_err(|e| Status::internal(format!("etcdserver: snapshot: {e}")))?;
        let header = self.0.header(revision);
        let total = bytes.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK)
            .scan(0usize, |sent, chunk| {
                *sent += chunk.len();
                Some(Ok(SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - *sent) as u64,
                    blob: chunk.to_vec(),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        _req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(Status::unimplemented("move-leader is not supported"))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not supported"))
    }
}
