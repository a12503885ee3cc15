//! The Raft type configuration: what the log carries and what applying it
//! answers.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::mvcc::MvccError;

/// Member ids are etcd's: 64-bit, printed in hex.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of the store.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A member as Raft knows it: where its peers reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_urls: Vec<String>,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.peer_urls.join(","))
    }
}

/// What a member publishes about itself once it runs (etcd's member
/// attributes): shown by `member list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAttrs {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// A replicated command. Requests of the etcd API travel in their protobuf
/// encoding, so the log holds exactly what the client asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Put(#[serde(with = "serde_bytes")] Vec<u8>),
    DeleteRange(#[serde(with = "serde_bytes")] Vec<u8>),
    Txn(#[serde(with = "serde_bytes")] Vec<u8>),
    Compact(i64),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A member announces its name and client URLs.
    Publish {
        id: NodeId,
        attrs: MemberAttrs,
    },
    /// Requests gathered by one member while earlier ones were in flight,
    /// applied one after the other (each at its own revision).
    Batch(Vec<Request>),
}

impl Request {
    /// About how many bytes the request takes in the log.
    pub fn approx_size(&self) -> usize {
        match self {
            Request::Put(b) | Request::DeleteRange(b) | Request::Txn(b) => b.len() + 16,
            Request::Batch(reqs) => reqs.iter().map(Request::approx_size).sum::<usize>() + 8,
            _ => 64,
        }
    }
}

/// The answer of applying one command: the store revision after it, and the
/// protobuf-encoded response of the matching etcd call or the reason it
/// failed (failing commands change nothing).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub revision: i64,
    pub result: Option<Result<ByteBuf, MvccError>>,
    /// For a batch: the response of each request, in order.
    pub batch: Vec<Response>,
}

/// Bytes that serialize compactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteBuf(#[serde(with = "serde_bytes")] pub Vec<u8>);
