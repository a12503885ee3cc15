//! `shoal apiserver`: the Kubernetes REST API over a store cluster, with
//! kube-apiserver's flag names. The scheduler and the control loops run in
//! the same process by default, under leader election: with several
//! apiservers, one replica runs them and a standby takes over when it dies.

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ApiserverArgs {
    #[command(flatten)]
    pub config: shoal_apiserver::Config,
    /// Serve the API only: no scheduler and no control loops in this
    /// process (run them with `shoal controllers`).
    #[arg(long, env = "SHOAL_NO_CONTROLLERS")]
    pub no_controllers: bool,
    #[command(flatten)]
    pub controllers: crate::controllers::ControllerFlags,
    /// The address this apiserver gives the cluster (its entry in
    /// Endpoints `default/kubernetes`, with `--secure-port`). Default:
    /// `--bind-address`, or when that is 0.0.0.0 this machine's address on
    /// its default route (else its first non-loopback IPv4).
    #[arg(long, env = "SHOAL_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<std::net::IpAddr>,
}

pub async fn run(mut args: ApiserverArgs) -> anyhow::Result<()> {
    shoal_controllers::check()?;
    args.config.kubelet_client_signer = args.controllers.signing_files();
    let running = shoal_apiserver::server::start_advertising(args.config, args.advertise_address)
        .await
        .context("starting the apiserver")?;
    tracing::info!(addr = %running.addr, "apiserver ready");
    let controllers = if args.no_controllers {
        None
    } else {
        let client = running
            .loopback_client()
            .await
            .context("a loopback client for the controllers")?;
        if let Some(address) = args.controllers.metrics_bind_address {
            crate::controllers::serve_metrics(address).await?;
        }
        Some(tokio::spawn(shoal_controllers::run_elected(
            client,
            crate::controllers::identity(),
            args.controllers.settings()?,
        )))
    };
    wait_for_signal().await?;
    if let Some(controllers) = controllers {
        controllers.abort();
    }
    running.stop().await;
    Ok(())
}

/// Returns on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = term.recv() => tracing::info!("terminated, stopping"),
    }
    Ok(())
}
