//! Starting containers: the image, the back-off after a crash or a
//! missing image, the configuration (env, mounts, limits), the runtime
//! call, then the postStart hook and the probes.

use super::stop::{handler_probe, run_handler};
use super::*;

impl Worker {
    /// Starts the container (init list or main list) now, or says why not
    /// yet (image missing, back-off, bad configuration).
    pub(super) async fn start_or_back_off(&mut self, init: bool, index: usize) {
        let now = Instant::now();
        let (initial, max) = (
            self.shared.config.backoff_initial,
            self.shared.config.backoff_max,
        );
        let pod_ref = format!("{}_{}({})", self.name, self.namespace, self.uid);
        let ctr = self.ctr_mut(init, index);
        // A run that ended moves to lastState.
        if let State::Terminated(t) = &ctr.state {
            let t = t.clone();
            if !ctr.backoff.ready(now) {
                let message = format!(
                    "back-off {} restarting failed container={} pod={pod_ref}",
                    human_duration(ctr.backoff.next_delay),
                    ctr.spec.name
                );
                // Shown as waiting until the back-off ends (once per run).
                let field = ctr.field_path.clone();
                let name = ctr.spec.name.clone();
                ctr.last_terminated = Some(t);
                ctr.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(message),
                };
                self.event(
                    Some(&field),
                    EventKind::Warning,
                    "BackOff",
                    format!("Back-off restarting failed container {name} in pod {pod_ref}"),
                );
                return;
            }
            if ctr.started_at.is_some_and(|s| s.elapsed() > BACKOFF_RESET) {
                ctr.backoff = Backoff::new();
            }
            ctr.last_terminated = Some(t);
        }
        if let State::Waiting { reason, .. } = &ctr.state {
            if reason == "CrashLoopBackOff" && !ctr.backoff.ready(now) {
                return;
            }
            if (reason == "ErrImagePull" || reason == "ImagePullBackOff")
                && !ctr.pull_backoff.ready(now)
            {
                let failed_at = ctr
                    .pull_backoff
                    .not_before
                    .and_then(|t| t.checked_sub(ctr.pull_backoff.next_delay));
                if reason == "ErrImagePull"
                    && failed_at.is_some_and(|f| now >= f + PULL_ERROR_SHOWN)
                {
                    let image = ctr.spec.image.clone().unwrap_or_default();
                    let field = ctr.field_path.clone();
                    ctr.state = State::Waiting {
                        reason: "ImagePullBackOff".into(),
                        message: Some(format!("Back-off pulling image \"{image}\"")),
                    };
                    self.event(
                        Some(&field),
                        EventKind::Normal,
                        "BackOff",
                        format!("Back-off pulling image \"{image}\""),
                    );
                    self.event(
                        Some(&field),
                        EventKind::Warning,
                        "Failed",
                        "Error: ImagePullBackOff".into(),
                    );
                }
                return;
            }
        }
        let was_run_before = ctr.attempt >= 0;
        // The image.
        let image = ctr.spec.image.clone().unwrap_or_default();
        let field = ctr.field_path.clone();
        let policy = ctr
            .spec
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into());
        let images = self.shared.runtime.images().clone();
        let image_for_lookup = image.clone();
        let resolved = tokio::task::spawn_blocking(move || images.resolve(&image_for_lookup)).await;
        let mut resolved = match resolved {
            Ok(Ok(image)) => Some(image),
            _ => None,
        };
        // Not here, but the node can make it: that is this node's pull.
        let mut build_failed = None;
        let mut pulled_now = false;
        if resolved.is_none() && policy != "Never" {
            if let Some(catalog) = self
                .shared
                .config
                .image_builds
                .clone()
                .filter(|c| c.provides(&image))
            {
                self.event(
                    Some(&field),
                    EventKind::Normal,
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                );
                let images = self.shared.runtime.images().clone();
                let began = std::time::Instant::now();
                let wanted = image.clone();
                let built =
                    tokio::task::spawn_blocking(move || catalog.fetch(&wanted, &images)).await;
                match built {
                    Ok(Ok(built)) => {
                        let took = began.elapsed().as_secs_f64();
                        crate::metrics::image_pulled(took);
                        self.event(
                            Some(&field),
                            EventKind::Normal,
                            "Pulled",
                            format!(
                                "Successfully pulled image \"{image}\" in {took:.3}s ({took:.3}s including waiting). Image size: {} bytes.",
                                built.size
                            ),
                        );
                        resolved = Some(built);
                        pulled_now = true;
                    }
                    Ok(Err(e)) => build_failed = Some(e.to_string()),
                    Err(e) => build_failed = Some(e.to_string()),
                }
            }
        }
        let ctr = self.ctr_mut(init, index);
        let Some(resolved) = resolved else {
            if policy == "Never" {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                if !matches!(&ctr.state, State::Waiting { reason, .. } if reason == "ErrImageNeverPull")
                {
                    ctr.state = State::Waiting {
                        reason: "ErrImageNeverPull".into(),
                        message: Some(message.clone()),
                    };
                    self.event(
                        Some(&field),
                        EventKind::Warning,
                        "ErrImageNeverPull",
                        message,
                    );
                }
                return;
            }
            let attempted = build_failed.is_some();
            let reason = match build_failed {
                Some(e) => format!("failed to pull and unpack image \"{image}\": {e}"),
                None => format!(
                    "failed to pull and unpack image \"{image}\": image not in the node's local store and no registry is reachable (load it with `shoal image load`)"
                ),
            };
            ctr.pull_backoff.restarted(now, initial, max);
            ctr.state = State::Waiting {
                reason: "ErrImagePull".into(),
                message: Some(reason.clone()),
            };
            if !attempted {
                self.event(
                    Some(&field),
                    EventKind::Normal,
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                );
            }
            self.event(
                Some(&field),
                EventKind::Warning,
                "Failed",
                format!("Failed to pull image \"{image}\": {reason}"),
            );
            self.event(
                Some(&field),
                EventKind::Warning,
                "Failed",
                "Error: ErrImagePull".into(),
            );
            return;
        };
        ctr.pull_backoff = Backoff::new();
        if pulled_now {
            // Its Pulling and Pulled events are out already.
        } else if policy == "Always" {
            self.event(
                Some(&field),
                EventKind::Normal,
                "Pulling",
                format!("Pulling image \"{image}\""),
            );
            self.event(
                Some(&field),
                EventKind::Normal,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in 0s (0s including waiting). Image size: {} bytes.",
                    resolved.size
                ),
            );
        } else {
            self.event(
                Some(&field),
                EventKind::Normal,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
        }
        // The configuration, with what the pod refers to as it is now (a
        // Service created since is in the next container's environment).
        if self.refs_read_at.is_none_or(|t| t.elapsed() > REFS_MAX_AGE) {
            if let Ok(refs) =
                env::gather(&self.shared.client, &self.shared.services, &self.pod).await
            {
                self.refs = Some(refs);
                self.refs_read_at = Some(Instant::now());
            }
        }
        let config = match self.container_config(init, index) {
            Ok(config) => config,
            Err(message) => {
                let ctr = self.ctr_mut(init, index);
                if !matches!(&ctr.state, State::Waiting { reason, message: m } if reason == "CreateContainerConfigError" && m.as_deref() == Some(message.as_str()))
                {
                    ctr.state = State::Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: Some(message.clone()),
                    };
                    self.event(
                        Some(&field),
                        EventKind::Warning,
                        "Failed",
                        format!("Error: {message}"),
                    );
                }
                return;
            }
        };
        let runtime = self.shared.runtime.clone();
        let id = config.id.clone();
        let log_path = config.log_path.clone().unwrap_or_default();
        // A bounded number at once: a hundred runc starts together on a
        // small node all finish late.
        let permit = self.shared.starts.clone().acquire_owned().await;
        tracing::debug!(container = %config.id, "starting the container");
        let started = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A leftover of the same id (a start that failed half-way).
            if runtime.status(&config.id).is_ok() {
                let _ = runtime.remove(&config.id);
            }
            runtime.create_and_start(&config)
        })
        .await;
        tracing::debug!(container = %id, ok = matches!(started, Ok(Ok(_))), "container start returned");
        let ctr = self.ctr_mut(init, index);
        ctr.attempt += 1;
        ctr.run_id = Some(id.clone());
        ctr.image_id = resolved.id.clone();
        ctr.kill_requested = false;
        if was_run_before {
            ctr.backoff.restarted(now, initial, max);
        }
        let name = ctr.spec.name.clone();
        self.shared.registry.started(
            &self.namespace,
            &self.name,
            &self.uid,
            &name,
            Run {
                id: id.clone(),
                log_path,
            },
        );
        let ctr = self.ctr_mut(init, index);
        match started {
            Ok(Ok(handle)) => {
                ctr.state = State::Running {
                    started_at: rfc3339(handle.started_at),
                };
                ctr.started_at = Some(Instant::now());
                self.event(
                    Some(&field),
                    EventKind::Normal,
                    "Created",
                    format!("Created container {name}"),
                );
                self.event(
                    Some(&field),
                    EventKind::Normal,
                    "Started",
                    format!("Started container {name}"),
                );
                self.after_start(init, index).await;
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                ctr.state = State::Terminated(Terminated {
                    exit_code: 128,
                    reason: "StartError".into(),
                    message: Some(message.clone()),
                    started_at: None,
                    finished_at: now_string(),
                    container_id: Some(format!("shoal://{id}")),
                });
                if !was_run_before {
                    // The next restart waits, as after any failure.
                    ctr.backoff.restarted(now, initial, max);
                }
                self.event(
                    Some(&field),
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
            }
            Err(e) => tracing::warn!(error = %e, "container start panicked"),
        }
    }

    /// The runtime's description of a container of this pod.
    pub(super) fn container_config(
        &self,
        init: bool,
        index: usize,
    ) -> Result<ContainerConfig, String> {
        let ctr = self.ctr(init, index);
        let spec = &ctr.spec;
        let refs = self
            .refs
            .as_ref()
            .ok_or("the pod's references are not read yet")?;
        let host_ip = self.shared.host_ip.to_string();
        let pod_ip = self.pod_ip().unwrap_or_default();
        let ctx = env::EnvContext {
            pod: &self.pod,
            refs,
            node_name: &self.shared.config.node_name,
            host_ip: &host_ip,
            pod_ip: &pod_ip,
            node_allocatable_cpu_millis: self.shared.allocatable.0,
            node_allocatable_memory_bytes: self.shared.allocatable.1,
        };
        let env = env::container_env(&ctx, spec).map_err(|e| e.to_string())?;
        let volumes = self.volumes.as_ref().ok_or("volumes are not ready")?;
        let mut mounts = volumes
            .mounts_with_env(spec, &env)
            .map_err(|e| e.to_string())?;
        let has = |dest: &str| {
            mounts
                .iter()
                .any(|m| m.destination == std::path::Path::new(dest))
        };
        let mut extra = Vec::new();
        if !has("/etc/hosts") {
            extra.push(runtime::BindMount {
                source: self.pod_dir.join("etc-hosts"),
                destination: "/etc/hosts".into(),
                read_only: false,
            });
        }
        if !has("/etc/resolv.conf") {
            extra.push(runtime::BindMount {
                source: self.pod_dir.join("resolv.conf"),
                destination: "/etc/resolv.conf".into(),
                read_only: false,
            });
        }
        mounts.extend(extra);
        let security = spec.security_context.as_ref();
        let pod_security = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let run_as_user = security
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_security.and_then(|s| s.run_as_user));
        let run_as_group = security
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_security.and_then(|s| s.run_as_group));
        let resources = spec.resources.as_ref();
        let quantity = |map: Option<
            &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
                        key: &str,
                        scale: u64| {
            map.and_then(|m| m.get(key))
                .and_then(|q| shoal_core::quantity::parse_scaled(&q.0, scale))
        };
        let limits = resources.and_then(|r| r.limits.as_ref());
        let requests = resources.and_then(|r| r.requests.as_ref());
        let hostname = sandbox_files::uts_hostname(&self.pod, &self.shared.config.cluster_domain);
        let attempt = ctr.attempt + 1;
        Ok(ContainerConfig {
            id: container_id(&self.uid, &spec.name, attempt),
            image: spec.image.clone().unwrap_or_default(),
            process: ContainerProcess {
                command: spec.command.clone().unwrap_or_default(),
                args: spec.args.clone().unwrap_or_default(),
                env,
                working_dir: spec.working_dir.clone(),
                run_as_user: run_as_user.and_then(|u| u32::try_from(u).ok()),
                run_as_group: run_as_group.and_then(|g| u32::try_from(g).ok()),
            },
            hostname: Some(hostname),
            network: match &self.sandbox {
                Some(s) if !self.host_network => Network::Join(s.netns_path.clone()),
                _ => Network::Host,
            },
            mounts,
            memory_limit_bytes: quantity(limits, "memory", 1),
            cpu_request_millis: quantity(requests, "cpu", 1000),
            cpu_limit_millis: quantity(limits, "cpu", 1000),
            log_path: Some(
                self.pod_dir
                    .join("logs")
                    .join(&spec.name)
                    .join(format!("{attempt}.log")),
            ),
            // `kubectl run -it` / `kubectl attach`: the shim keeps the
            // process's stdin (and terminal) for attached clients.
            tty: spec.tty.unwrap_or(false),
            stdin: spec.stdin.unwrap_or(false),
            stdin_once: spec.stdin_once.unwrap_or(false),
            log_max_bytes: Some(self.shared.config.container_log_max_bytes),
            log_max_files: self.shared.config.container_log_max_files,
        })
    }

    /// postStart hook and probes of a container that just started.
    pub(super) async fn after_start(&mut self, init: bool, index: usize) {
        let pod_ip = self.pod_ip().and_then(|ip| ip.parse().ok());
        let runtime = self.shared.runtime.clone();
        let ctr = self.ctr_mut(init, index);
        let Some(id) = ctr.run_id.clone() else { return };
        let ports = ctr.spec.ports.clone().unwrap_or_default();
        if let Some(handler) = ctr
            .spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        {
            let probe = handler_probe(handler);
            let target = probe::Target {
                runtime: &runtime,
                container_id: &id,
                pod_ip,
                container_ports: &ports,
            };
            if let probe::Outcome::Failure(message) | probe::Outcome::Error(message) =
                run_handler(handler, &probe, &target).await
            {
                let field = ctr.field_path.clone();
                let name = ctr.spec.name.clone();
                ctr.kill_requested = true;
                let _ = tokio::task::spawn_blocking({
                    let runtime = runtime.clone();
                    let id = id.clone();
                    move || runtime.kill(&id, Signal::SIGKILL)
                })
                .await;
                self.event(
                    Some(&field),
                    EventKind::Warning,
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {message}"),
                );
                self.event(
                    Some(&field),
                    EventKind::Normal,
                    "Killing",
                    format!("FailedPostStartHook: stopping container {name}"),
                );
                return;
            }
        }
        self.start_probes(init, index);
    }

    /// The probes of a running container (a new one, or one re-adopted).
    pub(super) fn start_probes(&mut self, init: bool, index: usize) {
        let pod_ip = self.pod_ip().and_then(|ip| ip.parse().ok());
        let runtime = self.shared.runtime.clone();
        let ctr = self.ctr_mut(init, index);
        let Some(id) = ctr.run_id.clone() else { return };
        let ports = ctr.spec.ports.clone().unwrap_or_default();
        let target = probe::OwnedTarget {
            runtime: (*runtime).clone(),
            container_id: id.clone(),
            pod_ip,
            container_ports: ports.clone(),
        };
        let started_at = ctr.started_at.unwrap_or_else(Instant::now);
        let startup = ctr
            .spec
            .startup_probe
            .clone()
            .map(|p| probe::spawn(probe::Kind::Startup, p, target.clone(), started_at));
        let gated = |kind: probe::Kind, p: &Option<Probe>| {
            p.clone().map(|p| match &startup {
                Some(s) => {
                    probe::spawn_after_startup(kind, p, target.clone(), started_at, s.results())
                }
                None => probe::spawn(kind, p, target.clone(), started_at),
            })
        };
        let liveness = gated(probe::Kind::Liveness, &ctr.spec.liveness_probe);
        let readiness = gated(probe::Kind::Readiness, &ctr.spec.readiness_probe);
        ctr.started = startup.is_none();
        ctr.ready = ctr.started && readiness.is_none();
        ctr.probes = Some(Probes {
            liveness,
            readiness,
            startup,
            seen_failures: (0, 0, 0),
        });
    }
}
