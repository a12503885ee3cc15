//! `shoal bench proxy` (root): the service proxy against the kernel, in a
//! network namespace of its own (nothing on the machine is touched).
//!
//! - Programming latency: with N Services (2 simulated endpoints each) in
//!   the table, one endpoint of one Service changes; the time from the
//!   change to the rule being in the kernel (plan over every Service,
//!   transaction, `nft`), p50/p99 over `--changes` changes. This is what the
//!   agent does after its watch delivers an event.
//! - Data path: TCP connections per second (and p99 connect latency) from
//!   one pod to one ClusterIP with N Services present, and straight to the
//!   pod's IP (no Service): the limit.
//! - Policy latency: a default-deny NetworkPolicy on the server pod enters
//!   the ruleset; the time to the first refused connection, p50/p99 over
//!   `--policy-changes` changes (each removed again before the next).
//!
//! One JSON line per Service count, then one for the policy latency.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use shoal_overlay::proxy::{add_policies, plan, NodeContext, Proxy};
use shoal_overlay::{netns, Network, NodeNetwork};

#[derive(Args)]
pub struct ProxyBench {
    /// Service counts to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    services: Vec<usize>,
    /// Endpoint changes timed per Service count.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// NetworkPolicy changes timed (created → first connection refused).
    #[arg(long, default_value_t = 50)]
    policy_changes: usize,
    /// How long each data-path measurement runs.
    #[arg(long, default_value = "3s", value_parser = shoal_core::duration::parse)]
    duration: Duration,
}

pub fn run(args: ProxyBench) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("shoal bench proxy needs root (a network namespace, nftables)");
    }
    // A thread in namespaces of its own: the bridge, the pods and the table
    // vanish with it.
    let thread = std::thread::spawn(move || -> anyhow::Result<()> {
        netns::isolate_thread().context("a network namespace for the benchmark")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(measure(args))
    });
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
}

async fn measure(args: ProxyBench) -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let lo = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !lo.success() {
        bail!("ip link set lo up failed");
    }
    let network = Network::new(NodeNetwork {
        bridge: "shoal0".into(),
        pod_cidr: "10.244.1.0/24".parse()?,
        state_dir: state.path().to_path_buf(),
        mtu: 1500,
    })
    .await?;
    shoal_overlay::proxy::bridge_netfilter()?;
    let client = network.create_sandbox("client").await?;
    let server = network.create_sandbox("server").await?;
    // One port behind the Services, another for the direct measurement:
    // the two never share a connection tuple (the conntrack and TIME_WAIT
    // entries of one run would otherwise meet the other's translated
    // connections).
    for port in [8080, 8081] {
        let listener = netns::run_in_blocking(&server.netns_path, move || {
            TcpListener::bind((server.ip, port))
        })??;
        std::thread::spawn(move || {
            // Accept and close: one connection per request.
            for conn in listener.incoming() {
                drop(conn);
            }
        });
    }
    let target = SocketAddr::new(server.ip.into(), 8080);
    let direct_target = SocketAddr::new(server.ip.into(), 8081);
    let node = NodeContext {
        node_name: "node-1".into(),
        cluster_cidr: "10.244.0.0/16".parse()?,
        tunnel: None,
    };

    let direct = connections(&client.netns_path, direct_target, args.duration)?;
    for count in args.services {
        let (services, mut slices) = services(count, target);
        let mut proxy = Proxy::new();
        let started = Instant::now();
        proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await?;
        let full = started.elapsed();

        let mut latencies = Vec::with_capacity(args.changes);
        let mut planning = Vec::with_capacity(args.changes);
        for change in 0..args.changes {
            // One endpoint of one Service moves (never Service 0, the one
            // the data path uses).
            let i = 1 + (change * 7919) % (count.max(2) - 1);
            if let Some(slice) = slices.get_mut(i) {
                if let Some(endpoint) = slice.endpoints.get_mut(1) {
                    endpoint.addresses = vec![simulated(i, 2 + change % 200)];
                }
            }
            let started = Instant::now();
            let rules = plan(services.iter(), slices.iter(), &node);
            planning.push(started.elapsed());
            let synced = proxy.sync(rules).await?;
            latencies.push(started.elapsed());
            if synced.commands == 0 {
                bail!("change {change} made no transaction");
            }
        }
        latencies.sort();
        planning.sort();
        let through_service = connections(&client.netns_path, vip(0), args.duration)?;
        println!(
            "{}",
            json!({
                "services": count,
                "full_sync_ms": ms(full),
                "change_to_kernel_p50_ms": ms(percentile(&latencies, 50.0)),
                "change_to_kernel_p99_ms": ms(percentile(&latencies, 99.0)),
                "changes": latencies.len(),
                "of_which_planning_p50_ms": ms(percentile(&planning, 50.0)),
                "cluster_ip_conn_per_s": through_service.0,
                "cluster_ip_connect_p99_ms": ms(through_service.1),
                "pod_ip_conn_per_s": direct.0,
                "pod_ip_connect_p99_ms": ms(direct.1),
            })
        );
    }
    let policy = policy_latency(&client.netns_path, target, &node, args.policy_changes).await?;
    println!(
        "{}",
        json!({
            "policy_changes": policy.len(),
            "policy_to_first_refusal_p50_ms": ms(percentile(&policy, 50.0)),
            "policy_to_first_refusal_p99_ms": ms(percentile(&policy, 99.0)),
        })
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Service i's ClusterIP (10.96.0.0/12 has room for a million).
fn vip(i: usize) -> SocketAddr {
    let n = 10 + i as u32;
    let base = u32::from(Ipv4Addr::new(10, 96, 0, 0));
    SocketAddr::new(Ipv4Addr::from(base + n).into(), 80)
}

/// A simulated endpoint address (nothing answers there).
fn simulated(i: usize, j: usize) -> String {
    let base = u32::from(Ipv4Addr::new(10, 245, 0, 0));
    Ipv4Addr::from(base + (i as u32) * 256 + j as u32).to_string()
}

/// `count` Services with two endpoints each; Service 0's are the real
/// server (twice the same pod, so every pick reaches it).
fn services(count: usize, server: SocketAddr) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(count);
    let mut slices = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("svc-{i}");
        let ip = vip(i).ip().to_string();
        let (addresses, port) = if i == 0 {
            (vec![server.ip().to_string(); 2], server.port())
        } else {
            (vec![simulated(i, 0), simulated(i, 1)], 8080)
        };
        let service = json!({
            "metadata": {"namespace": "bench", "name": name},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        });
        let slice = json!({
            "metadata": {"namespace": "bench", "name": format!("{name}-x"),
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": addresses.iter().map(|a| json!({
                "addresses": [a], "conditions": {"ready": true}
            })).collect::<Vec<_>>(),
        });
        // Both are well-formed by construction.
        if let (Ok(s), Ok(e)) = (
            serde_json::from_value::<Service>(service),
            serde_json::from_value::<EndpointSlice>(slice),
        ) {
            services.push(s);
            slices.push(e);
        }
    }
    (services, slices)
}

