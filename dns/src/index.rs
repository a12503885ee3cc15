//! The cluster's names, built from Services, EndpointSlices and Pods: a
//! pure function of those objects, rebuilt whole on each change and
//! swapped in (the handlers read one `Arc<Index>` per query).
//!
//! Every name that exists is a key of one map, with its record sets by
//! type; names without records of their own (`svc.<zone>`, `<ns>.svc.<zone>`,
//! `_tcp.<svc>.<ns>.svc.<zone>`, ...) are keys with no sets, so that a
//! query for them is NODATA and not NXDOMAIN. An unknown name, such as a
//! step of the `ndots:5` search-path walk, costs one lookup that misses.
//!
//! The records follow the Kubernetes DNS specification 1.1.0
//! (kubernetes/dns `docs/specification.md`):
//!
//! ```text
//!   dns-version.<zone>                        TXT   "1.1.0"
//!   <svc>.<ns>.svc.<zone>                     A/AAAA  the ClusterIPs
//!                                             (headless: each endpoint's address)
//!                                             CNAME   spec.externalName (ExternalName)
//!   _<port>._<proto>.<svc>.<ns>.svc.<zone>    SRV   0 100 <port> <svc>.<ns>.svc.<zone>
//!                                             (headless: one per endpoint, to its own name)
//!   <hostname>.<svc>.<ns>.svc.<zone>          A/AAAA  a headless endpoint (its hostname,
//!                                             else its address with dashes, as CoreDNS)
//!   <a-b-c-d>.<ns>.pod.<zone>                 A     pods that exist with that address
//!   <d>.<c>.<b>.<a>.in-addr.arpa (ip6.arpa)   PTR   ClusterIPs and headless endpoints
//! ```
//!
//! Endpoints are ready unless their `ready` condition is false;
//! `publishNotReadyAddresses` publishes them all. The zone's SOA is CoreDNS'
//! (`ns.dns.<zone>`, `hostmaster.<zone>`, the TTL as the negative TTL), its
//! NS `ns.dns.<zone>`, whose address is the `kube-system/kube-dns`
//! Service's ClusterIP when that Service exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, RecordSet, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The version of the specification these records follow.
pub const SPEC_VERSION: &str = "1.1.0";
/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the index is built for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cluster domain, as a fully qualified name (`cluster.local.`).
    pub zone: Name,
    /// The TTL of every record, and the negative TTL (the SOA's minimum).
    pub ttl: u32,
    /// The SOA's serial (CoreDNS: the time of the last change).
    pub serial: u32,
}

impl Settings {
    /// Settings for `zone` (a domain such as `cluster.local`, with or
    /// without the final dot).
    pub fn new(zone: &str, ttl: u32, serial: u32) -> Result<Self, String> {
        let mut zone = Name::from_ascii(zone).map_err(|e| format!("{zone}: {e}"))?;
        zone.set_fqdn(true);
        if zone.is_root() {
            return Err("the cluster domain cannot be the root".into());
        }
        Ok(Self { zone, ttl, serial })
    }
}

/// One name's records; none for a name that only has names below it.
#[derive(Debug, Default)]
pub struct Node {
    sets: Vec<Arc<RecordSet>>,
    /// The addresses of SRV targets (the answer's additional section).
    additionals: Vec<Arc<RecordSet>>,
}

impl Node {
    fn set(&self, rtype: RecordType) -> Option<&Arc<RecordSet>> {
        self.sets.iter().find(|s| s.record_type() == rtype)
    }
}

/// What a name and type resolve to.
#[derive(Debug)]
pub enum Answer<'a> {
    /// The records, and the addresses of SRV targets.
    Records {
        answers: &'a Arc<RecordSet>,
        additionals: &'a [Arc<RecordSet>],
    },
    /// An alias (ExternalName): the CNAME, whose target the caller
    /// resolves further for any type but CNAME.
    Alias {
        cname: &'a Arc<RecordSet>,
        target: &'a Name,
    },
    /// The name exists without records of that type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

/// The cluster's names.
#[derive(Debug)]
pub struct Index {
    zone: LowerName,
    soa: Arc<RecordSet>,
    names: HashMap<LowerName, Node>,
    /// Reverse names (`in-addr.arpa`, `ip6.arpa`) of cluster addresses.
    reverse: HashMap<LowerName, Node>,
}

impl Index {
    /// The index of nothing but the zone's own records.
    pub fn empty(settings: &Settings) -> Self {
        Self::build(settings, [], [], [])
    }

