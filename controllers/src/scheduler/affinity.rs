//! The policies that look at other pods and at topology: inter-pod affinity
//! and anti-affinity (required as filters, preferred as scores),
//! topologySpreadConstraints (DoNotSchedule as a filter, ScheduleAnyway as
//! a score) and preferred node affinity (a score). Plain functions over a
//! `fit::Snapshot`; no I/O.
//!
//! Each policy works as Kubernetes' plugin does: a pre-pass over the placed
//! pods counts matching pods per topology domain (a `(key, value)` pair of
//! node labels), then each node is judged by looking its own labels up in
//! those counts. So a pod costs O(pods + nodes), not O(pods × nodes).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, Pod, PodAffinityTerm, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::fit::{self, Snapshot};

pub type Labels = BTreeMap<String, String>;

static NO_LABELS: Labels = BTreeMap::new();

pub const AFFINITY_MISMATCH: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY_MISMATCH: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY_MISMATCH: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const SPREAD_MISMATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const SPREAD_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub fn labels(meta_labels: Option<&Labels>) -> &Labels {
    meta_labels.unwrap_or(&NO_LABELS)
}

pub fn pod_labels(pod: &Pod) -> &Labels {
    labels(pod.metadata.labels.as_ref())
}

pub fn node_labels(node: &Node) -> &Labels {
    labels(node.metadata.labels.as_ref())
}

pub fn namespace_of(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// A `metav1.LabelSelector`. As in affinity terms and spread constraints,
/// no selector matches nothing and an empty one matches everything.
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &Labels) -> bool {
    selector.is_some_and(|s| shoal_core::selector::matches(s, Some(labels)))
}

/// Whether `term`, written in a pod of namespace `owner_namespace`, matches
/// `pod`: its namespace is listed or selected (none of either: the owner's
/// own), and its labels match.
pub fn term_matches(
    term: &PodAffinityTerm,
    owner_namespace: &str,
    pod: &Pod,
    namespaces: &HashMap<String, Labels>,
) -> bool {
    let namespace = namespace_of(pod);
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let in_scope = match &term.namespace_selector {
        None if listed.is_empty() => namespace == owner_namespace,
        selector => {
            listed.iter().any(|n| n == namespace)
                || selector.as_ref().is_some_and(|s| {
                    selector_matches(Some(s), namespaces.get(namespace).unwrap_or(&NO_LABELS))
                })
        }
    };
    in_scope && selector_matches(term.label_selector.as_ref(), pod_labels(pod))
}

type Pair = (String, String);

fn pair(key: &str, node: &Node) -> Option<Pair> {
    node_labels(node)
        .get(key)
        .map(|value| (key.to_string(), value.clone()))
}

/// The terms of a pod: (required affinity, required anti-affinity,
/// preferred affinity, preferred anti-affinity).
type Terms<'p> = (
    &'p [PodAffinityTerm],
    &'p [PodAffinityTerm],
    Vec<(i64, &'p PodAffinityTerm)>,
    Vec<(i64, &'p PodAffinityTerm)>,
);

fn terms(pod: &Pod) -> Terms<'_> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let positive = affinity.and_then(|a| a.pod_affinity.as_ref());
    let negative = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    fn weighted(terms: Option<&Vec<WeightedPodAffinityTerm>>) -> Vec<(i64, &PodAffinityTerm)> {
        terms
            .into_iter()
            .flatten()
            .map(|t| (i64::from(t.weight), &t.pod_affinity_term))
            .collect()
    }
    (
        positive
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default(),
        negative
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default(),
        weighted(positive.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })),
        weighted(negative.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })),
    )
}

/// Whether a pod has any pod affinity or anti-affinity term.
pub fn has_pod_affinity(pod: &Pod) -> bool {
    let (a, b, c, d) = terms(pod);
    !(a.is_empty() && b.is_empty() && c.is_empty() && d.is_empty())
}

