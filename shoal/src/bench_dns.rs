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
//! Services: every tenth is headless; each selects `--pods / --services`
//! pods, spread over the simulated nodes. Objects already there are kept,
//! so a second run only writes the files.

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
    #[arg(long, default_value_t = 64)]
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
    let per_service = (args.pods / args.services.max(1)).max(1);
    stream::iter(0..args.services)
        .map(|i| {
            let services = services.clone();
            async move {
                let mut spec = json!({
                    "selector": {"svc": service_name(i)},
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                });
                if headless(i) {
                    spec["clusterIP"] = json!("None");
                }
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": service_name(i)}, "spec": spec,
                }))?;
                create(services.create(&PostParams::default(), &svc).await)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    stream::iter(0..args.pods)
        .map(|j| {
            let pods = pods.clone();
            let node = nodes[j % nodes.len()].clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{j}"),
                                 "labels": {"svc": service_name(j / per_service)}},
                    "spec": {"nodeName": node,
                             "containers": [{"name": "c", "image": "busybox"}]},
                }))?;
                create(pods.create(&PostParams::default(), &pod).await)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!(
        "[dns-bench] {} services and {} pods there after {:.0?}; waiting for their endpoints",
        args.services,
        args.pods,
        started.elapsed()
    );
    // Every pod running with an address, in some Service's endpoints.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(600);
    let (all_services, all_slices, all_pods) = loop {
        let all_slices = slices.list(&ListParams::default()).await?.items;
        let ready: usize = all_slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .count();
        if ready >= args.pods.min(per_service * args.services) {
            let all_services = Api::<Service>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items;
            let all_pods = Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items;
            break (all_services, all_slices, all_pods);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} ready endpoints after 10 minutes"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
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
    let pod_ips: Vec<&str> = all_pods
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref())
        .collect();
    let cluster_ips: Vec<&str> = all_services
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref())
        .filter(|ip| *ip != "None")
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
                    pod_ips.get(k % pod_ips.len().max(1))
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

/// A create that found the object there already is fine.
fn create<K>(result: Result<K, kube::Error>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
