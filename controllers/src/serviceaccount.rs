//! ServiceAccounts: every namespace has a `default` ServiceAccount, made
//! again if it is deleted (kube-controller-manager's serviceaccount
//! controller). Pods name it in `spec.serviceAccountName` by default.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;

const DEFAULT: &str = "default";

pub async fn run(client: kube::Client, settings: super::Settings) {
    let namespaces = settings.informers.get::<Namespace>(&client);
    let accounts = settings.informers.get::<ServiceAccount>(&client);
    // A deleted `default` account wakes its namespace.
    let controller = crate::run::over("serviceaccount", &namespaces).watches_stream(
        accounts.touched_if(|sa: &ServiceAccount| sa.name_any() == DEFAULT),
        |sa: ServiceAccount| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    );
    crate::run::run_controller("serviceaccount", controller, reconcile, Arc::new(client)).await;
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