/// What the InterPodAffinity filter needs to know for one incoming pod.
#[derive(Debug, Default)]
pub struct InterPodFilter {
    /// Domains where an existing pod's required anti-affinity matches the
    /// incoming pod.
    existing_anti: HashSet<Pair>,
    /// Domains holding pods the incoming pod's required anti-affinity
    /// matches.
    anti: HashSet<Pair>,
    /// Domains holding pods that match all of its required affinity terms.
    affinity: HashSet<Pair>,
    /// Keys of its affinity and anti-affinity terms.
    affinity_keys: Vec<String>,
    anti_keys: Vec<String>,
    /// No pod matches its affinity anywhere, but it matches its own terms:
    /// the first of a group with affinity to itself may go anywhere.
    first_of_group: bool,
}

impl InterPodFilter {
    /// `None` when there is nothing to check.
    pub fn new(pod: &Pod, snapshot: &Snapshot) -> Option<InterPodFilter> {
        let (affinity, anti, _, _) = terms(pod);
        let ns = namespace_of(pod);
        let mut state = InterPodFilter::default();
        // Symmetry: existing pods that refuse the incoming one.
        for &i in &snapshot.with_affinity {
            let (existing, node) = snapshot.placed[i];
            let (_, existing_anti, _, _) = terms(existing);
            for term in existing_anti {
                if term_matches(term, namespace_of(existing), pod, &snapshot.namespaces) {
                    if let Some(p) = pair(&term.topology_key, snapshot.nodes[node]) {
                        state.existing_anti.insert(p);
                    }
                }
            }
        }
        if affinity.is_empty() && anti.is_empty() && state.existing_anti.is_empty() {
            return None;
        }
        state.affinity_keys = affinity.iter().map(|t| t.topology_key.clone()).collect();
        state.anti_keys = anti.iter().map(|t| t.topology_key.clone()).collect();
        for term in anti {
            for (existing, node) in snapshot.candidates(term.label_selector.as_ref()) {
                if term_matches(term, ns, existing, &snapshot.namespaces) {
                    if let Some(p) = pair(&term.topology_key, snapshot.nodes[node]) {
                        state.anti.insert(p);
                    }
                }
            }
        }
        if let Some(first) = affinity.first() {
            for (existing, node) in snapshot.candidates(first.label_selector.as_ref()) {
                if affinity
                    .iter()
                    .all(|t| term_matches(t, ns, existing, &snapshot.namespaces))
                {
                    for term in affinity {
                        if let Some(p) = pair(&term.topology_key, snapshot.nodes[node]) {
                            state.affinity.insert(p);
                        }
                    }
                }
            }
        }
        state.first_of_group = !affinity.is_empty()
            && state.affinity.is_empty()
            && affinity
                .iter()
                .all(|t| term_matches(t, ns, pod, &snapshot.namespaces));
        Some(state)
    }

    /// Why `node` cannot take the pod, if it cannot.
    pub fn refuses(&self, node: &Node) -> Option<&'static str> {
        let labels = node_labels(node);
        let in_set = |set: &HashSet<Pair>, key: &str| {
            labels
                .get(key)
                .is_some_and(|v| set.contains(&(key.to_string(), v.clone())))
        };
        if !self.affinity_keys.is_empty() {
            // Every topology key must be on the node.
            if !self.affinity_keys.iter().all(|k| labels.contains_key(k)) {
                return Some(AFFINITY_MISMATCH);
            }
            if !self.first_of_group && !self.affinity_keys.iter().all(|k| in_set(&self.affinity, k))
            {
                return Some(AFFINITY_MISMATCH);
            }
        }
        if self.anti_keys.iter().any(|k| in_set(&self.anti, k)) {
            return Some(ANTI_AFFINITY_MISMATCH);
        }
        if !self.existing_anti.is_empty()
            && labels
                .iter()
                .any(|(k, v)| self.existing_anti.contains(&(k.clone(), v.clone())))
        {
            return Some(EXISTING_ANTI_AFFINITY_MISMATCH);
        }
        None
    }
}

