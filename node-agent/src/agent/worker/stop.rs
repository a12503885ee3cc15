//! The end of a pod: sidecars stopped when the containers ended for good;
//! graceful termination on deletion (preStop, SIGTERM, grace, SIGKILL)
//! and the final delete; everything removed once the pod is gone.

use super::*;

impl Worker {
    /// The pod ended for good (`init_failed`: an init container failed
    /// under restartPolicy Never): sidecars stop, the network is released
    /// (the status keeps the address it had, as in Kubernetes).
    pub(super) async fn end(&mut self, init_failed: bool) {
        self.stage = Stage::Ended {
            initialized: self.stage.initialized(),
            init_failed,
            found: false,
        };
        let grace = self.grace_period();
        stop_all(
            &self.shared,
            &self.pod,
            &mut self.init,
            grace.max(MIN_SIDECAR_GRACE),
        )
        .await;
        for ctr in self.init.iter_mut().chain(self.containers.iter_mut()) {
            ctr.probes = None;
            ctr.ready = false;
        }
        self.refresh().await;
        if self.sandbox.is_some() {
            if let Err(e) = self.shared.network.delete_sandbox(&self.uid).await {
                tracing::warn!(error = %e, "cannot release the pod's network");
            }
        }
    }

    /// Stops every container: main ones first, then sidecars, in the
    /// grace period.
    pub(super) async fn terminate(&mut self, grace: Duration) {
        let started = Instant::now();
        stop_all(&self.shared, &self.pod, &mut self.containers, grace).await;
        let left = grace
            .saturating_sub(started.elapsed())
            .max(if grace.is_zero() {
                Duration::ZERO
            } else {
                MIN_SIDECAR_GRACE
            });
        stop_all(&self.shared, &self.pod, &mut self.init, left).await;
        for ctr in self.init.iter_mut().chain(self.containers.iter_mut()) {
            ctr.probes = None;
            ctr.ready = false;
        }
        self.refresh().await;
        // Containers that never ran are not waiting any more.
        for ctr in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if let State::Waiting { .. } = ctr.state {
                if let Some(t) = ctr.last_terminated.clone() {
                    ctr.state = State::Terminated(t);
                }
            }
        }
        if !self.stage.is_over() {
            self.stage = Stage::Terminating {
                initialized: self.stage.initialized(),
            };
        }
    }

    /// The containers stopped: remove the pod object (kubelet's final
    /// delete with grace 0 and the uid as precondition).
    pub(super) async fn finish_deletion(&self) {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot finish the pod's deletion")
            }
        }
    }

    /// Removes everything of the pod from the node.
    pub(super) async fn clean_up(&mut self) {
        let runtime = self.shared.runtime.clone();
        let uid = self.uid.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for c in runtime
                .list_prefixed(&format!("{uid}_"))
                .unwrap_or_default()
            {
                if uid_of_container(&c.id) == Some(uid.as_str()) {
                    let _ = runtime.kill(&c.id, Signal::SIGKILL);
                    let _ = runtime.wait(&c.id, Duration::from_secs(5));
                    if let Err(e) = runtime.remove(&c.id) {
                        tracing::warn!(container = %c.id, error = %e, "cannot remove a container");
                    }
                }
            }
        })
        .await;
        if let Err(e) = self.shared.network.delete_sandbox(&self.uid).await {
            tracing::warn!(error = %e, "cannot remove the pod's sandbox");
        }
        let pod_dir = self.pod_dir.clone();
        let _ = tokio::task::spawn_blocking(move || volumes::teardown(&pod_dir)).await;
        self.shared
            .registry
            .forget(&self.namespace, &self.name, &self.uid);
    }
}

/// A lifecycle handler as a probe (the same exec/httpGet/tcpSocket).
pub(super) fn handler_probe(handler: &k8s_openapi::api::core::v1::LifecycleHandler) -> Probe {
    Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        timeout_seconds: Some(30),
        ..Default::default()
    }
}

pub(super) async fn run_handler(
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    probe: &Probe,
    target: &probe::Target<'_>,
) -> probe::Outcome {
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return probe::Outcome::Success;
    }
    probe::check(probe, target).await
}

/// preStop, the stop signal, up to `grace`, SIGKILL, for every running container
/// of `list`, all at once.
pub(super) async fn stop_all(
    shared: &Arc<Shared>,
    pod: &Arc<Pod>,
    list: &mut [Ctr],
    grace: Duration,
) {
    let mut stopping = Vec::new();
    for ctr in list.iter_mut() {
        if !ctr.running() {
            continue;
        }
        let Some(id) = ctr.run_id.clone() else {
            continue;
        };
        shared.events.record(
            pod,
            Some(ctr.field_path.clone()),
            EventKind::Normal,
            "Killing",
            format!("Stopping container {}", ctr.spec.name),
        );
        ctr.probes = None;
        let pre_stop = ctr.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        let runtime = shared.runtime.clone();
        let ports = ctr.spec.ports.clone().unwrap_or_default();
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok());
        let events = shared.events.clone();
        let pod = pod.clone();
        let field = ctr.field_path.clone();
        stopping.push(tokio::spawn(async move {
            let deadline = Instant::now() + grace;
            if let Some(handler) = pre_stop.filter(|_| !grace.is_zero()) {
                let probe = handler_probe(&handler);
                let target = probe::Target {
                    runtime: &runtime,
                    container_id: &id,
                    pod_ip,
                    container_ports: &ports,
                };
                let hook = run_handler(&handler, &probe, &target);
                match tokio::time::timeout(grace, hook).await {
                    Ok(probe::Outcome::Failure(m)) => events.record(
                        &pod,
                        Some(field),
                        EventKind::Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed: {m}"),
                    ),
                    Ok(probe::Outcome::Error(m)) => events.record(
                        &pod,
                        Some(field),
                        EventKind::Warning,
                        "FailedPreStopHook",
                        format!("PreStopHook failed: {m}"),
                    ),
                    Ok(probe::Outcome::Success) | Err(_) => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = stop_container(runtime, id, left).await;
        }));
    }
    for task in stopping {
        let _ = task.await;
    }
}

/// The image's stop signal (SIGTERM unless it names another), wait up to
/// `grace`, SIGKILL; waits for the exit.
pub(super) async fn stop_container(
    runtime: Arc<runtime::Runtime>,
    id: String,
    grace: Duration,
) -> runtime::Result<()> {
    tokio::task::spawn_blocking(move || {
        if !grace.is_zero() {
            runtime.kill(&id, runtime.stop_signal(&id))?;
            if matches!(
                runtime.wait(&id, grace)?,
                runtime::Status::Exited { .. } | runtime::Status::Unknown { .. }
            ) {
                return Ok(());
            }
        }
        runtime.kill(&id, Signal::SIGKILL)?;
        runtime.wait(&id, Duration::from_secs(10))?;
        Ok(())
    })
    .await
    .unwrap_or(Ok(()))
}
