//! The files every container of a pod shares, as kubelet (and containerd
//! for resolv.conf) writes them: the pod's hostname, its `/etc/hosts` and
//! its `/etc/resolv.conf`. Pure text; the pod worker writes them into the
//! pod directory and bind-mounts them into each container.
//!
//! ```text
//!  pod_hostname(pod)              spec.hostname or the pod name (63 chars)
//!  pod_fqdn(pod, domain)          <hostname>.<subdomain>.<ns>.svc.<domain>
//!  hosts_file(pod, ips, domain)   "# Kubernetes-managed hosts file." ...
//!  host_network_hosts_file(...)   the node's /etc/hosts + HostAliases
//!  pod_dns(...) / resolv_conf()   dnsPolicy + dnsConfig, kubelet's limits
//! ```

use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{HostAlias, Pod};

/// The longest hostname (kubelet's `hostnameMaxLen`).
const HOSTNAME_MAX_LEN: usize = 63;
/// resolv.conf limits of libc that kubelet enforces.
pub const MAX_DNS_NAMESERVERS: usize = 3;
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// A search domain longer than a DNS subdomain aborts some resolvers.
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// kubelet's `defaultDNSOptions`.
const DEFAULT_DNS_OPTIONS: &[&str] = &["ndots:5"];

const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

/// Why the pod's DNS configuration cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    /// kubelet's resolv.conf parser refuses a bare `nameserver` line.
    #[error("nameserver list is empty")]
    EmptyNameserver,
}

pub type Result<T, E = DnsConfigError> = std::result::Result<T, E>;

/// kubelet's `GeneratePodHostNameAndDomain`, first half: the hostname
/// (spec.hostname, else the pod name, cut to 63 characters without a
/// trailing `-` or `.`) and the pod's subdomain when it has one (see
/// [`pod_fqdn`] for the full name).
pub fn pod_hostname(pod: &Pod) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .or(pod.metadata.name.as_deref())
        .unwrap_or_default();
    let subdomain = spec
        .and_then(|s| s.subdomain.clone())
        .filter(|s| !s.is_empty());
    (truncate_hostname(hostname), subdomain)
}

/// `<hostname>.<subdomain>.<namespace>.svc.<cluster-domain>` when the pod
/// has a subdomain.
pub fn pod_fqdn(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let (hostname, _) = pod_hostname(pod);
    host_domain(pod, cluster_domain).map(|domain| format!("{hostname}.{domain}"))
}

/// The hostname the containers see (the UTS namespace's): the FQDN when
/// `setHostnameAsFQDN` and the pod has one, the short hostname otherwise.
/// (A host-network pod keeps the node's.)
pub fn uts_hostname(pod: &Pod, cluster_domain: &str) -> String {
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match pod_fqdn(pod, cluster_domain) {
        Some(fqdn) if as_fqdn => fqdn,
        _ => pod_hostname(pod).0,
    }
}

fn truncate_hostname(hostname: &str) -> String {
    if hostname.len() <= HOSTNAME_MAX_LEN {
        return hostname.to_owned();
    }
    // Pod names are ASCII (DNS subdomains), so byte 63 is a char boundary;
    // stay safe anyway.
    let mut end = HOSTNAME_MAX_LEN;
    while !hostname.is_char_boundary(end) {
        end -= 1;
    }
    hostname[..end].trim_end_matches(['-', '.']).to_owned()
}

/// `<subdomain>.<namespace>.svc.<cluster-domain>` when the pod has a
/// subdomain.
fn host_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let subdomain = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{subdomain}.{namespace}.svc.{cluster_domain}"))
}

/// kubelet's `managedHostsFileContent`: the pod's `/etc/hosts` (not for
/// host-network pods, see [`host_network_hosts_file`]).
pub fn hosts_file(pod: &Pod, pod_ips: &[String], cluster_domain: &str) -> String {
    let (hostname, _) = pod_hostname(pod);
    let domain = host_domain(pod, cluster_domain);
    let mut out = String::from(MANAGED_HOSTS_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        match &domain {
            Some(domain) => {
                let _ = writeln!(out, "{ip}\t{hostname}.{domain}\t{hostname}");
            }
            None => {
                let _ = writeln!(out, "{ip}\t{hostname}");
            }
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// kubelet's `nodeHostsFileContent`: a host-network pod gets the node's
/// `/etc/hosts` under its own header, plus its HostAliases.
pub fn host_network_hosts_file(pod: &Pod, node_hosts: &str) -> String {
    let mut out = String::from(MANAGED_HOSTS_HEADER_HOST_NETWORK);
    out.push_str(node_hosts);
    out.push_str(&host_aliases(pod));
    out
}

/// kubelet's `hostsEntriesFromHostAliases`.
fn host_aliases(pod: &Pod) -> String {
    let aliases: &[HostAlias] = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_deref())
        .unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        let _ = writeln!(out, "{}\t{names}", alias.ip);
    }
    out
}

/// A pod's resolver configuration (CRI's `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
    /// Warnings kubelet reports as events on the pod: `(reason, message)`,
    /// e.g. `DNSConfigForming` when limits were exceeded, `MissingClusterDNS`.
    pub warnings: Vec<(String, String)>,
}