/// Preferred inter-pod affinity as Kubernetes scores it: for each node,
/// the weights of the incoming pod's preferred terms matched by pods in
/// the node's domains (anti-affinity subtracts), plus existing pods'
/// preferred terms that match the incoming pod (and their required
/// affinity, with weight 1). `None` when nothing applies.
pub fn inter_pod_raw_scores(
    pod: &Pod,
    snapshot: &Snapshot,
    candidates: &[usize],
) -> Option<Vec<i64>> {
    let (_, _, preferred, preferred_anti) = terms(pod);
    let ns = namespace_of(pod);
    let mut topology: HashMap<Pair, i64> = HashMap::new();
    let mut add = |key: &str, node: &Node, weight: i64| {
        if let Some(p) = pair(key, node) {
            *topology.entry(p).or_default() += weight;
        }
    };
    for (weight, term) in &preferred {
        for (existing, node) in snapshot.candidates(term.label_selector.as_ref()) {
            if term_matches(term, ns, existing, &snapshot.namespaces) {
                add(&term.topology_key, snapshot.nodes[node], *weight);
            }
        }
    }
    for (weight, term) in &preferred_anti {
        for (existing, node) in snapshot.candidates(term.label_selector.as_ref()) {
            if term_matches(term, ns, existing, &snapshot.namespaces) {
                add(&term.topology_key, snapshot.nodes[node], -*weight);
            }
        }
    }
    for &i in &snapshot.with_affinity {
        let (existing, node) = snapshot.placed[i];
        let node = &snapshot.nodes[node];
        let existing_ns = namespace_of(existing);
        let (required, _, preferred, preferred_anti) = terms(existing);
        for term in required {
            if term_matches(term, existing_ns, pod, &snapshot.namespaces) {
                add(&term.topology_key, node, 1);
            }
        }
        for (weight, term) in &preferred {
            if term_matches(term, existing_ns, pod, &snapshot.namespaces) {
                add(&term.topology_key, node, *weight);
            }
        }
        for (weight, term) in &preferred_anti {
            if term_matches(term, existing_ns, pod, &snapshot.namespaces) {
                add(&term.topology_key, node, -*weight);
            }
        }
    }
    if topology.is_empty() {
        return None;
    }
    Some(
        candidates
            .iter()
            .map(|&i| {
                node_labels(snapshot.nodes[i])
                    .iter()
                    .filter_map(|(k, v)| topology.get(&(k.clone(), v.clone())))
                    .sum()
            })
            .collect(),
    )
}

/// InterPodAffinity's normalization: min-max to 0..=100.
pub fn normalize_min_max(raw: &[i64]) -> Vec<i64> {
    let (Some(min), Some(max)) = (raw.iter().min(), raw.iter().max()) else {
        return Vec::new();
    };
    let spread = max - min;
    raw.iter()
        .map(|s| {
            if spread > 0 {
                100 * (s - min) / spread
            } else {
                0
            }
        })
        .collect()
}

/// The sum of the weights of the pod's preferred node affinity terms that
/// `node` matches.
pub fn preferred_node_affinity(pod: &Pod, node: &Node) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| fit::node_term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

pub fn has_preferred_node_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty())
}

/// NodeAffinity's normalization (Kubernetes' DefaultNormalizeScore): each
/// score times 100 over the highest.
pub fn normalize_to_max(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| if max > 0 { s * 100 / max } else { *s })
        .collect()
}

/// One topology spread constraint, ready to count with.
#[derive(Debug)]
struct Constraint<'p> {
    max_skew: i64,
    key: &'p str,
    selector: Option<&'p LabelSelector>,
    min_domains: i64,
    /// Matching pods per value of `key`, on eligible nodes.
    counts: HashMap<&'p str, i64>,
    self_match: i64,
}

