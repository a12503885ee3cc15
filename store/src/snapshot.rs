//! Backups: `etcdctl snapshot save` and `shoal store restore`.
//!
//! A member streams its whole key space (every version since the last
//! compaction, with revisions and leases) to the Maintenance `Snapshot`
//! call. The file etcdctl writes is, as etcd's is, the data followed by
//! the SHA-256 of the data, so a damaged file is refused on restore:
//!
//! ```text
//!   "shoal-store-snapshot/1\n" | data length (u64, big endian) | data | zeros to a multiple of 512 | sha256 of what precedes
//! ```
//!
//! The data is the Raft snapshot's (bincode). The padding is for etcdctl,
//! which checks that a file is whole 512-byte pages plus a 32-byte digest,
//! as a bbolt database with its digest is.
//!
//! The format is shoal's own, not etcd's bbolt database: `etcdctl snapshot
//! status` and `etcdctl snapshot restore` cannot read it (nor can shoal
//! read etcd's). [`restore`] makes a new member's data dir from it; every
//! member of the new cluster is restored from the same file and started
//! with `--initial-cluster-state new`.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::raft::state_machine::RestoredData;
use crate::raft::types::StorageError;
use crate::shared::Shared;

const MAGIC: &[u8] = b"shoal-store-snapshot/1\n";
const DIGEST: usize = 32;
const PAGE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read snapshot file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a shoal snapshot (etcd's own snapshots cannot be restored into shoal)")]
    NotASnapshot { path: String },
    #[error("snapshot file {path} is corrupted: its SHA-256 does not match its contents")]
    Corrupted { path: String },
    #[error("data dir {path} already exists; restore into a new one")]
    DataDirExists { path: String },
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] crate::raft::OpenError),
    #[error("cannot write the restored data: {0}")]
    Write(#[from] StorageError),
}

/// The snapshot of what `shared` holds now, as a file's bytes.
pub fn save(shared: &Shared) -> Result<Vec<u8>, StorageError> {
    Ok(seal(&crate::raft::state_machine::dump(shared)?))
}

fn seal(data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 8 + data.len() + PAGE + DIGEST);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(data.len() as u64).to_be_bytes());
    bytes.extend_from_slice(data);
    bytes.resize(bytes.len().div_ceil(PAGE) * PAGE, 0);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// The data of a snapshot file, checked.
fn open<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], SnapshotError> {
    let path = path.display().to_string();
    if bytes.len() < MAGIC.len() + 8 + DIGEST || !bytes.starts_with(MAGIC) {
        return Err(SnapshotError::NotASnapshot { path });
    }
    let (sealed, digest) = bytes.split_at(bytes.len() - DIGEST);
    if Sha256::digest(sealed).as_slice() != digest {
        return Err(SnapshotError::Corrupted { path });
    }
    let rest = &sealed[MAGIC.len()..];
    let (length, rest) = rest.split_at(8);
    let mut be = [0u8; 8];
    be.copy_from_slice(length);
    usize::try_from(u64::from_be_bytes(be))
        .ok()
        .and_then(|n| rest.get(..n))
        .ok_or(SnapshotError::Corrupted { path })
}

/// Makes the data dir of a new member from snapshot `file`.
pub fn restore(file: &Path, data_dir: &Path) -> Result<RestoredData, SnapshotError> {
    let bytes = std::fs::read(file).map_err(|source| SnapshotError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let data = open(&bytes, file)?;
    if data_dir.exists() {
        return Err(SnapshotError::DataDirExists {
            path: data_dir.display().to_string(),
        });
    }
    std::fs::create_dir_all(data_dir).map_err(|source| SnapshotError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let (_log, mut sm) =
        crate::raft::open_storage(&data_dir.join("db"), Arc::new(Shared::default()))?;
    Ok(sm.restore(data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_open_and_damaged_ones_do_not() {
        let path = Path::new("backup.db");
        let sealed = seal(b"data");
        assert_eq!(sealed.len() % PAGE, DIGEST);
        assert_eq!(open(&sealed, path).unwrap(), b"data");
        let mut flipped = sealed.clone();
        flipped[MAGIC.len()] ^= 1;
        assert!(matches!(
            open(&flipped, path),
            Err(SnapshotError::Corrupted { .. })
        ));
        let cut = &sealed[..sealed.len() - 1];
        assert!(matches!(
            open(cut, path),
            Err(SnapshotError::Corrupted { .. })
        ));
        assert!(matches!(
            open(b"bolt", path),
            Err(SnapshotError::NotASnapshot { .. })
        ));
    }
}
