//! The cluster DNS Service: `kube-system/kube-dns` at the cluster DNS
//! address (`--cluster-dns`, 10.96.0.10), made at start and again if it is
//! deleted, as kubeadm's CoreDNS addon and the addon manager do.
//!
//! It has no selector: every agent answers DNS itself and publishes its own
//! endpoint (EndpointSlice `kube-system/kube-dns-<node>`, the node's bridge
//! address), and `internalTrafficPolicy: Local` makes each node's proxy
//! send the Service's traffic to its own server (NodeLocal DNSCache's
//! idea, with the Service's address kept).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";
/// How often the Service's presence is checked (in the informer's cache).
const CHECK: Duration = Duration::from_secs(5);

/// The Service, as `kubectl get svc -n kube-system kube-dns -o yaml` shows
/// it in Kubernetes (ports `dns` and `dns-tcp`, labels `k8s-app`).
pub fn service(ip: IpAddr) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "KubeDNS",
            },
        },
        "spec": {
            "clusterIP": ip.to_string(),
            "clusterIPs": [ip.to_string()],
            "internalTrafficPolicy": "Local",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let Some(ip) = settings.cluster_dns else {
        return;
    };
    let services = settings.informers.get::<Service>(&client);
    services.ready().await;
    let api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let mut failures = 0;
    loop {
        if services.get(Some(NAMESPACE), NAME).is_some() {
            failures = 0;
            tokio::time::sleep(CHECK).await;
            continue;
        }
        let created = match serde_json::from_value::<Service>(service(ip)) {
            Ok(svc) => api.create(&PostParams::default(), &svc).await,
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        match created {
            Ok(_) => {
                failures = 0;
                tracing::info!(ip = %ip, "cluster DNS Service kube-system/kube-dns created");
            }
            // Made meanwhile (by another replica, or the cache is behind).
            Err(kube::Error::Api(e)) if e.code == 409 => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, ip = %ip, "creating the cluster DNS Service kube-system/kube-dns");
            }
        }
        tokio::time::sleep(if failures > 0 {
            crate::run::retry_delay(failures)
        } else {
            CHECK
        })
        .await;
    }
}
