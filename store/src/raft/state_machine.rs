//! The Raft state machine: applies committed commands to the MVCC key space
//! and persists the result in RocksDB.
//!
//! Column family `kv` holds one row per key version (row key = revision,
//! see [`Rev::to_row_key`]), `sm` the applied log id, membership, revisions,
//! member attributes and leases, `snapshot` the latest snapshot. Every
//! applied batch is one RocksDB write batch, so rows and `last_applied`
//! never disagree; it is not synced on its own (the next synced log append
//! or snapshot makes it durable, and until then the log can replay it).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode, sync_wal};
use super::types::{
    ByteBuf, LogId, Member, MemberAttrs, NodeId, Request, Response, StorageError, StoredMembership,
    TypeConfig,
};
use crate::mvcc::{Changes, Mvcc, RowOp};
use crate::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};
use crate::proto::mvccpb::KeyValue;
use crate::shared::Shared;

pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_SM: &str = "sm";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_REVISIONS: &[u8] = b"revisions";
const KEY_MEMBERS: &[u8] = b"members";
const KEY_SNAPSHOT: &[u8] = b"current";
const LEASE_PREFIX: &[u8] = b"lease/";

pub struct StateMachine {
    db: Arc<DB>,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// What a snapshot carries: the whole key space with its history.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    current: i64,
    compacted: i64,
    rows: Vec<(ByteBuf, ByteBuf)>,
    leases: Vec<(i64, i64)>,
    members: BTreeMap<NodeId, MemberAttrs>,
}

