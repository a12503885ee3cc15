//! `shoal bench api`: load on the Kubernetes API through a kubeconfig.
//!
//! 1. creates `--pods` pods from `--clients` concurrent clients (latency of
//!    each create),
//! 2. lists them all `--lists` times (time of each full list),
//! 3. opens `--watchers` watches on the namespace, then creates
//!    `--watch-events` more pods, each stamped with its send time, and
//!    measures how long each event takes to reach each watcher.
//!
//! Prints one JSON line. Connections are HTTP/2 over TLS, as kubectl's;
//! many requests share one connection, as client-go's do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(Args)]
pub struct ApiBench {
    /// kubeconfig of the cluster (server, CA, token), as `shoal up` writes it.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: std::path::PathBuf,
    /// Namespace the pods go in (created if missing).
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Pods to create.
    #[arg(long, default_value_t = 10_000)]
    pods: u64,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 100)]
    clients: u64,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Full lists of the namespace to time.
    #[arg(long, default_value_t = 3)]
    lists: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Pods created while the watchers watch (each is one event per watcher).
    #[arg(long, default_value_t = 100)]
    watch_events: u64,
}

struct Cluster {
    host: String,
    port: u16,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

fn load_kubeconfig(path: &std::path::Path) -> anyhow::Result<Cluster> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: Value = serde_norway::from_str(&text).context("the kubeconfig is not YAML")?;
    let server = config
        .pointer("/clusters/0/cluster/server")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the kubeconfig has no server"))?;
    let token = config
        .pointer("/users/0/user/token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the kubeconfig has no token"))?
        .to_string();
    let ca = config
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the kubeconfig has no certificate-authority-data"))?;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("the server must be https://"))?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .unwrap_or((rest, "443"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Cluster {
        host: host.to_string(),
        port: port.parse()?,
        token,
        tls: Arc::new(tls),
    })
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(cluster: &Cluster) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect((cluster.host.as_str(), cluster.port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(cluster.host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(cluster.tls.clone())
        .connect(name, tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(TokioIo::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn call(
    sender: &mut Sender,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Bytes)> {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

fn pod(name: &str, sent_at_nanos: u128) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}, "annotations": {"bench.shoal.dev/sent-at": sent_at_nanos.to_string()}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
    })
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub async fn run(args: ApiBench) -> anyhow::Result<()> {
    let cluster = Arc::new(load_kubeconfig(&args.kubeconfig)?);
    let mut senders = Vec::new();
    for _ in 0..args.connections.max(1) {
        senders.push(
            connect(&cluster)
                .await
                .context("connecting to the apiserver")?,
        );
    }
    let ns = args.namespace.clone();
    // Made unless there already (a client that may not create namespaces
    // is given one).
    let (status, _) = call(
        &mut senders[0],
        &cluster.token,
        "GET",
        &format!("/api/v1/namespaces/{ns}"),
        None,
    )
    .await?;
    let (status, body) = if status == 200 {
        (status, Bytes::new())
    } else {
        call(
            &mut senders[0],
            &cluster.token,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": ns}})),
        )
        .await?
    };
    if status != 200 && status != 201 && status != 409 {
        bail!(
            "creating namespace {ns}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let pods_path = format!("/api/v1/namespaces/{ns}/pods");

    // 1. Creates.
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(histogram()?));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let mut sender = senders[client as usize % senders.len()].clone();
        let (next, errors, latencies, cluster, path) = (
            next.clone(),
            errors.clone(),
            latencies.clone(),
            cluster.clone(),
            pods_path.clone(),
        );
        let total = args.pods;
        let mut local = histogram()?;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let begin = Instant::now();
                let body = pod(&format!("pod-{i:06}"), now_nanos());
                match call(&mut sender, &cluster.token, "POST", &path, Some(body)).await {
                    Ok((201, _)) => {
                        let _ = local.record((begin.elapsed().as_micros() as u64).max(1));
                    }
                    Ok((status, body)) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("create failed: {status} {}", String::from_utf8_lossy(&body));
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("create failed: {e}");
                        }
                    }
                }
            }
            let _ = latencies.lock().await.add(&local);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let creates = latencies.lock().await.clone();

    // 2. Lists.
    let mut list_ms = Vec::new();
    let mut revision = String::new();
    let mut listed = 0;
    for _ in 0..args.lists.max(1) {
        let begin = Instant::now();
        let (status, body) = call(&mut senders[0], &cluster.token, "GET", &pods_path, None).await?;
        let elapsed = begin.elapsed();
        if status != 200 {
            bail!("list failed: {status}");
        }
        let list: Value = serde_json::from_slice(&body)?;
        listed = list["items"].as_array().map_or(0, Vec::len);
        revision = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        list_ms.push(elapsed.as_secs_f64() * 1000.0);
    }
    list_ms.sort_by(f64::total_cmp);

    // 3. Watchers, then events.
    let delivery = Arc::new(Mutex::new(histogram()?));
    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    let watch_path =
        format!("{pods_path}?watch=1&resourceVersion={revision}&labelSelector=app%3Dbench-watch");
    for w in 0..args.watchers {
        let mut sender = senders[w % senders.len()].clone();
        let request = http::Request::builder()
            .uri(watch_path.as_str())
            .header("authorization", format!("Bearer {}", cluster.token))
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        if response.status() != 200 {
            bail!("watch failed: {}", response.status());
        }
        let (delivery, received) = (delivery.clone(), received.clone());
        let expected = args.watch_events;
        let mut local = histogram()?;
        watchers.push(tokio::spawn(async move {
            let mut body = response.into_body();
            let mut buffer = Vec::new();
            let mut seen = 0;
            while seen < expected {
                let Some(Ok(frame)) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = now_nanos();
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if event["type"] != "ADDED" {
                        continue;
                    }
                    let sent = event
                        .pointer("/object/metadata/annotations/bench.shoal.dev~1sent-at")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<u128>().ok())
                        .unwrap_or(now);
                    let _ = local.record(((now.saturating_sub(sent)) / 1000).max(1) as u64);
                    seen += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = delivery.lock().await.add(&local);
        }));
    }
    for i in 0..args.watch_events {
        let mut body = pod(&format!("watched-{i:04}"), now_nanos());
        body["metadata"]["labels"]["app"] = json!("bench-watch");
        let (status, text) = call(
            &mut senders[0],
            &cluster.token,
            "POST",
            &pods_path,
            Some(body),
        )
        .await?;
        if status != 201 {
            bail!(
                "create for watchers failed: {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for watcher in watchers {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, watcher).await;
    }
    let delivered = delivery.lock().await.clone();

    let result = json!({
        "pods": args.pods,
        "clients": args.clients,
        "create_errors": errors.load(Ordering::Relaxed),
        "create_per_sec": (args.pods as f64 / create_secs).round(),
        "create_p50_ms": ms(creates.value_at_quantile(0.5)),
        "create_p99_ms": ms(creates.value_at_quantile(0.99)),
        "list_items": listed,
        "list_ms_median": list_ms[list_ms.len() / 2],
        "watchers": args.watchers,
        "watch_events_expected": args.watch_events * args.watchers as u64,
        "watch_events_received": received.load(Ordering::Relaxed),
        "watch_delivery_p50_ms": ms(delivered.value_at_quantile(0.5)),
        "watch_delivery_p99_ms": ms(delivered.value_at_quantile(0.99)),
    });
    println!("{result}");
    Ok(())
}
