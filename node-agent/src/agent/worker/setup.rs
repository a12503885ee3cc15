//! Before any container: the pod's sandbox (network namespace and
//! address, or the host's), its /etc/hosts and resolv.conf, its volumes.
//! Phase Pending; retried every few seconds while something is missing.

use super::*;

impl Worker {
    /// Sandbox, files and volumes; false while something is missing.
    pub(super) async fn setup(&mut self) -> bool {
        if self.volumes.is_some() && (self.sandbox.is_some() || self.host_network) {
            return true;
        }
        if self.setup_retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.setup_retry_at = Some(Instant::now() + SETUP_RETRY);
        if !self.host_network && self.sandbox.is_none() {
            match self.shared.network.create_sandbox(&self.uid).await {
                Ok(sandbox) => self.sandbox = Some(sandbox),
                Err(e) => {
                    self.sandbox_failed(e);
                    return false;
                }
            }
        }
        let refs = match env::gather(&self.shared.client, &self.shared.services, &self.pod).await {
            Ok(refs) => refs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read what the pod refers to");
                return false;
            }
        };
        if let Err(e) = self.write_files() {
            self.sandbox_failed(e);
            return false;
        }
        let pod = self.pod.clone();
        let pod_dir = self.pod_dir.clone();
        let ctx = self.volume_context();
        let prepared = {
            let refs = refs.clone();
            tokio::task::spawn_blocking(move || volumes::prepare(&pod, &refs, &pod_dir, &ctx)).await
        };
        match prepared {
            Ok(Ok(v)) => self.volumes = Some(v),
            Ok(Err(e)) => {
                self.event(None, EventKind::Warning, "FailedMount", e.to_string());
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "volume setup panicked");
                return false;
            }
        }
        self.refs = Some(refs);
        self.refs_read_at = Some(Instant::now());
        self.setup_retry_at = None;
        tracing::debug!("sandbox and volumes ready");
        true
    }

    fn sandbox_failed(&self, error: impl std::fmt::Display) {
        self.event(
            None,
            EventKind::Warning,
            "FailedCreatePodSandBox",
            format!("Failed to create pod sandbox: {error}"),
        );
    }

    pub(super) fn pod_ip(&self) -> Option<String> {
        if self.host_network {
            return Some(self.shared.host_ip.to_string());
        }
        self.sandbox.as_ref().map(|s| s.ip.to_string())
    }

    pub(super) fn volume_context(&self) -> volumes::Context {
        volumes::Context {
            node_name: self.shared.config.node_name.clone(),
            host_ip: self.shared.host_ip.to_string(),
            pod_ip: self.pod_ip().unwrap_or_default(),
            node_allocatable_cpu_millis: self.shared.allocatable.0,
            node_allocatable_memory_bytes: self.shared.allocatable.1,
        }
    }

    /// /etc/hosts and /etc/resolv.conf of the pod.
    pub(super) fn write_files(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.pod_dir)?;
        let domain = &self.shared.config.cluster_domain;
        let hosts = if self.host_network {
            let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            sandbox_files::host_network_hosts_file(&self.pod, &node_hosts)
        } else {
            let ips: Vec<String> = self.pod_ip().into_iter().collect();
            sandbox_files::hosts_file(&self.pod, &ips, domain)
        };
        std::fs::write(self.pod_dir.join("etc-hosts"), hosts)?;
        let resolv = sandbox_files::resolv_conf(
            &self.pod,
            &self.shared.config.cluster_dns,
            domain,
            &self.shared.host_resolv_conf,
        )
        .map_err(std::io::Error::other)?;
        std::fs::write(self.pod_dir.join("resolv.conf"), resolv)?;
        Ok(())
    }
}
