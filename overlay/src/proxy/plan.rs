//! What the node's service rules should be, from the Services and
//! EndpointSlices the agent's watches hold: a pure function, tested without
//! a kernel. The layout is kube-proxy's nftables mode (KEP-3866):
//!
//! ```text
//!  services map   clusterIP/externalIP/LB address . proto . port → goto svc-… / ext-…
//!  nodeports map  proto . nodePort (to a local address)           → goto ext-…
//!  no-endpoints   the same keys                                   → reject (or drop)
//!  svc-KEY        masquerade traffic from outside the pod network;
//!                 affinity lookups; numgen random mod N → ep-…
//!  svl-KEY        the same over this node's endpoints (externalTrafficPolicy: Local)
//!  ext-KEY        NodePort/LB/external IP: masquerade (Cluster) or keep the
//!                 client address (Local) → svc-… / svl-…
//!  ep-KEY/IP:PORT hairpin masquerade; remember the client (affinity); dnat
//! ```
//!
//! KEY is `<namespace>/<service>/<protocol>/<port name or number>`, so `nft
//! list table ip shoal` says which Service each chain belongs to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::Ipv4Cidr;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// What this node needs to know beyond the objects.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// Endpoints with this `nodeName` are local (`…TrafficPolicy: Local`).
    pub node_name: String,
    /// The whole pod network: traffic to a ClusterIP from outside it is
    /// masqueraded so that replies come back through this node.
    pub cluster_cidr: Ipv4Cidr,
    /// The tunnel device to other nodes and the source address masqueraded
    /// traffic takes there (the node's gateway, in its podCIDR: the far
    /// end only takes packets from that range). The device has no address
    /// of its own for masquerading to pick.
    pub tunnel: Option<(String, Ipv4Addr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// From a Service or EndpointSlice port's `protocol` (default TCP).
    pub fn parse(protocol: Option<&str>) -> Option<Self> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// nftables' name (`meta l4proto tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// Where a map element sends a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Refused at once: TCP reset, ICMP port unreachable (no endpoints).
    Reject,
    /// Dropped (`externalTrafficPolicy: Local` with no endpoint here).
    Drop,
}

/// One rule of a per-Service or per-pod chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Traffic to this ClusterIP and port from outside the pod network (the
    /// node itself, another host) is masqueraded.
    MasqueradeFromOutside {
        address: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        cluster_cidr: Ipv4Cidr,
    },
    /// Traffic from this address (the endpoint reaching itself through its
    /// Service: hairpin) is masqueraded.
    MasqueradeFrom(Ipv4Addr),
    /// All traffic is masqueraded (`externalTrafficPolicy: Cluster`).
    Masquerade,
    /// Traffic from the node itself is masqueraded.
    MasqueradeFromNode,
    /// Traffic from the node itself goes to this chain.
    FromNodeGoto(String),
    /// A client in the affinity set goes back to its endpoint's chain.
    Sticky {
        set: String,
        chain: String,
    },
    /// The client is (re)added to the affinity set.
    Remember {
        set: String,
    },
    /// One of the chains, at random (`numgen random mod N vmap`).
    Spread(Vec<String>),
    Goto(String),
    Dnat {
        protocol: Protocol,
        address: Ipv4Addr,
        port: u16,
    },
    /// NetworkPolicy: these packets may pass (see `policy`).
    Allow(super::policy::Allow),
    /// NetworkPolicy egress to named ports: these destination address and
    /// port pairs may be reached.
    AllowPairs {
        protocol: Protocol,
        pairs: BTreeSet<(Ipv4Addr, u16)>,
    },
    /// NetworkPolicy: nothing else passes.
    Deny,
}

/// Map keys.
pub type AddressKey = (Ipv4Addr, Protocol, u16);
pub type PortKey = (Protocol, u16);

