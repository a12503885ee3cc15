//! The MVCC key space, as etcd defines it: one global revision, every change
//! of every key kept (per key `create_revision`, `mod_revision`, `version`)
//! until a compaction drops what it no longer needs.
//!
//! This module is a pure core: no I/O, no locks, no async. The Raft state
//! machine feeds it committed requests in log order and persists the row
//! changes each step reports in [`Changes`]; the gRPC layer reads from it
//! under a read lock.
//!
//! ```text
//!   committed request ──► Mvcc::{put,delete_range,txn,compact,lease_*}
//!                               │
//!                               ├─► Changes.rows   ──► RocksDB (same batch as last_applied)
//!                               └─► Changes.events ──► watch hub
//! ```
//!
//! Each version is kept in memory in a per-key history (reads never touch
//! disk) and written as one row keyed by its revision, so a restart rebuilds
//! the same index from the rows ([`Mvcc::restore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp,
    TxnRequest, TxnResponse,
};
use crate::proto::mvccpb::{event::EventType, Event, KeyValue};

/// Why a request could not be applied. The messages are etcd's own, so that
/// etcdctl and client libraries recognise them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted { requested: i64, compacted: i64 },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision { requested: i64, current: i64 },
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound(i64),
    #[error("etcdserver: lease already exists")]
    LeaseExists(i64),
}

pub type Result<T, E = MvccError> = std::result::Result<T, E>;

/// A revision: `main` is the store revision of the change, `sub` orders the
/// changes made by one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    /// Row key of this revision: big-endian so that rows sort by revision,
    /// with a `t` suffix marking a tombstone (as etcd marks them).
    pub fn to_row_key(self, tombstone: bool) -> Vec<u8> {
        let mut k = Vec::with_capacity(17);
        k.extend_from_slice(&self.main.to_be_bytes());
        k.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            k.push(b't');
        }
        k
    }

    pub fn from_row_key(k: &[u8]) -> Option<(Rev, bool)> {
        let main = i64::from_be_bytes(k.get(0..8)?.try_into().ok()?);
        let sub = i64::from_be_bytes(k.get(8..16)?.try_into().ok()?);
        Some((Rev { main, sub }, k.get(16) == Some(&b't')))
    }
}

/// One version of one key.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    rev: Rev,
    /// For a tombstone: only `key` and `mod_revision` are set.
    kv: KeyValue,
    tombstone: bool,
}

/// A persisted version: its row key (see [`Rev::to_row_key`]) and value.
pub type Row = (Vec<u8>, KeyValue);

/// A change the state machine must persist together with the applied log id.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOp {
    PutRev { key: Vec<u8>, kv: KeyValue },
    DeleteRev { key: Vec<u8> },
    PutLease { id: i64, ttl: i64 },
    DeleteLease { id: i64 },
}

/// What one applied request changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub rows: Vec<RowOp>,
    pub events: Vec<Event>,
    /// Leases granted (id, ttl): their expiry clock starts now.
    pub granted: Vec<(i64, i64)>,
    /// Leases that no longer exist.
    pub revoked: Vec<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Lease {
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

/// The key space.
#[derive(Debug)]
pub struct Mvcc {
    current: i64,
    compacted: i64,
    index: BTreeMap<Vec<u8>, Vec<Version>>,
    leases: BTreeMap<i64, Lease>,
    /// Bytes of all stored versions, reported as the database size.
    size: i64,
}

impl Default for Mvcc {
    /// An empty store is at revision 1, as etcd's is: the first change
    /// gets revision 2.
    fn default() -> Self {
        Mvcc {
            current: 1,
            compacted: 0,
            index: BTreeMap::new(),
            leases: BTreeMap::new(),
            size: 0,
        }
    }
}

/// The branch a transaction takes and, in order, those of the nested
/// transactions on it.
#[derive(Debug)]
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

/// A write transaction in progress: every change shares one main revision.
struct WriteTxn<'a> {
    main: i64,
    sub: i64,
    changes: &'a mut Changes,
}

