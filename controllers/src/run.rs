//! How every controller runs: a kube-runtime `Controller` fed by the
//! shared informers (no controller opens a watch of its own), one retry
//! policy for all of them, one log line per failed sync.
//!
//! ```text
//!  Informer<K>::touched() ──▶ Controller::for_stream ──▶ reconcile(K, ctx)
//!  owned kinds' informers ──▶ owns_stream                 │ Err
//!                                                         ▼
//!                              retry: per object, 0.5 s doubling to 60 s
//! ```
//!
//! The retry policy is Kubernetes' workqueue rate limiter in spirit
//! (per-item exponential back-off, forgotten after a success), with a
//! first step long enough that a conflict with a slow cache is not retried
//! in a burst.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::Resource;

use crate::informers::{Informer, Kind};
use crate::metrics;

/// The first retry after a failed sync.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait before the `failures`-th retry in a row (1 for the first).
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// A controller of kind `K` that reads the shared informer's cache and is
/// woken by every change it sees (and every cached object after a relist);
/// each wake is an add to the loop `name`'s queue (its `/metrics`).
pub fn over<K: Kind>(name: &'static str, informer: &Informer<K>) -> Controller<K> {
    let queue = metrics::Queue(name);
    let woken = informer.touched().inspect(move |seen| {
        if let Ok(object) = seen {
            let meta = object.meta();
            queue.added(metrics::key(
                meta.namespace.as_deref(),
                meta.name.as_deref().unwrap_or_default(),
            ));
        }
    });
    Controller::for_stream(woken, informer.store())
}

/// Consecutive failures per object.
struct Failures<K: Resource<DynamicType = ()>>(Mutex<HashMap<ObjectRef<K>, u32>>);

impl<K: Resource<DynamicType = ()>> Failures<K> {
    fn failed(&self, key: ObjectRef<K>) -> u32 {
        let mut map = match self.0.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = map.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, key: &ObjectRef<K>) {
        let mut map = match self.0.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(key);
    }
}

/// What the controller's closures share: the loop's own context and the
/// failure counts.
struct Shell<K: Resource<DynamicType = ()>, C> {
    ctx: Arc<C>,
    failures: Failures<K>,
}

/// Runs `controller` until it stops: `reconcile` for every object it
/// wakes, failures logged as `<name> sync failed` with the object and
/// retried with [`retry_delay`].
pub async fn run_controller<K, C, E, F, Fut>(
    name: &'static str,
    controller: Controller<K>,
    mut reconcile: F,
    ctx: Arc<C>,
) where
    K: Kind,
    C: Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let shell = Arc::new(Shell {
        ctx,
        failures: Failures(Mutex::new(HashMap::new())),
    });
    controller
        .run(
            move |object: Arc<K>, shell: Arc<Shell<K, C>>| {
                let key = ObjectRef::from_obj(object.as_ref());
                let queue = metrics::Queue(name);
                queue.started(&metrics::key(key.namespace.as_deref(), &key.name));
                let started = std::time::Instant::now();
                let sync = reconcile(object, shell.ctx.clone());
                async move {
                    let result = sync.await;
                    queue.finished(started);
                    if result.is_ok() {
                        shell.failures.succeeded(&key);
                    }
                    result
                }
            },
            move |object: Arc<K>, error: &E, shell: Arc<Shell<K, C>>| {
                let key = ObjectRef::from_obj(object.as_ref());
                let delay = retry_delay(shell.failures.failed(key.clone()));
                metrics::Queue(name).retried();
                tracing::warn!(controller = name, object = %key, error = %error, retry_in = ?delay, "sync failed");
                Action::requeue(delay)
            },
            shell,
        )
        .for_each(|result| {
            // Failed syncs were logged by the retry policy; what is left
            // (an object gone from the cache before its turn) is routine.
            if let Err(kube::runtime::controller::Error::ObjectNotFound(gone)) = &result {
                metrics::Queue(name).started(&metrics::key(gone.namespace.as_deref(), &gone.name));
            }
            if let Err(e) = result {
                tracing::debug!(controller = name, error = %e, "not synced");
            }
            futures::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
        );
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
