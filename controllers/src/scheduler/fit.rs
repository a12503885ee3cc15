//! Which node a pod goes to: filters (does it fit at all) and scores (where
//! it fits best), as plain functions over a `Snapshot` of the nodes and the
//! pods placed on them. No I/O here.
//!
//! Filters, in kube-scheduler's order, each node stopping at the first that
//! refuses: the node is schedulable (or the pod tolerates
//! `node.kubernetes.io/unschedulable`), Ready (or the pod tolerates the
//! not-ready/unreachable taint), its NoSchedule/NoExecute taints are
//! tolerated, it matches the pod's nodeSelector and required node
//! affinity, the volumes the pod's claims are bound to can be reached from
//! it (local volumes: only their node), the requests fit its allocatable
//! minus what its pods request, no hostPort clashes, topology spread
//! constraints (DoNotSchedule) and inter-pod affinity/anti-affinity (see
//! `affinity.rs`). A claim that does not exist keeps the pod off every
//! node.
//!
//! Scores, summed with kube-scheduler's default weights: least allocated
//! (cpu and memory) ×1, preferred node affinity ×2, preferred inter-pod
//! affinity ×2, topology spread (ScheduleAnyway) ×2, or, for a pod without
//! spread constraints, spreading its owner's replicas ×2; ties go to the
//! node with fewer pods, then to the first name.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeClaim, Pod, Taint, Toleration,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::affinity::{self, InterPodFilter, Labels, SpreadFilter};
use shoal_core::quantity;

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
        .and_then(|q| quantity::parse_f64(&q.0))
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
    let labels = affinity::node_labels(node);
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

/// Terms are ORed.
fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| node_term_matches(term, node))
}

/// The expressions and fields of a term are ANDed; an empty term matches
/// no node.
pub fn node_term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    if affinity::term_is_empty(term) {
        return false;
    }
    let labels = affinity::node_labels(node);
    term.match_expressions
        .iter()
        .flatten()
        .all(|r| requirement_matches(labels, r))
        && term.match_fields.iter().flatten().all(|r| {
            let fields =
                BTreeMap::from([("metadata.name".to_string(), node_name(node).to_string())]);
            requirement_matches(&fields, r)
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

/// The pods already placed (bound, or assumed while their binding is on
/// its way), indexed by node, by owner and by whether they carry pod
/// affinity terms, with each node's requested resources summed: what the
/// filters and scores read, built once per scheduling pass.
pub struct Snapshot<'a> {
    pub(super) nodes: Vec<&'a Node>,
    node_index: HashMap<&'a str, usize>,
    /// Each placed pod and the index of its node.
    pub(super) placed: Vec<(&'a Pod, usize)>,
    on_node: Vec<Vec<&'a Pod>>,
    used: Vec<Resources>,
    /// Each node's allocatable resources, parsed once.
    have: Vec<Resources>,
    /// Owner uid → node index → pods of that owner there.
    by_owner: HashMap<&'a str, HashMap<usize, i64>>,
    /// (label key, value) → indexes into `placed` of the pods with it.
    by_label: HashMap<&'a str, HashMap<&'a str, Vec<usize>>>,
    /// Indexes into `placed` of the pods with pod (anti-)affinity terms.
    pub(super) with_affinity: Vec<usize>,
    /// Labels of each namespace (for namespaceSelector).
    pub(super) namespaces: HashMap<String, Labels>,
    /// Where the next search for feasible nodes starts (it rotates, as
    /// kube-scheduler's `nextStartNodeIndex`).
    next_start: std::cell::Cell<usize>,
}

/// kube-scheduler's `percentageOfNodesToScore` (adaptive): how many
/// feasible nodes are enough to pick from: all of them up to 100 nodes,
/// then `50 - nodes/125` percent (at least 5%), never fewer than 100.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    const MIN_NODES: usize = 100;
    if nodes < MIN_NODES {
        return nodes;
    }
    let percentage = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percentage / 100).max(MIN_NODES)
}

