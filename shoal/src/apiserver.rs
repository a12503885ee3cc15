//! `shoal apiserver`: the Kubernetes REST API over a store cluster, with
//! kube-apiserver's flag names.

use anyhow::Context;

pub async fn run(config: shoal_apiserver::Config) -> anyhow::Result<()> {
    let running = shoal_apiserver::start(config)
        .await
        .context("starting the apiserver")?;
    tracing::info!(addr = %running.addr, "apiserver ready");
    wait_for_signal().await?;
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
