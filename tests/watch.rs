//! The Watch protocol at the gRPC level: several watches on one stream,
//! filters, prev_kv, progress requests, cancel. Runs against shoal and, as
//! the reference, against etcd.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use shoal_store::proto::etcdserverpb::watch_client::WatchClient;
use shoal_store::proto::etcdserverpb::watch_create_request::FilterType;
use shoal_store::proto::etcdserverpb::watch_request::RequestUnion;
use shoal_store::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use shoal_store::proto::mvccpb::event::EventType;
use support::{channel, kv, TestCluster};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: Streaming<WatchResponse>,
}

impl Stream {
    /// Opens a stream with its first request already queued: etcd (grpc-go)
    /// sends the response headers only with its first message.
    async fn open(url: &str, first: RequestUnion) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        tx.send(WatchRequest {
            request_union: Some(first),
        })
        .await
        .expect("queue");
        let mut client = WatchClient::new(channel(url).await.expect("channel"));
        let rx = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(r),
            })
            .await
            .expect("send");
    }

    async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a watch response in time")
            .expect("stream ok")
            .expect("stream open")
    }
}

fn create(key: &str, f: impl FnOnce(&mut WatchCreateRequest)) -> RequestUnion {
    let mut c = WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    f(&mut c);
    RequestUnion::CreateRequest(c)
}

async fn watch_protocol(c: TestCluster) {
    let url = c.members[0].client_url();
    let mut kvc = kv(&url).await.expect("kv");
    let put = |k: &str, v: &str| PutRequest {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
        ..Default::default()
    };
    // Watch 0: every change of "a", with previous values.
    let mut s = Stream::open(&url, create("a", |c| c.prev_kv = true)).await;
    let r = s.next().await;
    assert!(r.created);
    assert_eq!(r.watch_id, 0);
    // Watch 7 (chosen by the client): the "b" prefix, deletes only.
    s.send(create("b", |c| {
        c.range_end = b"c".to_vec();
        c.watch_id = 7;
        c.filters = vec![FilterType::Noput as i32];
    }))
    .await;
    let r = s.next().await;
    assert!(r.created);
    assert_eq!(r.watch_id, 7);

    kvc.put(put("a", "1")).await.expect("put");
    kvc.put(put("b1", "x")).await.expect("put");
    kvc.put(put("a", "2")).await.expect("put");
    kvc.delete_range(DeleteRangeRequest {
        key: b"b1".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");

    // Watch 0 sees both puts of "a", the second with its previous value;
    // watch 7 sees only the delete of "b1".
    let mut a_events = Vec::new();
    let mut b_events = Vec::new();
    while a_events.len() < 2 || b_events.is_empty() {
        let r = s.next().await;
        match r.watch_id {
            0 => a_events.extend(r.events),
            7 => b_events.extend(r.events),
            other => panic!("unexpected watch id {other}"),
        }
    }
    assert_eq!(a_events.len(), 2);
    assert_eq!(a_events[0].r#type, EventType::Put as i32);
    assert_eq!(
        a_events[0].kv.as_ref().map(|kv| kv.value.clone()),
        Some(b"1".to_vec())
    );
    assert!(a_events[0].prev_kv.is_none());
    assert_eq!(
        a_events[1].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(b_events.len(), 1);
    assert_eq!(b_events[0].r#type, EventType::Delete as i32);
    assert_eq!(
        b_events[0].kv.as_ref().map(|kv| kv.key.clone()),
        Some(b"b1".to_vec())
    );

    // A progress request answers with the current revision, for no watch
    // in particular.
    s.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let r = s.next().await;
    assert_eq!(r.watch_id, -1);
    assert!(r.events.is_empty());
    let rev = r.header.as_ref().map_or(0, |h| h.revision);
    assert!(rev >= 5, "progress revision {rev}");

    // A progress response comes after the events up to its revision.
    let put_rev = kvc
        .put(put("a", "2b"))
        .await
        .expect("put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    s.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    // The member may answer before it has applied the put itself (it may
    // not lead); then its progress revision is older, and we ask again.
    let mut seen = Vec::new();
    loop {
        let r = s.next().await;
        if r.watch_id == 0 {
            seen.extend(
                r.events
                    .iter()
                    .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)),
            );
        } else if r.watch_id == -1 {
            let progress = r.header.map_or(0, |h| h.revision);
            if progress >= put_rev {
                assert!(
                    seen.contains(&put_rev),
                    "progress at {progress} overtook the event at {put_rev}"
                );
                break;
            }
            s.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
                .await;
        }
    }

    // Cancel watch 0: a cancel response, then no more of its events.
    s.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 0,
    }))
    .await;
    let r = s.next().await;
    assert!(r.canceled);
    assert_eq!(r.watch_id, 0);
    kvc.put(put("a", "3")).await.expect("put");
    kvc.delete_range(DeleteRangeRequest {
        key: b"b".to_vec(),
        range_end: b"c".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete nothing");
    kvc.put(put("b2", "y")).await.expect("put");
    kvc.delete_range(DeleteRangeRequest {
        key: b"b2".to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete");
    let r = s.next().await;
    assert_eq!(r.watch_id, 7, "the cancelled watch got {r:?}");
    assert_eq!(
        r.events[0].kv.as_ref().map(|kv| kv.key.clone()),
        Some(b"b2".to_vec())
    );

    // A watch from a past revision replays history first.
    s.send(create("a", |c| c.start_revision = 2)).await;
    let r = s.next().await;
    assert!(r.created);
    let mut values = Vec::new();
    while values.len() < 4 {
        let r = s.next().await;
        values.extend(r.events.into_iter().filter_map(|e| {
            e.kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        }));
    }
    assert_eq!(values, ["1", "2", "2b", "3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_protocol_on_shoal() {
    watch_protocol(TestCluster::start(3).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_reference_watch_protocol() {
    watch_protocol(TestCluster::start_etcd(3).await).await;
}