    /// Builds the index from the cluster's objects.
    pub fn build<'a>(
        settings: &Settings,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Self {
        let mut b = Builder::new(settings);
        let services: Vec<&Service> = services.into_iter().collect();
        let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
            let owner = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(owner) = owner {
                slices_of
                    .entry((ns, owner.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        for svc in &services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let slices = slices_of.get(&(ns, name)).map(Vec::as_slice).unwrap_or(&[]);
            b.service(svc, slices);
        }
        // ns.dns.<zone>: the cluster DNS Service's address.
        if let Some(dns) = services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some("kube-system")
                && s.metadata.name.as_deref() == Some("kube-dns")
        }) {
            if let Some(ns_name) = b.name("ns.dns") {
                for ip in cluster_ips(dns) {
                    b.address(&ns_name, ip);
                }
            }
        }
        for pod in pods {
            b.pod(pod);
        }
        b.finish()
    }

    /// The zone's apex (`cluster.local.`).
    pub fn zone(&self) -> &LowerName {
        &self.zone
    }

    /// The zone's SOA, for negative answers.
    pub fn soa(&self) -> &Arc<RecordSet> {
        &self.soa
    }

    /// How many names the zone holds (reverse names included).
    pub fn len(&self) -> usize {
        self.names.len() + self.reverse.len()
    }

    /// Whether the zone holds nothing but its apex.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// The zone and its reverse names as master files (RFC 1035 zone
    /// text), the SOA first: what other servers load to serve the same
    /// records (`bench/dns.sh` gives them to NSD and Knot).
    pub fn zone_files(&self) -> (String, String) {
        use std::fmt::Write;
        let mut zone = String::new();
        for record in self.soa.records_without_rrsigs() {
            let _ = writeln!(zone, "{record}");
        }
        for node in self.names.values() {
            for set in node
                .sets
                .iter()
                .filter(|s| s.record_type() != RecordType::SOA)
            {
                for record in set.records_without_rrsigs() {
                    let _ = writeln!(zone, "{record}");
                }
            }
        }
        let mut reverse = String::new();
        for node in self.reverse.values() {
            for set in &node.sets {
                for record in set.records_without_rrsigs() {
                    let _ = writeln!(reverse, "{record}");
                }
            }
        }
        (zone, reverse)
    }

    /// A name of the cluster zone.
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Answer<'_> {
        match self.names.get(name) {
            None => Answer::NxDomain,
            Some(node) => answer(node, rtype),
        }
    }

    /// A reverse name; `None` when the address is not the cluster's (the
    /// question then goes upstream).
    pub fn lookup_reverse(&self, name: &LowerName, rtype: RecordType) -> Option<Answer<'_>> {
        self.reverse.get(name).map(|node| answer(node, rtype))
    }
}

fn answer(node: &Node, rtype: RecordType) -> Answer<'_> {
    if let Some(set) = node.set(rtype) {
        return Answer::Records {
            answers: set,
            additionals: if rtype == RecordType::SRV {
                &node.additionals
            } else {
                &[]
            },
        };
    }
    if let Some(cname) = node.set(RecordType::CNAME) {
        if let Some(RData::CNAME(CNAME(target))) =
            cname.records_without_rrsigs().next().map(|r| &r.data)
        {
            return Answer::Alias { cname, target };
        }
    }
    Answer::NoData
}

/// The ClusterIPs of a Service that has them (not headless, not
/// ExternalName).
fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.iter());
    }
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// An address as a DNS label: `10-244-1-5`, `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

struct Builder<'s> {
    settings: &'s Settings,
    zone: LowerName,
    names: HashMap<LowerName, NodeBuilder>,
    reverse: HashMap<LowerName, NodeBuilder>,
}

#[derive(Default)]
struct NodeBuilder {
    sets: Vec<RecordSet>,
    /// Names whose addresses go with this name's SRV records.
    srv_targets: Vec<LowerName>,
}

impl NodeBuilder {
    fn add(&mut self, name: &Name, ttl: u32, rdata: RData) {
        let rtype = rdata.record_type();
        let set = match self.sets.iter_mut().position(|s| s.record_type() == rtype) {
            Some(i) => &mut self.sets[i],
            None => {
                self.sets
                    .push(RecordSet::with_ttl(name.clone(), rtype, ttl));
                let last = self.sets.len() - 1;
                &mut self.sets[last]
            }
        };
        set.add_rdata(rdata);
    }
}

