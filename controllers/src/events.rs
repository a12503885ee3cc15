//! Events that controllers and the scheduler record about objects
//! (`kubectl describe` lists them), written as core/v1 Events.
//!
//! As client-go's recorder does, a source may tell about one object in a
//! burst of 25 events, then one more every 5 minutes; the rest are dropped
//! (logged at debug level), so that a ReplicaSet creating 1,000 pods writes
//! 25 `SuccessfulCreate` events, not 1,000.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::Resource;
use serde_json::json;

/// Events one source may record about one object at once.
const SPAM_BURST: f64 = 25.0;
/// And then one per this long.
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Sources and objects remembered (client-go's LRU size).
const SPAM_KEYS: usize = 4096;

/// A token bucket per (source, object, type).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token if there is one, after refilling for the time since
    /// the last call.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        self.tokens = (self.tokens + refill).min(SPAM_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether an event under `key` may be written now.
fn allowed(key: String, now: Instant) -> bool {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Bucket>>> = OnceLock::new();
    let mut buckets = match BUCKETS.get_or_init(Default::default).lock() {
        Ok(b) => b,
        Err(poisoned) => poisoned.into_inner(),
    };
    if buckets.len() >= SPAM_KEYS && !buckets.contains_key(&key) {
        // Forget the buckets that have refilled anyway, else everything.
        buckets.retain(|_, b| now.duration_since(b.at) < SPAM_REFILL.mul_f64(SPAM_BURST));
        if buckets.len() >= SPAM_KEYS {
            buckets.clear();
        }
    }
    buckets
        .entry(key)
        .or_insert(Bucket {
            tokens: SPAM_BURST,
            at: now,
        })
        .take(now)
}

/// Records an event about `object`; failures are logged, not returned (an
/// event lost is not worth failing the action it describes).
pub async fn record<K>(
    client: &kube::Client,
    object: &K,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let meta = object.meta();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let key = format!(
        "{component}/{}/{namespace}/{name}/{}/{kind}",
        K::kind(&()),
        meta.uid.as_deref().unwrap_or_default()
    );
    if !allowed(key, Instant::now()) {
        tracing::debug!(reason, message, "event dropped: too many about one object");
        return;
    }
    let now = shoal_core::time::now();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.{:016x}", rand::random::<u64>()),
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "name": name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut bucket = Bucket {
            tokens: SPAM_BURST,
            at: t0,
        };
        let allowed = (0..40).filter(|_| bucket.take(t0)).count();
        assert_eq!(allowed, 25);
        assert!(!bucket.take(t0 + SPAM_REFILL / 2));
        assert!(bucket.take(t0 + SPAM_REFILL));
        assert!(!bucket.take(t0 + SPAM_REFILL));
        // Long quiet: the burst again, no more.
        let later = t0 + SPAM_REFILL * 100;
        assert_eq!((0..40).filter(|_| bucket.take(later)).count(), 25);
    }

    #[test]
    fn objects_have_their_own_buckets() {
        let now = Instant::now();
        for _ in 0..25 {
            assert!(allowed("test/Pod/ns/a/u1/Normal".into(), now));
        }
        assert!(!allowed("test/Pod/ns/a/u1/Normal".into(), now));
        assert!(allowed("test/Pod/ns/b/u2/Normal".into(), now));
        assert!(allowed("test/Pod/ns/a/u1/Warning".into(), now));
    }
}
