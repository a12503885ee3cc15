//! Which node a pod goes to: filters (does it fit at all) and scores (where
//! it fits best), as plain functions over the objects. No I/O here.
//!
//! Filters: the node is Ready and schedulable, the pod's requests fit the
//! node's allocatable minus what its pods request, the node matches the
//! pod's nodeSelector and required node affinity, the pod tolerates the
//! node's NoSchedule/NoExecute taints, the volumes its claims are bound to
//! can be reached from the node (local volumes: only their node), and no
//! hostPort clashes. A claim that does not exist keeps the pod off every
//! node. Scores:
//! least allocated (cpu and memory), then fewest pods of the same owner
//! (spreading replicas), then the name (deterministic).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, PersistentVolume, PersistentVolumeClaim, Pod,
    Taint, Toleration,
};

use super::quantity;

/// cpu (cores), memory (bytes), pods.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu: f64,
    pub memory: f64,
    pub pods: f64,
}

fn quantity_of(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
) -> f64 {
    map.and_then(|m| m.get(name))
        .and_then(|q| quantity::parse(&q.0))
        .unwrap_or(0.0)
}

/// What a pod asks for: the sum over its containers, or the largest init
/// container if that is more, as the Kubernetes scheduler counts.
pub fn requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources {
            pods: 1.0,
            ..Default::default()
        };
    };
    let sum = |containers: &[k8s_openapi::api::core::v1::Container]| {
        containers.iter().fold((0.0, 0.0), |(cpu, mem), c| {
            let requests = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref().or(r.limits.as_ref()));
            (
                cpu + quantity_of(requests, "cpu"),
                mem + quantity_of(requests, "memory"),
            )
        })
    };
    let (mut cpu, mut memory) = sum(&spec.containers);
    for init in spec.init_containers.iter().flatten() {
        let (c, m) = sum(std::slice::from_ref(init));
        cpu = cpu.max(c);
        memory = memory.max(m);
    }
    Resources {
        cpu,
        memory,
        pods: 1.0,
    }
}

pub fn allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    Resources {
        cpu: quantity_of(map, "cpu"),
        memory: quantity_of(map, "memory"),
        pods: quantity_of(map, "pods"),
    }
}

fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => {
                t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
            }
        };
        effect_ok && key_ok && value_ok
    })
}

fn requirement_matches(labels: &BTreeMap<String, String>, r: &NodeSelectorRequirement) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

pub fn matches_node_selection(pod: &Pod, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let Some(spec) = &pod.spec else { return true };
    if let Some(selector) = &spec.node_selector {
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|selector| selector_matches(selector, node))
}

/// Terms are ORed, the expressions of a term ANDed.
fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    selector.node_selector_terms.iter().any(|term| {
        term.match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(&labels, r))
            && term.match_fields.iter().flatten().all(|r| {
                let fields =
                    BTreeMap::from([("metadata.name".to_string(), node_name(node).to_string())]);
                requirement_matches(&fields, r)
            })
    })
}

/// Whether a volume can be used from `node` (its required node affinity,
/// e.g. the node a local volume lives on).
pub fn volume_fits_node(volume: &PersistentVolume, node: &Node) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|selector| selector_matches(selector, node))
}

/// The volumes the pod's claims are bound to (its node must reach each);
/// or, when no node can do, why, in Kubernetes' words
/// (`persistentvolumeclaim "data" not found`). A claim not bound yet puts
/// no constraint: it is bound on the node the pod lands on.
pub fn claimed_volumes<'a>(
    pod: &Pod,
    claims: &[PersistentVolumeClaim],
    volumes: &'a [PersistentVolume],
) -> Result<Vec<&'a PersistentVolume>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut found = Vec::new();
    for source in pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
    {
        let name = source.claim_name.as_str();
        let claim = claims.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.metadata.namespace.as_deref().unwrap_or("default") == namespace
        });
        let Some(claim) = claim else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let Some(bound) = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        match volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(bound))
        {
            Some(volume) => found.push(volume),
            None => {
                return Err(format!(
                "persistentvolume \"{bound}\" bound to persistentvolumeclaim \"{name}\" not found"
            ))
            }
        }
    }
    Ok(found)
}

