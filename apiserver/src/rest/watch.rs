//! `?watch=1`: a store watch turned into Kubernetes watch events, one JSON
//! object per line (`{"type":"ADDED","object":{...}}`).
//!
//! resourceVersion semantics as Kubernetes has them: unset or "0" first
//! sends the current objects as ADDED, a version N sends every change after
//! N; a compacted N ends in an ERROR event with 410 Expired. Selectors are
//! applied to both sides of a change, so an object that stops matching is
//! seen as DELETED and one that starts matching as ADDED.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use http::{header, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::read::{decode_stored, list_objects, Selectors};
use super::{Accept, Ctx};
use crate::error::{ApiError, Result};
use crate::server::Api;
use crate::storage::{self, Change};
use crate::watch_cache::{Event, Subscription};

/// Without `timeoutSeconds`, a watch ends after this long (the client
/// re-establishes it), as Kubernetes' `--min-request-timeout` does.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub async fn serve(api: Arc<Api>, ctx: Ctx) -> Result<Response> {
    if ctx.sub.is_some() {
        return Err(ApiError::method_not_allowed("GET"));
    }
    let selectors = Selectors::parse(&ctx)?;
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let timeout = match ctx.query.int("timeoutSeconds")? {
        // Unset or 0 means "the server's default", as in Kubernetes; a
        // negative one has already run out.
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(seconds) => Duration::from_secs(seconds.clamp(0, 24 * 3600) as u64),
    };
    let rv = ctx.param("resourceVersion").map(String::from);
    let send_initial = match ctx.query.raw("sendInitialEvents") {
        Some(_) => ctx.flag("sendInitialEvents"),
        None => rv.as_deref().is_none_or(|rv| rv == "0"),
    };
    let mut initial = Vec::new();
    let start = if send_initial {
        let (items, revision, _) = list_objects(&api, &ctx, &selectors, 0, None).await?;
        initial = items;
        revision + 1
    } else {
        match rv.as_deref() {
            Some(rv) => {
                rv.parse::<i64>()
                    .ok()
                    .filter(|v| (0..i64::MAX).contains(v))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid resource version {rv:?}"))
                    })?
                    + 1
            }
            None => api.store.revision().await? + 1,
        }
    };
    let prefix = ctx.storage().prefix(ctx.namespace.as_deref());
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(256);
    let ctx = Arc::new(ctx);
    let watcher = Watcher {
        ctx: ctx.clone(),
        selectors,
        bookmarks,
        tx,
    };
    // The kind's shared store watch when it covers `start`, else one of
    // its own.
    let root = ctx.storage().prefix(None);
    if let Some(subscription) = api.watches.subscribe(&api.store, &root, start).await {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                timeout,
                watcher.run_shared(initial, start - 1, subscription, prefix),
            )
            .await;
        });
        return respond(rx);
    }
    let opened = api.store.watch(&prefix, start).await;
    match opened {
        Err(storage::Error::Compacted { .. }) => {
            let error = ApiError::gone(format!(
                "too old resource version: {} ({})",
                start - 1,
                start
            ));
            watcher.send("ERROR", error.status()).await;
        }
        Err(other) => return Err(other.into()),
        Ok(stream) => {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(timeout, watcher.run(initial, start - 1, stream)).await;
            });
        }
    }
    respond(rx)
}