impl<'a> Snapshot<'a> {
    pub fn new(nodes: impl IntoIterator<Item = &'a Node>) -> Snapshot<'a> {
        let nodes: Vec<&'a Node> = nodes.into_iter().collect();
        Snapshot {
            node_index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (node_name(n), i))
                .collect(),
            placed: Vec::new(),
            on_node: vec![Vec::new(); nodes.len()],
            used: vec![Resources::default(); nodes.len()],
            have: nodes.iter().map(|n| allocatable(n)).collect(),
            nodes,
            by_owner: HashMap::new(),
            by_label: HashMap::new(),
            with_affinity: Vec::new(),
            namespaces: HashMap::new(),
            next_start: std::cell::Cell::new(0),
        }
    }

    /// Starts the rotating search at `start` (carried from one scheduling
    /// pass to the next by [`Snapshot::next_start`]).
    pub fn starting_at(self, start: usize) -> Snapshot<'a> {
        self.next_start.set(start);
        self
    }

    pub fn next_start(&self) -> usize {
        self.next_start.get()
    }

    pub fn with_namespaces(mut self, namespaces: HashMap<String, Labels>) -> Snapshot<'a> {
        self.namespaces = namespaces;
        self
    }

    /// Counts `pod` as running on `node` (ignored when there is no such
    /// node).
    pub fn place(&mut self, pod: &'a Pod, node: &str) {
        let Some(&i) = self.node_index.get(node) else {
            return;
        };
        let index = self.placed.len();
        if affinity::has_pod_affinity(pod) {
            self.with_affinity.push(index);
        }
        for (k, v) in affinity::pod_labels(pod) {
            self.by_label
                .entry(k)
                .or_default()
                .entry(v)
                .or_default()
                .push(index);
        }
        self.placed.push((pod, i));
        self.on_node[i].push(pod);
        let r = requests(pod);
        let used = &mut self.used[i];
        used.cpu += r.cpu;
        used.memory += r.memory;
        used.pods += 1.0;
        if let Some(uid) = owner(pod) {
            *self.by_owner.entry(uid).or_default().entry(i).or_default() += 1;
        }
    }

    /// The placed pods (with their node index) that `selector` may match:
    /// those carrying the rarest of its matchLabels, or all of them when
    /// it has none; none when there is no selector (which matches nothing).
    pub(super) fn candidates<'s>(
        &'s self,
        selector: Option<&LabelSelector>,
    ) -> Box<dyn Iterator<Item = (&'a Pod, usize)> + 's> {
        let Some(selector) = selector else {
            return Box::new(std::iter::empty());
        };
        let Some(labels) = selector.match_labels.as_ref().filter(|l| !l.is_empty()) else {
            return Box::new(self.placed.iter().copied());
        };
        let rarest = labels
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(k.as_str())
                    .and_then(|values| values.get(v.as_str()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|pods| pods.len())
            .unwrap_or_default();
        Box::new(rarest.iter().map(|&i| self.placed[i]))
    }

    /// The node for `pod`, whose claims are bound to `volumes` (see
    /// `claimed_volumes`); or the message Kubernetes gives when none fits
    /// (`0/3 nodes are available: 3 Insufficient cpu.`).
    pub fn choose(&self, pod: &Pod, volumes: &[&PersistentVolume]) -> Result<&'a Node, String> {
        self.choose_index(pod, volumes).map(|i| self.nodes[i])
    }

    fn choose_index(&self, pod: &Pod, volumes: &[&PersistentVolume]) -> Result<usize, String> {
        let incoming = Incoming {
            want: requests(pod),
            tolerations: pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default(),
            ports: host_ports(pod),
            inter_pod: InterPodFilter::new(pod, self),
            spread: SpreadFilter::new(pod, self),
        };
        let mut candidates = Vec::new();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        // As kube-scheduler: stop once enough feasible nodes are found,
        // starting where the last search stopped.
        let total = self.nodes.len();
        let enough = feasible_nodes_to_find(total);
        let start = if total == 0 {
            0
        } else {
            self.next_start.get() % total
        };
        let mut processed = 0;
        for i in (start..total).chain(0..start) {
            processed += 1;
            let why = self.unfit(pod, &incoming, i, self.nodes[i], volumes);
            if why.is_empty() {
                candidates.push(i);
                if candidates.len() >= enough {
                    break;
                }
            } else {
                for reason in why {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
        }
        if total > 0 {
            self.next_start.set((start + processed) % total);
        }
        if candidates.is_empty() {
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
            return Err(format!(
                "0/{} nodes are available:{detail}.",
                self.nodes.len()
            ));
        }
        let scores = self.scores(pod, incoming.want, &candidates);
        let best = candidates
            .iter()
            .zip(scores)
            .max_by(|(a, sa), (b, sb)| {
                sa.cmp(sb)
                    .then_with(|| self.on_node[**b].len().cmp(&self.on_node[**a].len()))
                    .then_with(|| node_name(self.nodes[**b]).cmp(node_name(self.nodes[**a])))
            })
            .map(|(i, _)| *i);
        match best {
            Some(i) => Ok(i),
            None => Err(format!("0/{} nodes are available.", self.nodes.len())),
        }
    }

    /// Why a node cannot take a pod, in the scheduler's words; Kubernetes'
    /// filter order, stopping at the first plugin that refuses.
    fn unfit(
        &self,
        pod: &Pod,
        incoming: &Incoming,
        i: usize,
        node: &Node,
        volumes: &[&PersistentVolume],
    ) -> Vec<String> {
        let refuse = |reason: &str| vec![reason.to_string()];
        if let Some(reason) = node_refuses(node, incoming.tolerations) {
            return vec![reason];
        }
        if !matches_node_selection(pod, node) {
            return refuse("node(s) didn't match Pod's node affinity/selector");
        }
        if !volumes.iter().all(|v| volume_fits_node(v, node)) {
            return refuse("node(s) had volume node affinity conflict");
        }
        let mut reasons = Vec::new();
        let want = incoming.want;
        let have = self.have[i];
        let used = self.used[i];
        if used.pods + 1.0 > have.pods {
            reasons.push("Too many pods".to_string());
        }
        if want.cpu > 0.0 && used.cpu + want.cpu > have.cpu + 1e-9 {
            reasons.push("Insufficient cpu".to_string());
        }
        if want.memory > 0.0 && used.memory + want.memory > have.memory {
            reasons.push("Insufficient memory".to_string());
        }
        if !incoming.ports.is_empty()
            && self.on_node[i]
                .iter()
                .any(|p| host_ports(p).iter().any(|hp| incoming.ports.contains(hp)))
        {
            reasons.push("node(s) didn't have free ports for the requested pod ports".to_string());
        }
        if !reasons.is_empty() {
            return reasons;
        }
        if let Some(reason) = incoming.spread.as_ref().and_then(|s| s.refuses(node)) {
            return refuse(reason);
        }
        if let Some(reason) = incoming.inter_pod.as_ref().and_then(|f| f.refuses(node)) {
            return refuse(reason);
        }
        reasons
    }

    /// The candidates' scores, as kube-scheduler's default weights combine
    /// its plugins: least allocated ×1, node affinity ×2, inter-pod
    /// affinity ×2, topology spread ×2 (each 0..=100). A pod without
    /// spread constraints spreads its owner's replicas instead (as
    /// Kubernetes' default constraints do), weight 2.
    fn scores(&self, pod: &Pod, want: Resources, candidates: &[usize]) -> Vec<i64> {
        let mut total: Vec<i64> = candidates
            .iter()
            .map(|&i| {
                let have = self.have[i];
                let used = self.used[i];
                let free = |used: f64, have: f64| {
                    if have > 0.0 {
                        (have - used).max(0.0) / have
                    } else {
                        0.0
                    }
                };
                let least = (free(used.cpu + want.cpu, have.cpu)
                    + free(used.memory + want.memory, have.memory))
                    / 2.0;
                (least * 100.0) as i64
            })
            .collect();
        let mut add = |scores: Vec<i64>, weight: i64| {
            for (t, s) in total.iter_mut().zip(scores) {
                *t += weight * s;
            }
        };
        if affinity::has_preferred_node_affinity(pod) {
            let raw: Vec<i64> = candidates
                .iter()
                .map(|&i| affinity::preferred_node_affinity(pod, self.nodes[i]))
                .collect();
            add(affinity::normalize_to_max(&raw), 2);
        }
        if let Some(raw) = affinity::inter_pod_raw_scores(pod, self, candidates) {
            add(affinity::normalize_min_max(&raw), 2);
        }
        let has_constraints = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        if let Some(scores) = affinity::spread_scores(pod, self, candidates) {
            add(scores, 2);
        } else if !has_constraints {
            if let Some(counts) = owner(pod).and_then(|uid| self.by_owner.get(uid)) {
                let here: Vec<i64> = candidates
                    .iter()
                    .map(|i| counts.get(i).copied().unwrap_or(0))
                    .collect();
                let max = here.iter().copied().max().unwrap_or(0);
                add(
                    here.iter()
                        .map(|c| if max > 0 { 100 * (max - c) / max } else { 100 })
                        .collect(),
                    2,
                );
            }
        }
        total
    }
}

/// What is worked out once per incoming pod.
struct Incoming<'p, 's> {
    want: Resources,
    tolerations: &'p [Toleration],
    ports: Vec<(i32, String)>,
    inter_pod: Option<InterPodFilter>,
    spread: Option<SpreadFilter<'s>>,
}

fn taint(key: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }
}

/// The node-level filters: NodeUnschedulable (a cordoned node takes only
/// pods tolerating `node.kubernetes.io/unschedulable:NoSchedule`, as
/// DaemonSet pods do), readiness (a node whose Ready condition is False
/// (or missing) counts as tainted `node.kubernetes.io/not-ready`, Unknown
/// as `node.kubernetes.io/unreachable`, as the node lifecycle controller
/// taints them) and TaintToleration (NoSchedule and NoExecute).
pub fn node_refuses(node: &Node, tolerations: &[Toleration]) -> Option<String> {
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
        && !tolerates(tolerations, &taint("node.kubernetes.io/unschedulable"))
    {
        return Some("node(s) were unschedulable".to_string());
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let implied = match ready {
        Some("True") => None,
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => Some("node.kubernetes.io/not-ready"),
    };
    if let Some(key) = implied {
        if !tolerates(tolerations, &taint(key)) {
            return Some(format!("node(s) had untolerated taint {{{key}: }}"));
        }
    }
    for taint in node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
    {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerates(tolerations, taint)
        {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

/// The owner a pod's replicas share (its controller's uid).
fn owner(pod: &Pod) -> Option<&str> {
    crate::replicaset::sync::controller_uid(pod)
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
    let mut snapshot = Snapshot::new(nodes);
    for (node, pods) in bound {
        for p in pods {
            snapshot.place(p, node);
        }
    }
    snapshot.choose_index(pod, volumes).map(|i| &nodes[i])
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
    fn enough_feasible_nodes_as_kube_scheduler_counts_them() {
        assert_eq!(feasible_nodes_to_find(3), 3);
        assert_eq!(feasible_nodes_to_find(99), 99);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(10000), 500);
    }

    #[test]
    fn the_search_rotates_over_many_nodes() {
        let nodes: Vec<Node> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), "4", serde_json::json!({})))
            .collect();
        let snapshot = Snapshot::new(&nodes).starting_at(990);
        let first = snapshot.choose(&pod("100m"), &[]).unwrap();
        // 420 feasible from 990 on: 990..999 then 0..409.
        assert_eq!(snapshot.next_start(), 410);
        let name = first.metadata.name.clone().unwrap_or_default();
        assert!(
            name.as_str() >= "n0990" || name.as_str() < "n0410",
            "{name}"
        );
        snapshot.choose(&pod("100m"), &[]).unwrap();
        assert_eq!(snapshot.next_start(), 830);
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
    fn with(node: Node, patch: serde_json::Value) -> Node {
        let mut value = serde_json::to_value(node).unwrap();
        json_patch::merge(&mut value, &patch);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn cordoned_and_not_ready_nodes_need_tolerations() {
        let base = node("a", "4", json!({}));
        let cordoned = with(base.clone(), json!({"spec": {"unschedulable": true}}));
        let condition = |status: &str| {
            with(
                base.clone(),
                json!({"status": {"conditions": [{"type": "Ready", "status": status}]}}),
            )
        };
        let no_conditions = with(base.clone(), json!({"status": {"conditions": null}}));
        let tolerate = |key: &str| -> Vec<Toleration> {
            serde_json::from_value(
                json!([{"key": key, "operator": "Exists", "effect": "NoSchedule"}]),
            )
            .unwrap()
        };
        let unschedulable = "node(s) were unschedulable".to_string();
        let not_ready =
            "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_string();
        let unreachable =
            "node(s) had untolerated taint {node.kubernetes.io/unreachable: }".to_string();
        let everything: Vec<Toleration> =
            serde_json::from_value(json!([{"operator": "Exists"}])).unwrap();
        // (node, tolerations, verdict)
        let cases = [
            (&base, vec![], None),
            (&cordoned, vec![], Some(unschedulable.clone())),
            (
                &cordoned,
                tolerate("node.kubernetes.io/unschedulable"),
                None,
            ),
            (
                &cordoned,
                tolerate("node.kubernetes.io/not-ready"),
                Some(unschedulable),
            ),
            (&condition("False"), vec![], Some(not_ready.clone())),
            (
                &condition("False"),
                tolerate("node.kubernetes.io/not-ready"),
                None,
            ),
            (
                &condition("False"),
                tolerate("node.kubernetes.io/unreachable"),
                Some(not_ready.clone()),
            ),
            (&condition("Unknown"), vec![], Some(unreachable.clone())),
            (
                &condition("Unknown"),
                tolerate("node.kubernetes.io/unreachable"),
                None,
            ),
            (
                &condition("Unknown"),
                tolerate("node.kubernetes.io/not-ready"),
                Some(unreachable),
            ),
            (&no_conditions, vec![], Some(not_ready)),
            (&no_conditions, everything.clone(), None),
            (&cordoned, everything, None),
        ];
        for (i, (node, tolerations, want)) in cases.into_iter().enumerate() {
            assert_eq!(node_refuses(node, &tolerations), want, "case {i}");
        }
    }

    #[test]
    fn policies_combine_in_choose() {
        let nodes = vec![
            node("a", "4", json!({"kubernetes.io/hostname": "a"})),
            node(
                "b",
                "4",
                json!({"kubernetes.io/hostname": "b", "disk": "ssd"}),
            ),
            node("c", "4", json!({"kubernetes.io/hostname": "c"})),
        ];
        // Preferred node affinity beats the emptier nodes.
        let mut prefers: Pod = pod("1");
        prefers.spec.as_mut().unwrap().affinity = Some(serde_json::from_value(json!({
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}
        })).unwrap());
        // b is busier (with a pod of another owner).
        let mut busy = pod("1");
        busy.metadata.owner_references = None;
        let mut bound = BTreeMap::new();
        bound.insert("b".to_string(), vec![&busy]);
        assert_eq!(node_name(choose(&prefers, &nodes, &bound).unwrap()), "b");

        // One replica per node, then Kubernetes' message.
        let web = |name: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}], "affinity": {"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": "web"}}}]}}}
            }))
            .unwrap()
        };
        let replicas = [web("w0"), web("w1"), web("w2"), web("w3")];
        let mut snapshot = Snapshot::new(&nodes);
        let mut placed = Vec::new();
        for replica in &replicas[..3] {
            let chosen = node_name(snapshot.choose(replica, &[]).unwrap()).to_string();
            snapshot.place(replica, &chosen);
            placed.push(chosen);
        }
        placed.sort();
        assert_eq!(placed, vec!["a", "b", "c"]);
        assert_eq!(
            snapshot.choose(&replicas[3], &[]).unwrap_err(),
            "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
        );
    }
    #[test]
    fn candidates_come_from_the_label_index() {
        let nodes = vec![node("a", "4", json!({}))];
        let labelled = |labels: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "labels": labels}, "spec": {"containers": []}}),
            )
            .unwrap()
        };
        let pods = [
            labelled(json!({"app": "web", "tier": "front"})),
            labelled(json!({"app": "web"})),
            labelled(json!({"app": "db"})),
        ];
        let mut snapshot = Snapshot::new(&nodes);
        for p in &pods {
            snapshot.place(p, "a");
        }
        let selector =
            |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        // (selector, how many candidates)
        let cases = [
            (Some(selector(json!({"matchLabels": {"app": "web"}}))), 2),
            (
                Some(selector(
                    json!({"matchLabels": {"app": "web", "tier": "front"}}),
                )),
                1,
            ),
            (Some(selector(json!({"matchLabels": {"app": "cache"}}))), 0),
            (
                Some(selector(
                    json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
                )),
                3,
            ),
            (Some(selector(json!({}))), 3),
            (None, 0),
        ];
        for (i, (selector, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                snapshot.candidates(selector.as_ref()).count(),
                want,
                "case {i}"
            );
        }
    }
}