/// Everything Service-specific in the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Affinity sets and their timeouts (seconds).
    pub affinity_sets: BTreeMap<String, u32>,
    /// Destination address . protocol . port → chain (nat).
    pub services: BTreeMap<AddressKey, String>,
    /// Protocol . nodePort → chain (nat), for local destination addresses.
    pub node_ports: BTreeMap<PortKey, String>,
    /// Destinations without endpoints (filter): rejected or dropped.
    pub no_endpoints: BTreeMap<AddressKey, Target>,
    pub no_endpoint_node_ports: BTreeMap<PortKey, Target>,
    /// Every ClusterIP: other ports of these addresses are rejected.
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    /// Masqueraded traffic into this device gets this source.
    pub tunnel: Option<(String, Ipv4Addr)>,
    /// This node's pods isolated by NetworkPolicy: address → the chain
    /// that checks what may reach (leave) them.
    pub pod_ingress: BTreeMap<Ipv4Addr, String>,
    pub pod_egress: BTreeMap<Ipv4Addr, String>,
    /// LoadBalancer addresses this node answers for (see `announce`).
    pub announce: BTreeSet<Ipv4Addr>,
}

impl Ruleset {
    /// Rules in per-Service chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }
}

/// An endpoint of one Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    address: Ipv4Addr,
    port: u16,
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// The rules for every Service; `slices` may hold any EndpointSlices (those
/// of no listed Service are ignored).
pub fn plan<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeContext,
) -> Ruleset {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.as_ref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        by_service
            .entry((namespace.clone(), service.clone()))
            .or_default()
            .push(slice);
    }
    let mut rules = Ruleset {
        tunnel: node.tunnel.clone(),
        ..Ruleset::default()
    };
    for service in services {
        let (Some(namespace), Some(name)) = (
            service.metadata.namespace.as_deref(),
            service.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let slices = by_service
            .get(&(namespace.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        add_service(&mut rules, namespace, name, service, slices, node);
    }
    rules
}

fn add_service(
    rules: &mut Ruleset,
    namespace: &str,
    name: &str,
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeContext,
) {
    let Some(spec) = service.spec.as_ref() else {
        return;
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return;
    }
    // Headless Services are DNS only.
    let cluster_ips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if cluster_ips.is_empty() {
        return;
    }
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let mut external: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut balancer: Vec<Ipv4Addr> = Vec::new();
    if kind == "LoadBalancer" {
        balancer.extend(
            service
                .status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref())
                .flat_map(|lb| lb.ingress.iter().flatten())
                .filter_map(|i| i.ip.as_deref())
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
        );
        // Announced by the first node (by name) holding a ready endpoint.
        let announcer = slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| e.node_name.as_deref())
            .min();
        if announcer == Some(node.node_name.as_str()) {
            rules.announce.extend(balancer.iter().copied());
        }
        external.extend(balancer.iter().copied());
    }
    external.sort();
    external.dedup();
    rules.cluster_ips.extend(cluster_ips.iter().copied());

    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let node_port = port
            .node_port
            .filter(|_| kind == "NodePort" || kind == "LoadBalancer")
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        let key = format!(
            "{namespace}/{name}/{}/{}",
            protocol.as_str(),
            port.name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map_or_else(|| service_port.to_string(), str::to_string)
        );
        let endpoints = endpoints_of(port, protocol, slices, node);
        let usable = usable(&endpoints);
        let cluster: Vec<&Endpoint> = usable
            .iter()
            .copied()
            .filter(|e| !internal_local || e.local)
            .collect();
        let local: Vec<&Endpoint> = usable.iter().copied().filter(|e| e.local).collect();

        // One chain per endpoint, shared by the cluster and local chains.
        let affinity_set = |e: &Endpoint| format!("affinity-{key}/{}:{}", e.address, e.port);
        let endpoint_chain = |e: &Endpoint| format!("ep-{key}/{}:{}", e.address, e.port);
        let has_external = !external.is_empty() || node_port.is_some();
        let mut referenced: Vec<&Endpoint> = cluster.clone();
        if has_external && external_local {
            referenced.extend(local.iter().copied());
        }
        referenced.sort();
        referenced.dedup();
        for e in referenced {
            let mut chain = vec![Rule::MasqueradeFrom(e.address)];
            if let Some(timeout) = affinity {
                let set = affinity_set(e);
                rules.affinity_sets.insert(set.clone(), timeout);
                chain.push(Rule::Remember { set });
            }
            chain.push(Rule::Dnat {
                protocol,
                address: e.address,
                port: e.port,
            });
            rules.chains.insert(endpoint_chain(e), chain);
        }
        let spread = |endpoints: &[&Endpoint], mut chain: Vec<Rule>| {
            if affinity.is_some() {
                for e in endpoints {
                    chain.push(Rule::Sticky {
                        set: affinity_set(e),
                        chain: endpoint_chain(e),
                    });
                }
            }
            chain.push(Rule::Spread(
                endpoints.iter().map(|e| endpoint_chain(e)).collect(),
            ));
            chain
        };

        let cluster_chain = format!("svc-{key}");
        if cluster.is_empty() {
            for ip in &cluster_ips {
                rules
                    .no_endpoints
                    .insert((*ip, protocol, service_port), Target::Reject);
            }
        } else {
            let masquerade = cluster_ips
                .iter()
                .map(|ip| Rule::MasqueradeFromOutside {
                    address: *ip,
                    protocol,
                    port: service_port,
                    cluster_cidr: node.cluster_cidr,
                })
                .collect();
            rules
                .chains
                .insert(cluster_chain.clone(), spread(&cluster, masquerade));
            for ip in &cluster_ips {
                rules
                    .services
                    .insert((*ip, protocol, service_port), cluster_chain.clone());
            }
        }

        if !has_external {
            continue;
        }
        // Traffic from outside: NodePort, LoadBalancer and external IPs.
        let external_chain = format!("ext-{key}");
        let target = if external_local {
            let mut chain = vec![Rule::MasqueradeFromNode];
            if !cluster.is_empty() {
                chain.push(Rule::FromNodeGoto(cluster_chain.clone()));
            }
            if local.is_empty() {
                None
            } else {
                let local_chain = format!("svl-{key}");
                rules
                    .chains
                    .insert(local_chain.clone(), spread(&local, Vec::new()));
                chain.push(Rule::Goto(local_chain));
                Some(chain)
            }
        } else if cluster.is_empty() {
            None
        } else {
            Some(vec![Rule::Masquerade, Rule::Goto(cluster_chain.clone())])
        };
        match target {
            Some(chain) => {
                rules.chains.insert(external_chain.clone(), chain);
                for ip in &external {
                    rules
                        .services
                        .insert((*ip, protocol, service_port), external_chain.clone());
                }
                if let Some(node_port) = node_port {
                    rules
                        .node_ports
                        .insert((protocol, node_port), external_chain.clone());
                }
            }
            None => {
                // No endpoint at all: refuse; endpoints elsewhere only
                // (Local): drop, as kube-proxy does.
                let verdict = if usable.is_empty() {
                    Target::Reject
                } else {
                    Target::Drop
                };
                for ip in &external {
                    rules
                        .no_endpoints
                        .insert((*ip, protocol, service_port), verdict.clone());
                }
                if let Some(node_port) = node_port {
                    rules
                        .no_endpoint_node_ports
                        .insert((protocol, node_port), verdict.clone());
                }
            }
        }
    }
}

