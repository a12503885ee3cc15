//! NetworkPolicy as a reachability matrix, as Kubernetes' own netpol e2e
//! suite checks it: namespaces x, y and z with pods a, b and c each
//! (busybox httpd on 80 and 81), spread over the two nodes of `shoal up
//! --nodes 2`; every pod probes every pod on port 80 (81 pairs, across
//! nodes and within one), and the result is compared with the truth table
//! each policy implies. Needs root; runs alone (nextest's `node-agent`
//! group).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::kube::{eventually, ShoalUp};
use support::nodes;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// `x/a` and the like, in matrix order.
fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

struct Matrix {
    ips: BTreeMap<String, String>,
}

impl Matrix {
    /// Nine pods: a and c on node-1, b on node-2, in each namespace.
    fn start(up: &ShoalUp) -> Matrix {
        for ns in NAMESPACES {
            up.ok(&["create", "namespace", ns]);
        }
        for ns in NAMESPACES {
            for p in PODS {
                let node = if p == "b" { "node-2" } else { "node-1" };
                up.apply(&format!(
                        "apiVersion: v1
kind: Pod
metadata:
  name: {p}
  namespace: \"{ns}\"
  labels:
    pod: {p}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"mkdir -p /www && hostname > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www\"]
    ports:
    - name: serve-80
      containerPort: 80
    - name: serve-81
      containerPort: 81
"
                    ),
                );
            }
        }
        let mut ips = BTreeMap::new();
        for pod in all_pods() {
            let (ns, name) = pod.split_once('/').unwrap();
            let ip = pod_ip_in(up, ns, name);
            ips.insert(pod, ip);
        }
        Matrix { ips }
    }

