//! `shoal bench`: load generators.
//!
//! `shoal bench store` drives a store cluster with etcd v3 `Put` or `Range`
//! requests from many concurrent clients and prints one JSON line with the
//! throughput and latency percentiles. It only uses the etcd v3 KV API, so it
//! measures shoal's store and etcd alike (see `bench/store-vs-etcd.sh`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_store::proto::etcdserverpb::kv_client::KvClient;
use shoal_store::proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

/// Number of concurrent writers that pre-populate the key space for `range`.
const POPULATE_WRITERS: usize = 16;

/// Operation failures logged on stderr (the rest are only counted).
const LOGGED_ERRORS: u64 = 5;

/// Largest latency the histograms track exactly (one hour, in microseconds);
/// longer ones are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Drive a store cluster (shoal's or etcd's) with puts or ranges and print
    /// one JSON line with throughput and latencies.
    Store(StoreBench),
    /// Drive the Kubernetes API: create pods, list them, watch them with
    /// many watchers; print one JSON line.
    Api(crate::bench_api::ApiBench),
    /// Create Deployments and time how fast their pods get nodes; print
    /// one JSON line.
    Scheduler(crate::bench_scheduler::SchedulerBench),
    /// Create pods at once on a node agent and time how fast they get
    /// Running and Ready; print one JSON line.
    PodStartup(crate::bench_pod_startup::PodStartupBench),
    /// Kill a store cluster's leader under concurrent writers; print one
    /// JSON line with the time to a new leader and the longest outage.
    Failover(crate::bench_failover::FailoverBench),
    /// The service proxy against the kernel in a namespace of its own
    /// (root): change-to-kernel latency with N Services, connections per
    /// second through a ClusterIP; one JSON line per Service count.
    Proxy(crate::bench_proxy::ProxyBench),
    /// Fill a cluster with Services and pods (simulated nodes) and write
    /// the zone files and dnsperf queries `bench/dns.sh` compares DNS
    /// servers with; print one JSON line.
    Dns(crate::bench_dns::DnsBench),
}

/// The request every operation sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// `Put` a value under a random key.
    Put,
    /// `Range` over a single random (pre-populated) key.
    Range,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Range => "range",
        }
    }
}

/// Consistency of `range` requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable reads (confirmed with the cluster's leader).
    #[value(name = "l")]
    L,
    /// Serializable reads (served locally by the member that receives them).
    #[value(name = "s")]
    S,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Consistency::L => "l",
            Consistency::S => "s",
        }
    }
}

#[derive(Args)]
pub struct StoreBench {
    /// Client URLs of the cluster's members (comma-separated); connections are
    /// spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Number of concurrent clients (each has one request in flight at a time).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Number of gRPC connections (default: min(clients, 32)); clients are
    /// spread over them round-robin.
    #[arg(long)]
    conns: Option<usize>,
    /// Total number of operations, shared by all clients.
    #[arg(long, default_value_t = 10_000)]
    ops: u64,
    /// Operation to measure.
    #[arg(long, value_enum, default_value = "put")]
    op: Op,
    /// Size of every key in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Size of every value in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Number of distinct keys (for `range`, min(key-space, ops) keys are
    /// written first and read back).
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Consistency of range requests: l = linearizable, s = serializable.
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
    /// Free text echoed in the output (e.g. the system measured).
    #[arg(long, default_value = "")]
    label: String,
    /// Per-request timeout in milliseconds (a timed-out request counts as an
    /// error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Store(args) => store(args).await,
        BenchCommand::Api(args) => crate::bench_api::run(args).await,
        BenchCommand::Scheduler(args) => crate::bench_scheduler::run(args).await,
        BenchCommand::PodStartup(args) => crate::bench_pod_startup::run(args).await,
        BenchCommand::Failover(args) => crate::bench_failover::run(args).await,
        BenchCommand::Proxy(args) => crate::bench_proxy::run(args),
        BenchCommand::Dns(args) => crate::bench_dns::run(args).await,
    }
}

/// State shared by the clients of one run.
struct Shared {
    /// Index of the next operation to start.
    next: AtomicU64,
    /// Operations that failed.
    errors: AtomicU64,
    /// Set once too many operations failed.
    abort: AtomicBool,
}

