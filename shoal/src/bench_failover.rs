//! `shoal bench failover`: what clients of a store cluster (shoal's or
//! etcd's) see when its leader is SIGKILLed. Concurrent writers put keys
//! through every member (moving to the next member after an error, as
//! etcd's client does); the leader is found with `Status` and killed; the
//! output is one JSON line with the time from the kill to a new leader and
//! the longest time without any successful put (see
//! `bench/store-failover.sh`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use shoal_store::proto::etcdserverpb::kv_client::KvClient;
use shoal_store::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use shoal_store::proto::etcdserverpb::{PutRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

#[derive(Args)]
pub struct FailoverBench {
    /// Client URLs of the members (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Process ids of the members, in the order of `--endpoints`.
    #[arg(long, value_delimiter = ',', required = true)]
    pids: Vec<u32>,
    /// Concurrent writers (each has one put in flight at a time).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Writing before the kill, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    before_ms: u64,
    /// Writing after the kill, in milliseconds.
    #[arg(long, default_value_t = 8_000)]
    after_ms: u64,
    /// Per-put timeout in milliseconds (etcdctl's default command timeout).
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Free text echoed in the output (e.g. the system measured).
    #[arg(long, default_value = "")]
    label: String,
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())
        .with_context(|| format!("endpoint {url}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// (member id, the leader it names), asked of one member.
async fn status(channel: &Channel) -> Option<(u64, u64)> {
    let mut client = MaintenanceClient::new(channel.clone());
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(Duration::from_millis(300));
    let s = client.status(request).await.ok()?.into_inner();
    Some((s.header.unwrap_or_default().member_id, s.leader))
}

/// The index of the member that says it leads.
async fn leader(channels: &[Channel], skip: Option<usize>) -> Option<(usize, u64)> {
    for (i, c) in channels.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if let Some((me, leader)) = status(c).await {
            if leader != 0 && leader == me {
                return Some((i, me));
            }
        }
    }
    None
}

pub async fn run(args: FailoverBench) -> anyhow::Result<()> {
    if args.endpoints.len() != args.pids.len() || args.endpoints.len() < 3 {
        bail!("give at least 3 --endpoints and as many --pids, in the same order");
    }
    let channels = args
        .endpoints
        .iter()
        .map(|u| channel(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (old, old_id) = leader(&channels, None)
        .await
        .ok_or_else(|| anyhow!("no member says it leads"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let successes = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let timeout = Duration::from_millis(args.timeout_ms);
    let writers: Vec<_> = (0..args.clients)
        .map(|w| {
            let (channels, stop, successes, failed) = (
                channels.clone(),
                stop.clone(),
                successes.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut member = w % channels.len();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut kv = KvClient::new(channels[member].clone());
                    let put = kv.put(PutRequest {
                        key: format!("failover/{w}/{i}").into_bytes(),
                        value: vec![b'v'; 64],
                        ..Default::default()
                    });
                    i += 1;
                    match tokio::time::timeout(timeout, put).await {
                        Ok(Ok(_)) => successes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Instant::now()),
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            member = (member + 1) % channels.len();
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(args.before_ms)).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &args.pids[old].to_string()])
        .status()
        .context("kill")?;
    if !killed.success() {
        bail!("could not kill member {} (pid {})", old, args.pids[old]);
    }
    let killed_at = Instant::now();
    let mut new_leader_ms = None;
    let end = killed_at + Duration::from_millis(args.after_ms);
    while Instant::now() < end {
        if new_leader_ms.is_none() {
            if let Some((_, id)) = leader(&channels, Some(old)).await {
                if id != old_id {
                    new_leader_ms = Some(killed_at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }

    let mut times = successes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    times.sort();
    // The longest stretch without a successful put, from the last success
    // before the kill on.
    let from = times.iter().rposition(|t| *t <= killed_at).unwrap_or(0);
    let max_outage_ms = times[from..]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    let line = serde_json::json!({
        "label": args.label,
        "clients": args.clients,
        "new_leader_ms": new_leader_ms,
        "max_outage_ms": max_outage_ms,
        "ok": times.len(),
        "failed": failed.load(Ordering::Relaxed),
    });
    println!("{line}");
    Ok(())
}