fn constraints<'p>(pod: &'p Pod, hard: bool) -> Vec<Constraint<'p>> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
        .map(|c| Constraint {
            max_skew: i64::from(c.max_skew.max(1)),
            key: c.topology_key.as_str(),
            selector: c.label_selector.as_ref(),
            min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
            counts: HashMap::new(),
            self_match: i64::from(selector_matches(c.label_selector.as_ref(), pod_labels(pod))),
        })
        .collect()
}

/// Counts matching pods per domain over the nodes the pod could go to by
/// its node selection that carry every constraint's key (Kubernetes'
/// nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore).
fn count<'s>(pod: &Pod, snapshot: &'s Snapshot, constraints: &mut [Constraint<'s>]) {
    let eligible: Vec<bool> = snapshot
        .nodes
        .iter()
        .map(|n| {
            let labels = node_labels(n);
            constraints.iter().all(|c| labels.contains_key(c.key))
                && fit::matches_node_selection(pod, n)
        })
        .collect();
    for (i, node) in snapshot.nodes.iter().enumerate() {
        if eligible[i] {
            let labels = node_labels(node);
            for c in constraints.iter_mut() {
                if let Some(v) = labels.get(c.key) {
                    c.counts.entry(v.as_str()).or_insert(0);
                }
            }
        }
    }
    let ns = namespace_of(pod);
    for c in constraints.iter_mut() {
        for (existing, node) in snapshot.candidates(c.selector) {
            if !eligible[node]
                || existing.metadata.deletion_timestamp.is_some()
                || namespace_of(existing) != ns
                || !selector_matches(c.selector, pod_labels(existing))
            {
                continue;
            }
            if let Some(v) = node_labels(snapshot.nodes[node]).get(c.key) {
                *c.counts.entry(v.as_str()).or_insert(0) += 1;
            }
        }
    }
}

/// The PodTopologySpread filter for one incoming pod (its DoNotSchedule
/// constraints).
#[derive(Debug)]
pub struct SpreadFilter<'s> {
    constraints: Vec<Constraint<'s>>,
    /// The smallest count per constraint (0 when there are fewer domains
    /// than minDomains).
    min: Vec<i64>,
}

