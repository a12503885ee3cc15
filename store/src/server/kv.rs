//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use std::collections::HashSet;
use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::{applied, check_size, mvcc_status};
use crate::node::Node;
use crate::proto::etcdserverpb::{
    kv_server, request_op, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use crate::raft::types::Request as Command;

pub struct Kv(pub Arc<Node>);

const EMPTY_KEY: &str = "etcdserver: key is not provided";

fn check_put(p: &PutRequest) -> Result<(), Status> {
    if p.key.is_empty() {
        return Err(Status::invalid_argument(EMPTY_KEY));
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(())
}

/// Validates a transaction as etcd does before proposing it: op count per
/// branch, empty keys, and no key written twice in one branch.
fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), Status> {
    if t.success.len() > max_ops || t.failure.len() > max_ops {
        return Err(Status::invalid_argument(
            "etcdserver: too many operations in txn request",
        ));
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(Status::invalid_argument(EMPTY_KEY));
        }
    }
    for branch in [&t.success, &t.failure] {
        let mut puts: HashSet<&[u8]> = HashSet::new();
        let mut deletes: Vec<(&[u8], &[u8])> = Vec::new();
        for op in branch {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) if r.key.is_empty() => {
                    return Err(Status::invalid_argument(EMPTY_KEY));
                }
                Some(request_op::Request::RequestPut(p)) => {
                    check_put(p)?;
                    if !puts.insert(&p.key) {
                        return Err(duplicate());
                    }
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    if d.key.is_empty() {
                        return Err(Status::invalid_argument(EMPTY_KEY));
                    }
                    deletes.push((&d.key, &d.range_end));
                }
                Some(request_op::Request::RequestTxn(inner)) => check_txn(inner, max_ops)?,
                _ => {}
            }
        }
        for key in &puts {
            if deletes
                .iter()
                .any(|(k, end)| crate::shared::in_range(key, k, end))
            {
                return Err(duplicate());
            }
        }
    }
    Ok(())
}

fn duplicate() -> Status {
    Status::invalid_argument("etcdserver: duplicate key given in txn request")
}

/// Is a transaction read-only? Then it needs no Raft round, only a read
/// index (as etcd serves such transactions).
fn read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => true,
            Some(request_op::Request::RequestTxn(inner)) => read_only(inner),
            _ => false,
        })
}

#[tonic::async_trait]
impl kv_server::Kv for Kv {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        check_size(&self.0, &req)?;
        if req.key.is_empty() {
            return Err(Status::invalid_argument(EMPTY_KEY));
        }
        if !req.serializable {
            self.0.read_index().await?;
        }
        let mvcc = self.0.shared.mvcc();
        let mut resp = mvcc.range(&req).map_err(|e| mvcc_status(&e))?;
        resp.header = Some(self.0.header(mvcc.revision()));
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        check_size(&self.0, &req)?;
        check_put(&req)?;
        let resp = self.0.write(Command::Put(req.encode_to_vec())).await?;
        let (rev, mut out): (i64, PutResponse) = applied(resp)?;
        out.header = Some(self.0.header(rev));
        Ok(Response::new(out))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        check_size(&self.0, &req)?;
        if req.key.is_empty() {
            return Err(Status::invalid_argument(EMPTY_KEY));
        }
        let resp = self
            .0
            .write(Command::DeleteRange(req.encode_to_vec()))
            .await?;
        let (rev, mut out): (i64, DeleteRangeResponse) = applied(resp)?;
        out.header = Some(self.0.header(rev));
        Ok(Response::new(out))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        check_size(&self.0, &req)?;
        check_txn(&req, self.0.config.max_txn_ops)?;
        if read_only(&req) {
            self.0.read_index().await?;
            let mvcc = self.0.shared.mvcc();
            let mut out = mvcc.txn_read_only(&req).map_err(|e| mvcc_status(&e))?;
            out.header = Some(self.0.header(mvcc.revision()));
            return Ok(Response::new(out));
        }
        let resp = self.0.write(Command::Txn(req.encode_to_vec())).await?;
        let (rev, mut out): (i64, TxnResponse) = applied(resp)?;
        out.header = Some(self.0.header(rev));
        Ok(Response::new(out))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = req.into_inner();
        let resp = self.0.write(Command::Compact(req.revision)).await?;
        let rev = resp.revision;
        match resp.result {
            Some(Err(e)) => Err(mvcc_status(&e)),
            _ => Ok(Response::new(CompactionResponse {
                header: Some(self.0.header(rev)),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::RequestOp;

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn txn_validation_follows_etcd() {
        let t = TxnRequest {
            success: vec![put_op("a"), put_op("a")],
            ..Default::default()
        };
        assert_eq!(
            check_txn(&t, 128).unwrap_err().message(),
            duplicate().message()
        );
        let t = TxnRequest {
            success: (0..129).map(|i| put_op(&i.to_string())).collect(),
            ..Default::default()
        };
        assert!(check_txn(&t, 128)
            .unwrap_err()
            .message()
            .contains("too many operations"));
        assert!(!read_only(&TxnRequest {
            success: vec![put_op("a")],
            ..Default::default()
        }));
    }
}