/// The state machine's metadata row by row (see [`StateMachine::put_meta`]).
struct SmMeta<'a> {
    revisions: (i64, i64),
    applied: &'a Option<LogId>,
    membership: &'a StoredMembership,
    members: &'a BTreeMap<NodeId, MemberAttrs>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    data: ByteBuf,
}

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = LEASE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// Opens the state machine persisted in `db` and loads it into `shared`.
    pub(crate) fn open(db: Arc<DB>, shared: Arc<Shared>) -> Result<Self, StorageError> {
        let mut sm = StateMachine {
            db,
            shared,
            last_applied: None,
            membership: StoredMembership::default(),
        };
        sm.load()?;
        Ok(sm)
    }

    // Column families are created when the database is opened, with
    // these names only.
    #[allow(clippy::expect_used)]
    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get_cf(self.cf(CF_SM), key).map_err(sm_err)? {
            None => Ok(None),
            Some(b) => Ok(Some(decode(&b).map_err(sm_err)?)),
        }
    }

    /// Rebuilds the in-memory state from the persisted rows.
    fn load(&mut self) -> Result<(), StorageError> {
        self.last_applied = self.get::<Option<LogId>>(KEY_APPLIED)?.flatten();
        self.membership = self.get(KEY_MEMBERSHIP)?.unwrap_or_default();
        let (current, compacted): (i64, i64) = self.get(KEY_REVISIONS)?.unwrap_or((0, 0));
        let members: BTreeMap<NodeId, MemberAttrs> = self.get(KEY_MEMBERS)?.unwrap_or_default();

        let mut rows = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_KV), IteratorMode::Start) {
            let (k, v) = item.map_err(sm_err)?;
            let kv = KeyValue::decode(v.as_ref()).map_err(sm_err)?;
            rows.push((k.to_vec(), kv));
        }
        let mut leases = Vec::new();
        let iter = self.db.prefix_iterator_cf(self.cf(CF_SM), LEASE_PREFIX);
        for item in iter {
            let (k, v) = item.map_err(sm_err)?;
            let Some(id) = k.strip_prefix(LEASE_PREFIX) else {
                break;
            };
            let Ok(id) = <[u8; 8]>::try_from(id) else {
                break;
            };
            let ttl: i64 = decode(&v).map_err(sm_err)?;
            leases.push((i64::from_be_bytes(id), ttl));
        }
        self.shared.leases.reset(leases.iter().copied());
        let restored = Mvcc::restore(rows, leases, current, compacted);
        self.shared.hub.set_published(restored.revision());
        *self.shared.mvcc_mut() = restored;
        self.shared.set_members(members);
        Ok(())
    }

    fn apply_request(&self, req: &Request, changes: &mut Changes) -> Response {
        if let Request::Batch(reqs) = req {
            let batch: Vec<Response> = reqs
                .iter()
                .map(|r| self.apply_request(r, changes))
                .collect();
            return Response {
                revision: self.shared.mvcc().revision(),
                result: None,
                batch,
            };
        }
        fn decoded<M: Message + Default>(b: &[u8]) -> Option<M> {
            M::decode(b).ok()
        }
        let mut mvcc = self.shared.mvcc_mut();
        let result = match req {
            Request::Put(b) => decoded::<PutRequest>(b)
                .map(|r| mvcc.put(&r, changes).map(|resp| resp.encode_to_vec())),
            Request::DeleteRange(b) => decoded::<DeleteRangeRequest>(b).map(|r| {
                mvcc.delete_range(&r, changes)
                    .map(|resp| resp.encode_to_vec())
            }),
            Request::Txn(b) => decoded::<TxnRequest>(b)
                .map(|r| mvcc.txn(&r, changes).map(|resp| resp.encode_to_vec())),
            Request::Compact(rev) => Some(mvcc.compact(*rev, changes).map(|_| Vec::new())),
            Request::LeaseGrant { id, ttl } => {
                Some(mvcc.lease_grant(*id, *ttl, changes).map(|_| Vec::new()))
            }
            Request::LeaseRevoke { id } => {
                Some(mvcc.lease_revoke(*id, changes).map(|_| Vec::new()))
            }
            Request::Publish { id, attrs } => {
                self.shared.publish_member(*id, attrs.clone());
                Some(Ok(Vec::new()))
            }
            Request::Batch(_) => None,
        };
        Response {
            revision: mvcc.revision(),
            // A command that does not decode was never accepted by a member
            // (they encode it themselves); it applies as a no-op.
            result: result.map(|r| r.map(ByteBuf)),
            batch: Vec::new(),
        }
    }

    fn persist(&self, changes: &Changes) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for row in &changes.rows {
            match row {
                RowOp::PutRev { key, kv } => batch.put_cf(self.cf(CF_KV), key, kv.encode_to_vec()),
                RowOp::DeleteRev { key } => batch.delete_cf(self.cf(CF_KV), key),
                RowOp::PutLease { id, ttl } => batch.put_cf(
                    self.cf(CF_SM),
                    lease_key(*id),
                    encode(ttl).map_err(sm_write_err)?,
                ),
                RowOp::DeleteLease { id } => batch.delete_cf(self.cf(CF_SM), lease_key(*id)),
            }
        }
        let (current, compacted) = {
            let m = self.shared.mvcc();
            (m.revision(), m.compact_revision())
        };
        self.put_meta(
            &mut batch,
            &SmMeta {
                revisions: (current, compacted),
                applied: &self.last_applied,
                membership: &self.membership,
                members: &self.shared.members(),
            },
        )?;
        let started = std::time::Instant::now();
        let written = self.db.write(batch).map_err(sm_write_err);
        self.shared
            .metrics
            .backend_commit
            .observe(started.elapsed().as_secs_f64());
        written
    }

    /// Adds the state machine's metadata to a write batch: it always
    /// changes together with the rows it describes.
    fn put_meta(&self, batch: &mut WriteBatch, m: &SmMeta<'_>) -> Result<(), StorageError> {
        let sm = self.cf(CF_SM);
        batch.put_cf(
            sm,
            KEY_REVISIONS,
            encode(&m.revisions).map_err(sm_write_err)?,
        );
        batch.put_cf(sm, KEY_APPLIED, encode(m.applied).map_err(sm_write_err)?);
        batch.put_cf(
            sm,
            KEY_MEMBERSHIP,
            encode(m.membership).map_err(sm_write_err)?,
        );
        batch.put_cf(sm, KEY_MEMBERS, encode(m.members).map_err(sm_write_err)?);
        Ok(())
    }

    fn snapshot_data(&self) -> Result<Vec<u8>, StorageError> {
        dump(&self.shared)
    }

    /// Replaces the persisted key space, leases and metadata with `data`,
    /// then reloads it.
    fn replace(
        &mut self,
        data: &SnapshotData,
        applied: &Option<LogId>,
        membership: &StoredMembership,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        // Row keys are 16 or 17 bytes; every lease row starts with
        // "lease/" (and "lease0" is the first key after them).
        batch.delete_range_cf(self.cf(CF_KV), &[][..], &[0xff; 18][..]);
        batch.delete_range_cf(self.cf(CF_SM), LEASE_PREFIX, b"lease0");
        for (k, v) in &data.rows {
            batch.put_cf(self.cf(CF_KV), &k.0, &v.0);
        }
        for (id, ttl) in &data.leases {
            batch.put_cf(
                self.cf(CF_SM),
                lease_key(*id),
                encode(ttl).map_err(sm_write_err)?,
            );
        }
        self.put_meta(
            &mut batch,
            &SmMeta {
                revisions: (data.current, data.compacted),
                applied,
                membership,
                members: &data.members,
            },
        )?;
        self.db.write(batch).map_err(sm_write_err)?;
        self.load()
    }

    /// Fills a new member's empty state machine from a snapshot's data
    /// (`etcdctl snapshot save`): the keys with their history and
    /// revisions, and the leases; not the old cluster's members, nor any
    /// Raft state (the new cluster starts its own log). Synced.
    pub(crate) fn restore(&mut self, data: &[u8]) -> Result<RestoredData, StorageError> {
        let mut data: SnapshotData = decode(data).map_err(sm_err)?;
        data.members.clear();
        self.replace(&data, &None, &StoredMembership::default())?;
        sync_wal(&self.db).map_err(sm_write_err)?;
        Ok(RestoredData {
            revision: data.current,
            compacted: data.compacted,
            rows: data.rows.len(),
            leases: data.leases.len(),
        })
    }
}

