//! What a Service's Endpoints and EndpointSlices should hold, as pure
//! functions of the Service and the pods its selector matches (Kubernetes'
//! `pkg/controller/endpoint` and `pkg/controller/endpointslice`):
//!
//! - a pod counts once it has an IP and is not Failed/Succeeded; each
//!   service port resolves against it (`targetPort` a number, or the name
//!   of a container port with the same protocol); a pod none of whose ports
//!   resolve is left out;
//! - Endpoints: ready pods under `addresses`, the others under
//!   `notReadyAddresses` (all under `addresses` with
//!   `publishNotReadyAddresses`), terminating pods left out; subsets grouped
//!   by the ports the pods resolve to;
//! - EndpointSlices: one per port set (and per 100 endpoints), conditions
//!   ready/serving/terminating, terminating pods kept;
//! - `hostname` when the pod's `spec.hostname` is set and its
//!   `spec.subdomain` is the Service's name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The Service's selector as a label query (`a=b,c=d`); `None` when it
/// has none (its Endpoints are the user's) or is an ExternalName.
pub fn selector(svc: &Service) -> Option<String> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    Some(
        selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// One resolved port: (name, port, protocol, appProtocol).
type Port = (String, i32, String, Option<String>);

/// The container port a service port reaches on `pod` (podutil.FindPort).
fn resolve_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// One pod as an endpoint.
#[derive(Debug, Clone)]
struct Member {
    ip: String,
    node: Option<String>,
    hostname: Option<String>,
    target: Value,
    ready: bool,
    terminating: bool,
    ports: Vec<Port>,
}

/// The pods as endpoints, sorted by IP; `None` ports-wise means the pod is
/// left out.
fn members(svc: &Service, pods: &[Pod]) -> Vec<Member> {
    let svc_name = svc.metadata.name.as_deref().unwrap_or_default();
    let namespace = svc.metadata.namespace.as_deref();
    let ports = service_ports(svc);
    let mut list = Vec::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref() != namespace && namespace.is_some() {
            continue;
        }
        let status = pod.status.as_ref();
        let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        ) {
            continue;
        }
        let resolved: Vec<Port> = ports
            .iter()
            .filter_map(|p| {
                resolve_port(pod, p).map(|number| {
                    (
                        p.name.clone().unwrap_or_default(),
                        number,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    )
                })
            })
            .collect();
        // A Service with ports reaches only pods that have one of them; a
        // headless one without ports lists every pod.
        if resolved.is_empty() && !(ports.is_empty() && is_headless(svc)) {
            continue;
        }
        let spec = pod.spec.as_ref();
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty())
            .filter(|_| spec.and_then(|s| s.subdomain.as_deref()) == Some(svc_name));
        list.push(Member {
            ip: ip.to_string(),
            node: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            hostname,
            target: json!({
                "kind": "Pod",
                "namespace": pod.metadata.namespace,
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            }),
            ready: shoal_core::pod::is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ports: resolved,
        });
    }
    list.sort_by(|a, b| {
        a.ip.cmp(&b.ip)
            .then_with(|| a.target["name"].as_str().cmp(&b.target["name"].as_str()))
    });
    list
}

fn sorted_ports(ports: &[Port]) -> Vec<Port> {
    let mut ports = ports.to_vec();
    ports.sort();
    ports
}

fn drop_nulls(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// The Endpoints' subsets.
pub fn subsets(svc: &Service, pods: &[Pod]) -> Vec<Value> {
    let publish = publish_not_ready(svc);
    // ports -> (ready addresses, not-ready addresses)
    let mut groups: BTreeMap<Vec<Port>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for m in members(svc, pods) {
        if m.terminating && !publish {
            continue;
        }
        let address = drop_nulls(json!({
            "ip": m.ip,
            "hostname": m.hostname,
            "nodeName": m.node,
            "targetRef": m.target,
        }));
        let group = groups.entry(sorted_ports(&m.ports)).or_default();
        if publish || m.ready {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(name, port, protocol, app)| {
                    let mut p = json!({"port": port, "protocol": protocol});
                    if !name.is_empty() {
                        p["name"] = json!(name);
                    }
                    if let Some(app) = app {
                        p["appProtocol"] = json!(app);
                    }
                    p
                })
                .collect();
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            if !ports.is_empty() {
                subset["ports"] = json!(ports);
            }
            subset
        })
        .collect()
}

fn owner(svc: &Service) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "name": svc.metadata.name,
        "uid": svc.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The Service's labels, with the headless marker set or removed.
fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The Endpoints object the Service should have.
pub fn endpoints(svc: &Service, pods: &[Pod]) -> Option<Endpoints> {
    let subsets = subsets(svc, pods);
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": svc.metadata.name,
            "namespace": svc.metadata.namespace,
            "labels": service_labels(svc),
            "ownerReferences": [owner(svc)],
        },
    });
    if !subsets.is_empty() {
        value["subsets"] = json!(subsets);
    }
    serde_json::from_value(value).ok()
}

