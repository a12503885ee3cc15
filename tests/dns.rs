//! The cluster DNS against Debian's `dig`: `shoal dns` serves a `shoal up`
//! cluster (without real pods: Services with hand-written EndpointSlices,
//! pods on a simulated node), forwarding other names to an NSD on
//! loopback that serves `example.test`. Every record kind is checked answer
//! by answer, with the negative answers, the TC bit and TCP, EDNS0, and
//! how soon a change shows.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use support::dns::{count, dig, flags, squeeze, status, Nsd};
use support::kube::{eventually, ShoalUp, SimulatedNodes};
use support::{daemon, free_port, kill_group};

/// `shoal dns` for the cluster of `kubeconfig` on a free loopback port.
struct Dns {
    child: Child,
    port: u16,
    metrics_port: u16,
    log: std::path::PathBuf,
}

impl Dns {
    fn start(kubeconfig: &Path, extra: &[&str]) -> Dns {
        let port = free_port();
        let metrics_port = free_port();
        let log = kubeconfig.with_file_name(format!("dns-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = daemon(support::SHOAL)
            .args(["dns", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(extra)
            .env("RUST_LOG", "info,shoal_dns=debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start shoal dns");
        let dns = Dns {
            child,
            port,
            metrics_port,
            log,
        };
        let up = eventually(Duration::from_secs(30), || {
            dig("127.0.0.1", dns.port, &["dns-version.cluster.local", "TXT"]).contains("1.1.0")
        });
        assert!(up, "shoal dns did not answer:\n{}", dns.log());
        dns
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn dig(&self, args: &[&str]) -> String {
        dig("127.0.0.1", self.port, args)
    }

    /// `dig +short` lines, sorted.
    fn short(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["+short"];
        all.extend_from_slice(args);
        let mut lines: Vec<String> = dig("127.0.0.1", self.port, &all)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .collect();
        lines.sort();
        lines
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- shoal dns log ---\n{}", self.log());
        }
        kill_group(&mut self.child);
    }
}

const OBJECTS: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - name: http
    port: 80
  - name: metrics
    port: 9100
    protocol: UDP
---
apiVersion: v1
kind: Namespace
metadata:
  name: production
---
apiVersion: v1
kind: Service
metadata:
  name: postgres
  namespace: production
spec:
  clusterIP: None
  ports:
  - name: pg
    port: 5432
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: postgres-a
  namespace: production
  labels:
    kubernetes.io/service-name: postgres
addressType: IPv4
ports:
- name: pg
  port: 5432
  protocol: TCP
endpoints:
- addresses: [10.244.1.5]
  hostname: postgres-0
  conditions: {ready: true}
- addresses: [10.244.2.6]
  hostname: postgres-1
  conditions: {ready: true}
- addresses: [10.244.1.7]
  hostname: postgres-2
  conditions: {ready: false}
---
apiVersion: v1
kind: Service
metadata:
  name: database
  namespace: production
spec:
  type: ExternalName
  externalName: database.example.test
---
apiVersion: v1
kind: Service
metadata:
  name: alias
spec:
  type: ExternalName
  externalName: web.default.svc.cluster.local
";

#[test]
fn dig_gets_every_record_kind_of_the_specification() {
    let up = ShoalUp::start();
    let dir = up.data_dir().to_path_buf();
    let nsd = Nsd::start(&dir, [127, 0, 0, 1].into(), free_port());
    let upstream = nsd
        .as_ref()
        .map(Nsd::addr)
        .unwrap_or_else(|| "127.0.0.1:9".into());
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 1, "sim");
    up.apply(OBJECTS);
    let web_ip = up.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let dns = Dns::start(&up.kubeconfig, &["--upstream", &upstream]);
    let fqdn = "web.default.svc.cluster.local.";

    // A ClusterIP Service: its address, in any case, authoritative.
    let a = squeeze(&dns.dig(&[fqdn, "A"]));
    assert_eq!(status(&a), "NOERROR", "{a}");
    assert!(flags(&a).contains("aa") && flags(&a).contains("ra"), "{a}");
    assert!(a.contains(&format!("{fqdn} 5 IN A {web_ip}")), "{a}");
    assert_eq!(
        dns.short(&["WEB.Default.SVC.Cluster.Local", "A"]),
        std::slice::from_ref(&web_ip)
    );
    // SRV for each named port, with its protocol.
    assert_eq!(
        dns.short(&["_http._tcp.web.default.svc.cluster.local", "SRV"]),
        [format!("0 100 80 {fqdn}")]
    );
    assert_eq!(
        dns.short(&["_metrics._udp.web.default.svc.cluster.local", "SRV"]),
        [format!("0 100 9100 {fqdn}")]
    );
    let srv = squeeze(&dns.dig(&["_http._tcp.web.default.svc.cluster.local", "SRV"]));
    assert!(
        srv.contains(&format!("ADDITIONAL SECTION:\n{fqdn} 5 IN A {web_ip}")),
        "{srv}"
    );
    // PTR for the ClusterIP.
    assert_eq!(dns.short(&["-x", &web_ip]), [fqdn.to_string()]);

    // NODATA: the name exists without that type; the SOA says for how long.
    let nodata = squeeze(&dns.dig(&[fqdn, "AAAA"]));
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert_eq!(count(&nodata, "ANSWER"), 0, "{nodata}");
    assert!(
        nodata.contains("IN SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nodata}"
    );
    let ent = dns.dig(&["default.svc.cluster.local", "A"]);
    assert_eq!(status(&ent), "NOERROR", "{ent}");
    // NXDOMAIN: names that do not exist, and the search path's misses.
    for missing in [
        "nope.default.svc.cluster.local",
        "web.default.svc.cluster.local.default.svc.cluster.local",
        "web.nowhere.svc.cluster.local",
        "_http._udp.web.default.svc.cluster.local",
    ] {
        let nx = squeeze(&dns.dig(&[missing, "A"]));
        assert_eq!(status(&nx), "NXDOMAIN", "{missing}: {nx}");
        assert!(nx.contains("IN SOA ns.dns.cluster.local."), "{nx}");
    }

    // The zone's own records.
    assert_eq!(
        dns.short(&["dns-version.cluster.local", "TXT"]),
        ["\"1.1.0\""]
    );
    assert_eq!(
        dns.short(&["cluster.local", "NS"]),
        ["ns.dns.cluster.local."]
    );
    let soa = dns.short(&["cluster.local", "SOA"]);
    assert!(
        soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. ")
            && soa[0].ends_with(" 7200 1800 86400 5"),
        "{soa:?}"
    );
    let dns_ip = up.ok(&[
        "get",
        "svc",
        "-n",
        "kube-system",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(dns_ip, "10.96.0.10");
    assert_eq!(dns.short(&["ns.dns.cluster.local", "A"]), ["10.96.0.10"]);
    assert_eq!(
        dns.short(&[
            "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local",
            "SRV"
        ]),
        ["0 100 53 kube-dns.kube-system.svc.cluster.local."]
    );

    // A headless Service: each ready endpoint, by the Service's name and by
    // its own; SRV to those names; PTR back.
    let pg = "postgres.production.svc.cluster.local.";
    assert_eq!(dns.short(&[pg, "A"]), ["10.244.1.5", "10.244.2.6"]);
    assert_eq!(
        dns.short(&["postgres-0.postgres.production.svc.cluster.local", "A"]),
        ["10.244.1.5"]
    );
    assert_eq!(
        status(&dns.dig(&["postgres-2.postgres.production.svc.cluster.local", "A"])),
        "NXDOMAIN"
    );
    assert_eq!(
        dns.short(&["_pg._tcp.postgres.production.svc.cluster.local", "SRV"]),
        [
            format!("0 50 5432 postgres-0.{pg}"),
            format!("0 50 5432 postgres-1.{pg}")
        ]
    );
    assert_eq!(
        dns.short(&["-x", "10.244.2.6"]),
        [format!("postgres-1.{pg}")]
    );

    // ExternalName: the CNAME, then the outside name's addresses (through
    // the upstream); inside the zone, followed from the index.
    let ext = squeeze(&dns.dig(&["database.production.svc.cluster.local", "A"]));
    assert!(ext.contains("IN CNAME database.example.test."), "{ext}");
    if nsd.is_some() {
        assert!(
            ext.contains("database.example.test. 300 IN A 192.0.2.20"),
            "{ext}"
        );
    }
    let inner = squeeze(&dns.dig(&["alias.default.svc.cluster.local", "A"]));
    assert!(inner.contains(&format!("IN CNAME {fqdn}")), "{inner}");
    assert!(
        inner.contains(&format!("{fqdn} 5 IN A {web_ip}")),
        "{inner}"
    );

    // Pods: a-b-c-d.<ns>.pod.<zone> only for a pod with that address.
    up.apply(
        "apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: c
    image: busybox
",
    );
    let mut pod_ip = String::new();
    assert!(eventually(Duration::from_secs(30), || {
        pod_ip = up.ok(&["get", "pod", "p", "-o", "jsonpath={.status.podIP}"]);
        !pod_ip.is_empty()
    }));
    let pod_name = format!("{}.default.pod.cluster.local", pod_ip.replace('.', "-"));
    assert!(
        eventually(Duration::from_secs(5), || dns.short(&[&pod_name, "A"])
            == [pod_ip.clone()]),
        "{}",
        dns.dig(&[&pod_name])
    );
    assert_eq!(
        status(&dns.dig(&["10-1-2-3.default.pod.cluster.local", "A"])),
        "NXDOMAIN"
    );

    // Forwarding, with the upstream's own negative answers.
    if nsd.is_some() {
        assert_eq!(
            dns.short(&["www.example.test", "A"]),
            ["192.0.2.10", "192.0.2.11"]
        );
        let nx = dns.dig(&["nope.example.test", "A"]);
        assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
        // Asked again: from the cache.
        assert_eq!(
            dns.short(&["www.example.test", "A"]),
            ["192.0.2.10", "192.0.2.11"]
        );
    }

    // Metrics: queries by type and rcode, latency, the cache.
    let metrics = ureq_get(dns.metrics_port, "/metrics");
    for needle in [
        "shoal_dns_requests_total{type=\"A\"}",
        "shoal_dns_requests_total{type=\"SRV\"}",
        "shoal_dns_responses_total{rcode=\"NXDOMAIN\"}",
        "shoal_dns_request_duration_seconds_bucket",
        "shoal_dns_cache_hits_total",
        "shoal_dns_zone_names",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    if nsd.is_some() {
        assert!(
            !metrics.contains("shoal_dns_cache_hits_total 0\n"),
            "{metrics}"
        );
    }
    // Each query at debug.
    assert!(dns.log().contains("dns query"), "{}", dns.log());
}

/// A plain HTTP GET on loopback.
fn ureq_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn large_answers_set_tc_over_udp_and_come_whole_over_tcp_or_with_edns() {
    let up = ShoalUp::start();
    let endpoints: String = (1..=60)
        .map(|i| format!("- addresses: [10.244.9.{i}]\n"))
        .collect();
    up.apply(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: big
spec:
  clusterIP: None
  ports:
  - name: http
    port: 80
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-a
  labels:
    kubernetes.io/service-name: big
addressType: IPv4
ports:
- name: http
  port: 80
endpoints:
{endpoints}"
    ));
    let dns = Dns::start(&up.kubeconfig, &["--resolv-conf", "/dev/null"]);
    let name = "big.default.svc.cluster.local";
    assert!(eventually(Duration::from_secs(5), || {
        dns.short(&["+tcp", name]).len() == 60
    }));
    // Without EDNS a UDP answer has 512 bytes: truncated, TC set.
    let truncated = dns.dig(&["+noedns", "+ignore", name]);
    assert!(flags(&truncated).contains("tc"), "{truncated}");
    assert!(count(&truncated, "ANSWER") < 60, "{truncated}");
    // dig retries over TCP on TC, as resolvers do.
    let retried = dns.dig(&["+noedns", name]);
    assert!(
        retried.contains("Truncated, retrying in TCP mode"),
        "{retried}"
    );
    assert_eq!(count(&retried, "ANSWER"), 60, "{retried}");
    // EDNS0 with a large buffer: the whole answer over UDP.
    let edns = dns.dig(&["+bufsize=4096", name]);
    assert!(!flags(&edns).contains("tc"), "{edns}");
    assert_eq!(count(&edns, "ANSWER"), 60, "{edns}");
    assert!(edns.contains("; EDNS: version: 0"), "{edns}");
}

#[test]
fn outside_names_without_an_upstream_are_servfail_before_the_client_gives_up() {
    let up = ShoalUp::start();
    // An upstream that never answers (a bound socket nobody reads).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let dns = Dns::start(
        &up.kubeconfig,
        &["--upstream", &silent_addr, "--upstream-timeout", "1s"],
    );
    let started = Instant::now();
    let answer = dns.dig(&["+time=5", "www.example.test", "A"]);
    assert_eq!(status(&answer), "SERVFAIL", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // No upstream at all: SERVFAIL at once.
    let none = Dns::start(&up.kubeconfig, &["--resolv-conf", "/dev/null"]);
    let answer = none.dig(&["www.example.test", "A"]);
    assert_eq!(status(&answer), "SERVFAIL", "{answer}");
    // The cluster's names still answer.
    assert_eq!(
        none.short(&["kubernetes.default.svc.cluster.local"]).len(),
        1
    );
    drop(silent);
}

/// How long after `change` the answer to `name` satisfies `done`; the
/// best of three tries (the machine is shared).
fn time_until(change: impl Fn(usize), done: impl Fn() -> bool, undo: impl Fn(usize)) -> Duration {
    let mut best = Duration::MAX;
    for i in 0..3 {
        change(i);
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the change never showed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        best = best.min(started.elapsed());
        undo(i);
    }
    best
}

#[test]
fn changes_show_within_a_second() {
    let up = ShoalUp::start();
    let dns = Dns::start(&up.kubeconfig, &["--resolv-conf", "/dev/null"]);
    let name = "fresh.default.svc.cluster.local";
    // A Service created resolves, and a deleted one stops resolving, within 1 s.
    let created = time_until(
        |_| {
            up.ok(&["create", "service", "clusterip", "fresh", "--tcp=80:80"]);
        },
        || dns.short(&[name]).len() == 1,
        |_| {
            up.ok(&["delete", "service", "fresh", "--wait=false"]);
            assert!(eventually(Duration::from_secs(10), || dns
                .short(&[name])
                .is_empty()));
        },
    );
    assert!(
        created < Duration::from_secs(1),
        "created after {created:?}"
    );
    let deleted = time_until(
        |_| {
            up.ok(&["create", "service", "clusterip", "fresh", "--tcp=80:80"]);
            assert!(eventually(Duration::from_secs(10), || dns
                .short(&[name])
                .len()
                == 1));
            up.ok(&["delete", "service", "fresh", "--wait=false"]);
        },
        || status(&dns.dig(&[name])) == "NXDOMAIN",
        |_| {},
    );
    assert!(
        deleted < Duration::from_secs(1),
        "deleted after {deleted:?}"
    );
    // An endpoint turning not-ready leaves a headless answer within 1 s.
    up.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: hl
spec:
  clusterIP: None
  ports:
  - port: 80
",
    );
    let slice = |ready: bool| {
        format!(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hl-a
  labels:
    kubernetes.io/service-name: hl
addressType: IPv4
endpoints:
- addresses: [10.244.1.1]
  conditions: {{ready: true}}
- addresses: [10.244.1.2]
  conditions: {{ready: {ready}}}
"
        )
    };
    let hl = "hl.default.svc.cluster.local";
    let unready = time_until(
        |_| {
            up.apply(&slice(true));
            assert!(eventually(Duration::from_secs(10), || dns
                .short(&[hl])
                .len()
                == 2));
            up.apply(&slice(false));
        },
        || dns.short(&[hl]) == ["10.244.1.1"],
        |_| {},
    );
    assert!(
        unready < Duration::from_secs(1),
        "not-ready after {unready:?}"
    );
}