impl PodDns {
    /// The file containerd writes from it: search, nameservers, options.
    pub fn to_resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            let _ = writeln!(out, "search {}", self.searches.join(" "));
        }
        for server in &self.servers {
            let _ = writeln!(out, "nameserver {server}");
        }
        if !self.options.is_empty() {
            let _ = writeln!(out, "options {}", self.options.join(" "));
        }
        out
    }
}

/// The nameservers, search domains and options of a resolv.conf, as
/// kubelet's `parseResolvConf` reads them: nameservers accumulate, the
/// last `search` line wins (without `.` and trailing dots), options merge
/// with a later one replacing an earlier one of the same name.
pub fn parse_resolv_conf(text: &str) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut options = Vec::new();
    let mut empty_nameserver = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first() {
            Some(&"nameserver") => match fields.get(1) {
                Some(server) => servers.push((*server).to_owned()),
                None => empty_nameserver = true,
            },
            Some(&"search") => {
                searches = fields[1..]
                    .iter()
                    .filter(|s| **s != ".")
                    .map(|s| s.trim_end_matches('.').to_owned())
                    .collect();
            }
            Some(&"options") => {
                for option in &fields[1..] {
                    set_option(&mut options, option);
                }
            }
            _ => {}
        }
    }
    if empty_nameserver {
        return Err(DnsConfigError::EmptyNameserver);
    }
    Ok((servers, searches, options))
}

/// Sets `name[:value]` in an option list, replacing one of the same name.
fn set_option(options: &mut Vec<String>, option: &str) {
    let name = option_name(option);
    match options.iter_mut().find(|o| option_name(o) == name) {
        Some(slot) => *slot = option.to_owned(),
        None => options.push(option.to_owned()),
    }
}

fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(name, _)| name)
}

fn omit_duplicates(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// kubelet's `GetPodDNS`.
///
/// - `ClusterFirst` (the default): the cluster DNS servers only, the
///   searches `<ns>.svc.<domain> svc.<domain> <domain>` then the host's,
///   `options ndots:5`. A host-network pod gets `Default` instead, and so
///   does every pod when no cluster DNS is configured (with a
///   `MissingClusterDNS` warning).
/// - `ClusterFirstWithHostNet`: `ClusterFirst`, host network or not.
/// - `Default`: the host's resolv.conf (`host_resolv_conf`, kubelet's
///   `--resolv-conf`).
/// - `None`: nothing but the pod's `dnsConfig`.
///
/// Then `dnsConfig` is appended (duplicates dropped, its options replace
/// the same names) and kubelet's limits applied: 3 nameservers, 32 search
/// domains of at most 253 characters, 2048 characters in all.
pub fn pod_dns(
    pod: &Pod,
    cluster_dns: &[IpAddr],
    cluster_domain: &str,
    host_resolv_conf: &str,
) -> Result<PodDns> {
    let (host_servers, host_searches, host_options) = parse_resolv_conf(host_resolv_conf)?;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let mut dns = PodDns {
        servers: host_servers,
        searches: host_searches,
        options: host_options,
        warnings: Vec::new(),
    };
    // Unknown policies (the API server rejects them) are ClusterFirst, as
    // kubelet falls back.
    let cluster = match policy {
        "None" => {
            dns = PodDns::default();
            false
        }
        "Default" => false,
        "ClusterFirst" => !host_network,
        _ => true,
    };
    if cluster {
        if cluster_dns.is_empty() {
            let message = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";
            dns.warnings
                .push(("MissingClusterDNS".to_owned(), message.to_owned()));
        } else {
            dns.servers = cluster_dns.iter().map(ToString::to_string).collect();
            if !cluster_domain.is_empty() {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                let cluster_search = [
                    format!("{namespace}.svc.{cluster_domain}"),
                    format!("svc.{cluster_domain}"),
                    cluster_domain.to_owned(),
                ];
                dns.searches =
                    omit_duplicates(cluster_search.into_iter().chain(dns.searches.drain(..)));
            }
            dns.options = DEFAULT_DNS_OPTIONS
                .iter()
                .map(|o| (*o).to_owned())
                .collect();
        }
    }
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        dns.servers = omit_duplicates(
            dns.servers
                .drain(..)
                .chain(config.nameservers.iter().flatten().cloned()),
        );
        dns.searches = omit_duplicates(
            dns.searches
                .drain(..)
                .chain(config.searches.iter().flatten().cloned()),
        );
        for option in config.options.iter().flatten() {
            let name = option.name.as_deref().unwrap_or_default();
            let option = match option.value.as_deref().filter(|v| !v.is_empty()) {
                Some(value) => format!("{name}:{value}"),
                None => name.to_owned(),
            };
            set_option(&mut dns.options, &option);
        }
    }
    fit_limits(&mut dns);
    Ok(dns)
}