/// Connections per second and the p99 connect time, one connection at a
/// time from the namespace at `from` for `duration`.
fn connections(from: &Path, to: SocketAddr, duration: Duration) -> anyhow::Result<(u64, Duration)> {
    let result = netns::run_in_blocking(from, move || {
        let mut times = Vec::new();
        let started = Instant::now();
        while started.elapsed() < duration {
            let t = Instant::now();
            let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            times.push(t.elapsed());
            let mut sink = [0u8; 16];
            let _ = stream.read(&mut sink);
        }
        times.sort();
        let rate = (times.len() as f64 / started.elapsed().as_secs_f64()) as u64;
        Ok::<_, std::io::Error>((rate, percentile(&times, 99.0)))
    })?;
    result.with_context(|| format!("connecting to {to}"))
}

/// Time from a NetworkPolicy (default deny ingress on the server pod)
/// entering the ruleset to the first refused connection, `changes` times;
/// each round removes it again and waits for a connection to pass.
async fn policy_latency(
    client: &Path,
    target: SocketAddr,
    node: &NodeContext,
    changes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let (services, slices) = services(10, target);
    let pods: Vec<Pod> = [
        ("client", "10.244.1.250"),
        ("server", &target.ip().to_string()[..]),
    ]
    .iter()
    .filter_map(|(name, ip)| {
        serde_json::from_value(json!({
            "metadata": {"namespace": "bench", "name": name, "labels": {"app": name}},
            "spec": {"nodeName": node.node_name, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .ok()
    })
    .collect();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench"}}))?;
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"namespace": "bench", "name": "deny"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]},
    }))?;
    let mut proxy = Proxy::new();
    proxy
        .sync(plan(services.iter(), slices.iter(), node))
        .await?;
    let mut latencies = Vec::with_capacity(changes);
    for _ in 0..changes {
        let started = Instant::now();
        let mut rules = plan(services.iter(), slices.iter(), node);
        add_policies(&mut rules, [&policy], &pods, [&namespace], node);
        proxy.sync(rules).await?;
        wait_for(client, target, false, started)?;
        latencies.push(started.elapsed());
        let removed = Instant::now();
        proxy
            .sync(plan(services.iter(), slices.iter(), node))
            .await?;
        wait_for(client, target, true, removed)?;
    }
    latencies.sort();
    Ok(latencies)
}

/// Probes from `client` until a connection to `target` passes (`true`) or
/// is refused (`false`); at most 5 s.
fn wait_for(client: &Path, target: SocketAddr, passes: bool, since: Instant) -> anyhow::Result<()> {
    loop {
        let attempt = netns::run_in_blocking(client, move || {
            TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_ok()
        })?;
        if attempt == passes {
            return Ok(());
        }
        if since.elapsed() > Duration::from_secs(5) {
            bail!("the policy change did not take effect within 5 s");
        }
    }
}
