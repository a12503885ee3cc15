//! Namespace lifecycle inside the apiserver: the namespaces every cluster
//! has (`default`, `kube-system`, `kube-public`, `kube-node-lease`, and the
//! `kubernetes` Service in `default`), and the finalizer that empties a
//! deleted namespace and then removes it.
//!
//! Every apiserver runs the finalizer; the work is idempotent (guarded
//! deletes), so replicas racing on one namespace do no harm, and a namespace
//! whose apiserver died mid-way is finished by the next pass.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::Result;
use crate::resources::{self, RESOURCES};
use crate::rest::Ctx;
use crate::server::Api;
use crate::storage::{Guard, Op};

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn run(api: Arc<Api>) {
    loop {
        match bootstrap(&api).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e.message, "cannot create the system namespaces yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    loop {
        if let Err(e) = finalize(&api).await {
            tracing::debug!(error = %e.message, "namespace finalizer pass failed");
        }
        tokio::select! {
            () = api.namespaces_changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

pub(crate) async fn create_if_missing(api: &Api, mut ctx: Ctx, object: Value) -> Result<()> {
    // Boxed: creating a namespace or a pod creates objects of its own
    // through here (kube-root-ca.crt, the default ServiceAccount).
    match Box::pin(crate::rest::create_internal(api, &mut ctx, object)).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}

async fn bootstrap(api: &Api) -> Result<()> {
    let namespaces = resources::served("", "v1", "namespaces");
    for name in SYSTEM_NAMESPACES {
        let ctx = Ctx::internal(namespaces, None);
        create_if_missing(api, ctx, json!({"metadata": {"name": name}})).await?;
    }
    let services = resources::served("", "v1", "services");
    // A /8 to /28 always has a first host.
    let first = api
        .service_cidr
        .nth(1)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let service = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": first, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    });
    // Looked for first: creating it again would fail on its address (taken
    // by itself) before the name is found taken, and this would never end.
    if api
        .store
        .get(&services.key(Some("default"), "kubernetes"))
        .await?
        .is_none()
    {
        create_if_missing(api, Ctx::internal(services, Some("default")), service).await?;
    }
    // After every namespace is there (agents wait for kube-node-lease).
    for name in SYSTEM_NAMESPACES {
        crate::serviceaccount::ensure_root_ca(api, name).await?;
    }
    Ok(())
}

/// Deletes what is in a namespace; true when there was nothing left.
async fn empty_namespace(api: &Api, name: &str) -> Result<bool> {
    let mut empty = true;
    for resource in RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = resource.prefix(Some(name));
        let content = api.store.list(&prefix, None, 0, 0).await?;
        for item in content.kvs {
            empty = false;
            let key = String::from_utf8_lossy(&item.key).into_owned();
            let mut ops = vec![Op::Delete(key.clone())];
            if let Ok(value) = serde_json::from_slice::<Value>(&item.value) {
                ops.extend(crate::allocate::on_delete(resource, &value));
            }
            // A lost race is seen (and dealt with) by the next pass.
            api.store
                .txn(
                    &key,
                    vec![Guard::ModRevision(key.clone(), item.mod_revision)],
                    ops,
                )
                .await?;
        }
    }
    Ok(empty)
}

/// Empties and removes every namespace marked for deletion.
async fn finalize(api: &Api) -> Result<()> {
    let namespaces = resources::served("", "v1", "namespaces");
    let listed = api.store.list(&namespaces.prefix(None), None, 0, 0).await?;
    for kv in listed.kvs {
        let Ok(object) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if object.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = crate::object::name(&object).to_string();
        tracing::info!(namespace = %name, "deleting the namespace's content");
        // The namespace goes only once a pass finds it empty, so nothing
        // that was written meanwhile (or whose delete lost a race) is left
        // behind in a namespace that no longer exists.
        let mut empty = false;
        for _ in 0..5 {
            if empty_namespace(api, &name).await? {
                empty = true;
                break;
            }
        }
        if !empty {
            continue;
        }
        let key = namespaces.key(None, &name);
        api.store
            .txn(
                &key,
                vec![Guard::ModRevision(key.clone(), kv.mod_revision)],
                vec![Op::Delete(key.clone())],
            )
            .await?;
    }
    Ok(())
}