/// Whether `current` already holds what `wanted` does.
pub fn endpoints_equal(current: &Endpoints, wanted: &Endpoints) -> bool {
    let subsets = |e: &Endpoints| {
        e.subsets
            .clone()
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::to_value(s).ok())
    };
    subsets(current) == subsets(wanted) && current.metadata.labels == wanted.metadata.labels
}

/// The EndpointSlices the Service should have (without names): one per
/// port set, at most 100 endpoints each; a Service without endpoints keeps
/// one empty slice, as Kubernetes does.
pub fn slices(svc: &Service, pods: &[Pod]) -> Vec<EndpointSlice> {
    let publish = publish_not_ready(svc);
    let mut groups: BTreeMap<Vec<Port>, Vec<Value>> = BTreeMap::new();
    for m in members(svc, pods) {
        // A terminating endpoint is never ready unless the Service says
        // to publish everything.
        let ready = publish || (m.ready && !m.terminating);
        groups
            .entry(sorted_ports(&m.ports))
            .or_default()
            .push(drop_nulls(json!({
                "addresses": [m.ip],
                "conditions": {"ready": ready, "serving": m.ready, "terminating": m.terminating},
                "hostname": m.hostname,
                "nodeName": m.node,
                "targetRef": m.target,
            })));
    }
    let mut labels = service_labels(svc);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slice = |ports: &[Port], endpoints: &[Value]| -> Option<EndpointSlice> {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(name, port, protocol, app)| {
                drop_nulls(
                    json!({"name": name, "port": port, "protocol": protocol, "appProtocol": app}),
                )
            })
            .collect();
        let mut value = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": format!("{}-", svc.metadata.name.as_deref().unwrap_or_default()),
                "namespace": svc.metadata.namespace,
                "labels": labels,
                "ownerReferences": [owner(svc)],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
        });
        if !ports.is_empty() {
            value["ports"] = json!(ports);
        }
        serde_json::from_value(value).ok()
    };
    if groups.is_empty() {
        return slice(&[], &[]).into_iter().collect();
    }
    groups
        .iter()
        .flat_map(|(ports, endpoints)| {
            endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .filter_map(|chunk| slice(ports, chunk))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether an object is controlled by a Service that no longer exists
/// (`live` holds the uids of those that do).
pub fn orphaned(
    live: &std::collections::HashSet<String>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    meta.deletion_timestamp.is_none()
        && meta.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true)
                && o.kind == "Service"
                && o.api_version == "v1"
                && !live.contains(&o.uid)
        })
}

#[derive(Debug, Default)]
pub struct SlicePlan {
    pub create: Vec<EndpointSlice>,
    /// Existing slices (with name and resourceVersion) given new content.
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<String>,
}

fn content(slice: &EndpointSlice) -> (Value, Value, Value) {
    (
        serde_json::to_value(&slice.endpoints).unwrap_or_default(),
        serde_json::to_value(slice.ports.clone().filter(|p| !p.is_empty())).unwrap_or_default(),
        serde_json::to_value(&slice.metadata.labels).unwrap_or_default(),
    )
}