/// The streaming response that carries a watch's events.
fn respond(rx: mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>) -> Result<Response> {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

struct Watcher {
    ctx: Arc<Ctx>,
    selectors: Selectors,
    bookmarks: bool,
    tx: mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

impl Watcher {
    /// Sends one event; false once the client has gone.
    async fn send(&self, kind: &str, object: Value) -> bool {
        let object = crate::convert::to_served(self.ctx.resource, object);
        let object = match &self.ctx.accept {
            Accept::Table { include } if kind != "ERROR" && kind != "BOOKMARK" => {
                crate::table::table(self.ctx.resource, &object, include)
            }
            _ => object,
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Ok(line.into())).await.is_ok()
    }

    /// Sends one event of a shared object: serialized in place when the
    /// client sees it as stored, else through [`Watcher::send`].
    async fn send_shared(&self, kind: &'static str, object: &Value) -> bool {
        let as_stored = crate::convert::served_as_stored(self.ctx.resource)
            && !matches!(self.ctx.accept, Accept::Table { .. });
        if !as_stored {
            return self.send(kind, object.clone()).await;
        }
        #[derive(serde::Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            object: &'a Value,
        }
        let mut line = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Ok(line.into())).await.is_ok()
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.ctx.resource.kind, "apiVersion": self.ctx.resource.api_version(), "metadata": meta})
    }

    /// The objects listed before the watch, as ADDED, and the bookmark
    /// that ends them when asked for; false once the client has gone.
    async fn send_initial(&self, initial: Vec<Value>, listed_at: i64) -> bool {
        for object in initial {
            if !self.send("ADDED", object).await {
                return false;
            }
        }
        if self.bookmarks && self.ctx.flag("sendInitialEvents") {
            let mark = self.bookmark(listed_at, true);
            return self.send("BOOKMARK", mark).await;
        }
        true
    }

    async fn run(
        self,
        initial: Vec<Value>,
        listed_at: i64,
        stream: impl futures::Stream<Item = storage::Result<Vec<Change>>>,
    ) {
        if !self.send_initial(initial, listed_at).await {
            return;
        }
        futures::pin_mut!(stream);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                () = self.tx.closed() => return,
            };
            let changes = match next {
                Some(Ok(changes)) => changes,
                Some(Err(storage::Error::Compacted { .. })) => {
                    let error =
                        ApiError::gone("The resourceVersion for the provided watch is too old.");
                    self.send("ERROR", error.status()).await;
                    return;
                }
                Some(Err(e)) => {
                    // The store watch broke (a member went away): end the
                    // watch so the client re-establishes it from its last
                    // version, as it does after any watch ends.
                    tracing::debug!(error = %e, "store watch ended");
                    return;
                }
                None => return,
            };
            for change in changes {
                let event = match self.event(change) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e.message, "skipping an undecodable stored object");
                        continue;
                    }
                };
                if !self.send(event.0, event.1).await {
                    return;
                }
            }
        }
    }

    /// The initial objects, then the changes of a shared store watch.
    async fn run_shared(
        self,
        initial: Vec<Value>,
        listed_at: i64,
        subscription: Subscription,
        prefix: String,
    ) {
        if !self.send_initial(initial, listed_at).await {
            return;
        }
        let start = subscription.start;
        for event in &subscription.backlog {
            if !self.deliver(event, &prefix, start).await {
                return;
            }
        }
        let mut live = subscription.live;
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                () = self.tx.closed() => return,
            };
            match next {
                Ok(event) => {
                    if !self.deliver(&event, &prefix, start).await {
                        return;
                    }
                }
                // Too far behind, or the shared watch ended: the client
                // watches again from the last version it saw.
                Err(broadcast::error::RecvError::Lagged(_))
                | Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends what a shared change means to this watch; false once the
    /// client has gone.
    async fn deliver(&self, event: &Event, prefix: &str, start: i64) -> bool {
        if event.key().is_some_and(|key| !key.starts_with(prefix)) {
            return true;
        }
        // Before this watch's start (a progress notification may be for
        // the version just before it).
        let first = match event {
            Event::Progress(_) => start - 1,
            _ => start,
        };
        if event.revision() < first {
            return true;
        }
        match event {
            Event::Progress(revision) => {
                if !self.bookmarks {
                    return true;
                }
                let mark = self.bookmark(*revision, false);
                self.send("BOOKMARK", mark).await
            }
            Event::Put {
                object,
                prev,
                revision,
                ..
            } => {
                let now = self.selectors.matches(object);
                let (before, old) = match prev {
                    None => (None, None),
                    Some(_) if self.selectors.is_empty() => (Some(true), None),
                    Some(prev) => match prev.object() {
                        Some(old) => (Some(self.selectors.matches(old)), Some(old)),
                        None => {
                            tracing::warn!("skipping an undecodable stored object");
                            return true;
                        }
                    },
                };
                match (kind_of(before, now), old) {
                    // Stopped matching: Kubernetes sends the object as it
                    // was, at the change's version.
                    (Some("DELETED"), Some(old)) => {
                        let mut old = (**old).clone();
                        crate::object::meta_mut(&mut old)
                            .insert("resourceVersion".into(), revision.to_string().into());
                        self.send("DELETED", old).await
                    }
                    (Some(kind), _) => self.send_shared(kind, object).await,
                    (None, _) => true,
                }
            }
            Event::Delete { object, .. } => {
                if !self.selectors.matches(object) {
                    return true;
                }
                self.send_shared("DELETED", object).await
            }
        }
    }

    fn event(&self, change: Change) -> Result<Option<(&'static str, Value)>> {
        match change {
            Change::Progress(revision) => Ok(self
                .bookmarks
                .then(|| ("BOOKMARK", self.bookmark(revision, false)))),
            Change::Put { kv, prev } => {
                let object = decode_stored(&kv.value, kv.mod_revision)?;
                let now = self.selectors.matches(&object);
                let (before, old) = match &prev {
                    // Without selectors the old object always matched: it
                    // need not be decoded to tell an update from an add.
                    Some(_) if self.selectors.is_empty() => (Some(true), None),
                    Some(p) => {
                        // At the change's version, as it is sent when the
                        // object stops matching.
                        let old = decode_stored(&p.value, kv.mod_revision)?;
                        (Some(self.selectors.matches(&old)), Some(old))
                    }
                    None => (None, None),
                };
                Ok(match kind_of(before, now) {
                    Some("DELETED") => old.map(|old| ("DELETED", old)),
                    kind => kind.map(|kind| (kind, object)),
                })
            }
            Change::Delete { kv, prev } => {
                let Some(prev) = prev else { return Ok(None) };
                // The deleted object, at the revision of its deletion.
                let object = decode_stored(&prev.value, kv.mod_revision)?;
                Ok(self
                    .selectors
                    .matches(&object)
                    .then_some(("DELETED", object)))
            }
        }
    }
}

/// The event a change is for a watch with selectors: whether the object
/// matched before the change (`None`: it did not exist) and matches now.
fn kind_of(before: Option<bool>, now: bool) -> Option<&'static str> {
    match (before, now) {
        (None, true) | (Some(false), true) => Some("ADDED"),
        (Some(true), true) => Some("MODIFIED"),
        (Some(true), false) => Some("DELETED"),
        (_, false) => None,
    }
}
