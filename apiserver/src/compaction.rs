//! Compaction of the store's history, as kube-apiserver does it: every
//! interval, compact to the revision seen one interval earlier, so watches
//! can resume from any version of the last interval and older ones get
//! 410 Gone. With several apiservers each compacts; compacting to a
//! revision that is already gone is harmless.

use std::sync::Arc;
use std::time::Duration;

use crate::server::Api;

pub async fn run(api: Arc<Api>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(interval).await;
        let current = match api.store.revision().await {
            Ok(revision) => revision,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the store revision for compaction");
                continue;
            }
        };
        if let Some(revision) = previous {
            match api.store.compact(revision).await {
                Ok(()) => tracing::debug!(revision, "compacted the store"),
                Err(e) => tracing::debug!(revision, error = %e, "compaction skipped"),
            }
        }
        previous = Some(current);
    }
}