/// Which of the Service's `existing` slices to keep, rewrite or delete, and
/// which to create, to hold `wanted`; a slice is rewritten only when its
/// content differs.
pub fn plan_slices(existing: &[EndpointSlice], wanted: Vec<EndpointSlice>) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by_key(|s| s.metadata.name.clone());
    let mut used = vec![false; existing.len()];
    let mut rest = Vec::new();
    for slice in wanted {
        let same = existing
            .iter()
            .enumerate()
            .position(|(i, e)| !used[i] && content(e) == content(&slice));
        match same {
            Some(i) => used[i] = true,
            None => rest.push(slice),
        }
    }
    for slice in rest {
        // Prefer a slice with the same ports, so that consumers see
        // endpoints change rather than slices come and go.
        let reuse = existing
            .iter()
            .enumerate()
            .position(|(i, e)| !used[i] && content(e).1 == content(&slice).1)
            .or_else(|| used.iter().position(|u| !u));
        match reuse {
            Some(i) => {
                used[i] = true;
                let mut updated = existing[i].clone();
                updated.metadata.labels = slice.metadata.labels;
                updated.metadata.owner_references = slice.metadata.owner_references;
                updated.address_type = slice.address_type;
                updated.endpoints = slice.endpoints;
                updated.ports = slice.ports;
                plan.update.push(updated);
            }
            None => plan.create.push(slice),
        }
    }
    plan.delete = existing
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(e, _)| e.metadata.name.clone().unwrap_or_default())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node-0", "containers": [{"name": "c", "image": "i",
                     "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        });
        if let Some(ip) = ip {
            value["status"]["podIP"] = json!(ip);
        }
        serde_json::from_value(value).unwrap()
    }

    fn web() -> Service {
        svc(
            json!({"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                   "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}),
        )
    }

    #[test]
    fn ready_pods_are_addresses_others_not_ready() {
        let pods = vec![
            pod("b", Some("10.244.0.3"), true),
            pod("a", Some("10.244.0.2"), true),
            pod("c", Some("10.244.0.4"), false),
            pod("no-ip", None, true),
        ];
        let s = subsets(&web(), &pods);
        assert_eq!(s.len(), 1);
        let ips: Vec<&str> = s[0]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, vec!["10.244.0.2", "10.244.0.3"]);
        assert_eq!(s[0]["notReadyAddresses"][0]["ip"], "10.244.0.4");
        assert_eq!(s[0]["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
        assert_eq!(s[0]["addresses"][0]["nodeName"], "node-0");
        assert_eq!(
            s[0]["addresses"][0]["targetRef"],
            json!({"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"})
        );

        let mut published = web();
        published.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let s = subsets(&published, &pods);
        assert_eq!(s[0]["addresses"].as_array().unwrap().len(), 3);
        assert!(s[0].get("notReadyAddresses").is_none());
    }

    #[test]
    fn named_target_ports_resolve_by_protocol() {
        let svc = svc(json!({"selector": {"app": "web"}, "ports": [
            {"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
            {"name": "missing", "port": 9, "targetPort": "nope", "protocol": "TCP"}]}));
        let s = subsets(&svc, &[pod("a", Some("10.244.0.2"), true)]);
        assert_eq!(
            s[0]["ports"],
            json!([{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "web", "port": 8080, "protocol": "TCP"}])
        );
    }

    #[test]
    fn terminating_pods_leave_endpoints_but_stay_in_slices() {
        let mut going = pod("a", Some("10.244.0.2"), true);
        going.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
        assert!(subsets(&web(), std::slice::from_ref(&going)).is_empty());
        let slices = slices(&web(), &[going]);
        let endpoint = &slices[0].endpoints[0];
        let conditions = endpoint.conditions.as_ref().unwrap();
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn headless_services_get_hostnames_and_the_label() {
        let headless = svc(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let mut named = pod("web-0", Some("10.244.0.2"), true);
        named.spec.as_mut().unwrap().hostname = Some("web-0".into());
        named.spec.as_mut().unwrap().subdomain = Some("web".into());
        let mut other = pod("x", Some("10.244.0.3"), true);
        other.spec.as_mut().unwrap().hostname = Some("x".into());
        other.spec.as_mut().unwrap().subdomain = Some("elsewhere".into());
        let ep = endpoints(&headless, &[named.clone(), other.clone()]).unwrap();
        let subset = &ep.subsets.as_ref().unwrap()[0];
        assert!(subset.ports.is_none());
        let addresses = subset.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].hostname.as_deref(), Some("web-0"));
        assert_eq!(addresses[1].hostname, None);
        assert_eq!(
            ep.metadata.labels.as_ref().unwrap().get(HEADLESS_LABEL),
            Some(&String::new())
        );
        let slices = slices(&headless, &[named, other]);
        assert_eq!(slices.len(), 1);
        let labels = slices[0].metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert!(labels.contains_key(HEADLESS_LABEL));
        assert_eq!(slices[0].endpoints[0].hostname.as_deref(), Some("web-0"));
    }

    #[test]
    fn selectorless_and_external_name_services_are_left_alone() {
        assert_eq!(selector(&svc(json!({"ports": [{"port": 80}]}))), None);
        assert_eq!(
            selector(&svc(
                json!({"type": "ExternalName", "externalName": "x.example.com", "selector": {"a": "b"}})
            )),
            None
        );
        assert_eq!(selector(&web()).as_deref(), Some("app=web"));
    }

    #[test]
    fn dependents_of_deleted_services_are_orphans() {
        let ep = endpoints(&web(), &[]).unwrap();
        let live = std::collections::HashSet::from(["svc-1".to_string()]);
        assert!(!orphaned(&live, &ep.metadata));
        assert!(orphaned(&Default::default(), &ep.metadata));
        let user: Endpoints =
            serde_json::from_value(json!({"metadata": {"name": "mine"}})).unwrap();
        assert!(!orphaned(&Default::default(), &user.metadata));
    }

    #[test]
    fn slices_are_reused_and_updated_only_on_change() {
        let pods = vec![pod("a", Some("10.244.0.2"), true)];
        let wanted = slices(&web(), &pods);
        assert_eq!(wanted[0].metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(wanted[0].address_type, "IPv4");
        let plan = plan_slices(&[], wanted.clone());
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (1, 0, 0)
        );

        let mut stored = wanted[0].clone();
        stored.metadata.name = Some("web-abcde".into());
        let plan = plan_slices(std::slice::from_ref(&stored), wanted);
        assert!(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty());

        let more = slices(
            &web(),
            &[pods[0].clone(), pod("b", Some("10.244.0.3"), true)],
        );
        let mut extra = stored.clone();
        extra.metadata.name = Some("web-zzzzz".into());
        let plan = plan_slices(&[stored, extra], more);
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("web-abcde"));
        assert_eq!(plan.update[0].endpoints.len(), 2);
        assert_eq!(plan.delete, vec!["web-zzzzz"]);

        // No pods: one empty slice, as Kubernetes keeps.
        let empty = slices(&web(), &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty() && empty[0].ports.is_none());
    }
}
