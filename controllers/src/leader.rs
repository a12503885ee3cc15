//! Leader election on a `coordination.k8s.io` Lease, so that of several
//! replicas only one runs the controllers and the scheduler; a standby
//! takes over within a lease duration when the leader stops renewing.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;

/// How long a lease holds without renewal, and how often it is renewed.
pub const LEASE_DURATION: Duration = Duration::from_secs(5);
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);

fn micro_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn expired(lease: &Lease) -> bool {
    let Some(spec) = &lease.spec else { return true };
    let duration = spec.lease_duration_seconds.unwrap_or(0).max(0) as i64;
    match &spec.renew_time {
        Some(t) => t.0.as_second() + duration < jiff::Timestamp::now().as_second(),
        None => true,
    }
}

/// Takes the lease if it is free, expired or ours; true when we hold it.
async fn acquire(api: &Api<Lease>, name: &str, identity: &str) -> Result<bool, kube::Error> {
    let spec = json!({
        "holderIdentity": identity,
        "leaseDurationSeconds": LEASE_DURATION.as_secs(),
        "acquireTime": micro_now(),
        "renewTime": micro_now(),
    });
    match api.get_opt(name).await? {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name}, "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            if holder != identity && !expired(&lease) {
                return Ok(false);
            }
            let transitions = lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0);
            let mut spec: k8s_openapi::api::coordination::v1::LeaseSpec =
                serde_json::from_value(spec).map_err(kube::Error::SerdeError)?;
            if holder != identity {
                spec.lease_transitions = Some(transitions + 1);
            } else {
                spec.lease_transitions = Some(transitions);
                spec.acquire_time = lease.spec.as_ref().and_then(|s| s.acquire_time.clone());
            }
            lease.spec = Some(spec);
            // The update carries the version read: a rival that got there
            // first makes it fail with 409, and we stay a standby.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs `work` while holding the lease `namespace/name`, forever: when the
/// lease is lost, `work` is stopped and this replica becomes a standby.
pub async fn run<F, Fut>(
    client: kube::Client,
    namespace: &str,
    name: &str,
    identity: String,
    work: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, namespace);
    loop {
        match acquire(&api, name, &identity).await {
            Ok(true) => {}
            Ok(false) => {
                tokio::time::sleep(RENEW_INTERVAL).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "leader election: cannot read the lease");
                tokio::time::sleep(RENEW_INTERVAL).await;
                continue;
            }
        }
        tracing::info!(lease = %name, %identity, "elected leader");
        let task = tokio::spawn(work());
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            match acquire(&api, name, &identity).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => break,
                Err(e) => tracing::debug!(error = %e, "leader election: renewal failed"),
            }
            // Stop before the lease can have expired for the others.
            if last_renewal.elapsed() > LEASE_DURATION - RENEW_INTERVAL {
                break;
            }
        }
        tracing::warn!(lease = %name, %identity, "lost the lease; standing by");
        task.abort();
        let _ = task.await;
    }
}
