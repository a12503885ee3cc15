//! Generates the etcd v3 API (wire-compatible with etcd) and the peer RPCs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcd/mvccpb/kv.proto",
        "proto/etcd/authpb/auth.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/shoal/peer.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .bytes(".shoal.peer")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
