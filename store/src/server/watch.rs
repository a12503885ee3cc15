//! The Watch service: one bidirectional stream carries any number of
//! watches, each created, fed and cancelled as etcd does it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::mvcc::MvccError;
use crate::node::Node;
use crate::proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request, watch_server, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::{event::EventType, Event};

pub struct Watch(pub Arc<Node>);

/// Progress notifications for idle watches that asked for them (etcd's
/// default interval).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

#[tonic::async_trait]
impl watch_server::Watch for Watch {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let node = self.0.clone();
        tokio::spawn(async move {
            let mut watches: HashMap<i64, (u64, JoinHandle<()>)> = HashMap::new();
            let mut next_id: i64 = 0;
            while let Some(msg) = inbound.next().await {
                let Ok(msg) = msg else { break };
                match msg.request_union {
                    Some(watch_request::RequestUnion::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watches.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        if watches.contains_key(&id) {
                            let resp = WatchResponse {
                                header: Some(node.current_header()),
                                watch_id: id,
                                created: true,
                                canceled: true,
                                cancel_reason: "etcdserver: duplicate watch ID".into(),
                                ..Default::default()
                            };
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        if let Some(w) = start(&node, id, c, tx.clone()).await {
                            watches.insert(id, w);
                        }
                    }
                    Some(watch_request::RequestUnion::CancelRequest(c)) => {
                        if let Some((sub, task)) = watches.remove(&c.watch_id) {
                            task.abort();
                            node.shared.hub.unsubscribe(sub);
                            let resp = WatchResponse {
                                header: Some(node.current_header()),
                                watch_id: c.watch_id,
                                canceled: true,
                                ..Default::default()
                            };
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                        // Not tied to one watch: the client hands it to all.
                        let resp = WatchResponse {
                            header: Some(node.current_header()),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    None => {}
                }
            }
            for (_, (sub, task)) in watches {
                task.abort();
                node.shared.hub.unsubscribe(sub);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Creates one watch: answers `created`, then replays history and follows
/// live events in a task of its own.
async fn start(
    node: &Arc<Node>,
    id: i64,
    c: WatchCreateRequest,
    tx: Out,
) -> Option<(u64, JoinHandle<()>)> {
    let created = WatchResponse {
        header: Some(node.current_header()),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    let (history, mut sub) = match node.shared.watch(&c.key, &c.range_end, c.start_revision) {
        Ok(x) => x,
        Err(MvccError::Compacted { compacted, .. }) => {
            let _ = tx.send(Ok(created)).await;
            let _ = tx
                .send(Ok(WatchResponse {
                    header: Some(node.current_header()),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted,
                    cancel_reason: "etcdserver: mvcc: required revision has been compacted".into(),
                    ..Default::default()
                }))
                .await;
            return None;
        }
        Err(e) => {
            let _ = tx.send(Err(super::mvcc_status(&e))).await;
            return None;
        }
    };
    if tx.send(Ok(created)).await.is_err() {
        node.shared.hub.unsubscribe(sub.id);
        return None;
    }
    let no_put = c.filters.contains(&(FilterType::Noput as i32));
    let no_delete = c.filters.contains(&(FilterType::Nodelete as i32));
    let filter = move |mut events: Vec<Event>| -> Vec<Event> {
        events.retain(|e| {
            let put = e.r#type == EventType::Put as i32;
            !(put && no_put || !put && no_delete)
        });
        if !c.prev_kv {
            for e in &mut events {
                e.prev_kv = None;
            }
        }
        events
    };
    let sub_id = sub.id;
    let node = node.clone();
    let task = tokio::spawn(async move {
        let send = |events: Vec<Event>| {
            let rev = events
                .last()
                .and_then(|e| e.kv.as_ref())
                .map_or(0, |kv| kv.mod_revision);
            WatchResponse {
                header: Some(node.header(rev)),
                watch_id: id,
                events,
                ..Default::default()
            }
        };
        let history = filter(history);
        if !history.is_empty() && tx.send(Ok(send(history))).await.is_err() {
            return;
        }
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.tick().await;
        let mut idle = true;
        loop {
            tokio::select! {
                batch = sub.rx.recv() => {
                    let Some(batch) = batch else { return };
                    let events = filter(batch);
                    if events.is_empty() {
                        continue;
                    }
                    idle = false;
                    if tx.send(Ok(send(events))).await.is_err() {
                        return;
                    }
                }
                _ = progress.tick(), if c.progress_notify => {
                    if idle {
                        let resp = WatchResponse {
                            header: Some(node.current_header()),
                            watch_id: id,
                            ..Default::default()
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    idle = true;
                }
            }
        }
    });
    Some((sub_id, task))
}
