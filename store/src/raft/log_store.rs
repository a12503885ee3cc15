//! The Raft log and vote in RocksDB.
//!
//! Column family `logs` holds entries keyed by big-endian index, `meta` the
//! vote, the last purged log id and the committed log id. The log and the
//! state machine share one RocksDB instance and so one write-ahead log: a
//! synced log append also makes every earlier state-machine write durable.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

#[derive(Clone)]
pub struct LogStore {
    // Dropped before `db`: the sync thread ends first, so the database is
    // closed by whoever drops the store, never by that thread while the
    // process is exiting.
    syncer: Arc<Syncer>,
    db: Arc<DB>,
    metrics: crate::metrics::Metrics,
}

/// The group-commit thread and the queue of appends waiting for it.
struct Syncer {
    tx: Option<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has synced what is left.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Syncs the WAL for every append waiting, as one fsync: appends that arrive
/// while a sync runs share the next one. openraft counts an entry as
/// persisted only when its callback fires, so acknowledging after the sync
/// keeps the log durable while the Raft loop never waits for the disk.
fn group_commit(
    db: Arc<DB>,
    rx: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>,
    fsync: prometheus_client::metrics::histogram::Histogram,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let result = sync_wal(&db);
        fsync.observe(started.elapsed().as_secs_f64());
        for cb in waiting {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Makes every write so far durable. The database runs with
/// `manual_wal_flush`: writes land in RocksDB's WAL buffer and reach the
/// disk only here, so that writers never wait on the disk (a write into a
/// page under writeback would block until the running fsync ends).
pub(crate) fn sync_wal(db: &DB) -> Result<(), rocksdb::Error> {
    db.flush_wal(true)
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, bincode::Error> {
    bincode::serialize(v)
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, bincode::Error> {
    bincode::deserialize(b)
}

impl LogStore {
    /// Opens the log on `db` and starts its sync thread (which the OS may
    /// refuse when out of resources).
    pub(crate) fn new(db: Arc<DB>, metrics: crate::metrics::Metrics) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let sync_db = db.clone();
        let fsync = metrics.wal_fsync.clone();
        let thread = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || group_commit(sync_db, rx, fsync))?;
        let syncer = Arc::new(Syncer {
            tx: Some(tx),
            thread: Some(thread),
        });
        Ok(Self {
            syncer,
            db,
            metrics,
        })
    }

    // Column families are created when the database is opened, with
    // these names only.
    #[allow(clippy::expect_used)]
    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| StorageIOError::read(&e))?
        else {
            return Ok(None);
        };
        Ok(Some(decode(&bytes).map_err(|e| StorageIOError::read(&e))?))
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], v: &T, sync: bool) -> Result<(), StorageError> {
        let bytes = encode(v).map_err(|e| StorageIOError::write(&e))?;
        self.db
            .put_cf(self.cf(CF_META), key, bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        if sync {
            sync_wal(&self.db).map_err(|e| StorageIOError::write(&e))?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => *x + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOGS),
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|e| StorageIOError::read_logs(&e))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = match self
            .db
            .iterator_cf(self.cf(CF_LOGS), IteratorMode::End)
            .next()
        {
            None => None,
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry<TypeConfig> =
                    decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        // A vote must be on disk before it is acknowledged: a member that
        // forgot its vote could vote twice in one term.
        self.put_meta(KEY_VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(committed) = committed {
            self.metrics
                .committed
                .set(crate::metrics::index_value(committed.index));
        }
        // Not synced: losing it only means re-learning it from the leader.
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOGS);
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        // Written to the WAL now, acknowledged once the WAL is synced.
        if let Err(e) = self.db.write(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(StorageIOError::write_logs(&e).into());
        }
        let queued = match &self.syncer.tx {
            Some(tx) => tx.send(callback),
            None => Err(std::sync::mpsc::SendError(callback)),
        };
        if let Err(std::sync::mpsc::SendError(callback)) = queued {
            // The sync thread is gone (it only ends with the store): sync here.
            let r = sync_wal(&self.db);
            callback.log_io_completed(r.map_err(|e| std::io::Error::other(e.to_string())));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .delete_range_cf(
                self.cf(CF_LOGS),
                index_key(log_id.index),
                index_key(u64::MAX),
            )
            .map_err(|e| StorageIOError::write_logs(&e))?;
        sync_wal(&self.db).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: entries at or below it are ignored
        // from then on, so a crash between the two writes is harmless.
        self.put_meta(KEY_PURGED, &log_id, true)?;
        self.db
            .delete_range_cf(self.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