impl<'s> Builder<'s> {
    fn new(settings: &'s Settings) -> Self {
        let zone = LowerName::from(&settings.zone);
        let mut b = Self {
            settings,
            zone,
            names: HashMap::new(),
            reverse: HashMap::new(),
        };
        let apex = settings.zone.clone();
        let ns = b.name("ns.dns").unwrap_or_else(|| apex.clone());
        let hostmaster = b.name("hostmaster").unwrap_or_else(|| apex.clone());
        let soa = SOA::new(
            ns.clone(),
            hostmaster,
            settings.serial,
            7200,
            1800,
            86400,
            settings.ttl,
        );
        b.add(&apex, RData::SOA(soa));
        b.add(&apex, RData::NS(NS(ns)));
        if let Some(version) = b.name("dns-version") {
            b.add(
                &version,
                RData::TXT(TXT::new(vec![SPEC_VERSION.to_string()])),
            );
        }
        for sub in ["svc", "pod"] {
            if let Some(name) = b.name(sub) {
                b.exists(&name);
            }
        }
        b
    }

    /// `relative.<zone>`; `None` when that is not a valid name (an object
    /// whose name no DNS label can carry gets no records).
    fn name(&self, relative: &str) -> Option<Name> {
        let name = Name::from_ascii(relative).ok()?;
        let name = name.append_domain(&self.settings.zone).ok()?;
        // Lower case: a query matches whatever case it is in.
        Some(name.to_lowercase())
    }

    /// Makes `name` and every name between it and the zone exist.
    fn exists(&mut self, name: &Name) -> &mut NodeBuilder {
        let mut parent = name.base_name();
        while parent.num_labels() > self.settings.zone.num_labels() {
            let key = LowerName::from(&parent);
            if self.names.contains_key(&key) {
                break;
            }
            self.names.insert(key, NodeBuilder::default());
            parent = parent.base_name();
        }
        self.names.entry(LowerName::from(name)).or_default()
    }

    fn add(&mut self, name: &Name, rdata: RData) {
        let ttl = self.settings.ttl;
        self.exists(name).add(name, ttl, rdata);
    }

