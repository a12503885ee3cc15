//! Generated gRPC code: etcd's v3 API (same packages and field numbers as
//! etcd, so etcdctl and etcd client libraries speak to us unmodified) and the
//! peer RPCs between members.
#![allow(clippy::all, missing_docs, unreachable_pub)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod authpb {
    tonic::include_proto!("authpb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod peer {
    tonic::include_proto!("shoal.peer");
}