impl<'s> SpreadFilter<'s> {
    pub fn new(pod: &'s Pod, snapshot: &'s Snapshot) -> Option<SpreadFilter<'s>> {
        let mut constraints = constraints(pod, true);
        if constraints.is_empty() {
            return None;
        }
        count(pod, snapshot, &mut constraints);
        let min = constraints
            .iter()
            .map(|c| {
                if (c.counts.len() as i64) < c.min_domains {
                    0
                } else {
                    c.counts.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        Some(SpreadFilter { constraints, min })
    }

    pub fn refuses(&self, node: &Node) -> Option<&'static str> {
        let labels = node_labels(node);
        for (c, min) in self.constraints.iter().zip(&self.min) {
            let Some(value) = labels.get(c.key) else {
                return Some(SPREAD_MISSING_LABEL);
            };
            let here = c.counts.get(value.as_str()).copied().unwrap_or(0);
            if here + c.self_match - min > c.max_skew {
                return Some(SPREAD_MISMATCH);
            }
        }
        None
    }
}

/// PodTopologySpread's score for the candidates (ScheduleAnyway
/// constraints), normalized as Kubernetes does: fewer matching pods in a
/// node's domains is better; nodes without a key score 0. `None` when the
/// pod has no such constraint.
pub fn spread_scores(pod: &Pod, snapshot: &Snapshot, candidates: &[usize]) -> Option<Vec<i64>> {
    let mut constraints = constraints(pod, false);
    if constraints.is_empty() {
        return None;
    }
    count(pod, snapshot, &mut constraints);
    let raw: Vec<Option<i64>> = candidates
        .iter()
        .map(|&i| {
            let labels = node_labels(snapshot.nodes[i]);
            let mut score = 0.0;
            for c in &constraints {
                let value = labels.get(c.key)?;
                let weight = ((c.counts.len() + 2) as f64).ln();
                let here = c.counts.get(value.as_str()).copied().unwrap_or(0);
                score += here as f64 * weight + (c.max_skew - 1) as f64;
            }
            Some(score.round() as i64)
        })
        .collect();
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    Some(
        raw.iter()
            .map(|s| match s {
                None => 0,
                Some(_) if max == 0 => 100,
                Some(s) => 100 * (max + min - s) / max,
            })
            .collect(),
    )
}

/// Whether a preferred node selector term has anything to match on (an
/// empty term matches no node, as in Kubernetes).
pub fn term_is_empty(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        && term.match_fields.as_ref().is_none_or(|f| f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "i"}]);
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn nodes() -> Vec<Node> {
        vec![node("a", "z1"), node("b", "z1"), node("c", "z2")]
    }

    fn names(snapshot: &Snapshot, pod: &Pod) -> Vec<&'static str> {
        let filter = InterPodFilter::new(pod, snapshot);
        let spread = SpreadFilter::new(pod, snapshot);
        ["a", "b", "c"]
            .into_iter()
            .zip(snapshot.nodes.iter())
            .filter(|(_, n)| {
                filter.as_ref().is_none_or(|f| f.refuses(n).is_none())
                    && spread.as_ref().is_none_or(|s| s.refuses(n).is_none())
            })
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let labels = Labels::from([("app".into(), "web".into()), ("tier".into(), "1".into())]);
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        let cases = [
            (json!({}), true),
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}),
                false,
            ),
        ];
        for (selector, want) in cases {
            assert_eq!(
                selector_matches(Some(&sel(selector.clone())), &labels),
                want,
                "{selector}"
            );
        }
        assert!(!selector_matches(None, &labels));
    }

    #[test]
    fn term_namespaces_default_to_the_owners() {
        let db = pod("db", json!({"app": "db"}), json!({}));
        let mut other = db.clone();
        other.metadata.namespace = Some("prod".into());
        let term = |v: serde_json::Value| serde_json::from_value::<PodAffinityTerm>(v).unwrap();
        let namespaces = HashMap::from([(
            "prod".to_string(),
            Labels::from([("env".into(), "prod".into())]),
        )]);
        let plain =
            term(json!({"topologyKey": "k", "labelSelector": {"matchLabels": {"app": "db"}}}));
        assert!(term_matches(&plain, "default", &db, &namespaces));
        assert!(!term_matches(&plain, "default", &other, &namespaces));
        let listed = term(json!({"topologyKey": "k", "namespaces": ["prod"], "labelSelector": {}}));
        assert!(term_matches(&listed, "default", &other, &namespaces));
        assert!(!term_matches(&listed, "default", &db, &namespaces));
        let selected = term(
            json!({"topologyKey": "k", "namespaceSelector": {"matchLabels": {"env": "prod"}}, "labelSelector": {}}),
        );
        assert!(term_matches(&selected, "default", &other, &namespaces));
        assert!(!term_matches(&selected, "default", &db, &namespaces));
        let all = term(json!({"topologyKey": "k", "namespaceSelector": {}, "labelSelector": {}}));
        assert!(term_matches(&all, "default", &other, &namespaces));
        let no_selector = term(json!({"topologyKey": "k"}));
        assert!(!term_matches(&no_selector, "default", &db, &namespaces));
    }

    fn anti(key: &str) -> serde_json::Value {
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": key, "labelSelector": {"matchLabels": {"app": "web"}}}]}}})
    }

    fn affinity(key: &str) -> serde_json::Value {
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": key, "labelSelector": {"matchLabels": {"app": "db"}}}]}}})
    }

    #[test]
    fn required_pod_affinity_and_anti_affinity() {
        let nodes = nodes();
        let web = pod("w0", json!({"app": "web"}), anti("kubernetes.io/hostname"));
        let db = pod("db", json!({"app": "db"}), json!({}));
        let mut snapshot = Snapshot::new(&nodes);
        snapshot.place(&web, "a");
        snapshot.place(&db, "c");
        // (pod, nodes it may go to)
        let cases = [
            (
                pod("w1", json!({"app": "web"}), anti("kubernetes.io/hostname")),
                vec!["b", "c"],
            ),
            (pod("w1", json!({"app": "web"}), anti("zone")), vec!["c"]),
            // Symmetry: w0 refuses any app=web pod on its node.
            (pod("x", json!({"app": "web"}), json!({})), vec!["b", "c"]),
            (
                pod("y", json!({"app": "other"}), json!({})),
                vec!["a", "b", "c"],
            ),
            (
                pod("near-db", json!({}), affinity("kubernetes.io/hostname")),
                vec!["c"],
            ),
            (pod("near-db", json!({}), affinity("zone")), vec!["c"]),
            (pod("no-key", json!({}), affinity("rack")), vec![]),
        ];
        for (p, want) in cases {
            assert_eq!(names(&snapshot, &p), want, "{:?}", p.metadata.name);
        }
        let nearby = pod("near", json!({}), affinity("kubernetes.io/hostname"));
        let filter = InterPodFilter::new(&nearby, &snapshot).unwrap();
        assert_eq!(filter.refuses(&nodes[0]), Some(AFFINITY_MISMATCH));
        let far = pod("far", json!({}), anti("kubernetes.io/hostname"));
        let filter = InterPodFilter::new(&far, &snapshot).unwrap();
        assert_eq!(filter.refuses(&nodes[0]), Some(ANTI_AFFINITY_MISMATCH));
        let web = pod("w1", json!({"app": "web"}), anti("kubernetes.io/hostname"));
        let filter = InterPodFilter::new(&web, &snapshot).unwrap();
        assert_eq!(filter.refuses(&nodes[0]), Some(ANTI_AFFINITY_MISMATCH));
        let plain = pod("x", json!({"app": "web"}), json!({}));
        let filter = InterPodFilter::new(&plain, &snapshot).unwrap();
        assert_eq!(
            filter.refuses(&nodes[0]),
            Some(EXISTING_ANTI_AFFINITY_MISMATCH)
        );
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_goes_anywhere() {
        let nodes = nodes();
        let snapshot = Snapshot::new(&nodes);
        let first = pod("db-0", json!({"app": "db"}), affinity("zone"));
        assert_eq!(names(&snapshot, &first), vec!["a", "b", "c"]);
        let stranger = pod("x", json!({"app": "x"}), affinity("zone"));
        assert!(names(&snapshot, &stranger).is_empty());
    }

    #[test]
    fn preferred_pod_affinity_scores() {
        let nodes = nodes();
        let db = pod("db", json!({"app": "db"}), json!({}));
        let mut snapshot = Snapshot::new(&nodes);
        snapshot.place(&db, "b");
        let p = pod(
            "p",
            json!({}),
            json!({"affinity": {
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "db"}}}}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "db"}}}}]}}}),
        );
        let raw = inter_pod_raw_scores(&p, &snapshot, &[0, 1, 2]).unwrap();
        assert_eq!(raw, vec![10, 5, 0]);
        assert_eq!(normalize_min_max(&raw), vec![100, 50, 0]);
        let plain = pod("q", json!({}), json!({}));
        assert_eq!(inter_pod_raw_scores(&plain, &snapshot, &[0, 1, 2]), None);
    }

    #[test]
    fn preferred_node_affinity_sums_weights() {
        let nodes = nodes();
        let p = pod(
            "p",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}},
            {"weight": 60, "preference": {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}},
            {"weight": 100, "preference": {}}]}}}),
        );
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| preferred_node_affinity(&p, n))
            .collect();
        assert_eq!(raw, vec![30, 90, 0]);
        assert_eq!(normalize_to_max(&raw), vec![33, 100, 0]);
        assert_eq!(normalize_to_max(&[0, 0]), vec![0, 0]);
        assert!(has_preferred_node_affinity(&p));
    }

    fn spread(key: &str, skew: i32, when: &str) -> serde_json::Value {
        json!({"topologySpreadConstraints": [{"maxSkew": skew, "topologyKey": key,
            "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]})
    }

    #[test]
    fn topology_spread_filter() {
        let mut nodes = nodes();
        nodes.push(
            serde_json::from_value(json!({"metadata": {"name": "d", "labels": {}}})).unwrap(),
        );
        let placed = [
            pod("w0", json!({"app": "web"}), json!({})),
            pod("w1", json!({"app": "web"}), json!({})),
        ];
        let mut snapshot = Snapshot::new(&nodes);
        snapshot.place(&placed[0], "a");
        snapshot.place(&placed[1], "a");
        let p = pod(
            "w2",
            json!({"app": "web"}),
            spread("kubernetes.io/hostname", 1, "DoNotSchedule"),
        );
        let filter = SpreadFilter::new(&p, &snapshot).unwrap();
        let verdicts: Vec<_> = nodes.iter().map(|n| filter.refuses(n)).collect();
        assert_eq!(
            verdicts,
            vec![
                Some(SPREAD_MISMATCH),
                None,
                None,
                Some(SPREAD_MISSING_LABEL)
            ]
        );
        // By zone: z1 has 2, z2 has 0: only z2 keeps the skew at 1.
        let p = pod(
            "w2",
            json!({"app": "web"}),
            spread("zone", 1, "DoNotSchedule"),
        );
        let filter = SpreadFilter::new(&p, &snapshot).unwrap();
        let verdicts: Vec<_> = nodes.iter().map(|n| filter.refuses(n).is_none()).collect();
        assert_eq!(verdicts, vec![false, false, true, false]);
        // maxSkew 3 allows a third on a.
        let p = pod(
            "w2",
            json!({"app": "web"}),
            spread("kubernetes.io/hostname", 3, "DoNotSchedule"),
        );
        assert!(SpreadFilter::new(&p, &snapshot)
            .unwrap()
            .refuses(&nodes[0])
            .is_none());
        // minDomains above the number of domains: the minimum counts as 0.
        let mut p = pod(
            "w2",
            json!({"app": "web"}),
            spread("zone", 2, "DoNotSchedule"),
        );
        p.spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .min_domains = Some(3);
        let filter = SpreadFilter::new(&p, &snapshot).unwrap();
        assert_eq!(filter.refuses(&nodes[0]), Some(SPREAD_MISMATCH));
        assert_eq!(filter.refuses(&nodes[2]), None);
        // ScheduleAnyway is no filter.
        let p = pod(
            "w2",
            json!({"app": "web"}),
            spread("zone", 1, "ScheduleAnyway"),
        );
        assert!(SpreadFilter::new(&p, &snapshot).is_none());
    }

    #[test]
    fn topology_spread_scores_prefer_emptier_domains() {
        let nodes = nodes();
        let placed = [
            pod("w0", json!({"app": "web"}), json!({})),
            pod("w1", json!({"app": "web"}), json!({})),
        ];
        let mut snapshot = Snapshot::new(&nodes);
        snapshot.place(&placed[0], "a");
        snapshot.place(&placed[1], "a");
        let p = pod(
            "w2",
            json!({"app": "web"}),
            spread("kubernetes.io/hostname", 1, "ScheduleAnyway"),
        );
        let scores = spread_scores(&p, &snapshot, &[0, 1, 2]).unwrap();
        assert!(
            scores[1] == scores[2] && scores[1] > scores[0],
            "{scores:?}"
        );
        let plain = pod("q", json!({}), json!({}));
        assert_eq!(spread_scores(&plain, &snapshot, &[0, 1, 2]), None);
    }
}