    fn address(&mut self, name: &Name, ip: IpAddr) {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(v4.into()),
            IpAddr::V6(v6) => RData::AAAA(v6.into()),
        };
        self.add(name, rdata);
    }

    fn ptr(&mut self, ip: IpAddr, target: &Name) {
        let reverse = Name::from(ip);
        let ttl = self.settings.ttl;
        self.reverse
            .entry(LowerName::from(&reverse))
            .or_default()
            .add(&reverse, ttl, RData::PTR(PTR(target.clone())));
    }

    fn srv(&mut self, name: &Name, srv: SRV, target: &Name) {
        self.add(name, RData::SRV(srv));
        let target = LowerName::from(target);
        let node = self.exists(name);
        if !node.srv_targets.contains(&target) {
            node.srv_targets.push(target);
        }
    }

    fn service(&mut self, svc: &Service, slices: &[&EndpointSlice]) {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            return;
        };
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        let Some(base) = self.name(&format!("{name}.{ns}.svc")) else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            let Some(target) = spec
                .external_name
                .as_deref()
                .and_then(|n| Name::from_ascii(n).ok())
            else {
                return;
            };
            let mut target = target;
            target.set_fqdn(true);
            self.add(&base, RData::CNAME(CNAME(target)));
            return;
        }
        let headless = matches!(spec.cluster_ip.as_deref(), Some("None") | None | Some(""));
        if !headless {
            for ip in cluster_ips(svc) {
                self.address(&base, ip);
                self.ptr(ip, &base);
            }
            for port in spec.ports.iter().flatten() {
                let (Some(port_name), Ok(number)) =
                    (port.name.as_deref(), u16::try_from(port.port))
                else {
                    continue;
                };
                let proto = port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase();
                let Some(srv_name) = self.name(&format!("_{port_name}._{proto}.{name}.{ns}.svc"))
                else {
                    continue;
                };
                self.srv(&srv_name, SRV::new(0, 100, number, base.clone()), &base);
            }
            // The Service's name exists even before it has an address.
            self.exists(&base);
            return;
        }
        self.exists(&base);
        let publish_all = spec.publish_not_ready_addresses == Some(true);
        // (hostname, address) of every endpoint the answer carries.
        let mut endpoints: Vec<(String, bool, IpAddr)> = Vec::new();
        for slice in slices {
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready && !publish_all {
                    continue;
                }
                for address in &ep.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    let (host, named) = match ep.hostname.as_deref() {
                        Some(h) if !h.is_empty() => (h.to_string(), true),
                        _ => (dashed(ip), false),
                    };
                    if !endpoints.iter().any(|(h, _, i)| *h == host && *i == ip) {
                        endpoints.push((host, named, ip));
                    }
                }
            }
        }
        let mut hosts: Vec<(Name, IpAddr)> = Vec::new();
        for (host, _, ip) in &endpoints {
            self.address(&base, *ip);
            let Some(host_name) = self.name(&format!("{host}.{name}.{ns}.svc")) else {
                continue;
            };
            self.address(&host_name, *ip);
            self.ptr(*ip, &host_name);
            hosts.push((host_name, *ip));
        }
        // SRV: the ports of each endpoint's slice (all slices of a Service
        // carry the same ports in practice).
        let weight = u16::try_from(100 / hosts.len().max(1)).unwrap_or(1).max(1);
        let mut ports: Vec<(String, String, u16)> = Vec::new();
        for slice in slices {
            for port in slice.ports.iter().flatten() {
                let (Some(port_name), Some(number)) = (
                    port.name.as_deref().filter(|n| !n.is_empty()),
                    port.port.and_then(|p| u16::try_from(p).ok()),
                ) else {
                    continue;
                };
                let proto = port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase();
                let key = (port_name.to_string(), proto, number);
                if !ports.contains(&key) {
                    ports.push(key);
                }
            }
        }
        for (port_name, proto, number) in ports {
            let Some(srv_name) = self.name(&format!("_{port_name}._{proto}.{name}.{ns}.svc"))
            else {
                continue;
            };
            self.exists(&srv_name);
            for (host_name, _) in &hosts {
                self.srv(
                    &srv_name,
                    SRV::new(0, weight, number, host_name.clone()),
                    host_name,
                );
            }
        }
    }

    /// `a-b-c-d.<ns>.pod.<zone>` for each address of a pod that has one.
    fn pod(&mut self, pod: &Pod) {
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            return;
        };
        let Some(status) = pod.status.as_ref() else {
            return;
        };
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                status
                    .pod_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        for ip in ips {
            if let Some(name) = self.name(&format!("{}.{ns}.pod", dashed(ip))) {
                self.address(&name, ip);
            }
        }
    }

    fn finish(self) -> Index {
        let zone = self.zone;
        let into_arcs = |sets: Vec<RecordSet>| sets.into_iter().map(Arc::new).collect::<Vec<_>>();
        let built: HashMap<LowerName, (Vec<Arc<RecordSet>>, Vec<LowerName>)> = self
            .names
            .into_iter()
            .map(|(name, node)| (name, (into_arcs(node.sets), node.srv_targets)))
            .collect();
        // An SRV answer carries its targets' addresses (the same sets).
        let mut names = HashMap::with_capacity(built.len());
        for (name, (sets, targets)) in &built {
            let additionals = targets
                .iter()
                .filter_map(|t| built.get(t))
                .flat_map(|(sets, _)| sets.iter())
                .filter(|s| matches!(s.record_type(), RecordType::A | RecordType::AAAA))
                .cloned()
                .collect();
            names.insert(
                name.clone(),
                Node {
                    sets: sets.clone(),
                    additionals,
                },
            );
        }
        let reverse = self
            .reverse
            .into_iter()
            .map(|(name, node)| {
                let node = Node {
                    sets: into_arcs(node.sets),
                    additionals: Vec::new(),
                };
                (name, node)
            })
            .collect();
        let soa = names
            .get(&zone)
            .and_then(|n: &Node| n.set(RecordType::SOA).cloned())
            .unwrap_or_else(|| Arc::new(RecordSet::new(Name::root(), RecordType::SOA, 0)));
        Index {
            zone,
            soa,
            names,
            reverse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::new("cluster.local", 5, 1).unwrap()
    }

    fn svc(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn slice(
        ns: &str,
        svc: &str,
        endpoints: serde_json::Value,
        ports: serde_json::Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-abc"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
        }))
        .unwrap()
    }

    fn pod(ns: &str, name: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}))
        .unwrap()
    }

    fn name(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    /// The answer's records as text (`<rdata>`), or "NODATA"/"NXDOMAIN".
    fn ask(index: &Index, q: &str, t: RecordType) -> Vec<String> {
        match index.lookup(&name(q), t) {
            Answer::Records { answers, .. } => answers
                .records_without_rrsigs()
                .map(|r| r.data.to_string())
                .collect(),
            Answer::Alias { target, .. } => vec![format!("alias {target}")],
            Answer::NoData => vec!["NODATA".into()],
            Answer::NxDomain => vec!["NXDOMAIN".into()],
        }
    }

    fn web() -> Service {
        svc(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                             {"port": 8080, "protocol": "TCP"}]}),
        )
    }

    #[test]
    fn cluster_ip_services_have_an_address_srv_for_named_ports_and_ptr() {
        let index = Index::build(&settings(), [&web()], [], []);
        assert_eq!(
            ask(&index, "web.default.svc.cluster.local.", RecordType::A),
            ["10.96.0.20"]
        );
        // Case does not matter.
        assert_eq!(
            ask(&index, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A),
            ["10.96.0.20"]
        );
        assert_eq!(
            ask(
                &index,
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV
            ),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        // The SRV answer carries the target's address.
        match index.lookup(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ) {
            Answer::Records { additionals, .. } => {
                assert_eq!(additionals.len(), 1);
                assert_eq!(
                    additionals[0].name().to_string(),
                    "web.default.svc.cluster.local."
                );
            }
            other => panic!("{other:?}"),
        }
        let ptr = index
            .lookup_reverse(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR)
            .unwrap();
        match ptr {
            Answer::Records { answers, .. } => assert_eq!(
                answers
                    .records_without_rrsigs()
                    .next()
                    .unwrap()
                    .data
                    .to_string(),
                "web.default.svc.cluster.local."
            ),
            other => panic!("{other:?}"),
        }
        assert!(index
            .lookup_reverse(&name("21.0.96.10.in-addr.arpa."), RecordType::PTR)
            .is_none());
    }

    #[test]
    fn negative_answers_tell_missing_names_from_missing_types() {
        let index = Index::build(&settings(), [&web()], [], []);
        // The name exists without AAAA or TXT: NODATA.
        assert_eq!(
            ask(&index, "web.default.svc.cluster.local.", RecordType::AAAA),
            ["NODATA"]
        );
        // Names with only names below them exist.
        for ent in [
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "pod.cluster.local.",
            "_tcp.web.default.svc.cluster.local.",
        ] {
            assert_eq!(ask(&index, ent, RecordType::A), ["NODATA"], "{ent}");
        }
        // The search-path walk's misses and unknown names: NXDOMAIN.
        for missing in [
            "web.default.svc.cluster.local.default.svc.cluster.local.",
            "nope.default.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "other.svc.cluster.local.",
            "x.web.default.svc.cluster.local.",
            // A port without a name has no SRV record.
            "_8080._tcp.web.default.svc.cluster.local.",
        ] {
            assert_eq!(
                ask(&index, missing, RecordType::A),
                ["NXDOMAIN"],
                "{missing}"
            );
        }
    }

    #[test]
    fn the_zone_has_its_soa_ns_and_version() {
        let dns = svc(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
        );
        let index = Index::build(&settings(), [&dns], [], []);
        assert_eq!(
            ask(&index, "dns-version.cluster.local.", RecordType::TXT),
            ["1.1.0"]
        );
        assert_eq!(
            ask(&index, "cluster.local.", RecordType::SOA),
            ["ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"]
        );
        assert_eq!(
            ask(&index, "cluster.local.", RecordType::NS),
            ["ns.dns.cluster.local."]
        );
        assert_eq!(
            ask(&index, "ns.dns.cluster.local.", RecordType::A),
            ["10.96.0.10"]
        );
        assert_eq!(
            ask(
                &index,
                "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
                RecordType::SRV
            ),
            ["0 100 53 kube-dns.kube-system.svc.cluster.local."]
        );
    }

    fn postgres() -> (Service, EndpointSlice) {
        let svc = svc(
            "default",
            "postgres",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        );
        let slice = slice(
            "default",
            "postgres",
            json!([
                {"addresses": ["10.244.1.5"], "hostname": "postgres-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "hostname": "postgres-1", "conditions": {"ready": true}},
                {"addresses": ["10.244.1.7"], "hostname": "postgres-2", "conditions": {"ready": false}},
                {"addresses": ["10.244.3.8"]},
            ]),
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        );
        (svc, slice)
    }

    #[test]
    fn headless_services_answer_each_ready_endpoint_by_name_too() {
        let (svc, slice) = postgres();
        let index = Index::build(&settings(), [&svc], [&slice], []);
        assert_eq!(
            ask(&index, "postgres.default.svc.cluster.local.", RecordType::A),
            ["10.244.1.5", "10.244.2.6", "10.244.3.8"]
        );
        assert_eq!(
            ask(
                &index,
                "postgres-0.postgres.default.svc.cluster.local.",
                RecordType::A
            ),
            ["10.244.1.5"]
        );
        assert_eq!(
            ask(
                &index,
                "postgres-2.postgres.default.svc.cluster.local.",
                RecordType::A
            ),
            ["NXDOMAIN"]
        );
        // An endpoint without a hostname is named by its address.
        assert_eq!(
            ask(
                &index,
                "10-244-3-8.postgres.default.svc.cluster.local.",
                RecordType::A
            ),
            ["10.244.3.8"]
        );
        assert_eq!(
            ask(
                &index,
                "_pg._tcp.postgres.default.svc.cluster.local.",
                RecordType::SRV
            ),
            [
                "0 33 5432 postgres-0.postgres.default.svc.cluster.local.",
                "0 33 5432 postgres-1.postgres.default.svc.cluster.local.",
                "0 33 5432 10-244-3-8.postgres.default.svc.cluster.local.",
            ]
        );
        match index.lookup(
            &name("_pg._tcp.postgres.default.svc.cluster.local."),
            RecordType::SRV,
        ) {
            Answer::Records { additionals, .. } => assert_eq!(additionals.len(), 3),
            other => panic!("{other:?}"),
        }
        match index.lookup_reverse(&name("5.1.244.10.in-addr.arpa."), RecordType::PTR) {
            Some(Answer::Records { answers, .. }) => assert_eq!(
                answers
                    .records_without_rrsigs()
                    .next()
                    .unwrap()
                    .data
                    .to_string(),
                "postgres-0.postgres.default.svc.cluster.local."
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_not_ready_addresses_publishes_them_all() {
        let (mut svc, slice) = postgres();
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let index = Index::build(&settings(), [&svc], [&slice], []);
        assert_eq!(
            ask(
                &index,
                "postgres-2.postgres.default.svc.cluster.local.",
                RecordType::A
            ),
            ["10.244.1.7"]
        );
        assert_eq!(
            ask(&index, "postgres.default.svc.cluster.local.", RecordType::A).len(),
            4
        );
    }

    #[test]
    fn a_headless_service_without_endpoints_exists_without_addresses() {
        let (svc, _) = postgres();
        let index = Index::build(&settings(), [&svc], [], []);
        assert_eq!(
            ask(&index, "postgres.default.svc.cluster.local.", RecordType::A),
            ["NODATA"]
        );
    }

    #[test]
    fn external_names_are_aliases() {
        let db = svc(
            "production",
            "database",
            json!({"type": "ExternalName", "externalName": "database.example.com"}),
        );
        let index = Index::build(&settings(), [&db], [], []);
        assert_eq!(
            ask(
                &index,
                "database.production.svc.cluster.local.",
                RecordType::A
            ),
            ["alias database.example.com."]
        );
        assert_eq!(
            ask(
                &index,
                "database.production.svc.cluster.local.",
                RecordType::CNAME
            ),
            ["database.example.com."]
        );
    }

    #[test]
    fn pod_names_exist_only_for_pods_with_that_address() {
        let index = Index::build(&settings(), [], [], [&pod("default", "a", "10.244.1.9")]);
        assert_eq!(
            ask(
                &index,
                "10-244-1-9.default.pod.cluster.local.",
                RecordType::A
            ),
            ["10.244.1.9"]
        );
        assert_eq!(
            ask(
                &index,
                "10-244-1-10.default.pod.cluster.local.",
                RecordType::A
            ),
            ["NXDOMAIN"]
        );
        assert_eq!(
            ask(&index, "10-244-1-9.other.pod.cluster.local.", RecordType::A),
            ["NXDOMAIN"]
        );
    }

    #[test]
    fn other_zones_and_bad_names_are_handled() {
        let s = Settings::new("corp.example.", 30, 7).unwrap();
        let index = Index::build(&s, [&web()], [], []);
        assert_eq!(
            ask(&index, "web.default.svc.corp.example.", RecordType::A),
            ["10.96.0.20"]
        );
        assert!(Settings::new(".", 5, 1).is_err());
        assert!(Settings::new("bad..name", 5, 1).is_err());
    }
}
