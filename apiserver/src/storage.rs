//! The apiserver's view of the store: an etcd v3 client over tonic that fails
//! over between the configured endpoints (any of them may be down), and the
//! few operations the REST layer is built from.
//!
//! Every write is a `Txn` guarded by a compare on the key's revision, which is
//! how Kubernetes gets optimistic concurrency out of etcd: create requires
//! `create_revision == 0`, update and delete require `mod_revision == rv`.
//!
//! With an encryption configuration (`--encryption-provider-config`),
//! values are encrypted on their way in and decrypted on every way out
//! (reads, transactions' answers, watches): nothing above this layer sees
//! ciphertext, nothing in the store sees the plain text.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use shoal_store::proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, watch_client::WatchClient, watch_request,
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use shoal_store::proto::mvccpb::{event::EventType, KeyValue};
use tonic::transport::Channel;
use tonic::Code;

use crate::encryption::Encryption;

/// How long connecting to a member may take before the next one is tried
/// (a member whose machine is gone answers nothing, not even a refusal).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long one unary call may take before the next endpoint is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request keeps trying endpoints before it gives up.
const RETRY_BUDGET: Duration = Duration::from_secs(12);
/// Largest message the store accepts from us or sends back (a list).
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid store endpoint {url:?}: {reason}")]
    BadEndpoint { url: String, reason: String },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the requested resource version {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("the requested resource version {requested} is newer than the store's {current}")]
    FutureRevision { requested: i64, current: i64 },
    /// A write may or may not have been applied (its member died or the
    /// call timed out after it was sent).
    #[error("the store is unavailable; the write's outcome is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("store error: {0}")]
    Other(String),
    #[error("unable to transform a stored value: {0}")]
    Decrypt(String),
    #[error("unable to encrypt a value: {0}")]
    Encrypt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The outcome of a guarded write.
#[derive(Debug)]
pub enum Written {
    /// Applied at this revision.
    Ok(i64),
    /// A guard failed; the key's current value, if it exists.
    Failed(Option<KeyValue>),
}

