//! NetworkPolicy as rules of the same table: which packets may reach or
//! leave this node's pods. Pure, like `plan`.
//!
//! A pod selected by a policy with `Ingress` (`Egress`) in its types is
//! isolated that way: only what one of those policies' rules allows passes,
//! and replies of allowed connections (conntrack). A pod no policy selects
//! is not touched. Each isolated pod of this node gets a chain,
//! `ingress-<ns>/<pod>` or `egress-<ns>/<pod>`, reached from the maps
//! `pod-ingress` (destination address) and `pod-egress` (source address)
//! in the forward hook, after DNAT: traffic through a Service is checked
//! against the endpoint it was sent to, as Kubernetes requires. Ingress is
//! enforced on the receiving node, egress on the sending one, so traffic
//! between nodes is covered by both ends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::plan::{NodeContext, Protocol, Rule, Ruleset};
use crate::Ipv4Cidr;

/// Which address of a packet a policy rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Ingress: where the packet comes from.
    Source,
    /// Egress: where it goes.
    Destination,
}

/// Packets a policy rule lets through (`return` to the hook chain, which
/// goes on to the other direction's check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub peer: Peer,
    /// The peer's addresses; `None`: any.
    pub addresses: Option<BTreeSet<Ipv4Cidr>>,
    /// Addresses taken out again (ipBlock `except`).
    pub except: BTreeSet<Ipv4Cidr>,
    /// `None`: any protocol and port.
    pub protocol: Option<Protocol>,
    /// Destination port ranges (inclusive); empty: every port.
    pub ports: BTreeSet<(u16, u16)>,
}

/// One ingress or egress rule of a policy: its peers and ports.
type PolicyRule<'p> = (
    Option<&'p Vec<NetworkPolicyPeer>>,
    Option<&'p Vec<NetworkPolicyPort>>,
);

/// A pod as policies see it.
struct PodView<'a> {
    namespace: &'a str,
    name: &'a str,
    ip: Ipv4Addr,
    pod: &'a Pod,
}

/// Adds the policy chains and map elements for this node's pods.
pub fn add_policies<'a>(
    rules: &mut Ruleset,
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    node: &NodeContext,
) {
    let namespace_labels: BTreeMap<&str, Option<&BTreeMap<String, String>>> = namespaces
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref())))
        .collect();
    let pods: Vec<PodView> = pods.into_iter().filter_map(pod_view).collect();
    let policies: Vec<&NetworkPolicy> = policies.into_iter().collect();

    for pod in pods.iter().filter(|p| {
        p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node.node_name)
    }) {
        let labels = pod.pod.metadata.labels.as_ref();
        let selecting: Vec<&NetworkPolicy> = policies
            .iter()
            .copied()
            .filter(|p| p.metadata.namespace.as_deref() == Some(pod.namespace))
            .filter(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    // Absent (required by the API): every pod, as `{}`.
                    s.pod_selector
                        .as_ref()
                        .is_none_or(|selector| shoal_core::selector::matches(selector, labels))
                })
            })
            .collect();
        for direction in [Peer::Source, Peer::Destination] {
            let applying: Vec<&NetworkPolicy> = selecting
                .iter()
                .copied()
                .filter(|p| has_type(p, direction))
                .collect();
            if applying.is_empty() {
                continue;
            }
            let (prefix, map) = match direction {
                Peer::Source => ("ingress", &mut rules.pod_ingress),
                Peer::Destination => ("egress", &mut rules.pod_egress),
            };
            let chain_name = format!("{prefix}-{}/{}", pod.namespace, pod.name);
            map.insert(pod.ip, chain_name.clone());
            // A pod reaching itself (through its own Service: hairpin) is
            // never cut off.
            let mut chain = vec![Rule::Allow(Allow {
                peer: direction,
                addresses: Ipv4Cidr::containing(pod.ip, 32).map(|c| BTreeSet::from([c])),
                except: BTreeSet::new(),
                protocol: None,
                ports: BTreeSet::new(),
            })];
            for policy in applying {
                let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
                let Some(spec) = policy.spec.as_ref() else {
                    continue;
                };
                let policy_rules: Vec<PolicyRule> = match direction {
                    Peer::Source => spec
                        .ingress
                        .iter()
                        .flatten()
                        .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                        .collect(),
                    Peer::Destination => spec
                        .egress
                        .iter()
                        .flatten()
                        .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                        .collect(),
                };
                for (peers, ports) in policy_rules {
                    chain.extend(expand(
                        direction,
                        namespace,
                        peers.map(Vec::as_slice).unwrap_or_default(),
                        ports.map(Vec::as_slice).unwrap_or_default(),
                        pod,
                        &pods,
                        &namespace_labels,
                    ));
                }
            }
            chain.push(Rule::Deny);
            rules.chains.insert(chain_name, chain);
        }
    }
}

