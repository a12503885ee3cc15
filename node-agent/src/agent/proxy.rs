//! The node's service proxy and NetworkPolicy (see
//! `shoal_overlay::proxy`), fed by the agent's watches of Services,
//! EndpointSlices, NetworkPolicies, Pods and Namespaces: any change wakes the
//! sync loop, which waits out `--proxy-min-sync-period` since the last sync
//! (a burst of changes is applied together), plans the whole ruleset from
//! the caches and applies what changed. A failed sync is retried after a
//! second, rebuilding the table; a table deleted behind the agent's back
//! is noticed within 30 s and rebuilt.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::Store;
use shoal_overlay::proxy::{self, NodeContext, Proxy};
use tokio::sync::Notify;

/// How the proxy runs; flags of `shoal agent`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The smallest time between two syncs.
    pub min_sync_period: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            min_sync_period: proxy::DEFAULT_MIN_SYNC_PERIOD,
        }
    }
}

/// The caches the proxy reads and the signal that one changed.
pub struct Inputs {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub policies: Store<NetworkPolicy>,
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub changed: Arc<Notify>,
}

/// Syncs until aborted; the latest metrics are kept in `metrics`.
pub async fn run(
    inputs: Inputs,
    node: NodeContext,
    config: ProxyConfig,
    metrics: Arc<Mutex<String>>,
) {
    if let Err(e) = shoal_overlay::proxy::bridge_netfilter() {
        tracing::warn!(error = %e, "bridged replies of pods on this node will not be translated back: a pod reaching another pod of this node through a Service may hang");
    }
    // Endpoints first: a Service seen without them would be refused for
    // a moment.
    shoal_core::cache::ready(&inputs.services).await;
    shoal_core::cache::ready(&inputs.slices).await;
    shoal_core::cache::ready(&inputs.policies).await;
    shoal_core::cache::ready(&inputs.pods).await;
    shoal_core::cache::ready(&inputs.namespaces).await;
    let mut proxy = Proxy::new();
    let mut last: Option<Instant> = None;
    loop {
        if let Some(last) = last {
            tokio::time::sleep_until((last + config.min_sync_period).into()).await;
        }
        let started = Instant::now();
        let services = inputs.services.state();
        let slices = inputs.slices.state();
        let mut rules = proxy::plan(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            &node,
        );
        let (policies, pods, namespaces) = (
            inputs.policies.state(),
            inputs.pods.state(),
            inputs.namespaces.state(),
        );
        proxy::add_policies(
            &mut rules,
            policies.iter().map(|p| p.as_ref()),
            pods.iter().map(|p| p.as_ref()),
            namespaces.iter().map(|n| n.as_ref()),
            &node,
        );
        let result = proxy.sync(rules).await;
        last = Some(started);
        if let Ok(mut m) = metrics.lock() {
            *m = proxy.metrics();
        }
        match result {
            Ok(synced) if synced.commands > 0 => tracing::debug!(
                commands = synced.commands,
                full = synced.full,
                took_ms = started.elapsed().as_millis() as u64,
                "service rules synced"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "applying the service rules; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // A change; or every 30 s, a check that the table is still there
        // (rebuilt at once if someone deleted it) and a sync that costs
        // nothing when nothing changed (the transaction is empty).
        let waited = tokio::time::timeout(Duration::from_secs(30), inputs.changed.notified()).await;
        if waited.is_err() && !proxy.check().await {
            tracing::warn!("the service rules' table is gone from the kernel; rebuilding it");
        }
    }
}
