//! The Watch service: one bidirectional stream carries any number of
//! watches, each created, fed and cancelled as etcd does it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::shared::Item;

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
            let mut watches: HashMap<i64, (Arc<AtomicU64>, JoinHandle<()>)> = HashMap::new();
            let mut next_id: i64 = 0;
            loop {
                // A stopping member ends its watch streams, so that the
                // server can finish shutting down.
                let msg = tokio::select! {
                    msg = inbound.next() => msg,
                    _ = node.stopped() => break,
                };
                let Some(Ok(msg)) = msg else { break };
                match msg.request_union {
                    Some(watch_request::RequestUnion::CreateRequest(c)) => {
                        // A watch that ended by itself (compacted, failed)
                        // frees its id.
                        watches.retain(|_, (_, task)| !task.is_finished());
                        // Ids the server picks only go up, as etcd's do.
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watches.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id += 1;
                            next_id - 1
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
                            node.shared.hub.unsubscribe(sub.load(Ordering::Relaxed));
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
                        // Answered (for no watch in particular: watch id -1)
                        // once every watch has sent the events up to the
                        // revision it reports; with no watch, at once.
                        let subs: Vec<u64> = watches
                            .values()
                            .map(|(sub, _)| sub.load(Ordering::Relaxed))
                            .collect();
                        let round = node.shared.hub.progress(&subs);
                        if subs.is_empty() {
                            let resp = progress_response(&node, -1, round.revision);
                            if tx.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                    None => {}
                }
            }
            for (_, (sub, task)) in watches {
                task.abort();
                node.shared.hub.unsubscribe(sub.load(Ordering::Relaxed));
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
) -> Option<(Arc<AtomicU64>, JoinHandle<()>)> {
    let created = WatchResponse {
        header: Some(node.current_header()),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    let (history, sub) = match node.shared.watch(&c.key, &c.range_end, c.start_revision) {
        Ok(x) => x,
        Err(e @ MvccError::Compacted { .. }) => {
            let _ = tx.send(Ok(created)).await;
            let _ = tx.send(Ok(cancelled(node, id, &e))).await;
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
    let mut sub = sub;
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
    let sub_id = Arc::new(AtomicU64::new(sub.id));
    let current_sub = sub_id.clone();
    let node = node.clone();
    let task = tokio::spawn(async move {
        // The next revision this watch has to deliver.
        let mut next_rev = sub.from;
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
        if let Some(rev) = last_rev(&history) {
            next_rev = rev + 1;
        }
        let history = filter(history);
        if !history.is_empty() && tx.send(Ok(send(history))).await.is_err() {
            return;
        }
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.tick().await;
        let mut idle = true;
        loop {
            tokio::select! {
                item = sub.rx.recv() => {
                    let batch = match item {
                        Some(Item::Events(batch)) => batch,
                        Some(Item::Progress(round)) => {
                            // The last watch of the stream to pass the marker
                            // answers the progress request.
                            let last = round.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
                            if last && !round.failed.load(Ordering::Acquire) {
                                let resp = progress_response(&node, -1, round.revision);
                                if tx.send(Ok(resp)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        None => {
                            // Dropped for falling behind: resume from history.
                            let (history, resumed) =
                                match node.shared.watch(&c.key, &c.range_end, next_rev) {
                                    Ok(x) => x,
                                    Err(e) => {
                                        let _ = tx.send(Ok(cancelled(&node, id, &e))).await;
                                        return;
                                    }
                                };
                            sub = resumed;
                            current_sub.store(sub.id, Ordering::Relaxed);
                            if let Some(rev) = last_rev(&history) {
                                next_rev = rev + 1;
                            }
                            let history = filter(history);
                            if !history.is_empty() && tx.send(Ok(send(history))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    if let Some(rev) = last_rev(&batch) {
                        next_rev = rev + 1;
                    }
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
                    // Everything up to `published` was queued before it was
                    // set, so with an empty queue it has all been sent.
                    let published = node.shared.hub.published();
                    if idle && sub.rx.is_empty() {
                        let resp = progress_response(&node, id, published);
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

/// A progress notification: no events, the revision the watch is at.
fn progress_response(node: &Node, watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: Some(node.header(revision)),
        watch_id,
        ..Default::default()
    }
}

/// The revision of the last event of a batch.
fn last_rev(events: &[Event]) -> Option<i64> {
    events
        .last()
        .and_then(|e| e.kv.as_ref())
        .map(|kv| kv.mod_revision)
}

/// The response that ends a watch that cannot go on: its start revision
/// was compacted (etcd reports the compaction revision) or it failed.
fn cancelled(node: &Node, id: i64, e: &MvccError) -> WatchResponse {
    let compact_revision = match e {
        MvccError::Compacted { compacted, .. } => *compacted,
        _ => 0,
    };
    WatchResponse {
        header: Some(node.current_header()),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: format!("etcdserver: {e}"),
        ..Default::default()
    }
}