    /// Every pod probes `target(pod)` (port 80 of every pod by default)
    /// at once; (from, to) → reached.
    fn probe_with(
        &self,
        up: &ShoalUp,
        port: u16,
        target: impl Fn(&str) -> String,
    ) -> BTreeMap<(String, String), bool> {
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = all_pods()
                .into_iter()
                .map(|from| {
                    let targets: Vec<(String, String)> = all_pods()
                        .into_iter()
                        .map(|to| {
                            let address = target(&to);
                            (to, address)
                        })
                        .collect();
                    scope.spawn(move || {
                        let script: String = targets
                            .iter()
                            .map(|(to, address)| {
                                format!(
                                    "(timeout 3 wget -q -O /dev/null http://{address}:{port}/ \
                                     && echo '{to} ok' || echo '{to} no') & "
                                )
                            })
                            .collect::<String>()
                            + "wait";
                        let (ns, name) = from.split_once('/').unwrap();
                        let out = up.kubectl(&["exec", "-n", ns, name, "--", "sh", "-c", &script]);
                        let text = String::from_utf8_lossy(&out.stdout).into_owned();
                        (from, text)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        let mut matrix = BTreeMap::new();
        for (from, text) in results {
            for line in text.lines() {
                if let Some((to, verdict)) = line.split_once(' ') {
                    matrix.insert((from.clone(), to.to_string()), verdict == "ok");
                }
            }
        }
        matrix
    }

    fn probe(&self, up: &ShoalUp) -> BTreeMap<(String, String), bool> {
        self.probe_with(up, 80, |to| self.ips[to].clone())
    }

    /// Waits until the matrix is what `allowed(from, to)` says (policies
    /// take a watch and a sync to apply); panics with the difference.
    fn expect(&self, up: &ShoalUp, case: &str, allowed: impl Fn(&str, &str) -> bool) {
        self.expect_probed(case, || self.probe(up), allowed);
    }

    fn expect_probed(
        &self,
        case: &str,
        probe: impl Fn() -> BTreeMap<(String, String), bool>,
        allowed: impl Fn(&str, &str) -> bool,
    ) {
        let mut wrong = Vec::new();
        let ok = eventually(Duration::from_secs(30), || {
            let matrix = probe();
            wrong = all_pods()
                .iter()
                .flat_map(|from| all_pods().into_iter().map(move |to| (from.clone(), to)))
                .filter(|(from, to)| {
                    let want = from == to || allowed(from, to);
                    matrix.get(&(from.clone(), to.clone())) != Some(&want)
                })
                .map(|(from, to)| {
                    let got = matrix.get(&(from.clone(), to.clone()));
                    format!("{from} -> {to}: got {got:?}")
                })
                .collect();
            wrong.is_empty()
        });
        assert!(
            ok,
            "{case}: {} pairs differ from the truth table:\n{}\nnode-1 table:\n{}",
            wrong.len(),
            wrong.join("\n"),
            nodes::in_node("node-1", &["nft", "list", "table", "ip", "shoal"])
        );
    }
}

fn pod_ip_in(up: &ShoalUp, namespace: &str, name: &str) -> String {
    let mut ip = String::new();
    let running = eventually(Duration::from_secs(90), || {
        ip = up.ok(&[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.status.podIP}",
        ]);
        let phase = up.ok(&[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.status.phase}",
        ]);
        phase == "Running" && !ip.is_empty()
    });
    assert!(running, "{namespace}/{name} not running");
    ip
}

fn ns(pod: &str) -> &str {
    pod.split_once('/').map_or(pod, |(ns, _)| ns)
}

fn name(pod: &str) -> &str {
    pod.split_once('/').map_or(pod, |(_, n)| n)
}

fn policy(up: &ShoalUp, namespace: &str, name: &str, spec: &str) {
    up.apply(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {name}
  namespace: \"{namespace}\"
spec:
{spec}"
    ));
}

fn clear(up: &ShoalUp) {
    for ns in NAMESPACES {
        up.ok(&["delete", "networkpolicy", "--all", "-n", ns]);
    }
}

#[test]
fn network_policies_match_the_reachability_truth_table() {
    require_root!(node::PODS_NEED_ROOT);
    let up = nodes::cluster(2);
    let matrix = Matrix::start(&up);
    // A Service in front of x/b, for the check through a ClusterIP.
    up.ok(&["expose", "pod", "b", "-n", "x", "--port", "80"]);
    let x_b_service = up.ok(&[
        "get",
        "service",
        "b",
        "-n",
        "x",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);

    matrix.expect(&up, "no policy", |_, _| true);

    // The guide's default deny ingress.
    policy(
        &up,
        "x",
        "default-deny-ingress",
        "  podSelector: {}\n  policyTypes:\n  - Ingress\n",
    );
    matrix.expect(&up, "default deny ingress in x", |_, to| ns(to) != "x");
    // Denied connections are refused at once, as the guide shows.
    let out = up.kubectl(&[
        "exec",
        "-n",
        "y",
        "a",
        "--",
        "sh",
        "-c",
        &format!("timeout 5 wget -q -O - http://{}/", matrix.ips["x/b"]),
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("refused"), "a denied connection: {text}");
    clear(&up);
    matrix.expect(&up, "policies removed", |_, _| true);

    // Allow from frontend (pod a) on a port, the guide's backend policy.
    policy(
        &up,
        "x",
        "backend",
        "  podSelector:\n    matchLabels:\n      pod: b\n  policyTypes:\n  - Ingress\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          pod: a\n    ports:\n    - protocol: TCP\n      port: 80\n",
    );
    matrix.expect(&up, "x/b from x/a only", |from, to| {
        to != "x/b" || from == "x/a"
    });
    // The same through x/b's ClusterIP: checked after DNAT.
    matrix.expect_probed(
        "x/b's ClusterIP from x/a only",
        || {
            matrix.probe_with(&up, 80, |to| {
                if to == "x/b" {
                    x_b_service.clone()
                } else {
                    matrix.ips[to].clone()
                }
            })
        },
        |from, to| to != "x/b" || from == "x/a",
    );
    // A named port the pod does not serve on 80: port 80 is closed.
    policy(
        &up,
        "x",
        "backend",
        "  podSelector:\n    matchLabels:\n      pod: b\n  ingress:\n  - ports:\n    - port: serve-81\n",
    );
    matrix.expect(&up, "x/b on its named port serve-81 only", |_, to| {
        to != "x/b"
    });
    let on_81 = matrix.probe_with(&up, 81, |to| matrix.ips[to].clone());
    assert_eq!(
        on_81.get(&("y/c".into(), "x/b".into())),
        Some(&true),
        "serve-81 open"
    );
    // endPort: 79-81 takes in 80.
    policy(
        &up,
        "x",
        "backend",
        "  podSelector:\n    matchLabels:\n      pod: b\n  ingress:\n  - ports:\n    - port: 79\n      endPort: 81\n",
    );
    matrix.expect(&up, "x/b on ports 79-81", |_, _| true);
    clear(&up);

    // Namespace selector: x takes traffic from y only.
    policy(
        &up,
        "x",
        "from-y",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: \"y\"\n",
    );
    matrix.expect(&up, "x from namespace y", |from, to| {
        ns(to) != "x" || ns(from) == "y"
    });
    // Both selectors in one peer: from y's pod a only.
    policy(
        &up,
        "x",
        "from-y",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: \"y\"\n      podSelector:\n        matchLabels:\n          pod: a\n",
    );
    matrix.expect(&up, "x from y/a", |from, to| ns(to) != "x" || from == "y/a");
    clear(&up);

    // The guide's same-namespace policy.
    policy(&up, "x", "allow-same-namespace", "  podSelector: {}\n  policyTypes:\n  - Ingress\n  ingress:\n  - from:\n    - podSelector: {}\n");
    matrix.expect(&up, "x from x only", |from, to| {
        ns(to) != "x" || ns(from) == "x"
    });
    clear(&up);

    // ipBlock with except: node-2's pods (every b) are taken out.
    let node_2 = up.ok(&["get", "node", "node-2", "-o", "jsonpath={.spec.podCIDR}"]);
    policy(
        &up,
        "x",
        "ip-block",
        &format!("  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.244.0.0/16\n        except:\n        - {node_2}\n"),
    );
    matrix.expect(&up, "x from the pod network but node-2", |from, to| {
        ns(to) != "x" || name(from) != "b"
    });
    clear(&up);

    // The guide's default deny egress.
    policy(
        &up,
        "y",
        "default-deny-egress",
        "  podSelector: {}\n  policyTypes:\n  - Egress\n",
    );
    matrix.expect(&up, "default deny egress in y", |from, _| ns(from) != "y");
    // Egress allowed to namespace z on port 80 (and DNS, as the guide's).
    policy(
        &up,
        "y",
        "to-z",
        "  podSelector: {}\n  policyTypes:\n  - Egress\n  egress:\n  - to:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: \"z\"\n    ports:\n    - protocol: TCP\n      port: 80\n  - to:\n    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: kube-system\n    ports:\n    - protocol: UDP\n      port: 53\n",
    );
    matrix.expect(&up, "y to z only", |from, to| {
        ns(from) != "y" || ns(to) == "z"
    });
    clear(&up);
    matrix.expect(&up, "every policy removed", |_, _| true);
}