fn pod_view(pod: &Pod) -> Option<PodView<'_>> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    Some(PodView {
        namespace: pod.metadata.namespace.as_deref()?,
        name: pod.metadata.name.as_deref()?,
        ip: status.pod_ip.as_deref()?.parse().ok()?,
        pod,
    })
}

/// Whether `policy` isolates its pods in `direction`: its `policyTypes`,
/// or by default Ingress always and Egress when it has egress rules.
fn has_type(policy: &NetworkPolicy, direction: Peer) -> bool {
    let Some(spec) = policy.spec.as_ref() else {
        return false;
    };
    let wanted = match direction {
        Peer::Source => "Ingress",
        Peer::Destination => "Egress",
    };
    match &spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == wanted),
        _ => direction == Peer::Source || spec.egress.is_some(),
    }
}

/// The rules one ingress or egress rule of a policy becomes: one per peer
/// and protocol (peers and ports each OR-ed, as the API says).
fn expand(
    direction: Peer,
    namespace: &str,
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
    pod: &PodView,
    pods: &[PodView],
    namespace_labels: &BTreeMap<&str, Option<&BTreeMap<String, String>>>,
) -> Vec<Rule> {
    // The peers: (addresses or any, except, the pods behind them).
    type Peers<'p> = (
        Option<BTreeSet<Ipv4Cidr>>,
        BTreeSet<Ipv4Cidr>,
        Option<Vec<&'p PodView<'p>>>,
    );
    let mut expanded: Vec<Peers> = Vec::new();
    if peers.is_empty() {
        expanded.push((None, BTreeSet::new(), Some(pods.iter().collect())));
    }
    for peer in peers {
        if let Some(block) = &peer.ip_block {
            let Ok(cidr) = Ipv4Cidr::parse_masked(&block.cidr) else {
                continue;
            };
            let except = block
                .except
                .iter()
                .flatten()
                .filter_map(|e| Ipv4Cidr::parse_masked(e).ok())
                .collect();
            expanded.push((Some(BTreeSet::from([cidr])), except, None));
            continue;
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            continue;
        }
        let selected: Vec<&PodView> = pods
            .iter()
            .filter(|p| match &peer.namespace_selector {
                Some(selector) => shoal_core::selector::matches(
                    selector,
                    namespace_labels.get(p.namespace).copied().flatten(),
                ),
                None => p.namespace == namespace,
            })
            .filter(|p| {
                peer.pod_selector.as_ref().is_none_or(|s| {
                    shoal_core::selector::matches(s, p.pod.metadata.labels.as_ref())
                })
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        let addresses = selected
            .iter()
            .filter_map(|p| Ipv4Cidr::containing(p.ip, 32))
            .collect();
        expanded.push((Some(addresses), BTreeSet::new(), Some(selected)));
    }

    let mut rules = Vec::new();
    for (addresses, except, peer_pods) in expanded {
        if ports.is_empty() {
            rules.push(Rule::Allow(Allow {
                peer: direction,
                addresses,
                except,
                protocol: None,
                ports: BTreeSet::new(),
            }));
            continue;
        }
        let mut by_protocol: BTreeMap<Protocol, BTreeSet<(u16, u16)>> = BTreeMap::new();
        let mut any_port: BTreeSet<Protocol> = BTreeSet::new();
        let mut pairs: BTreeMap<Protocol, BTreeSet<(Ipv4Addr, u16)>> = BTreeMap::new();
        for port in ports {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            match &port.port {
                None => {
                    any_port.insert(protocol);
                }
                Some(IntOrString::Int(n)) => {
                    let (Ok(start), end) = (u16::try_from(*n), port.end_port) else {
                        continue;
                    };
                    let end = end.and_then(|e| u16::try_from(e).ok()).unwrap_or(start);
                    if end >= start {
                        by_protocol
                            .entry(protocol)
                            .or_default()
                            .insert((start, end));
                    }
                }
                Some(IntOrString::String(name)) => match direction {
                    // The named port of the pod the policy protects.
                    Peer::Source => {
                        if let Some(number) = named_port(pod.pod, name, protocol) {
                            by_protocol
                                .entry(protocol)
                                .or_default()
                                .insert((number, number));
                        }
                    }
                    // The named port of each destination pod.
                    Peer::Destination => {
                        for p in peer_pods.iter().flatten() {
                            if let Some(number) = named_port(p.pod, name, protocol) {
                                pairs.entry(protocol).or_default().insert((p.ip, number));
                            }
                        }
                    }
                },
            }
        }
        for protocol in &any_port {
            by_protocol.insert(*protocol, BTreeSet::new());
        }
        for (protocol, ports) in by_protocol {
            rules.push(Rule::Allow(Allow {
                peer: direction,
                addresses: addresses.clone(),
                except: except.clone(),
                protocol: Some(protocol),
                ports,
            }));
        }
        for (protocol, pairs) in pairs {
            rules.push(Rule::AllowPairs { protocol, pairs });
        }
    }
    rules
}

/// The number of `pod`'s container port called `name` with `protocol`.
fn named_port(pod: &Pod, name: &str, protocol: Protocol) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name)
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::proxy::plan::tests::node;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, ip: &str, node: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "web", "containerPort": 8080},
                          {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .unwrap()
    }

    fn namespace(name: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/metadata.name": name}}}))
        .unwrap()
    }

    fn policy(namespace: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": "p"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// Pods: x/a (frontend, node-1), x/b (backend, node-1), y/a (node-2).
    fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
        (
            vec![
                pod("x", "a", "10.244.1.2", "node-1", json!({"app": "frontend"})),
                pod("x", "b", "10.244.1.3", "node-1", json!({"app": "backend"})),
                pod("y", "a", "10.244.2.2", "node-2", json!({"app": "frontend"})),
            ],
            vec![namespace("x"), namespace("y")],
        )
    }

    fn rules_for(policies: &[NetworkPolicy]) -> Ruleset {
        let (pods, namespaces) = cluster();
        let mut rules = Ruleset::default();
        add_policies(&mut rules, policies, &pods, &namespaces, &node());
        rules
    }

    /// A pod's chain without its first rule (the pod itself, always let
    /// through).
    fn policy_rules<'r>(rules: &'r Ruleset, chain: &str) -> &'r [Rule] {
        let rules = &rules.chains[chain];
        let Rule::Allow(first) = &rules[0] else {
            panic!("{chain} does not start with the pod itself: {rules:?}");
        };
        assert_eq!(first.protocol, None);
        &rules[1..]
    }

    fn cidrs(ips: &[&str]) -> Option<BTreeSet<Ipv4Cidr>> {
        Some(ips.iter().map(|ip| ip.parse().unwrap()).collect())
    }

    #[test]
    fn no_policy_no_isolation() {
        assert_eq!(rules_for(&[]), Ruleset::default());
    }

    #[test]
    fn default_deny_ingress_isolates_every_local_pod_of_the_namespace() {
        let rules = rules_for(&[policy(
            "x",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )]);
        assert_eq!(
            rules
                .pod_ingress
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.244.1.2", "10.244.1.3"]
        );
        assert_eq!(policy_rules(&rules, "ingress-x/a"), [Rule::Deny]);
        assert!(rules.pod_egress.is_empty());
    }

    #[test]
    fn allow_from_frontend_on_a_port() {
        let rules = rules_for(&[policy(
            "x",
            json!({"podSelector": {"matchLabels": {"app": "backend"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                                "ports": [{"protocol": "TCP", "port": 80}]}]}),
        )]);
        assert_eq!(rules.pod_ingress.len(), 1);
        assert_eq!(
            policy_rules(&rules, "ingress-x/b"),
            [
                Rule::Allow(Allow {
                    peer: Peer::Source,
                    // Only x's frontend: a pod selector alone stays in the
                    // policy's namespace.
                    addresses: cidrs(&["10.244.1.2/32"]),
                    except: BTreeSet::new(),
                    protocol: Some(Protocol::Tcp),
                    ports: BTreeSet::from([(80, 80)]),
                }),
                Rule::Deny,
            ]
        );
    }

    #[test]
    fn namespace_and_pod_selectors_in_one_peer_are_anded() {
        let rules = rules_for(&[policy(
            "x",
            json!({"podSelector": {"matchLabels": {"app": "backend"}},
                   "ingress": [{"from": [{
                       "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}},
                       "podSelector": {"matchLabels": {"app": "frontend"}}}]}]}),
        )]);
        let Rule::Allow(allow) = &policy_rules(&rules, "ingress-x/b")[0] else {
            panic!("{:?}", rules.chains);
        };
        assert_eq!(allow.addresses, cidrs(&["10.244.2.2/32"]));
        assert_eq!(allow.protocol, None);
    }

    #[test]
    fn ip_blocks_with_except_and_port_ranges() {
        let rules = rules_for(&[policy(
            "x",
            json!({"podSelector": {"matchLabels": {"app": "backend"}},
                   "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}],
                               "ports": [{"protocol": "TCP", "port": 8000, "endPort": 9000}]}]}),
        )]);
        assert!(rules.pod_ingress.is_empty());
        assert_eq!(
            policy_rules(&rules, "egress-x/b")[0],
            Rule::Allow(Allow {
                peer: Peer::Destination,
                addresses: cidrs(&["10.0.0.0/8"]),
                except: cidrs(&["10.244.0.0/16"]).unwrap(),
                protocol: Some(Protocol::Tcp),
                ports: BTreeSet::from([(8000, 9000)]),
            })
        );
    }

    #[test]
    fn named_ports_resolve_on_the_protected_pod_and_on_each_destination() {
        let ingress = rules_for(&[policy(
            "x",
            json!({"podSelector": {"matchLabels": {"app": "backend"}},
                   "ingress": [{"ports": [{"port": "web"}, {"port": "dns", "protocol": "UDP"}]}]}),
        )]);
        type Ports = (Option<Protocol>, BTreeSet<(u16, u16)>);
        let ports: Vec<Ports> = policy_rules(&ingress, "ingress-x/b")
            .iter()
            .filter_map(|r| match r {
                Rule::Allow(a) => Some((a.protocol, a.ports.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            ports,
            [
                (Some(Protocol::Tcp), BTreeSet::from([(8080, 8080)])),
                (Some(Protocol::Udp), BTreeSet::from([(5353, 5353)])),
            ]
        );

        let egress = rules_for(&[policy(
            "x",
            json!({"podSelector": {"matchLabels": {"app": "frontend"}},
                   "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "web"}]}]}),
        )]);
        assert_eq!(
            policy_rules(&egress, "egress-x/a")[0],
            Rule::AllowPairs {
                protocol: Protocol::Tcp,
                pairs: [
                    ("10.244.1.2", 8080),
                    ("10.244.1.3", 8080),
                    ("10.244.2.2", 8080)
                ]
                .into_iter()
                .map(|(ip, port)| (ip.parse().unwrap(), port))
                .collect(),
            }
        );
    }

    #[test]
    fn egress_rules_imply_the_egress_type_and_ingress_always() {
        let rules = rules_for(&[policy(
            "x",
            json!({"podSelector": {"matchLabels": {"app": "frontend"}},
                   "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
        )]);
        assert_eq!(policy_rules(&rules, "ingress-x/a"), [Rule::Deny]);
        assert_eq!(policy_rules(&rules, "egress-x/a").len(), 2);
    }
}