async fn store(args: StoreBench) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(normalize_endpoint)
        .collect();
    if endpoints.is_empty() {
        bail!("--endpoints: no endpoint given");
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.ops == 0 {
        bail!("--ops must be at least 1");
    }
    if args.key_size == 0 {
        bail!("--key-size must be at least 1");
    }
    if args.key_space == 0 {
        bail!("--key-space must be at least 1");
    }
    let conns = args.conns.unwrap_or(args.clients.min(32));
    if conns == 0 {
        bail!("--conns must be at least 1");
    }
    let timeout = Duration::from_millis(args.timeout_ms.max(1));

    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        channels.push(connect(&endpoints[i % endpoints.len()], timeout).await?);
    }
    tracing::info!(conns, endpoints = endpoints.len(), "connected");

    let value = vec![b'v'; args.value_size];

    // Keys the operations pick from: for `range`, only the written ones.
    let key_space = match args.op {
        Op::Put => args.key_space,
        Op::Range => {
            let n = args.key_space.min(args.ops);
            let started = Instant::now();
            populate(&channels, n, args.key_size, &value, timeout).await?;
            tracing::info!(
                keys = n,
                secs = started.elapsed().as_secs_f64(),
                "pre-populated"
            );
            n
        }
    };

    let ops = args.ops;
    let op = args.op;
    let key_size = args.key_size;
    let serializable = args.consistency == Consistency::S;
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        abort: AtomicBool::new(false),
    });

    tracing::info!(op = op.as_str(), clients = args.clients, ops, "running");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let mut client = KvClient::new(channels[c % channels.len()].clone());
        let shared = Arc::clone(&shared);
        let value = value.clone();
        let mut hist = new_histogram()?;
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            loop {
                if shared.abort.load(Ordering::Relaxed) {
                    break;
                }
                if shared.next.fetch_add(1, Ordering::Relaxed) >= ops {
                    break;
                }
                let key = format_key(rng.gen_range(0..key_space), key_size);
                let t0 = Instant::now();
                match one_op(&mut client, op, key, &value, serializable, timeout).await {
                    Ok(()) => hist.saturating_record(micros(t0.elapsed())),
                    Err(e) => {
                        let n = shared.errors.fetch_add(1, Ordering::Relaxed) + 1;
                        if n <= LOGGED_ERRORS {
                            tracing::warn!("{} failed: {e:#}", op.as_str());
                        }
                        if too_many_errors(n, ops) {
                            shared.abort.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            hist
        }));
    }
    let mut merged = new_histogram()?;
    for task in tasks {
        let hist = task.await.context("benchmark client task failed")?;
        merged.add(&hist).context("merging latency histograms")?;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);

    let errors = shared.errors.load(Ordering::Relaxed);
    if too_many_errors(errors, ops) {
        bail!(
            "{errors} of {ops} {} operations failed (more than 1%); aborted",
            op.as_str()
        );
    }
    let ok = merged.len();
    let ms = |q: f64| merged.value_at_quantile(q) as f64 / 1000.0;
    let line = format!(
        concat!(
            "{{\"label\":{},\"op\":\"{}\",\"clients\":{},\"ops\":{},\"errors\":{},",
            "\"secs\":{:.3},\"throughput\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},",
            "\"p999_ms\":{:.3},\"max_ms\":{:.3},\"conns\":{},\"endpoints\":{},",
            "\"consistency\":\"{}\",\"key_size\":{},\"value_size\":{},\"key_space\":{}}}"
        ),
        serde_json::to_string(&args.label)?,
        op.as_str(),
        args.clients,
        ops,
        errors,
        secs,
        ok as f64 / secs,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        merged.max() as f64 / 1000.0,
        conns,
        endpoints.len(),
        args.consistency.as_str(),
        key_size,
        args.value_size,
        key_space,
    );
    println!("{line}");
    Ok(())
}

/// Whether `errors` failed operations out of `ops` is more than 1%.
fn too_many_errors(errors: u64, ops: u64) -> bool {
    errors.saturating_mul(100) > ops
}