/// The endpoints of one Service port: the slices' ports of the same name
/// and protocol (targetPort by name is resolved per pod in the slice).
fn endpoints_of(
    port: &ServicePort,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    node: &NodeContext,
) -> Vec<Endpoint> {
    let name = port.name.as_deref().unwrap_or_default();
    let mut endpoints = Vec::new();
    for slice in slices {
        let Some(target) = slice.ports.iter().flatten().find_map(|p| {
            (p.name.as_deref().unwrap_or_default() == name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol))
            .then_some(p.port)
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Unset conditions mean ready and serving (EndpointSlice API).
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = endpoint.node_name.as_deref() == Some(node.node_name.as_str());
            for address in endpoint.addresses.iter().take(1) {
                if let Ok(address) = address.parse() {
                    endpoints.push(Endpoint {
                        address,
                        port: target,
                        local,
                        ready,
                        serving,
                        terminating,
                    });
                }
            }
        }
    }
    endpoints.sort();
    endpoints.dedup_by(|a, b| a.address == b.address && a.port == b.port);
    endpoints
}

/// The ready endpoints, or, when none is, the serving terminating ones
/// (kube-proxy's fallback, so that connections drain during a rollout).
fn usable(endpoints: &[Endpoint]) -> Vec<&Endpoint> {
    let ready: Vec<&Endpoint> = endpoints.iter().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    /// node-1 in 10.244.0.0/16 (the policy tests' too).
    pub(crate) fn node() -> NodeContext {
        NodeContext {
            node_name: "node-1".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            tunnel: None,
        }
    }

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// A slice of `web` with endpoints (ip, node, ready).
    fn slice(ports: serde_json::Value, endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints.iter().map(|(ip, node, ready)| json!({
                "addresses": [ip], "nodeName": node,
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn http_slice(endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
        slice(
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            endpoints,
        )
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

    #[test]
    fn cluster_ip_spreads_over_ready_endpoints_and_masquerades_outsiders() {
        let svc = service(
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
        );
        let eps = http_slice(&[
            ("10.244.1.5", "node-1", true),
            ("10.244.2.7", "node-2", true),
            ("10.244.2.8", "node-2", false),
        ]);
        let rules = plan([&svc], [&eps], &node());
        let chain = "svc-default/web/tcp/http";
        assert_eq!(
            rules.services.get(&(VIP, Protocol::Tcp, 80)),
            Some(&chain.to_string())
        );
        assert_eq!(
            rules.chains[chain],
            vec![
                Rule::MasqueradeFromOutside {
                    address: VIP,
                    protocol: Protocol::Tcp,
                    port: 80,
                    cluster_cidr: node().cluster_cidr,
                },
                Rule::Spread(vec![
                    "ep-default/web/tcp/http/10.244.1.5:8080".into(),
                    "ep-default/web/tcp/http/10.244.2.7:8080".into(),
                ]),
            ]
        );
        assert_eq!(
            rules.chains["ep-default/web/tcp/http/10.244.2.7:8080"],
            vec![
                Rule::MasqueradeFrom("10.244.2.7".parse().unwrap()),
                Rule::Dnat {
                    protocol: Protocol::Tcp,
                    address: "10.244.2.7".parse().unwrap(),
                    port: 8080,
                },
            ]
        );
        // The not-ready endpoint gets nothing.
        assert!(!rules.chains.keys().any(|c| c.contains("10.244.2.8")));
        assert!(rules.no_endpoints.is_empty());
        assert!(rules.cluster_ips.contains(&VIP));
    }

    #[test]
    fn no_ready_endpoint_is_refused_and_terminating_serving_ones_drain() {
        let svc = service(json!({"clusterIP": "10.96.0.20",
            "ports": [{"name": "http", "port": 80}]}));
        let rules = plan(
            [&svc],
            [&http_slice(&[("10.244.1.5", "node-1", false)])],
            &node(),
        );
        assert!(rules.services.is_empty() && rules.chains.is_empty());
        assert_eq!(
            rules.no_endpoints.get(&(VIP, Protocol::Tcp, 80)),
            Some(&Target::Reject)
        );

        let draining: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web-x", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.1.9"],
                "conditions": {"ready": false, "serving": true, "terminating": true}}],
        }))
        .unwrap();
        let rules = plan([&svc], [&draining], &node());
        assert!(rules.no_endpoints.is_empty());
        assert!(rules
            .chains
            .contains_key("ep-default/web/tcp/http/10.244.1.9:8080"));
    }

    #[test]
    fn headless_and_external_name_services_get_no_rules() {
        let headless = service(json!({"clusterIP": "None", "ports": [{"port": 80}]}));
        let external = service(json!({"type": "ExternalName", "externalName": "db.example.com"}));
        let eps = http_slice(&[("10.244.1.5", "node-1", true)]);
        let rules = plan([&headless, &external], [&eps], &node());
        assert_eq!(rules, Ruleset::default());
    }

    #[test]
    fn ports_match_slices_by_name_and_protocol() {
        let svc = service(json!({"clusterIP": "10.96.0.20", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        ]}));
        let eps = slice(
            json!([{"name": "dns", "port": 1053, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 2053, "protocol": "TCP"}]),
            &[("10.244.1.5", "node-1", true)],
        );
        let rules = plan([&svc], [&eps], &node());
        assert!(rules
            .chains
            .contains_key("ep-default/web/udp/dns/10.244.1.5:1053"));
        assert!(rules
            .chains
            .contains_key("ep-default/web/tcp/dns-tcp/10.244.1.5:2053"));
        assert_eq!(rules.services.len(), 2);
    }

    #[test]
    fn node_port_cluster_policy_masquerades_and_uses_every_endpoint() {
        let svc = service(json!({"type": "NodePort", "clusterIP": "10.96.0.20",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        let eps = http_slice(&[
            ("10.244.1.5", "node-1", true),
            ("10.244.2.7", "node-2", true),
        ]);
        let rules = plan([&svc], [&eps], &node());
        let ext = "ext-default/web/tcp/http".to_string();
        assert_eq!(rules.node_ports.get(&(Protocol::Tcp, 30080)), Some(&ext));
        assert_eq!(
            rules.chains[&ext],
            vec![
                Rule::Masquerade,
                Rule::Goto("svc-default/web/tcp/http".into())
            ]
        );
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_client_and_uses_local_endpoints() {
        let mut svc = service(json!({"type": "LoadBalancer", "clusterIP": "10.96.0.20",
            "externalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "172.29.0.200"}]}}))
                .unwrap();
        let eps = http_slice(&[
            ("10.244.1.5", "node-1", true),
            ("10.244.2.7", "node-2", true),
        ]);
        let rules = plan([&svc], [&eps], &node());
        let ext = "ext-default/web/tcp/http".to_string();
        assert_eq!(
            rules.chains[&ext],
            vec![
                Rule::MasqueradeFromNode,
                Rule::FromNodeGoto("svc-default/web/tcp/http".into()),
                Rule::Goto("svl-default/web/tcp/http".into()),
            ]
        );
        assert_eq!(
            rules.chains["svl-default/web/tcp/http"],
            vec![Rule::Spread(vec![
                "ep-default/web/tcp/http/10.244.1.5:8080".into()
            ])]
        );
        assert_eq!(
            rules
                .services
                .get(&("172.29.0.200".parse().unwrap(), Protocol::Tcp, 80)),
            Some(&ext)
        );

        // node-1, the first node with an endpoint, answers for the address.
        assert_eq!(
            rules.announce,
            BTreeSet::from(["172.29.0.200".parse().unwrap()])
        );

        // On a node without an endpoint of its own, outside traffic is dropped.
        let other = NodeContext {
            node_name: "node-3".into(),
            ..node()
        };
        let rules = plan([&svc], [&eps], &other);
        assert!(rules.announce.is_empty());
        assert_eq!(
            rules.no_endpoint_node_ports.get(&(Protocol::Tcp, 30080)),
            Some(&Target::Drop)
        );
        assert!(!rules.chains.contains_key(&ext));
    }

    #[test]
    fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
        let svc = service(
            json!({"clusterIP": "10.96.0.20", "internalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80}]}),
        );
        let eps = http_slice(&[
            ("10.244.1.5", "node-1", true),
            ("10.244.2.7", "node-2", true),
        ]);
        let rules = plan([&svc], [&eps], &node());
        assert_eq!(
            rules.chains["svc-default/web/tcp/http"].last(),
            Some(&Rule::Spread(vec![
                "ep-default/web/tcp/http/10.244.1.5:8080".into()
            ]))
        );
        assert!(!rules.chains.keys().any(|c| c.contains("10.244.2.7")));
    }

    #[test]
    fn client_ip_affinity_looks_up_and_remembers_the_client() {
        let svc = service(
            json!({"clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "ports": [{"name": "http", "port": 80}]}),
        );
        let eps = http_slice(&[("10.244.1.5", "node-1", true)]);
        let rules = plan([&svc], [&eps], &node());
        let set = "affinity-default/web/tcp/http/10.244.1.5:8080".to_string();
        assert_eq!(rules.affinity_sets.get(&set), Some(&60));
        let chain = &rules.chains["svc-default/web/tcp/http"];
        assert!(chain.contains(&Rule::Sticky {
            set: set.clone(),
            chain: "ep-default/web/tcp/http/10.244.1.5:8080".into()
        }));
        assert!(rules.chains["ep-default/web/tcp/http/10.244.1.5:8080"]
            .contains(&Rule::Remember { set }));
    }

    #[test]
    fn external_ips_are_steered_like_cluster_ips() {
        let svc = service(
            json!({"clusterIP": "10.96.0.20", "externalIPs": ["192.0.2.10"],
            "ports": [{"port": 80}]}),
        );
        let eps = slice(json!([{"port": 8080}]), &[("10.244.1.5", "node-1", true)]);
        let rules = plan([&svc], [&eps], &node());
        assert_eq!(
            rules
                .services
                .get(&("192.0.2.10".parse().unwrap(), Protocol::Tcp, 80)),
            Some(&"ext-default/web/tcp/80".to_string())
        );
    }
}