/// kubelet's `formDNSConfigFitsLimits`.
fn fit_limits(dns: &mut PodDns) {
    if dns.servers.len() > MAX_DNS_NAMESERVERS {
        dns.servers.truncate(MAX_DNS_NAMESERVERS);
        dns.warnings.push((
            "DNSConfigForming".to_owned(),
            format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                dns.servers.join(" ")
            ),
        ));
    }
    let mut exceeded = false;
    if dns.searches.len() > MAX_DNS_SEARCH_PATHS {
        dns.searches.truncate(MAX_DNS_SEARCH_PATHS);
        exceeded = true;
    }
    let before = dns.searches.len();
    dns.searches
        .retain(|s| s.len() <= DNS1123_SUBDOMAIN_MAX_LENGTH);
    exceeded |= dns.searches.len() != before;
    let mut line_len = dns.searches.join(" ").len();
    if line_len > MAX_DNS_SEARCH_LIST_CHARS {
        while line_len > MAX_DNS_SEARCH_LIST_CHARS {
            match dns.searches.pop() {
                Some(last) => line_len = line_len.saturating_sub(last.len() + 1),
                None => break,
            }
        }
        exceeded = true;
    }
    if exceeded {
        dns.warnings.push((
            "DNSConfigForming".to_owned(),
            format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                dns.searches.join(" ")
            ),
        ));
    }
}

