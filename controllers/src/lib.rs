//! The control plane as API clients: the scheduler and the controllers,
//! registered in one list (name, constructor, enabled by default). They
//! reach the cluster only through the Kubernetes API (kube-rs), read from
//! shared informers (one watch per kind), and run only on the replica that
//! holds the `kube-system/shoal-controllers` Lease.
//!
//! ```text
//!   informers      the shared watches and caches every loop reads
//!   leader         Lease-based leader election (run_elected)
//!   events         the event recorder (client-go's spam filter)
//!   metrics        /metrics: each loop's work queue, the scheduler's attempts
//!   scheduler/     queue, fit (filters and scores), affinity and spread
//!   replicaset/ deployment/ statefulset/ daemonset/ job/ cronjob/ hpa/
//!   endpoints/     Endpoints, EndpointSlices, LoadBalancer addresses
//!   nodelifecycle nodeipam garbagecollector serviceaccount volumes
//!   csrsigning (node overlay certificates)
//!   clusterdns (the kube-system/kube-dns Service)
//!   clusterroleaggregation (aggregated ClusterRoles: admin, edit, view)
//!   ingress (the shoal IngressClass, Ingresses' addresses)
//!   nodeendpoints (agents' own endpoints follow their node's health)
//! ```
//!
//! A controller with a folder keeps its wiring (informers, the kube-runtime
//! Controller, writes) in `mod.rs` and its decision, a pure function tested
//! without sockets, in `sync.rs`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

pub mod clusterdns;
pub mod clusterroleaggregation;
pub mod cronjob;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod garbagecollector;
pub mod hpa;
pub mod informers;
pub mod ingress;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod nodeendpoints;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod run;
pub mod scheduler;
pub mod serviceaccount;
pub mod statefulset;
pub mod volumes;

/// Tunables of the loops (flags of `shoal controllers`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lease silence after which a node is unreachable.
    pub node_monitor_grace_period: std::time::Duration,
    /// Further time before the pods of an unreachable node are deleted.
    pub pod_eviction_timeout: std::time::Duration,
    /// Addresses given to LoadBalancer Services (`--loadbalancer-ip-pool`,
    /// a CIDR such as `172.18.255.0/24`); none means they stay pending.
    pub loadbalancer_ip_pool: Option<String>,
    /// The pod network nodes get their ranges from (`--cluster-cidr`,
    /// `--node-cidr-mask-size`).
    pub pod_network: nodeipam::PodNetwork,
    /// The watches the loops share (one per kind).
    pub informers: informers::Informers,
    /// How often each HorizontalPodAutoscaler is synced (Kubernetes: 15 s).
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// The cluster CA that signs node overlay certificates
    /// (`--cluster-signing-cert-file`/`-key-file`); none leaves their
    /// requests pending.
    pub cluster_signing: Option<std::sync::Arc<shoal_core::tls::Ca>>,
    /// The cluster DNS Service's address (`--cluster-dns`); none: no
    /// `kube-system/kube-dns` Service is made.
    pub cluster_dns: Option<std::net::IpAddr>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            node_monitor_grace_period: std::time::Duration::from_secs(5),
            pod_eviction_timeout: std::time::Duration::from_secs(5),
            loadbalancer_ip_pool: None,
            pod_network: nodeipam::PodNetwork::default(),
            informers: informers::Informers::default(),
            horizontal_pod_autoscaler_sync_period: std::time::Duration::from_secs(15),
            cluster_signing: None,
            cluster_dns: Some(std::net::IpAddr::from([10, 96, 0, 10])),
        }
    }
}

type Loop = fn(kube::Client, Settings) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// (name, constructor, enabled by default)
pub const REGISTRY: &[(&str, Loop, bool)] = &[
    (
        "scheduler",
        |client, settings| Box::pin(crate::scheduler::run(client, settings)),
        true,
    ),
    (
        "replicaset",
        |client, settings| Box::pin(replicaset::run(client, settings)),
        true,
    ),
    (
        "deployment",
        |client, settings| Box::pin(deployment::run(client, settings)),
        true,
    ),
    (
        "nodelifecycle",
        |client, settings| Box::pin(nodelifecycle::run(client, settings)),
        true,
    ),
    (
        "garbagecollector",
        |client, settings| Box::pin(garbagecollector::run(client, settings)),
        true,
    ),
    (
        "nodeipam",
        |client, settings| Box::pin(nodeipam::run(client, settings)),
        true,
    ),
    (
        "csrsigning",
        |client, settings| Box::pin(csrsigning::run(client, settings)),
        true,
    ),
    (
        "serviceaccount",
        |client, settings| Box::pin(serviceaccount::run(client, settings)),
        true,
    ),
    (
        "clusterdns",
        |client, settings| Box::pin(clusterdns::run(client, settings)),
        true,
    ),
    (
        "job",
        |client, settings| Box::pin(job::run(client, settings)),
        true,
    ),
    (
        "cronjob",
        |client, settings| Box::pin(cronjob::run(client, settings)),
        true,
    ),
    (
        "statefulset",
        |client, settings| Box::pin(statefulset::run(client, settings)),
        true,
    ),
    (
        "volumes",
        |client, settings| Box::pin(volumes::run(client, settings)),
        true,
    ),
    (
        "daemonset",
        |client, settings| Box::pin(daemonset::run(client, settings)),
        true,
    ),
    (
        "endpoints",
        |client, settings| Box::pin(endpoints::run(client, settings)),
        true,
    ),
    (
        "ingress",
        |client, settings| Box::pin(ingress::run(client, settings)),
        true,
    ),
    (
        "nodeendpoints",
        |client, settings| Box::pin(nodeendpoints::run(client, settings)),
        true,
    ),
    (
        "clusterrole-aggregation",
        |client, settings| Box::pin(clusterroleaggregation::run(client, settings)),
        true,
    ),
    (
        "horizontalpodautoscaling",
        |client, settings| Box::pin(hpa::run(client, settings)),
        true,
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("controller {0:?} is registered twice")]
    Duplicate(&'static str),
}

/// Checks the registry: a name may appear once.
pub fn check() -> Result<(), Error> {
    let mut seen = HashSet::new();
    for (name, _, _) in REGISTRY {
        if !seen.insert(*name) {
            return Err(Error::Duplicate(name));
        }
    }
    Ok(())
}

/// Runs every enabled loop until the task is dropped (which stops them).
pub async fn run_all(client: kube::Client, settings: Settings) {
    // Fresh watches for each term: they stop with the loops.
    let settings = Settings {
        informers: informers::Informers::default(),
        ..settings
    };
    let mut tasks = Vec::new();
    for (name, start, enabled) in REGISTRY {
        if *enabled {
            tracing::info!(controller = name, "starting");
            tasks.push(tokio::spawn(start(client.clone(), settings.clone())));
        }
    }
    // Aborting this future drops the guards, which stops the loops.
    let _guards: Vec<AbortOnDrop> = tasks.into_iter().map(AbortOnDrop).collect();
    std::future::pending::<()>().await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the loops under leader election, as `identity`.
pub async fn run_elected(client: kube::Client, identity: String, settings: Settings) {
    crate::leader::run(
        client.clone(),
        "kube-system",
        "shoal-controllers",
        identity,
        move || run_all(client.clone(), settings.clone()),
    )
    .await;
}

/// A label selector as the `labelSelector` query of a list (`app=web,...`);
/// empty when there is none.
pub fn label_query(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    shoal_core::selector::to_query(selector)
}

/// The uid of an object's controlling owner.
pub fn controller_uid<K: kube::Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_has_no_duplicates() {
        super::check().unwrap();
    }
}
