//! Bad input gets an error in etcd's terms, never a panic or a stuck
//! connection, and the cluster keeps serving afterwards.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shoal_store::proto::etcdserverpb::{
    request_op, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use shoal_store::proto::peer::peer_client::PeerClient;
use shoal_store::proto::peer::Payload;
use support::{kv, TestCluster};
use tonic::Code;

fn put(key: &str, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    }
}

/// Writes garbage to a port and expects the server to close the
/// connection (or answer and close) rather than hang.
fn garbage(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = s.write_all(&junk);
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("port {port}: connection neither answered nor closed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_etcd_errors() {
    let c = TestCluster::start(3).await;
    let url = c.members[0].client_url();
    let mut client = kv(&url).await.expect("client");

    // Over --max-request-bytes (1.5 MiB) but within gRPC's allowance.
    let err = client
        .put(put("big", vec![b'x'; 1_600_000]))
        .await
        .expect_err("oversized put");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");
    // Far over it: refused by the gRPC layer itself, before decoding (etcd's
    // grpc-go says ResourceExhausted, tonic says OutOfRange).
    let err = client
        .put(put("huge", vec![b'x'; 3_000_000]))
        .await
        .expect_err("huge put");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{err:?}");
    // Just under it: fine.
    client
        .put(put("large", vec![b'x'; 1_500_000]))
        .await
        .expect("a large put within the limit");

    let err = client
        .put(put("", b"v".to_vec()))
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: key is not provided");

    let ops: Vec<RequestOp> = (0..129)
        .map(|i| RequestOp {
            request: Some(request_op::Request::RequestPut(put(
                &format!("t{i}"),
                vec![],
            ))),
        })
        .collect();
    let err = client
        .txn(TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .expect_err("too many ops");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "etcdserver: too many operations in txn request"
    );

    let err = client
        .range(RangeRequest {
            key: b"a".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .expect_err("future revision");
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );

    // Garbage on the client and the peer port of every member.
    for m in &c.members {
        garbage(m.client_port);
        garbage(m.peer_port);
    }
    // A well-formed gRPC call with a payload that is not a peer message.
    let mut peer = PeerClient::new(
        support::channel(&c.members[1].peer_url())
            .await
            .expect("peer"),
    );
    let err = peer
        .append_entries(Payload {
            data: vec![0xff; 64].into(),
        })
        .await
        .expect_err("malformed peer message");
    assert_eq!(err.code(), Code::InvalidArgument);

    // A watch on an inverted range and a cancel of an unknown watch: the
    // stream stays usable.
    let mut watch = shoal_store::proto::etcdserverpb::watch_client::WatchClient::new(
        support::channel(&url).await.expect("channel"),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(
            shoal_store::proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"z".to_vec(),
                    range_end: b"a".to_vec(),
                    ..Default::default()
                },
            ),
        ),
    })
    .await
    .expect("send");
    let mut stream = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("answer in time")
        .expect("stream ok")
        .expect("a response");
    assert!(created.created);

    // Everything still works, on every member.
    for m in &c.members {
        let mut cl = kv(&m.client_url()).await.expect("client");
        cl.put(put("still-alive", b"yes".to_vec()))
            .await
            .expect("put after bad input");
    }
    assert_eq!(c.etcdctl_ok(&["get", "still-alive"]), "still-alive\nyes\n");
}
