//! `shoal bench scheduler`: how fast pods made by Deployments get a node.
//!
//! Creates `--deployments` Deployments with `--pods` replicas in all in a
//! fresh namespace, and watches the pods: a pod is *created* when the watch
//! first shows it and *bound* when it first shows a `spec.nodeName`. Prints
//! one JSON line: pods bound per second (from the first creation to the last
//! binding), and create-to-bound latencies. Nodes are whatever the cluster
//! has (simulated ones, `shoal agent --simulate --count 1000`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Args)]
pub struct SchedulerBench {
    /// kubeconfig of the cluster, as `shoal up` writes it.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: std::path::PathBuf,
    /// Namespace of the Deployments (created; must not exist).
    #[arg(long, default_value = "bench-scheduler")]
    namespace: String,
    /// Pods in all.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Deployments sharing them.
    #[arg(long, default_value_t = 10)]
    deployments: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
}

pub async fn run(args: SchedulerBench) -> anyhow::Result<()> {
    if args.deployments == 0 || args.pods < args.deployments {
        bail!("--pods must be at least --deployments (and that at least 1)");
    }
    let client = shoal_core::client::from_file(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.namespace},
    }))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {}", args.namespace))?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch interrupted");
                        continue;
                    }
                };
                let now = Instant::now();
                let Some(name) = pod.metadata.name.clone() else {
                    continue;
                };
                let mut seen = seen.lock().await;
                seen.created.entry(name.clone()).or_insert(now);
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                {
                    seen.bound.entry(name).or_insert(now);
                }
            }
        })
    };
    ready_rx.await.context("the pod watch did not start")?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &args.namespace);
    let per = args.pods / args.deployments;
    for i in 0..args.deployments {
        let replicas = if i == args.deployments - 1 {
            args.pods - per * (args.deployments - 1)
        } else {
            per
        };
        let name = format!("bench-{i}");
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{
                        "name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }]},
                },
            },
        }))?;
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .with_context(|| format!("creating deployment {name}"))?;
    }

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let bound = seen.lock().await.bound.len();
        if bound >= args.pods {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("timed out with {bound} of {} pods bound", args.pods);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recorder.abort();

    let seen = seen.lock().await;
    let mut latency = Histogram::<u64>::new(3)?;
    for (name, bound) in &seen.bound {
        if let Some(created) = seen.created.get(name) {
            latency.record(bound.duration_since(*created).as_micros() as u64)?;
        }
    }
    let first = seen.created.values().min().copied();
    let last = seen.bound.values().max().copied();
    let span = match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({
            "pods": args.pods,
            "deployments": args.deployments,
            "created": seen.created.len(),
            "bound": seen.bound.len(),
            "seconds": (span * 100.0).round() / 100.0,
            "bound_per_sec": if span > 0.0 { (seen.bound.len() as f64 / span).round() } else { 0.0 },
            "create_to_bound_p50_ms": ms(0.5),
            "create_to_bound_p99_ms": ms(0.99),
        })
    );
    Ok(())
}
