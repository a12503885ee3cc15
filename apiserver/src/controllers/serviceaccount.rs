//! ServiceAccounts: every namespace has a `default` ServiceAccount, made
//! again if it is deleted (kube-controller-manager's serviceaccount
//! controller). Pods name it in `spec.serviceAccountName` by default.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

const DEFAULT: &str = "default";

pub async fn run(client: kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        // A deleted `default` account wakes its namespace.
        .watches(
            accounts,
            watcher::Config::default(),
            |sa: ServiceAccount| {
                (sa.name_any() == DEFAULT)
                    .then(|| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)))
                    .flatten()
            },
        )
        .run(reconcile, retry, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "serviceaccount reconcile failed");
            }
            futures::future::ready(())
        })
        .await;
}

fn retry(_: Arc<Namespace>, _: &kube::Error, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(ns: Arc<Namespace>, client: Arc<kube::Client>) -> Result<Action, kube::Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let accounts: Api<ServiceAccount> = Api::namespaced((*client).clone(), &name);
    if accounts.get_opt(DEFAULT).await?.is_none() {
        let account: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT, "namespace": name},
        }))
        .map_err(kube::Error::SerdeError)?;
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => tracing::info!(namespace = %name, "default service account created"),
            // Created meanwhile, or the namespace began terminating.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}
