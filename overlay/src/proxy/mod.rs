//! The service proxy and NetworkPolicy: kube-proxy's part and a network
//! plugin's policy part, in the agent. The Services, EndpointSlices,
//! NetworkPolicies, Pods and Namespaces the agent watches become one
//! nftables table of the node's own (`ip shoal`), laid out as kube-proxy's
//! nftables mode does:
//!
//! ```text
//!   plan   Services + EndpointSlices → Ruleset (pure, per-Service chains and map elements)
//!   policy NetworkPolicies + Pods + Namespaces → per-pod chains in the same Ruleset (pure)
//!   announce the LoadBalancer addresses this node answers ARP for (on `lo`)
//!   nft    Ruleset → the nftables JSON transaction from the applied ruleset to it
//!   Proxy  applies transactions with `nft -j -f -`, keeps what the kernel holds, counts
//! ```
//!
//! Every sync is one atomic transaction that rewrites only what changed;
//! after a failure (someone deleted the table, `nft` missing) the next sync
//! rebuilds the table from nothing.

pub mod announce;
pub mod nft;
pub mod plan;
pub mod policy;

use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use plan::{plan, NodeContext, Ruleset};
pub use policy::add_policies;

/// A sync that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the transaction: {message}")]
    Refused { message: String },
    #[error("announcing LoadBalancer addresses: {0}")]
    Announce(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The node's service rules, as applied.
pub struct Proxy {
    applied: Option<Ruleset>,
    metrics: Metrics,
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// nftables commands in the transaction (0: nothing changed).
    pub commands: usize,
    /// Whether the table was rebuilt from nothing.
    pub full: bool,
}

struct Metrics {
    syncs: Family<Vec<(&'static str, &'static str)>, Counter>,
    duration: Histogram,
    rules: Gauge,
    chains: Gauge,
    services: Gauge,
    last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    pub fn new() -> Self {
        Self {
            applied: None,
            metrics: Metrics {
                syncs: Family::default(),
                duration: Histogram::new([
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                rules: Gauge::default(),
                chains: Gauge::default(),
                services: Gauge::default(),
                last_sync: Gauge::default(),
            },
        }
    }

    /// Brings the kernel's table to `next`: the changes since the last
    /// applied ruleset, or the whole table on the first sync and after a
    /// failed one.
    pub async fn sync(&mut self, next: Ruleset) -> Result<Synced> {
        let started = Instant::now();
        let full = self.applied.is_none();
        let commands = nft::transaction(self.applied.as_ref(), &next);
        let count = commands.len();
        if count > 0 {
            let mut applied = apply(commands).await;
            if applied.is_ok()
                && (full || self.applied.as_ref().map(|a| &a.announce) != Some(&next.announce))
            {
                applied = announce::announce(&next.announce)
                    .await
                    .map_err(Error::Announce);
            }
            if let Err(e) = applied {
                self.applied = None;
                self.metrics
                    .syncs
                    .get_or_create(&vec![("result", "error")])
                    .inc();
                return Err(e);
            }
        }
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .syncs
            .get_or_create(&vec![("result", if full { "full" } else { "partial" })])
            .inc();
        self.metrics
            .rules
            .set(i64::try_from(next.rule_count()).unwrap_or(i64::MAX));
        self.metrics
            .chains
            .set(i64::try_from(next.chains.len()).unwrap_or(i64::MAX));
        self.metrics
            .services
            .set(i64::try_from(next.services.len() + next.node_ports.len()).unwrap_or(i64::MAX));
        self.metrics.last_sync.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        self.applied = Some(next);
        Ok(Synced {
            commands: count,
            full,
        })
    }

    /// Whether the kernel still holds the table this proxy applied (someone
    /// may have deleted it: `nft flush ruleset`); when it does not, the
    /// next sync rebuilds it. Cheap: one chain of the fixed part is listed.
    pub async fn check(&mut self) -> bool {
        if self.applied.is_none() {
            return false;
        }
        let listed = tokio::process::Command::new("nft")
            .args(["list", "chain", "ip", nft::TABLE, nft::SERVICES])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
        if listed.is_ok_and(|status| status.success()) {
            return true;
        }
        self.applied = None;
        false
    }

    /// The proxy's counters in Prometheus' text format.
    pub fn metrics(&self) -> String {
        let mut registry = Registry::with_prefix("shoal_proxy");
        registry.register(
            "syncs",
            "Syncs of the service rules, by result (full: the table rebuilt)",
            self.metrics.syncs.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Time to compute and apply one sync of the service rules",
            self.metrics.duration.clone(),
        );
        registry.register(
            "rules",
            "Rules in the per-Service and per-pod (NetworkPolicy) chains",
            self.metrics.rules.clone(),
        );
        registry.register(
            "chains",
            "Per-Service, per-endpoint and per-pod chains",
            self.metrics.chains.clone(),
        );
        registry.register(
            "service_destinations",
            "Destinations (address or node port, protocol, port) steered to endpoints",
            self.metrics.services.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "When the rules were last synced",
            self.metrics.last_sync.clone(),
        );
        let mut out = String::new();
        // Writing to a String does not fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Deletes the node's table and gives up its LoadBalancer addresses (its
/// pods are gone: `shoal up --stop-pods-on-exit`); a proxy started later
/// rebuilds them.
pub async fn remove_table() -> Result<()> {
    apply(nft::delete_table()).await?;
    announce::announce(&std::collections::BTreeSet::new())
        .await
        .map_err(Error::Announce)
}

/// Runs one transaction with `nft -j -f -` (the crate's helper drops
/// nft's error message, which says what was wrong).
async fn apply(commands: Vec<serde_json::Value>) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let payload = nft::payload_of(commands);
    let mut child = tokio::process::Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(payload.as_bytes())
            .await
            .map_err(Error::Spawn)?;
    }
    let output = child.wait_with_output().await.map_err(Error::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if message.is_empty() {
        message = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    if message.is_empty() {
        message = output.status.to_string();
    }
    tracing::debug!(%payload, "the refused transaction");
    Err(Error::Refused { message })
}

/// The smallest time between two syncs (`--proxy-min-sync-period`): a
/// burst of changes is applied together.
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_millis(100);

/// Makes bridged packets pass the IPv4 hooks in this network namespace
/// (`net.bridge.bridge-nf-call-iptables = 1`, loading `br_netfilter` if
/// needed): a pod's reply to another pod of the same bridge that reached
/// it through a Service is bridged, not routed, and must still be
/// translated back.
pub fn bridge_netfilter() -> std::io::Result<()> {
    const SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if !std::path::Path::new(SYSCTL).exists() {
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status();
    }
    if std::fs::read_to_string(SYSCTL).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(SYSCTL, "1")
}
