//! `shoal bench dns`: fills a cluster with Services and pods (on simulated
//! nodes) and writes what `bench/dns.sh` needs to compare DNS servers on
//! the same records:
//!
//! - `cluster.local.zone`, `in-addr.arpa.zone`: master files of exactly the
//!   records shoal's DNS serves for those objects (its own index, dumped),
//!   for NSD and Knot;
//! - `queries.txt`: dnsperf's input, the mix pods send: Service A,
//!   headless A, SRV, PTR, and NXDOMAIN from the `ndots:5` search path
//!   (an outside name tried under `<ns>.svc.cluster.local`).
//!
//! Pods are spread over the simulated nodes; then Services (every tenth
//! headless) without selectors, each with an EndpointSlice of `--pods /
//! --services` of those pods, written here as the endpoints controller
//! would (its per-Service pod lists through the API would be what is
//! measured, at 10,000 pods). Objects already there are kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

#[derive(Args)]
pub struct DnsBench {
    /// kubeconfig of the cluster to fill (with simulated nodes).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Where the zone files and the query file go.
    #[arg(long)]
    out: PathBuf,
    /// Objects created at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const NAMESPACE: &str = "default";

fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

fn headless(i: usize) -> bool {
    i.is_multiple_of(10)
}

pub async fn run(args: DnsBench) -> anyhow::Result<()> {
    let client = shoal_core::client::from_file(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    std::fs::create_dir_all(&args.out)?;
    let nodes: Vec<String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    anyhow::ensure!(
        !nodes.is_empty(),
        "no nodes: start simulated ones first (shoal agent --simulate)"
    );
    let started = Instant::now();
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let per_service = (args.pods / args.services.max(1)).max(1);
    // Pods first, on the simulated nodes, each with an address.
    stream::iter(0..args.pods)
        .map(|j| {
            let pods = pods.clone();
            let node = nodes[j % nodes.len()].clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{j}")},
                    "spec": {"nodeName": node,
                             "containers": [{"name": "c", "image": "busybox"}]},
                }))?;
                let pp = PostParams::default();
                retrying(|| pods.create(&pp, &pod)).await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut ips: HashMap<String, String> = HashMap::new();
    while ips.len() < args.pods {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} pods with an address after 10 minutes",
            ips.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        ips = list_all(&pods)
            .await?
            .into_iter()
            .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
            .collect();
    }
    eprintln!(
        "[dns-bench] {} pods with addresses after {:.0?}",
        args.pods,
        started.elapsed()
    );
    // Services without selectors and their EndpointSlices, written here
    // as the endpoints controller would (it is left out: its per-Service
    // pod lists are not what is measured).
    stream::iter(0..args.services)
        .map(|i| {
            let (services, slices) = (services.clone(), slices.clone());
            let members: Vec<(String, String)> = (i * per_service..(i + 1) * per_service)
                .filter_map(|j| {
                    let name = format!("pod-{j}");
                    ips.get(&name).map(|ip| (name, ip.clone()))
                })
                .collect();
            async move {
                let mut spec = json!({
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                });
                if headless(i) {
                    spec["clusterIP"] = json!("None");
                }
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": service_name(i)}, "spec": spec,
                }))?;
                let pp = PostParams::default();
                retrying(|| services.create(&pp, &svc)).await?;
                let endpoints: Vec<serde_json::Value> = members
                    .iter()
                    .map(|(pod, ip)| {
                        let mut e = json!({"addresses": [ip], "conditions": {"ready": true}});
                        if headless(i) {
                            e["hostname"] = json!(pod);
                        }
                        e
                    })
                    .collect();
                let slice: EndpointSlice = serde_json::from_value(json!({
                    "metadata": {"name": format!("{}-1", service_name(i)),
                                 "labels": {"kubernetes.io/service-name": service_name(i)}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                    "endpoints": endpoints,
                }))?;
                retrying(|| slices.create(&pp, &slice)).await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let all_services = list_all(&Api::<Service>::all(client.clone())).await?;
    let all_slices = list_all(&Api::<EndpointSlice>::all(client.clone())).await?;
    let all_pods = list_all(&Api::<Pod>::all(client.clone())).await?;
    let settings = shoal_dns::index::Settings::new(
        shoal_dns::server::DEFAULT_ZONE,
        shoal_dns::server::DEFAULT_TTL,
        1,
    )
    .map_err(anyhow::Error::msg)?;
    let index = shoal_dns::index::Index::build(&settings, &all_services, &all_slices, &all_pods);
    let (zone, reverse) = index.zone_files();
    std::fs::write(args.out.join("cluster.local.zone"), zone)?;
    // The reverse zone's own SOA and NS, as NSD and Knot need.
    let reverse = format!(
        "in-addr.arpa. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n\
         in-addr.arpa. 5 IN NS ns.dns.cluster.local.\n{reverse}"
    );
    std::fs::write(args.out.join("in-addr.arpa.zone"), reverse)?;
    // The query mix, in equal parts, spread over the objects.
    let mut queries = String::new();
    // PTR questions for addresses the cluster has names for: ClusterIPs
    // and headless Services' endpoints.
    let cluster_ips: Vec<&str> = all_services
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref())
        .filter(|ip| *ip != "None")
        .collect();
    let headless_ips: Vec<&str> = all_slices
        .iter()
        .filter(|s| s.endpoints.iter().any(|e| e.hostname.is_some()))
        .flat_map(|s| s.endpoints.iter())
        .filter_map(|e| e.addresses.first().map(String::as_str))
        .collect();
    let n = args.services.max(1);
    for k in 0..10_000usize {
        let i = (k * 7919) % n;
        let line = match k % 5 {
            0 => format!(
                "{}.{NAMESPACE}.svc.cluster.local A",
                service_name(i - i % 10 + 1)
            ),
            1 => format!(
                "{}.{NAMESPACE}.svc.cluster.local A",
                service_name(i - i % 10)
            ),
            2 => format!(
                "_http._tcp.{}.{NAMESPACE}.svc.cluster.local SRV",
                service_name(i)
            ),
            3 => {
                let ip = if k % 2 == 0 {
                    cluster_ips.get(i % cluster_ips.len().max(1))
                } else {
                    headless_ips.get(k % headless_ips.len().max(1))
                };
                format!("{} PTR", reverse_name(ip.copied().unwrap_or("10.96.0.1")))
            }
            _ => format!("www.example{i}.com.{NAMESPACE}.svc.cluster.local A"),
        };
        queries.push_str(&line);
        queries.push('\n');
    }
    std::fs::write(args.out.join("queries.txt"), queries)?;
    println!(
        "{}",
        json!({
            "services": all_services.len(),
            "pods": all_pods.len(),
            "endpoint_slices": all_slices.len(),
            "zone_names": index.len(),
            "setup_s": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// `d.c.b.a.in-addr.arpa` of an IPv4 address.
fn reverse_name(ip: &str) -> String {
    let mut parts: Vec<&str> = ip.split('.').collect();
    parts.reverse();
    format!("{}.in-addr.arpa", parts.join("."))
}

/// A create, tried again while the apiserver is overloaded (429, 5xx);
/// one that finds the object there already is fine.
async fn retrying<K, F, Fut>(create: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<K, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match create().await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(kube::Error::Api(e))
                if (e.code == 429 || e.code >= 500) && delay < Duration::from_secs(10) =>
            {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every object, 500 per page.
async fn list_all<K>(api: &Api<K>) -> anyhow::Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}