impl Mvcc {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn revision(&self) -> i64 {
        self.current
    }

    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    pub fn db_size(&self) -> i64 {
        self.size
    }

    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn leases(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// Rebuilds the key space from persisted rows (in row-key order, i.e.
    /// revision order) and leases.
    pub fn restore(
        rows: impl IntoIterator<Item = (Vec<u8>, KeyValue)>,
        leases: impl IntoIterator<Item = (i64, i64)>,
        current: i64,
        compacted: i64,
    ) -> Self {
        let mut m = Mvcc {
            current: current.max(1),
            compacted,
            ..Default::default()
        };
        for (id, ttl) in leases {
            m.leases.insert(
                id,
                Lease {
                    ttl,
                    keys: BTreeSet::new(),
                },
            );
        }
        for (row_key, kv) in rows {
            let Some((rev, tombstone)) = Rev::from_row_key(&row_key) else {
                continue;
            };
            m.size += version_size(&kv);
            m.index
                .entry(kv.key.clone())
                .or_default()
                .push(Version { rev, kv, tombstone });
        }
        for (key, versions) in &m.index {
            if let Some(v) = versions.last().filter(|v| !v.tombstone && v.kv.lease != 0) {
                if let Some(l) = m.leases.get_mut(&v.kv.lease) {
                    l.keys.insert(key.clone());
                }
            }
        }
        m
    }

    /// Every stored version as `(row key, value)`, and every lease: what a
    /// snapshot carries.
    pub fn dump(&self) -> (Vec<Row>, Vec<(i64, i64)>) {
        let mut rows: Vec<Row> = self
            .index
            .values()
            .flatten()
            .map(|v| (v.rev.to_row_key(v.tombstone), v.kv.clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let leases = self.leases.iter().map(|(id, l)| (*id, l.ttl)).collect();
        (rows, leases)
    }

    fn check_revision(&self, rev: i64) -> Result<i64> {
        if rev <= 0 {
            return Ok(self.current);
        }
        if rev > self.current {
            return Err(MvccError::FutureRevision {
                requested: rev,
                current: self.current,
            });
        }
        if rev < self.compacted {
            return Err(MvccError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        Ok(rev)
    }

    /// Keys in `[key, range_end)` as etcd reads a range: an empty
    /// `range_end` is the single key, `"\0"` is every key from `key` on.
    fn keys_in<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Version>)> + 'a> {
        if range_end.is_empty() {
            return Box::new(self.index.get_key_value(key).into_iter());
        }
        if range_end == [0] {
            return Box::new(
                self.index
                    .range::<[u8], _>((Bound::Included(key), Bound::Unbounded)),
            );
        }
        if range_end <= key {
            return Box::new(std::iter::empty());
        }
        Box::new(
            self.index
                .range::<[u8], _>((Bound::Included(key), Bound::Excluded(range_end))),
        )
    }

    /// The live value of each key in the range at revision `rev`.
    fn live_at<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
        rev: i64,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        self.keys_in(key, range_end)
            .filter_map(move |(_, versions)| {
                let v = versions.iter().rev().find(|v| v.rev.main <= rev)?;
                (!v.tombstone).then_some(&v.kv)
            })
    }

    fn latest(&self, key: &[u8]) -> Option<&KeyValue> {
        let v = self.index.get(key)?.last()?;
        (!v.tombstone).then_some(&v.kv)
    }

    /// A Range request, with etcd's sorting, filtering and limit rules.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let rev = self.check_revision(req.revision)?;
        self.range_at(req, rev)
    }

    fn range_at(&self, req: &RangeRequest, rev: i64) -> Result<RangeResponse> {
        use range_request::{SortOrder, SortTarget};
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        // Keys come out in ascending key order already; any other target
        // sorts ascending unless told otherwise (etcd does the same).
        if target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;

        let mut count = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        // Without sorting or filters only `limit + 1` keys are needed (the
        // extra one tells whether there are more).
        let early_stop = if order == SortOrder::None && !filtered && req.limit > 0 {
            Some(req.limit as usize + 1)
        } else {
            None
        };
        for kv in self.live_at(&req.key, &req.range_end, rev) {
            count += 1;
            if req.count_only || early_stop.is_some_and(|n| kvs.len() >= n) {
                continue;
            }
            kvs.push(kv.clone());
        }
        if filtered {
            kvs.retain(|kv| {
                (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
            });
        }
        if order != SortOrder::None {
            match target {
                SortTarget::Key => {} // already in key order
                SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
                SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
                SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    /// Checks what a Put would fail on, before anything is changed.
    fn check_put(&self, req: &PutRequest) -> Result<()> {
        if (req.ignore_value || req.ignore_lease) && self.latest(&req.key).is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(MvccError::LeaseNotFound(req.lease));
        }
        Ok(())
    }

    pub fn put(&mut self, req: &PutRequest, changes: &mut Changes) -> Result<PutResponse> {
        self.check_put(req)?;
        let mut txn = self.begin(changes);
        let resp = self.put_in(&mut txn, req);
        self.end(txn);
        Ok(resp)
    }

    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
        changes: &mut Changes,
    ) -> Result<DeleteRangeResponse> {
        let mut txn = self.begin(changes);
        let resp = self.delete_in(&mut txn, &req.key, &req.range_end, req.prev_kv);
        self.end(txn);
        Ok(resp)
    }

    pub fn txn(&mut self, req: &TxnRequest, changes: &mut Changes) -> Result<TxnResponse> {
        // Decide every branch, nested ones included, on the state before the
        // transaction, and validate the ops on that path: a transaction
        // applies completely or not at all (etcd's compareToPath).
        let path = self.decide(req);
        self.check_txn(req, &path)?;
        let mut txn = self.begin(changes);
        let resp = self.txn_in(&mut txn, req, &path);
        self.end(txn);
        Ok(resp)
    }

    /// A transaction without puts or deletes, evaluated without changing
    /// anything (so under a read lock).
    pub fn txn_read_only(&self, req: &TxnRequest) -> Result<TxnResponse> {
        let path = self.decide(req);
        self.check_txn(req, &path)?;
        Ok(self.read_txn(req, &path))
    }

    fn read_txn(&self, req: &TxnRequest, path: &Path) -> TxnResponse {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let responses = ops
            .iter()
            .filter_map(|op| {
                let response = match &op.request {
                    Some(request_op::Request::RequestRange(r)) => {
                        let rev = if r.revision > 0 { r.revision } else { i64::MAX };
                        response_op::Response::ResponseRange(
                            self.range_at(r, rev).unwrap_or_default(),
                        )
                    }
                    Some(request_op::Request::RequestTxn(t)) => {
                        let p = nested.next()?;
                        response_op::Response::ResponseTxn(self.read_txn(t, p))
                    }
                    _ => return None,
                };
                Some(ResponseOp {
                    response: Some(response),
                })
            })
            .collect();
        TxnResponse {
            header: None,
            succeeded: path.succeeded,
            responses,
        }
    }

    fn begin<'c>(&self, changes: &'c mut Changes) -> WriteTxn<'c> {
        WriteTxn {
            main: self.current + 1,
            sub: 0,
            changes,
        }
    }

    fn end(&mut self, txn: WriteTxn<'_>) {
        if txn.sub > 0 {
            self.current = txn.main;
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        use compare::{CompareResult, CompareTarget, TargetUnion};
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        let result = CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal);
        let absent = KeyValue::default();
        let kvs: Vec<&KeyValue> = self.live_at(&c.key, &c.range_end, i64::MAX).collect();
        // An absent key compares as zero on every numeric target, and a
        // value comparison on it fails (etcd's rule).
        let kvs = if kvs.is_empty() {
            if target == CompareTarget::Value {
                return false;
            }
            vec![&absent]
        } else {
            kvs
        };
        kvs.into_iter().all(|kv| {
            let ord = match (target, &c.target_union) {
                (CompareTarget::Value, Some(TargetUnion::Value(v))) => {
                    kv.value.as_slice().cmp(v.as_slice())
                }
                (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
                (CompareTarget::Version, u) => kv.version.cmp(&int_target(u)),
                (CompareTarget::Create, u) => kv.create_revision.cmp(&int_target(u)),
                (CompareTarget::Mod, u) => kv.mod_revision.cmp(&int_target(u)),
                (CompareTarget::Lease, u) => kv.lease.cmp(&int_target(u)),
            };
            match result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    /// The branches a transaction takes, decided before any of it runs.
    fn decide(&self, req: &TxnRequest) -> Path {
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(request_op::Request::RequestTxn(t)) => Some(self.decide(t)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    fn check_txn(&self, req: &TxnRequest, path: &Path) -> Result<()> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    self.check_revision(r.revision)?;
                }
                Some(request_op::Request::RequestPut(p)) => self.check_put(p)?,
                Some(request_op::Request::RequestTxn(t)) => {
                    if let Some(p) = nested.next() {
                        self.check_txn(t, p)?;
                    }
                }
                Some(request_op::Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn txn_in(&mut self, txn: &mut WriteTxn<'_>, req: &TxnRequest, path: &Path) -> TxnResponse {
        let succeeded = path.succeeded;
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    // Reads see the transaction's own earlier writes.
                    let rev = if r.revision > 0 { r.revision } else { i64::MAX };
                    let resp = self.range_at(r, rev).unwrap_or_default();
                    response_op::Response::ResponseRange(resp)
                }
                Some(request_op::Request::RequestPut(p)) => {
                    response_op::Response::ResponsePut(self.put_in(txn, p))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_in(
                        txn,
                        &d.key,
                        &d.range_end,
                        d.prev_kv,
                    ))
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    let Some(p) = nested.next() else { continue };
                    response_op::Response::ResponseTxn(self.txn_in(txn, t, p))
                }
                None => continue,
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }

    fn next_rev(txn: &mut WriteTxn<'_>) -> Rev {
        let rev = Rev {
            main: txn.main,
            sub: txn.sub,
        };
        txn.sub += 1;
        rev
    }

    fn put_in(&mut self, txn: &mut WriteTxn<'_>, req: &PutRequest) -> PutResponse {
        let prev = self.latest(&req.key).cloned();
        let rev = Self::next_rev(txn);
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        if let Some(old) = prev
            .as_ref()
            .map(|p| p.lease)
            .filter(|l| *l != 0 && *l != lease)
        {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(&req.key);
            }
        }
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(req.key.clone());
            }
        }
        self.push_version(txn, rev, kv.clone(), false);
        txn.changes.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        }
    }

    fn delete_in(
        &mut self,
        txn: &mut WriteTxn<'_>,
        key: &[u8],
        range_end: &[u8],
        want_prev: bool,
    ) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = self.live_at(key, range_end, i64::MAX).cloned().collect();
        for prev in &doomed {
            let rev = Self::next_rev(txn);
            let tomb = KeyValue {
                key: prev.key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            if prev.lease != 0 {
                if let Some(l) = self.leases.get_mut(&prev.lease) {
                    l.keys.remove(&prev.key);
                }
            }
            self.push_version(txn, rev, tomb.clone(), true);
            txn.changes.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev.clone()),
            });
        }
        DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if want_prev { doomed } else { Vec::new() },
        }
    }

    fn push_version(&mut self, txn: &mut WriteTxn<'_>, rev: Rev, kv: KeyValue, tombstone: bool) {
        self.size += version_size(&kv);
        txn.changes.rows.push(RowOp::PutRev {
            key: rev.to_row_key(tombstone),
            kv: kv.clone(),
        });
        self.index
            .entry(kv.key.clone())
            .or_default()
            .push(Version { rev, kv, tombstone });
    }

    /// Drops every version that no read at or after `rev` can see.
    pub fn compact(&mut self, rev: i64, changes: &mut Changes) -> Result<()> {
        if rev <= self.compacted {
            return Err(MvccError::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        if rev > self.current {
            return Err(MvccError::FutureRevision {
                requested: rev,
                current: self.current,
            });
        }
        self.compacted = rev;
        let mut emptied = Vec::new();
        for (key, versions) in self.index.iter_mut() {
            // The newest version at or below `rev` stays, unless it is a
            // tombstone: then the key did not exist at `rev` at all.
            let upto = versions.partition_point(|v| v.rev.main <= rev);
            let keep_from = match versions[..upto].last() {
                Some(v) if !v.tombstone => upto - 1,
                _ => upto,
            };
            for v in versions.drain(..keep_from) {
                self.size -= version_size(&v.kv);
                changes.rows.push(RowOp::DeleteRev {
                    key: v.rev.to_row_key(v.tombstone),
                });
            }
            if versions.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.index.remove(&key);
        }
        Ok(())
    }

    pub fn lease_grant(&mut self, id: i64, ttl: i64, changes: &mut Changes) -> Result<()> {
        if self.leases.contains_key(&id) {
            return Err(MvccError::LeaseExists(id));
        }
        self.leases.insert(
            id,
            Lease {
                ttl,
                keys: BTreeSet::new(),
            },
        );
        changes.rows.push(RowOp::PutLease { id, ttl });
        changes.granted.push((id, ttl));
        Ok(())
    }

    /// Revokes a lease and deletes its keys, all in one revision.
    pub fn lease_revoke(&mut self, id: i64, changes: &mut Changes) -> Result<()> {
        let lease = self
            .leases
            .remove(&id)
            .ok_or(MvccError::LeaseNotFound(id))?;
        let mut txn = self.begin(changes);
        for key in &lease.keys {
            self.delete_in(&mut txn, key, &[], false);
        }
        self.end(txn);
        changes.rows.push(RowOp::DeleteLease { id });
        changes.revoked.push(id);
        Ok(())
    }

    /// A checksum (CRC-32C) of every stored version up to revision `rev`
    /// (0: the current one), in revision order: members that applied the
    /// same log agree on it, so comparing it across members checks that
    /// they hold the same data (etcd's HashKV).
    pub fn hash_kv(&self, rev: i64) -> Result<u32> {
        let rev = self.check_revision(rev)?;
        let mut versions: Vec<&Version> = self
            .index
            .values()
            .flatten()
            .filter(|v| v.rev.main <= rev)
            .collect();
        versions.sort_by_key(|v| v.rev);
        let mut crc = Crc32c::default();
        for v in versions {
            crc.update(&v.rev.to_row_key(v.tombstone));
            crc.update(&prost::Message::encode_to_vec(&v.kv));
        }
        Ok(crc.finish())
    }

    /// The events of keys in `[key, range_end)` from revision `start` on, in
    /// revision order: what a watch starting in the past replays.
    pub fn history(&self, key: &[u8], range_end: &[u8], start: i64) -> Result<Vec<Event>> {
        if start < self.compacted {
            return Err(MvccError::Compacted {
                requested: start,
                compacted: self.compacted,
            });
        }
        let mut events: Vec<(Rev, Event)> = Vec::new();
        for (_, versions) in self.keys_in(key, range_end) {
            let from = versions.partition_point(|v| v.rev.main < start);
            for i in from..versions.len() {
                let v = &versions[i];
                let prev_kv = i
                    .checked_sub(1)
                    .map(|p| &versions[p])
                    .filter(|p| !p.tombstone)
                    .map(|p| p.kv.clone());
                let kind = if v.tombstone {
                    EventType::Delete
                } else {
                    EventType::Put
                };
                events.push((
                    v.rev,
                    Event {
                        r#type: kind as i32,
                        kv: Some(v.kv.clone()),
                        prev_kv,
                    },
                ));
            }
        }
        events.sort_by_key(|(rev, _)| *rev);
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }
}

/// CRC-32C (Castagnoli), the checksum etcd's HashKV uses, bit by bit:
/// hashing happens on request, not on a hot path.
struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c(!0)
    }
}