fn host_ports(pod: &Pod) -> Vec<(i32, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            p.host_port
                .filter(|h| *h > 0)
                .map(|h| (h, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        })
        .collect()
}

/// Why a node cannot take a pod, in the scheduler's words.
fn unfit(pod: &Pod, node: &Node, bound: &[&Pod], volumes: &[&PersistentVolume]) -> Vec<String> {
    let mut reasons = Vec::new();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        reasons.push("node(s) were unschedulable".to_string());
        return reasons;
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    if !is_ready(node) {
        let not_ready = Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerates(&tolerations, &not_ready) {
            reasons
                .push("node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_string());
            return reasons;
        }
    }
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
    {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerates(&tolerations, &taint)
        {
            reasons.push(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.clone().unwrap_or_default()
            ));
            return reasons;
        }
    }
    if !matches_node_selection(pod, node) {
        reasons.push("node(s) didn't match Pod's node affinity/selector".to_string());
        return reasons;
    }
    if !volumes.iter().all(|v| volume_fits_node(v, node)) {
        reasons.push("node(s) had volume node affinity conflict".to_string());
        return reasons;
    }
    let want = requests(pod);
    let have = allocatable(node);
    let used = bound.iter().fold(Resources::default(), |acc, p| {
        let r = requests(p);
        Resources {
            cpu: acc.cpu + r.cpu,
            memory: acc.memory + r.memory,
            pods: acc.pods + 1.0,
        }
    });
    if used.pods + 1.0 > have.pods {
        reasons.push("Too many pods".to_string());
    }
    if want.cpu > 0.0 && used.cpu + want.cpu > have.cpu + 1e-9 {
        reasons.push("Insufficient cpu".to_string());
    }
    if want.memory > 0.0 && used.memory + want.memory > have.memory {
        reasons.push("Insufficient memory".to_string());
    }
    let ports = host_ports(pod);
    if !ports.is_empty()
        && bound
            .iter()
            .any(|p| host_ports(p).iter().any(|hp| ports.contains(hp)))
    {
        reasons.push("node(s) didn't have free ports for the requested pod ports".to_string());
    }
    reasons
}

/// The owner a pod's replicas share (its controller's uid).
fn owner(pod: &Pod) -> Option<&str> {
    crate::controllers::replicaset::sync::controller_uid(pod)
}

/// The node for `pod` among `nodes`, given the pods already bound to each;
/// or the message Kubernetes gives when none fits
/// (`0/3 nodes are available: 3 Insufficient cpu.`).
pub fn choose<'a>(
    pod: &Pod,
    nodes: &'a [Node],
    bound: &BTreeMap<String, Vec<&Pod>>,
) -> Result<&'a Node, String> {
    choose_with_volumes(pod, nodes, bound, &[])
}