/// Adds `http://` to an endpoint given as `host:port`.
fn normalize_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("invalid endpoint {url:?}"))?
        .tcp_nodelay(true)
        .connect_timeout(timeout);
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a latency histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The key for index `index`: its zero-padded decimal form, exactly
/// `key_size` bytes long (the low-order digits are kept when it is longer).
fn format_key(index: u64, key_size: usize) -> Vec<u8> {
    let digits = format!("{:0width$}", index, width = key_size).into_bytes();
    digits[digits.len() - key_size..].to_vec()
}

/// Sends one request and waits for its answer (at most `timeout`).
async fn one_op(
    client: &mut KvClient<Channel>,
    op: Op,
    key: Vec<u8>,
    value: &[u8],
    serializable: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let call = async move {
        match op {
            Op::Put => client
                .put(PutRequest {
                    key,
                    value: value.to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::Range => client
                .range(RangeRequest {
                    key,
                    serializable,
                    ..Default::default()
                })
                .await
                .map(drop),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(anyhow::Error::new(status)),
        Err(_) => Err(anyhow!("timed out after {timeout:?}")),
    }
}

/// Writes keys `0..n` with `POPULATE_WRITERS` concurrent writers, retrying
/// each put a few times; any put that still fails fails the run.
async fn populate(
    channels: &[Channel],
    n: u64,
    key_size: usize,
    value: &[u8],
    timeout: Duration,
) -> anyhow::Result<()> {
    const ATTEMPTS: u32 = 3;
    tracing::info!(keys = n, "pre-populating the key space");
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(POPULATE_WRITERS);
    for w in 0..POPULATE_WRITERS {
        let mut client = KvClient::new(channels[w % channels.len()].clone());
        let next = Arc::clone(&next);
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let mut attempt = 1;
                loop {
                    let key = format_key(i, key_size);
                    match one_op(&mut client, Op::Put, key, &value, false, timeout).await {
                        Ok(()) => break,
                        Err(e) if attempt < ATTEMPTS => {
                            tracing::warn!("pre-populating key {i}: {e:#} (retrying)");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            // Let the other writers stop early.
                            next.store(n, Ordering::Relaxed);
                            return Err(e.context(format!("pre-populating key {i}")));
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("pre-populating task failed")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BenchCommand,
    }

    #[test]
    fn keys_are_zero_padded_to_key_size() {
        assert_eq!(format_key(0, 8), b"00000000".to_vec());
        assert_eq!(format_key(42, 8), b"00000042".to_vec());
        assert_eq!(format_key(99_999, 8), b"00099999".to_vec());
        assert_eq!(format_key(7, 1), b"7".to_vec());
        assert_eq!(format_key(12, 16).len(), 16);
    }

    #[test]
    fn long_indexes_keep_their_low_order_digits() {
        assert_eq!(format_key(123_456_789, 4), b"6789".to_vec());
        assert_eq!(format_key(u64::MAX, 3).len(), 3);
    }

    #[test]
    fn keys_of_the_key_space_are_distinct() {
        let keys: std::collections::HashSet<Vec<u8>> =
            (0..100_000).map(|i| format_key(i, 8)).collect();
        assert_eq!(keys.len(), 100_000);
    }

    #[test]
    fn error_threshold_is_one_percent() {
        assert!(!too_many_errors(0, 10));
        assert!(too_many_errors(1, 10));
        assert!(!too_many_errors(100, 10_000));
        assert!(too_many_errors(101, 10_000));
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379"),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("http://a:1"), "http://a:1");
    }

    #[test]
    fn flags_parse_with_defaults() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "bench",
            "store",
            "--endpoints",
            "http://127.0.0.1:32379,http://127.0.0.1:32479",
            "--op",
            "range",
            "--consistency",
            "s",
            "--label",
            "shoal",
        ])
        .unwrap();
        let BenchCommand::Store(args) = cli.cmd else {
            panic!("parsed as another benchmark");
        };
        assert_eq!(args.endpoints.len(), 2);
        assert_eq!(args.clients, 1);
        assert_eq!(args.conns, None);
        assert_eq!(args.ops, 10_000);
        assert_eq!(args.op, Op::Range);
        assert_eq!(args.key_size, 8);
        assert_eq!(args.value_size, 256);
        assert_eq!(args.key_space, 100_000);
        assert_eq!(args.consistency, Consistency::S);
        assert_eq!(args.label, "shoal");
    }
}