/// The pod's `/etc/resolv.conf` text (see [`pod_dns`]).
pub fn resolv_conf(
    pod: &Pod,
    cluster_dns: &[IpAddr],
    cluster_domain: &str,
    host_resolv_conf: &str,
) -> Result<String> {
    pod_dns(pod, cluster_dns, cluster_domain, host_resolv_conf).map(|d| d.to_resolv_conf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    const HOST: &str = "# generated\nnameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan. example.com .\noptions edns0 ndots:2\n";

    fn dns() -> Vec<IpAddr> {
        vec!["10.96.0.10".parse().unwrap()]
    }

    #[test]
    fn hostname_and_fqdn() {
        let p = pod(PodSpec::default());
        assert_eq!(pod_hostname(&p), ("web-0".into(), None));
        assert_eq!(pod_fqdn(&p, "cluster.local"), None);
        let p = pod(PodSpec {
            hostname: Some("db".into()),
            subdomain: Some("dbs".into()),
            ..Default::default()
        });
        assert_eq!(pod_hostname(&p), ("db".into(), Some("dbs".into())));
        assert_eq!(
            pod_fqdn(&p, "cluster.local").as_deref(),
            Some("db.dbs.shop.svc.cluster.local")
        );
        assert_eq!(uts_hostname(&p, "cluster.local"), "db");
        let mut fq = p.clone();
        fq.spec.as_mut().unwrap().set_hostname_as_fqdn = Some(true);
        assert_eq!(
            uts_hostname(&fq, "cluster.local"),
            "db.dbs.shop.svc.cluster.local"
        );

        let mut long = pod(PodSpec::default());
        long.metadata.name = Some(format!("{}-{}", "a".repeat(62), "bcd"));
        // Cut at 63 ("a"*62 + "-"), then the trailing '-' goes.
        assert_eq!(pod_hostname(&long).0, "a".repeat(62));
    }

    #[test]
    fn hosts_file_is_kubelets() {
        let p = pod(PodSpec::default());
        assert_eq!(
            hosts_file(&p, &["10.244.1.5".into()], "cluster.local"),
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.244.1.5\tweb-0\n"
        );
        let p = pod(PodSpec {
            subdomain: Some("web".into()),
            host_aliases: Some(vec![
                HostAlias {
                    ip: "127.0.0.1".into(),
                    hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
                },
                HostAlias {
                    ip: "10.1.2.3".into(),
                    hostnames: Some(vec!["foo.remote".into()]),
                },
            ]),
            ..Default::default()
        });
        assert_eq!(
            hosts_file(
                &p,
                &["10.244.1.5".into(), "fd00::5".into()],
                "cluster.local"
            ),
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.244.1.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n\
             fd00::5\tweb-0.web.shop.svc.cluster.local\tweb-0\n\
             \n\
             # Entries added by HostAliases.\n\
             127.0.0.1\tfoo.local\tbar.local\n\
             10.1.2.3\tfoo.remote\n"
        );
        assert_eq!(
            host_network_hosts_file(&p, "127.0.0.1 localhost\n"),
            "# Kubernetes-managed hosts file (host network).\n\
             127.0.0.1 localhost\n\
             \n\
             # Entries added by HostAliases.\n\
             127.0.0.1\tfoo.local\tbar.local\n\
             10.1.2.3\tfoo.remote\n"
        );
    }

    #[test]
    fn cluster_first() {
        let p = pod(PodSpec::default());
        assert_eq!(
            resolv_conf(&p, &dns(), "cluster.local", HOST).unwrap(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan example.com\n\
             nameserver 10.96.0.10\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn host_network_and_default() {
        let host_net = pod(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        let expected = "search lan example.com\n\
                        nameserver 192.168.1.1\n\
                        nameserver 192.168.1.2\n\
                        options edns0 ndots:2\n";
        assert_eq!(
            resolv_conf(&host_net, &dns(), "cluster.local", HOST).unwrap(),
            expected
        );
        let default = pod(PodSpec {
            dns_policy: Some("Default".into()),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&default, &dns(), "cluster.local", HOST).unwrap(),
            expected
        );
        let with_host_net = pod(PodSpec {
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            ..Default::default()
        });
        assert!(resolv_conf(&with_host_net, &dns(), "cluster.local", HOST)
            .unwrap()
            .contains("nameserver 10.96.0.10\n"));
    }

    #[test]
    fn no_cluster_dns_falls_back_to_default() {
        let p = pod(PodSpec::default());
        let d = pod_dns(&p, &[], "cluster.local", HOST).unwrap();
        assert_eq!(d.servers, ["192.168.1.1", "192.168.1.2"]);
        assert_eq!(d.warnings[0].0, "MissingClusterDNS");
    }

    #[test]
    fn none_with_dns_config_and_merging() {
        let p = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec!["1.1.1.1".into()]),
                searches: Some(vec!["ns1.svc.cluster-domain.example".into()]),
                options: Some(vec![
                    PodDNSConfigOption {
                        name: Some("ndots".into()),
                        value: Some("2".into()),
                    },
                    PodDNSConfigOption {
                        name: Some("edns0".into()),
                        value: None,
                    },
                ]),
            }),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&p, &dns(), "cluster.local", HOST).unwrap(),
            "search ns1.svc.cluster-domain.example\n\
             nameserver 1.1.1.1\n\
             options ndots:2 edns0\n"
        );
        let merged = pod(PodSpec {
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec!["10.96.0.10".into(), "8.8.8.8".into()]),
                searches: Some(vec!["cluster.local".into(), "extra.example".into()]),
                options: Some(vec![PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("1".into()),
                }]),
            }),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&merged, &dns(), "cluster.local", HOST).unwrap(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan example.com extra.example\n\
             nameserver 10.96.0.10\n\
             nameserver 8.8.8.8\n\
             options ndots:1\n"
        );
        let none_empty = pod(PodSpec {
            dns_policy: Some("None".into()),
            ..Default::default()
        });
        assert_eq!(
            resolv_conf(&none_empty, &dns(), "cluster.local", HOST).unwrap(),
            ""
        );
    }

    #[test]
    fn limits() {
        let p = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some((1..=5).map(|i| format!("10.0.0.{i}")).collect()),
                searches: Some((0..40).map(|i| format!("d{i}.example")).collect()),
                options: None,
            }),
            ..Default::default()
        });
        let d = pod_dns(&p, &dns(), "cluster.local", "").unwrap();
        assert_eq!(d.servers.len(), 3);
        assert_eq!(d.searches.len(), 32);
        assert_eq!(d.warnings.len(), 2);
        assert!(d.warnings[0]
            .1
            .ends_with("the applied nameserver line is: 10.0.0.1 10.0.0.2 10.0.0.3"));

        let long = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                searches: Some(
                    (0..12)
                        .map(|i| format!("{i}{}", "x".repeat(199)))
                        .chain(["y".repeat(254)])
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        let d = pod_dns(&long, &dns(), "cluster.local", "").unwrap();
        // 254-char domain dropped; 200-char domains: 10 fit in 2048 (10*201-1).
        assert_eq!(d.searches.len(), 10);
        assert!(d.searches.join(" ").len() <= MAX_DNS_SEARCH_LIST_CHARS);
    }

    #[test]
    fn bare_nameserver_line_is_an_error() {
        assert_eq!(
            parse_resolv_conf("nameserver\n"),
            Err(DnsConfigError::EmptyNameserver)
        );
        let (servers, searches, options) =
            parse_resolv_conf("search a b\nsearch c.\noptions ndots:1\noptions ndots:3 rotate\n")
                .unwrap();
        assert!(servers.is_empty());
        assert_eq!(searches, ["c"]);
        assert_eq!(options, ["ndots:3", "rotate"]);
    }
}