/// As `choose`, for a pod whose claims are bound to `volumes` (see
/// `claimed_volumes`).
pub fn choose_with_volumes<'a>(
    pod: &Pod,
    nodes: &'a [Node],
    bound: &BTreeMap<String, Vec<&Pod>>,
    volumes: &[&PersistentVolume],
) -> Result<&'a Node, String> {
    let mut candidates = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        let on_node = bound.get(node_name(node)).cloned().unwrap_or_default();
        let why = unfit(pod, node, &on_node, volumes);
        if why.is_empty() {
            candidates.push((node, on_node));
        } else {
            for reason in why {
                *reasons.entry(reason).or_default() += 1;
            }
        }
    }
    let me = owner(pod);
    let want = requests(pod);
    let best = candidates.into_iter().max_by(|(a, a_pods), (b, b_pods)| {
        let score = |node: &Node, pods: &[&Pod]| {
            let have = allocatable(node);
            let used = pods.iter().fold((want.cpu, want.memory), |(c, m), p| {
                let r = requests(p);
                (c + r.cpu, m + r.memory)
            });
            let free = |used: f64, have: f64| {
                if have > 0.0 {
                    (have - used).max(0.0) / have
                } else {
                    0.0
                }
            };
            let least_allocated = (free(used.0, have.cpu) + free(used.1, have.memory)) / 2.0;
            let same_owner = me.map_or(0, |uid| {
                pods.iter().filter(|p| owner(p) == Some(uid)).count()
            });
            (
                -(same_owner as i64),
                (least_allocated * 1000.0) as i64,
                -(pods.len() as i64),
            )
        };
        score(a, a_pods)
            .cmp(&score(b, b_pods))
            .then_with(|| node_name(b).cmp(node_name(a)))
    });
    match best {
        Some((node, _)) => Ok(node),
        None => {
            let mut parts: Vec<String> = reasons
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            parts.sort();
            let detail = if parts.is_empty() {
                String::new()
            } else {
                format!(" {}", parts.join(", "))
            };
            Err(format!("0/{} nodes are available:{detail}.", nodes.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn insufficient_cpu_is_reported_like_kubernetes() {
        let nodes = vec![
            node("a", "1", json!({})),
            node("b", "1", json!({})),
            node("c", "1", json!({})),
        ];
        let err = choose(&pod("2"), &nodes, &BTreeMap::new()).unwrap_err();
        assert_eq!(err, "0/3 nodes are available: 3 Insufficient cpu.");
    }

    #[test]
    fn replicas_spread_and_selectors_filter() {
        let nodes = vec![
            node("a", "4", json!({"disk": "ssd"})),
            node("b", "4", json!({})),
        ];
        let first = pod("1");
        let mut bound = BTreeMap::new();
        bound.insert("a".to_string(), vec![&first]);
        assert_eq!(node_name(choose(&pod("1"), &nodes, &bound).unwrap()), "b");
        let mut picky = pod("1");
        picky.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
        assert_eq!(node_name(choose(&picky, &nodes, &bound).unwrap()), "a");
        let mut none = pod("1");
        none.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("gpu".to_string(), "yes".to_string())]));
        assert_eq!(
            choose(&none, &nodes, &bound).unwrap_err(),
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn taints_need_tolerations() {
        let mut tainted = node("a", "4", json!({}));
        tainted.spec = Some(
            serde_json::from_value(
                json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
            )
            .unwrap(),
        );
        let nodes = vec![tainted];
        assert_eq!(
            choose(&pod("1"), &nodes, &BTreeMap::new()).unwrap_err(),
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."
        );
        let mut tolerant = pod("1");
        tolerant.spec.as_mut().unwrap().tolerations =
            Some(serde_json::from_value(json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}])).unwrap());
        assert!(choose(&tolerant, &nodes, &BTreeMap::new()).is_ok());
    }

    #[test]
    fn claims_keep_pods_where_their_volumes_are() {
        let nodes = vec![
            node("a", "4", json!({"kubernetes.io/hostname": "a"})),
            node("b", "4", json!({"kubernetes.io/hostname": "b"})),
        ];
        let mut p = pod("1");
        p.metadata.namespace = Some("default".into());
        p.spec.as_mut().unwrap().volumes = Some(
            serde_json::from_value(
                json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}}]),
            )
            .unwrap(),
        );
        assert_eq!(
            claimed_volumes(&p, &[], &[]).unwrap_err(),
            "persistentvolumeclaim \"data-0\" not found"
        );
        let mut claim: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": {"name": "data-0", "namespace": "default"}, "spec": {}}),
        )
        .unwrap();
        // Not bound yet: any node.
        assert!(claimed_volumes(&p, std::slice::from_ref(&claim), &[])
            .unwrap()
            .is_empty());
        claim.spec.as_mut().unwrap().volume_name = Some("pv-1".into());
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv-1"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}
        }))
        .unwrap();
        let volumes = std::slice::from_ref(&volume);
        let claims = std::slice::from_ref(&claim);
        let needed = claimed_volumes(&p, claims, volumes).unwrap();
        // "b" holds the volume though "a" is emptier after spreading.
        let other = pod("1");
        let mut bound = BTreeMap::new();
        bound.insert("b".to_string(), vec![&other]);
        let chosen = choose_with_volumes(&p, &nodes, &bound, &needed).unwrap();
        assert_eq!(node_name(chosen), "b");
        assert_eq!(
            choose_with_volumes(&p, &nodes[..1], &bound, &needed).unwrap_err(),
            "0/1 nodes are available: 1 node(s) had volume node affinity conflict."
        );
        assert!(claimed_volumes(&p, claims, &[]).is_err());
    }
}