impl Crc32c {
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            for _ in 0..8 {
                let mask = (self.0 & 1).wrapping_neg();
                self.0 = (self.0 >> 1) ^ (0x82F6_3B78 & mask);
            }
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

fn int_target(u: &Option<compare::TargetUnion>) -> i64 {
    use compare::TargetUnion;
    match u {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}

fn version_size(kv: &KeyValue) -> i64 {
    (kv.key.len() + kv.value.len() + 16 + 32) as i64
}

/// The end of the range of keys that start with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff
/// incremented, or `"\0"` (every key) if there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::RequestOp;

    fn put(m: &mut Mvcc, k: &str, v: &str) -> PutResponse {
        let mut ch = Changes::default();
        m.put(
            &PutRequest {
                key: k.into(),
                value: v.into(),
                prev_kv: true,
                ..Default::default()
            },
            &mut ch,
        )
        .unwrap()
    }

    fn get(m: &Mvcc, k: &str, rev: i64) -> Result<Option<KeyValue>> {
        let r = m.range(&RangeRequest {
            key: k.into(),
            revision: rev,
            ..Default::default()
        })?;
        Ok(r.kvs.into_iter().next())
    }

    #[test]
    fn revisions_and_versions_follow_etcd() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        put(&mut m, "b", "1");
        let r = put(&mut m, "a", "2");
        assert_eq!(r.prev_kv.unwrap().value, b"1");
        let a = get(&m, "a", 0).unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 2));
        assert_eq!(get(&m, "a", 2).unwrap().unwrap().value, b"1");
        assert_eq!(m.revision(), 4);
        assert!(matches!(
            get(&m, "a", 5),
            Err(MvccError::FutureRevision { .. })
        ));
    }

    #[test]
    fn delete_then_recreate_starts_a_new_generation() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        let mut ch = Changes::default();
        let d = m
            .delete_range(
                &DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                },
                &mut ch,
            )
            .unwrap();
        assert_eq!(d.deleted, 1);
        assert_eq!(m.revision(), 3);
        // Deleting nothing does not move the revision.
        let d = m
            .delete_range(
                &DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                },
                &mut ch,
            )
            .unwrap();
        assert_eq!(d.deleted, 0);
        assert_eq!(m.revision(), 3);
        put(&mut m, "a", "2");
        let a = get(&m, "a", 0).unwrap().unwrap();
        assert_eq!((a.create_revision, a.version), (4, 1));
        assert!(get(&m, "a", 3).unwrap().is_none());
    }

    #[test]
    fn compaction_keeps_the_visible_version() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        put(&mut m, "a", "2");
        put(&mut m, "b", "1");
        let mut ch = Changes::default();
        m.compact(3, &mut ch).unwrap();
        assert_eq!(ch.rows.len(), 1);
        assert!(matches!(get(&m, "a", 2), Err(MvccError::Compacted { .. })));
        assert_eq!(get(&m, "a", 3).unwrap().unwrap().value, b"2");
        assert!(matches!(
            m.compact(3, &mut ch),
            Err(MvccError::Compacted { .. })
        ));
    }

    #[test]
    fn txn_compares_and_shares_one_revision() {
        use compare::{CompareResult, CompareTarget, TargetUnion};
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: "a".into(),
                target_union: Some(TargetUnion::Value("1".into())),
                range_end: vec![],
            }],
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: "a".into(),
                        value: "2".into(),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: "b".into(),
                        value: "2".into(),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: "b".into(),
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![],
        };
        let mut ch = Changes::default();
        let r = m.txn(&req, &mut ch).unwrap();
        assert!(r.succeeded);
        assert_eq!(m.revision(), 3);
        let Some(response_op::Response::ResponseRange(rr)) = &r.responses[2].response else {
            panic!("range response expected");
        };
        assert_eq!(rr.kvs[0].value, b"2");
        let r = m.txn(&req, &mut ch).unwrap();
        assert!(!r.succeeded);
        assert_eq!(m.revision(), 3);
    }

    #[test]
    fn nested_branches_are_decided_before_the_transaction_runs() {
        use compare::{CompareResult, CompareTarget, TargetUnion};
        let mut m = Mvcc::new();
        let put_op = |k: &str, lease: i64| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                value: "v".into(),
                lease,
                ..Default::default()
            })),
        };
        // The inner compare sees "a" absent (the outer put has not run yet
        // when branches are decided), so its failure branch runs.
        let inner = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: "a".into(),
                target_union: Some(TargetUnion::Value("v".into())),
                range_end: vec![],
            }],
            success: vec![put_op("k", 0x77)],
            failure: vec![put_op("f", 0)],
        };
        let outer = TxnRequest {
            success: vec![
                put_op("a", 0),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(inner)),
                },
            ],
            ..Default::default()
        };
        let mut ch = Changes::default();
        let r = m.txn(&outer, &mut ch).unwrap();
        let Some(response_op::Response::ResponseTxn(t)) = &r.responses[1].response else {
            panic!("nested response expected");
        };
        assert!(!t.succeeded);
        assert!(get(&m, "k", 0).unwrap().is_none());
        assert!(get(&m, "f", 0).unwrap().is_some());
    }

    #[test]
    fn lease_revoke_deletes_attached_keys() {
        let mut m = Mvcc::new();
        let mut ch = Changes::default();
        m.lease_grant(7, 10, &mut ch).unwrap();
        m.put(
            &PutRequest {
                key: "k".into(),
                value: "v".into(),
                lease: 7,
                ..Default::default()
            },
            &mut ch,
        )
        .unwrap();
        assert!(matches!(
            m.put(
                &PutRequest {
                    key: "k".into(),
                    lease: 8,
                    ..Default::default()
                },
                &mut ch
            ),
            Err(MvccError::LeaseNotFound(8))
        ));
        m.lease_revoke(7, &mut ch).unwrap();
        assert!(get(&m, "k", 0).unwrap().is_none());
        assert_eq!(m.revision(), 3);
    }

    #[test]
    fn restore_rebuilds_the_same_state() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        put(&mut m, "a", "2");
        let (rows, leases) = m.dump();
        let r = Mvcc::restore(rows, leases, m.revision(), m.compact_revision());
        assert_eq!(get(&r, "a", 2).unwrap().unwrap().value, b"1");
        assert_eq!(get(&r, "a", 0).unwrap().unwrap().version, 2);
    }

    #[test]
    fn history_replays_in_revision_order() {
        let mut m = Mvcc::new();
        put(&mut m, "b", "1");
        put(&mut m, "a", "1");
        put(&mut m, "b", "2");
        let ev = m.history(b"a", &prefix_end(b""), 3).unwrap();
        let revs: Vec<i64> = ev
            .iter()
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect();
        assert_eq!(revs, vec![3, 4]);
        assert_eq!(ev[1].prev_kv.as_ref().unwrap().value, b"1");
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut c = Crc32c::default();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xE306_9283);
    }

    #[test]
    fn hash_kv_depends_on_history_up_to_the_revision() {
        let mut a = Mvcc::new();
        let mut b = Mvcc::new();
        put(&mut a, "k", "1");
        put(&mut b, "k", "1");
        assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        put(&mut a, "k", "2");
        put(&mut b, "k", "3");
        assert_eq!(a.hash_kv(2).unwrap(), b.hash_kv(2).unwrap());
        assert_ne!(a.hash_kv(3).unwrap(), b.hash_kv(3).unwrap());
        assert!(a.hash_kv(4).is_err());
    }

    #[test]
    fn limits_and_sorting() {
        let mut m = Mvcc::new();
        for k in ["a", "b", "c"] {
            put(&mut m, k, k);
        }
        let r = m
            .range(&RangeRequest {
                key: "a".into(),
                range_end: vec![0],
                limit: 2,
                sort_order: range_request::SortOrder::Descend as i32,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.count, 3);
        assert!(r.more);
        assert_eq!(r.kvs[0].key, b"c");
        // An inverted range is empty, not a panic.
        let r = m
            .range(&RangeRequest {
                key: "c".into(),
                range_end: "a".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.count, 0);
    }
}
