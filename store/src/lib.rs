//! shoal's store: a Raft-replicated MVCC key-value store that speaks etcd's
//! v3 gRPC API, so `etcdctl` and etcd client libraries work against it.
//!
//! ```text
//!   proto      etcd v3 API + peer RPCs (generated)
//!   mvcc       the key space: revisions, history, compaction (pure)
//!   shared     what the state machine writes and the services read
//!   raft/      openraft types, RocksDB log + state machine, gRPC network
//!   node       one member: start-up, leader forwarding, background loops
//!   server/    the gRPC services (KV, Watch, Lease, Cluster, Maintenance, Peer)
//!   snapshot   backups: the file `etcdctl snapshot save` writes, restore
//! ```

pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod proto;
pub mod raft;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod tls;

pub use node::{Config, Node};
