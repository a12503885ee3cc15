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
use tokio::sync::mpsc;

use super::read::{decode_stored, list_objects, Selectors};
use super::{Accept, Ctx};
use crate::error::{ApiError, Result};
use crate::server::Api;
use crate::storage::{self, Change};

/// Without `timeoutSeconds`, a watch ends after this long (the client
/// re-establishes it), as Kubernetes' `--min-request-timeout` does.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

pub async fn serve(api: Arc<Api>, ctx: Ctx) -> Result<Response> {
    if ctx.sub.is_some() {
        return Err(ApiError::method_not_allowed("GET"));
    }
    let selectors = Selectors::parse(&ctx)?;
    let bookmarks = ctx.flag("allowWatchBookmarks");
    let timeout = match ctx.param("timeoutSeconds") {
        Some(t) => match t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?
        {
            // 0 means "the server's default", as in Kubernetes.
            0 => DEFAULT_TIMEOUT,
            seconds => Duration::from_secs(seconds.min(24 * 3600)),
        },
        None => DEFAULT_TIMEOUT,
    };
    let rv = ctx.param("resourceVersion").map(String::from);
    let send_initial = match ctx.param("sendInitialEvents") {
        Some(v) => v == "true",
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
    let opened = api.store.watch(&prefix, start).await;
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(256);
    let ctx = Arc::new(ctx);
    let watcher = Watcher {
        ctx: ctx.clone(),
        selectors,
        bookmarks,
        tx,
    };
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

    fn bookmark(&self, revision: i64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.ctx.resource.kind, "apiVersion": self.ctx.resource.api_version(), "metadata": meta})
    }

    async fn run(
        self,
        initial: Vec<Value>,
        listed_at: i64,
        stream: impl futures::Stream<Item = storage::Result<Vec<Change>>>,
    ) {
        for object in initial {
            if !self.send("ADDED", object).await {
                return;
            }
        }
        if self.bookmarks && self.ctx.param("sendInitialEvents") == Some("true") {
            let mark = self.bookmark(listed_at, true);
            if !self.send("BOOKMARK", mark).await {
                return;
            }
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

    fn event(&self, change: Change) -> Result<Option<(&'static str, Value)>> {
        match change {
            Change::Progress(revision) => Ok(self
                .bookmarks
                .then(|| ("BOOKMARK", self.bookmark(revision, false)))),
            Change::Put { kv, prev } => {
                let object = decode_stored(&kv.value, kv.mod_revision)?;
                let now = self.selectors.matches(&object);
                let before = match &prev {
                    // Without selectors the old object always matched: it
                    // need not be decoded to tell an update from an add.
                    Some(_) if self.selectors.is_empty() => Some(true),
                    Some(p) => {
                        let old = decode_stored(&p.value, p.mod_revision)?;
                        Some(self.selectors.matches(&old))
                    }
                    None => None,
                };
                Ok(match (before, now) {
                    (None, true) => Some(("ADDED", object)),
                    (Some(true), true) => Some(("MODIFIED", object)),
                    (Some(false), true) => Some(("ADDED", object)),
                    (Some(true), false) => Some(("DELETED", object)),
                    (_, false) => None,
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
