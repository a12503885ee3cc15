//! `shoal overlay`: the node-to-node tunnels seen from a node.
//!
//! - `status`: the peers of the agent on this machine, their state, RTT and
//!   counters (from `<data-dir>/overlay/status.json`, which the agent
//!   rewrites every two seconds).
//! - `tunnel`: one tunnel end with static peers and no cluster: the same
//!   code the agent runs, for measuring it (bench/overlay.sh) and for
//!   trying it between two machines. Its certificate comes from a CA kept
//!   in a directory the ends share (made there on first use).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use shoal_overlay::tunnel::{self, Peer, Tunnel};

#[derive(Subcommand)]
pub enum OverlayCommand {
    /// The tunnels of the agent on this machine: peers, state, RTT, traffic.
    Status(StatusArgs),
    /// One tunnel end with static peers, outside any cluster.
    Tunnel(TunnelArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// The agent's data dir.
    #[arg(long, env = "SHOAL_AGENT_DATA_DIR", default_value = shoal_agent::image::DEFAULT_AGENT_DATA_DIR)]
    data_dir: PathBuf,
    /// `table` or `json`.
    #[arg(short, long, default_value = "table")]
    output: String,
}

#[derive(Args)]
pub struct TunnelArgs {
    /// This end's node name (its certificate names it).
    #[arg(long)]
    node_name: String,
    /// UDP address to listen on.
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// This end's address on the pod network (an address of this host):
    /// the source of its own packets through the tunnel.
    #[arg(long)]
    local_address: Ipv4Addr,
    /// A peer: `NAME=POD_CIDR@ADDRESS:PORT` (repeatable).
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<Peer>,
    /// A directory holding the CA (`ca.crt`, `ca.key`; made if missing)
    /// that issues this end's certificate and that peers chain to.
    #[arg(long)]
    ca_dir: PathBuf,
    /// The TUN device.
    #[arg(long, default_value = tunnel::DEVICE)]
    device: String,
    /// MTU of the path between the ends.
    #[arg(long, default_value_t = 1500)]
    underlay_mtu: u16,
}

fn parse_peer(text: &str) -> Result<Peer, String> {
    let (name, rest) = text
        .split_once('=')
        .ok_or("a peer is NAME=POD_CIDR@ADDRESS:PORT")?;
    let (cidr, endpoint) = rest
        .split_once('@')
        .ok_or("a peer is NAME=POD_CIDR@ADDRESS:PORT")?;
    Ok(Peer {
        name: name.to_string(),
        pod_cidr: cidr.parse().map_err(|e| format!("{cidr}: {e}"))?,
        endpoint: endpoint.parse().map_err(|e| format!("{endpoint}: {e}"))?,
    })
}

pub async fn run(command: OverlayCommand) -> anyhow::Result<()> {
    match command {
        OverlayCommand::Status(args) => status(args),
        OverlayCommand::Tunnel(args) => tunnel(args).await,
    }
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let path = args.data_dir.join("overlay").join("status.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is an agent with the overlay running on this data dir?)",
            path.display()
        )
    })?;
    if args.output == "json" {
        println!("{text}");
        return Ok(());
    }
    if args.output != "table" {
        bail!("-o {}: table or json", args.output);
    }
    let status: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    println!(
        "{:<20} {:<22} {:<16} {:<12} {:>8} {:>12} {:>12} {:>8}",
        "PEER", "ENDPOINT", "POD-CIDR", "STATE", "RTT", "TX", "RX", "DROPS"
    );
    for peer in status["peers"].as_array().into_iter().flatten() {
        let count = |field: &str| peer[field].as_u64().unwrap_or(0);
        let drops = count("dropNoConnection")
            + count("dropTooBig")
            + count("dropSendError")
            + count("dropSpoofed");
        let state = peer["state"].as_str().unwrap_or_default();
        let state = if state.starts_with("down") {
            "down"
        } else {
            state
        };
        println!(
            "{:<20} {:<22} {:<16} {:<12} {:>8} {:>12} {:>12} {:>8}",
            peer["name"].as_str().unwrap_or_default(),
            peer["endpoint"].as_str().unwrap_or_default(),
            peer["podCidr"].as_str().unwrap_or_default(),
            state,
            peer["rttMs"]
                .as_f64()
                .map(|r| format!("{r:.2}ms"))
                .unwrap_or_else(|| "-".into()),
            format!("{}p/{}", count("txPackets"), bytes(count("txBytes"))),
            format!("{}p/{}", count("rxPackets"), bytes(count("rxBytes"))),
            drops,
        );
    }
    Ok(())
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}KiB", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}

async fn tunnel(args: TunnelArgs) -> anyhow::Result<()> {
    let files = shoal_core::tls::Files::in_dir(&args.ca_dir);
    shoal_core::tls::ensure_generated(&files, &[]).context("the CA")?;
    let ca = shoal_core::tls::Ca::load(&files.ca_cert, &files.ca_key).context("the CA")?;
    let (cert, key) = shoal_core::tls::issue_node_cert(&ca, &args.node_name)
        .context("issuing this end's certificate")?;
    let identity = tunnel::Identity::from_pem(ca.pem(), &cert, &key)?;
    let tunnel = Tunnel::start(tunnel::Config {
        node_name: args.node_name,
        device: args.device,
        listen: args.listen,
        underlay_mtu: args.underlay_mtu,
        local_address: args.local_address,
        cluster_cidr: None,
        identity,
    })
    .await?;
    tunnel.set_peers(args.peers).await?;
    crate::apiserver::wait_for_signal().await?;
    drop(tunnel);
    Ok(())
}
