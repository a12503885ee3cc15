//! The control loops, registered in one list (name, constructor, enabled by
//! default). They are API clients like any other and run only on the
//! replica that holds the `kube-system/shoal-controllers` Lease.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

pub mod deployment;
pub mod garbagecollector;
pub mod nodelifecycle;
pub mod replicaset;

type Loop = fn(kube::Client) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// (name, constructor, enabled by default)
pub const REGISTRY: &[(&str, Loop, bool)] = &[
    (
        "scheduler",
        |client| Box::pin(crate::scheduler::run(client)),
        true,
    ),
    (
        "replicaset",
        |client| Box::pin(replicaset::run(client)),
        true,
    ),
    (
        "deployment",
        |client| Box::pin(deployment::run(client)),
        true,
    ),
    (
        "nodelifecycle",
        |client| Box::pin(nodelifecycle::run(client)),
        true,
    ),
    (
        "garbagecollector",
        |client| Box::pin(garbagecollector::run(client)),
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
pub async fn run_all(client: kube::Client) {
    let mut tasks = Vec::new();
    for (name, start, enabled) in REGISTRY {
        if *enabled {
            tracing::info!(controller = name, "starting");
            tasks.push(tokio::spawn(start(client.clone())));
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
pub async fn run_elected(client: kube::Client, identity: String) {
    crate::leader::run(
        client.clone(),
        "kube-system",
        "shoal-controllers",
        identity,
        move || run_all(client.clone()),
    )
    .await;
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, kube::Error> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|e| kube::Error::Service(Box::new(e)))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| kube::Error::Service(Box::new(e)))?;
    kube::Client::try_from(config)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_has_no_duplicates() {
        super::check().unwrap();
    }
}
