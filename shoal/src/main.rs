//! `shoal`: the one binary of the system, one subcommand per component.

mod agent;
mod apiserver;
mod bench;
mod bench_api;
mod bench_dns;
mod bench_failover;
mod bench_pod_startup;
mod bench_proxy;
mod bench_scheduler;
mod controllers;
mod dns;
mod image;
mod overlay;
mod shim;
mod store;
mod token;
mod up;
mod up_nodes;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the apiserver and the loops
/// allocate many small JSON values from many threads, where glibc's arenas
/// cost a third of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "A Kubernetes-compatible cluster system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one member of a store cluster (speaks the etcd v3 API).
    Store(store::StoreArgs),
    /// Serve the Kubernetes API over a store cluster (with the scheduler
    /// and the control loops, one replica leading).
    Apiserver(apiserver::ApiserverArgs),
    /// Run the scheduler and the control loops (one replica leads).
    Controllers(controllers::ControllersArgs),
    /// Run a node agent: real pods with runc, or simulated nodes (--simulate).
    Agent(agent::AgentArgs),
    /// Run the cluster DNS on its own (every agent also runs one).
    Dns(dns::DnsArgs),
    /// Run a whole cluster on this machine and write a kubeconfig.
    Up(up::UpArgs),
    /// Bootstrap tokens that agents join with (`--bootstrap-kubeconfig`).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Load generators.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A node's image store: load image archives, list images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// The node-to-node tunnels: `status` of this machine's agent, or one
    /// `tunnel` end with static peers.
    #[command(subcommand)]
    Overlay(overlay::OverlayCommand),
    /// Watch one container under runc (started by the container runtime).
    #[command(hide = true)]
    ContainerShim(shim::ShimArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One shim per container: no async runtime, no log setup to pay for.
    if let Command::ContainerShim(args) = &cli.command {
        return shim::run(args);
    }
    // `shoal up` talks to a person on stdout; its components' logs would
    // drown that out, so it shows only warnings unless RUST_LOG says more.
    let default_filter = match cli.command {
        Command::Up(_) => "warn,openraft=off",
        // hickory-server logs every query at info.
        _ => "info,openraft=warn,hickory_server=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Store(args) => store::run(args).await,
            Command::Apiserver(args) => apiserver::run(args).await,
            Command::Up(args) => up::run(args).await,
            Command::Controllers(args) => controllers::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Dns(args) => dns::run(args).await,
            Command::Token(cmd) => token::run(cmd).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Image(cmd) => image::run(cmd),
            Command::Overlay(cmd) => overlay::run(cmd).await,
            Command::ContainerShim(args) => shim::run(&args),
        }
    })
}