#[derive(Debug, Clone)]
pub struct Listed {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// The store revision the list was read at.
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone)]
pub enum Change {
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    Delete {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// Nothing changed up to this revision (a progress notification).
    Progress(i64),
}

pub struct Store {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    current: AtomicUsize,
    encryption: Option<Arc<Encryption>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Decrypts a value read from the store in place (a delete event's is
/// empty: nothing to decrypt).
fn open(encryption: Option<&Encryption>, kv: &mut KeyValue) -> Result<()> {
    let Some(encryption) = encryption else {
        return Ok(());
    };
    if kv.value.is_empty() {
        return Ok(());
    }
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    kv.value = encryption
        .open(&key, std::mem::take(&mut kv.value))
        .map_err(Error::Decrypt)?;
    Ok(())
}

/// The end of the key range holding every key that starts with `prefix`
/// (the store's own, as etcd clients compute it).
pub use shoal_store::mvcc::prefix_end;

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

/// Whether a call failed before it was sent: no connection to the member
/// could be made (it is down), or the store said it was not proposed.
fn unsent(status: &tonic::Status) -> bool {
    if status.code() == Code::Unavailable
        && matches!(
            status.message(),
            "etcdserver: not leader" | "etcdserver: no leader"
        )
    {
        return true;
    }
    shoal_store::node::never_connected(status)
}

impl Store {
    /// A client of the store members at `endpoints`; `https://` ones are
    /// reached over TLS with `tls` (a CA, and a client certificate when the
    /// store asks for one).
    pub fn new(endpoints: &[String], tls: Option<Arc<rustls::ClientConfig>>) -> Result<Store> {
        if endpoints.is_empty() {
            return Err(Error::BadEndpoint {
                url: String::new(),
                reason: "no --etcd-servers given".into(),
            });
        }
        let mut channels = Vec::new();
        for url in endpoints {
            let with_scheme = if url.contains("://") {
                url.clone()
            } else {
                format!("http://{url}")
            };
            let channel = shoal_store::tls::channel(&with_scheme, tls.as_ref(), |endpoint| {
                endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(3))
            })
            .map_err(|reason| Error::BadEndpoint {
                url: url.clone(),
                reason,
            })?;
            channels.push(channel);
        }
        Ok(Store {
            endpoints: endpoints.to_vec(),
            channels,
            current: AtomicUsize::new(0),
            encryption: None,
            tls,
        })
    }

    /// How `https://` members are reached (for the apiserver's other
    /// store clients).
    pub fn tls(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.tls.as_ref()
    }

    /// Values written from now on are encrypted as `encryption` says, and
    /// every value read is decrypted.
    pub fn with_encryption(mut self, encryption: Option<Arc<Encryption>>) -> Store {
        self.encryption = encryption;
        self
    }

    fn open(&self, kv: &mut KeyValue) -> Result<()> {
        open(self.encryption.as_deref(), kv)
    }

    fn seal(&self, op: Op) -> Result<Op> {
        match (op, &self.encryption) {
            (Op::Put(key, value), Some(encryption)) => {
                let value = encryption.seal(&key, value).map_err(Error::Encrypt)?;
                Ok(Op::Put(key, value))
            }
            (op, _) => Ok(op),
        }
    }

    fn kv(&self, index: usize) -> KvClient<Channel> {
        KvClient::new(self.channels[index % self.channels.len()].clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Runs a read against the current endpoint, moving on to the next one
    /// when it is unreachable, until the retry budget is spent.
    async fn with_retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.retrying(true, call).await
    }

    /// Runs `call`, moving on to the next endpoint when one fails. A write
    /// (`idempotent == false`) is only retried when it was certainly not
    /// sent (no connection) or not proposed; after a timeout or a broken
    /// connection it may have been applied, so the caller gets
    /// [`Error::OutcomeUnknown`] rather than a second attempt.
    async fn retrying<T, F, Fut>(&self, idempotent: bool, mut call: F) -> Result<T>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
        loop {
            let index = self.current.load(Ordering::Relaxed);
            let last = match tokio::time::timeout(CALL_TIMEOUT, call(self.kv(index))).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) if !retryable(&status) => {
                    return Err(classify(status));
                }
                // The next request (reading this write's outcome back
                // first) goes to another member: this one failed.
                Ok(Err(status)) if !idempotent && !unsent(&status) => {
                    self.move_on(index);
                    return Err(Error::OutcomeUnknown(status.message().to_string()));
                }
                Ok(Err(status)) => status.message().to_string(),
                Err(_) if !idempotent => {
                    self.move_on(index);
                    return Err(Error::OutcomeUnknown("the write timed out".into()));
                }
                Err(_) => "timed out".to_string(),
            };
            tracing::debug!(endpoint = %self.endpoints[index % self.endpoints.len()], error = %last, "store endpoint failed; trying the next");
            self.move_on(index);
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable(last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The endpoint after `index` becomes the current one (unless another
    /// request moved on from `index` already).
    fn move_on(&self, index: usize) {
        let _ = self.current.compare_exchange(
            index,
            (index + 1) % self.channels.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let response = self.range(request).await?;
        Ok(response.kvs.into_iter().next())
    }

    /// A key's value and whether it is stored otherwise than a write now
    /// would store it (encrypted with an older key, or not at all): an
    /// update that changes nothing must still be written then, so that
    /// rewriting every object moves them all to the current key (as
    /// Kubernetes' storage transformers say "stale").
    pub async fn get_fresh(&self, key: &str) -> Result<Option<(KeyValue, bool)>> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let Some(mut kv) = self.range_raw(request).await?.kvs.into_iter().next() else {
            return Ok(None);
        };
        let stale = self
            .encryption
            .as_ref()
            .is_some_and(|e| e.is_stale(key, &kv.value));
        self.open(&mut kv)?;
        Ok(Some((kv, stale)))
    }

    /// A Range, retried on another endpoint when one fails, values
    /// decrypted.
    async fn range(
        &self,
        request: RangeRequest,
    ) -> Result<shoal_store::proto::etcdserverpb::RangeResponse> {
        let mut response = self.range_raw(request).await?;
        for kv in &mut response.kvs {
            self.open(kv)?;
        }
        Ok(response)
    }

    /// A Range as the store answers it.
    async fn range_raw(
        &self,
        request: RangeRequest,
    ) -> Result<shoal_store::proto::etcdserverpb::RangeResponse> {
        Ok(self
            .with_retry(|mut kv| {
                let request = request.clone();
                async move { kv.range(request).await }
            })
            .await?
            .into_inner())
    }

    /// Keys under `prefix` from `start` (inclusive; `None` = the prefix
    /// itself), at most `limit` of them (0 = all), at `revision` (0 = now).
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&[u8]>,
        limit: i64,
        revision: i64,
    ) -> Result<Listed> {
        let request = RangeRequest {
            key: start.unwrap_or(prefix.as_bytes()).to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            limit,
            revision,
            ..Default::default()
        };
        let response = self.range(request).await?;
        Ok(Listed {
            kvs: response.kvs,
            more: response.more,
            revision: response.header.map(|h| h.revision).unwrap_or_default(),
        })
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64> {
        let request = RangeRequest {
            key: b"/registry/shoal/revision".to_vec(),
            count_only: true,
            ..Default::default()
        };
        let response = self.range(request).await?;
        Ok(response.header.map(|h| h.revision).unwrap_or_default())
    }

    /// Drops the history before `revision` (an error if it is already gone).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let request = CompactionRequest {
            revision,
            physical: false,
        };
        self.retrying(false, |mut kv| async move { kv.compact(request).await })
            .await?;
        Ok(())
    }

    /// Applies `ops` if every guard holds; otherwise reads `key` back.
    ///
    /// When the store's member fails while the write is on its way (a
    /// crashed leader, a timeout), the outcome is found out instead of
    /// reported as unknown: every guard is on a key the write changes, so
    /// guards that still hold mean it was not applied (it is sent again),
    /// and keys that hold exactly what it wrote mean it was.
    pub async fn txn(&self, key: &str, guards: Vec<Guard>, ops: Vec<Op>) -> Result<Written> {
        // Without a guard nothing tells an applied write from one that was
        // not: such a write is never sent again.
        let resolvable = !guards.is_empty()
            && guards
                .iter()
                .all(|g| ops.iter().any(|op| op.key() == g.key()));
        let mut attempts = 0;
        loop {
            match self.try_txn(key, &guards, &ops).await {
                Err(Error::OutcomeUnknown(reason)) if resolvable && attempts < 3 => {
                    attempts += 1;
                    tracing::info!(%key, %reason, "a write's outcome is unknown; reading it back");
                    match self.applied(key, &guards, &ops).await? {
                        Some(written) => return Ok(written),
                        None => continue,
                    }
                }
                other => return other,
            }
        }
    }

    async fn try_txn(&self, key: &str, guards: &[Guard], ops: &[Op]) -> Result<Written> {
        let request = TxnRequest {
            compare: guards.iter().cloned().map(Guard::into_compare).collect(),
            success: ops
                .iter()
                .cloned()
                .map(|op| self.seal(op).map(Op::into_request))
                .collect::<Result<_>>()?,
            failure: vec![range_op(key)],
        };
        let response = self
            .retrying(false, |mut kv| {
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?
            .into_inner();
        let revision = response.header.map(|h| h.revision).unwrap_or_default();
        if response.succeeded {
            return Ok(Written::Ok(revision));
        }
        let mut current = response.responses.into_iter().find_map(first_kv);
        if let Some(kv) = &mut current {
            self.open(kv)?;
        }
        Ok(Written::Failed(current))
    }

    /// After an unknown outcome: `None` when the write was not applied (its
    /// guards still hold), its result when the keys hold what it wrote, and
    /// `Failed` (with `key`'s value) when something else changed them.
    async fn applied(&self, key: &str, guards: &[Guard], ops: &[Op]) -> Result<Option<Written>> {
        let mut keys: Vec<&str> = vec![key];
        keys.extend(ops.iter().map(Op::key));
        let request = TxnRequest {
            compare: guards.iter().cloned().map(Guard::into_compare).collect(),
            success: Vec::new(),
            failure: keys.iter().map(|k| range_op(k)).collect(),
        };
        let response = self
            .with_retry(|mut kv| {
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?
            .into_inner();
        if response.succeeded {
            return Ok(None);
        }
        let revision = response.header.map(|h| h.revision).unwrap_or_default();
        let mut found: Vec<Option<KeyValue>> =
            response.responses.into_iter().map(first_kv).collect();
        for kv in found.iter_mut().flatten() {
            self.open(kv)?;
        }
        let current = found.first().cloned().flatten();
        let mut written_at = 0;
        for (op, kv) in ops.iter().zip(found.iter().skip(1)) {
            match (op, kv) {
                (Op::Put(_, value), Some(kv)) if kv.value == *value => {
                    written_at = written_at.max(kv.mod_revision);
                }
                (Op::Delete(_), None) => written_at = written_at.max(revision),
                _ => return Ok(Some(Written::Failed(current))),
            }
        }
        Ok(Some(Written::Ok(written_at)))
    }

    /// Watches every key under `prefix` from `start` (inclusive). The stream
    /// ends with an error when the store cancels the watch (compaction).
    pub async fn watch(
        &self,
        prefix: &str,
        start: i64,
    ) -> Result<impl Stream<Item = Result<Vec<Change>>> + Send + 'static> {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    start_revision: start,
                    progress_notify: true,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
        let (mut responses, requests) = loop {
            let index = self.current.load(Ordering::Relaxed);
            let mut client = WatchClient::new(self.channels[index].clone())
                .max_decoding_message_size(MAX_MESSAGE);
            // The sender stays alive as long as the stream: dropping it
            // would end the watch from our side.
            let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(4);
            let _ = tx.send(create.clone()).await;
            let opened = tokio::time::timeout(
                CALL_TIMEOUT,
                client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
            .await;
            match opened {
                Ok(Ok(stream)) => break (stream.into_inner(), tx),
                Ok(Err(status)) if !retryable(&status) => return Err(classify(status)),
                Ok(Err(_)) | Err(_) => {
                    self.move_on(index);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Unavailable("no store endpoint answers".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        // The first response confirms the watch (or refuses it).
        match responses.message().await {
            Ok(Some(first)) if first.created && !first.canceled => {}
            Ok(Some(first)) if first.compact_revision > 0 => {
                return Err(Error::Compacted {
                    requested: start,
                    compacted: first.compact_revision,
                })
            }
            Ok(Some(first)) => {
                let revision = first.header.map(|h| h.revision).unwrap_or_default();
                if start > revision + 1 {
                    return Err(Error::FutureRevision {
                        requested: start - 1,
                        current: revision,
                    });
                }
                return Err(Error::Other(first.cancel_reason));
            }
            Ok(None) => return Err(Error::Unavailable("watch stream closed".into())),
            Err(status) => return Err(classify(status)),
        }
        Ok(async_stream(
            responses,
            requests,
            start,
            self.encryption.clone(),
        ))
    }
}

fn async_stream(
    responses: tonic::Streaming<shoal_store::proto::etcdserverpb::WatchResponse>,
    requests: tokio::sync::mpsc::Sender<WatchRequest>,
    start: i64,
    encryption: Option<Arc<Encryption>>,
) -> impl Stream<Item = Result<Vec<Change>>> + Send + 'static {
    futures::stream::unfold(Some((responses, requests)), move |state| {
        let encryption = encryption.clone();
        async move {
            let (mut responses, requests) = state?;
            match responses.message().await {
                Ok(Some(response)) => {
                    if response.canceled {
                        let error = if response.compact_revision > 0 {
                            Error::Compacted {
                                requested: start,
                                compacted: response.compact_revision,
                            }
                        } else {
                            Error::Other(response.cancel_reason)
                        };
                        return Some((Err(error), None));
                    }
                    let revision = response.header.map(|h| h.revision).unwrap_or_default();
                    let changes = if response.events.is_empty() {
                        vec![Change::Progress(revision)]
                    } else {
                        let mut changes = Vec::new();
                        for event in response.events {
                            let Some(mut kv) = event.kv else {
                                continue;
                            };
                            let mut prev = event.prev_kv;
                            let opened =
                                open(encryption.as_deref(), &mut kv).and_then(
                                    |()| match &mut prev {
                                        Some(prev) => open(encryption.as_deref(), prev),
                                        None => Ok(()),
                                    },
                                );
                            if let Err(e) = opened {
                                return Some((Err(e), None));
                            }
                            changes.push(if event.r#type == EventType::Delete as i32 {
                                Change::Delete { kv, prev }
                            } else {
                                Change::Put { kv, prev }
                            });
                        }
                        changes
                    };
                    Some((Ok(changes), Some((responses, requests))))
                }
                Ok(None) => Some((
                    Err(Error::Unavailable("the store closed the watch".into())),
                    None,
                )),
                Err(status) => Some((Err(classify(status)), None)),
            }
        }
    })
}

fn classify(status: tonic::Status) -> Error {
    let message = status.message().to_string();
    if message.contains("compacted") {
        return Error::Compacted {
            requested: 0,
            compacted: 0,
        };
    }
    if message.contains("future rev") {
        return Error::FutureRevision {
            requested: 0,
            current: 0,
        };
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => Error::Unavailable(message),
        _ => Error::Other(message),
    }
}

/// A condition a guarded write checks.
#[derive(Debug, Clone)]
pub enum Guard {
    /// The key does not exist.
    Absent(String),
    /// The key was last modified at this revision.
    ModRevision(String, i64),
}

/// A read of one key, as a transaction's operation.
fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// The key a transaction's range operation found, if any.
fn first_kv(response: shoal_store::proto::etcdserverpb::ResponseOp) -> Option<KeyValue> {
    match response.response {
        Some(shoal_store::proto::etcdserverpb::response_op::Response::ResponseRange(range)) => {
            range.kvs.into_iter().next()
        }
        _ => None,
    }
}

impl Guard {
    fn key(&self) -> &str {
        match self {
            Guard::Absent(key) | Guard::ModRevision(key, _) => key,
        }
    }

    fn into_compare(self) -> Compare {
        match self {
            Guard::Absent(key) => Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: key.into_bytes(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                range_end: vec![],
            },
            Guard::ModRevision(key, revision) => Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.into_bytes(),
                target_union: Some(compare::TargetUnion::ModRevision(revision)),
                range_end: vec![],
            },
        }
    }
}

/// A write inside a guarded transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }

    fn into_request(self) -> RequestOp {
        let request = match self {
            Op::Put(key, value) => request_op::Request::RequestPut(PutRequest {
                key: key.into_bytes(),
                value,
                ..Default::default()
            }),
            Op::Delete(key) => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.into_bytes(),
                ..Default::default()
            }),
        };
        RequestOp {
            request: Some(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