/// What a restore put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredData {
    pub revision: i64,
    pub compacted: i64,
    /// Key versions (the history included).
    pub rows: usize,
    pub leases: usize,
}

/// The whole key space with its history, the leases and the members, as a
/// snapshot carries them.
pub(crate) fn dump(shared: &Shared) -> Result<Vec<u8>, StorageError> {
    let m = shared.mvcc();
    let (rows, leases) = m.dump();
    let data = SnapshotData {
        current: m.revision(),
        compacted: m.compact_revision(),
        rows: rows
            .into_iter()
            .map(|(k, kv)| (ByteBuf(k), ByteBuf(kv.encode_to_vec())))
            .collect(),
        leases,
        members: shared.members(),
    };
    encode(&data).map_err(sm_err)
}

fn save_snapshot(
    db: &DB,
    meta: &SnapshotMeta<NodeId, Member>,
    data: &[u8],
) -> Result<(), StorageError> {
    let stored = StoredSnapshot {
        meta: meta.clone(),
        data: ByteBuf(data.to_vec()),
    };
    let bytes =
        encode(&stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    // Synced: it also makes every state-machine write before it durable,
    // which must hold before the log it covers is purged.
    let cf = db.cf_handle(CF_SNAPSHOT).ok_or_else(|| {
        StorageIOError::write_snapshot(
            Some(meta.signature()),
            &std::io::Error::other("the snapshot column family is missing"),
        )
    })?;
    db.put_cf(cf, KEY_SNAPSHOT, bytes)
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    sync_wal(db).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
    Ok(())
}

/// Builds a snapshot from the state captured when it was requested.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    meta: SnapshotMeta<NodeId, Member>,
    data: Result<Vec<u8>, StorageError>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new()))?;
        save_snapshot(&self.db, &self.meta, &data)?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut changes = Changes::default();
        let mut responses = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let resp = match &entry.payload {
                EntryPayload::Blank => Response {
                    revision: self.shared.mvcc().revision(),
                    ..Default::default()
                },
                EntryPayload::Normal(req) => self.apply_request(req, &mut changes),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Response {
                        revision: self.shared.mvcc().revision(),
                        ..Default::default()
                    }
                }
            };
            responses.push(resp);
        }
        self.persist(&changes)?;
        if let Some(applied) = self.last_applied {
            self.shared
                .metrics
                .applied
                .set(crate::metrics::index_value(applied.index));
        }
        // A lease granted and revoked (or revoked and granted again) in one
        // batch: its clock follows whether it exists now.
        for id in &changes.revoked {
            if self.shared.mvcc().lease(*id).is_none() {
                self.shared.leases.revoked(*id);
            }
        }
        for (id, ttl) in &changes.granted {
            if self.shared.mvcc().lease(*id).is_some() {
                self.shared.leases.granted(*id, *ttl);
            }
        }
        self.shared.hub.publish(&changes.events);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let last = self.last_applied;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("--{}", rand::random::<u32>()),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data: self.snapshot_data(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = decode(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;

        // Replace the persisted state wholesale, then reload it.
        self.replace(&data, &meta.last_log_id, &meta.last_membership)?;
        save_snapshot(&self.db, meta, &bytes)?;
        // Live watches missed whatever the snapshot skipped over: let them
        // resume from the new history (or learn it was compacted).
        self.shared.hub.drop_all();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_SNAPSHOT), KEY_SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot =
            decode(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.0)),
        }))
    }
}
