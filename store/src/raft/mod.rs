//! Replication: openraft with its log and state machine in RocksDB and its
//! RPCs over gRPC.

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod storage_suite;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::shared::Shared;
use log_store::{LogStore, CF_LOGS, CF_META};
use state_machine::{StateMachine, CF_KV, CF_SM, CF_SNAPSHOT};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database in {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("cannot start the log sync thread: {0}")]
    SyncThread(#[source] std::io::Error),
    #[error("cannot load the state machine: {0}")]
    Load(#[from] types::StorageError),
}

/// Opens (or creates) the RocksDB database at `path` and the log store and
/// state machine that share it; the state machine loads into `shared`.
pub fn open_storage(
    path: &Path,
    shared: Arc<Shared>,
) -> Result<(LogStore, StateMachine), OpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // The WAL is written to disk only when synced (see `log_store::sync_wal`).
    opts.set_manual_wal_flush(true);
    let cfs = [CF_LOGS, CF_META, CF_KV, CF_SM, CF_SNAPSHOT]
        .into_iter()
        .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| OpenError::Database {
        path: path.display().to_string(),
        source,
    })?;
    let db = Arc::new(db);
    let metrics = shared.metrics.clone();
    let sm = StateMachine::open(db.clone(), shared)?;
    let log = LogStore::new(db, metrics).map_err(OpenError::SyncThread)?;
    Ok((log, sm))
}
