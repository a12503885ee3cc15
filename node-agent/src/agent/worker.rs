//! One pod's life on this node: the worker the dispatcher (`pods.rs`)
//! starts for each pod bound here.
//!
//! ```text
//!  Setup        sandbox (netns + IP, or the host's), /etc/hosts, resolv.conf,
//!               volumes                                  phase Pending
//!  Initializing init containers one after another, each to success;
//!               sidecars (restartPolicy: Always) started and kept
//!  Running      containers started; restarts by restartPolicy with
//!               back-off; probes; Ready                   phase Running
//!  Ended        all containers ended for good             Succeeded / Failed
//!  Terminating  deletionTimestamp: preStop, SIGTERM, grace, SIGKILL; then
//!               the pod object is deleted
//! ```
//!
//! Each pass refreshes what the runtime says, decides the next actions,
//! and writes the pod status when what `status.rs` computes changed.
//! Container ids are `<pod uid>_<container>_<attempt>`, so a restarted
//! agent finds every run again (`adopt`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::events::Kind as EventKind;
use super::pods::Update;
use super::registry::Run;
use super::status::{self, ContainerView, Kind, PodView, State, Terminated};
use super::{env, probe, sandbox_files, volumes, Shared};
use crate::runtime::{self, ContainerConfig, ContainerProcess, Network, Signal};

/// How often a worker looks at its containers when nothing else happens.
const TICK: Duration = Duration::from_millis(200);
/// Setup steps that failed are retried after this long.
const SETUP_RETRY: Duration = Duration::from_secs(2);
/// A container that ran this long has its back-off forgotten.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// What a pod refers to (ConfigMaps, Secrets, Services) is read again
/// before a container starts when it is older than this.
const REFS_MAX_AGE: Duration = Duration::from_secs(1);
/// How long ErrImagePull shows before ImagePullBackOff.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(1);
/// Grace given to sidecars after the main containers stopped, at least.
const MIN_SIDECAR_GRACE: Duration = Duration::from_secs(2);

/// The runtime id of a container run.
pub fn container_id(uid: &str, container: &str, attempt: i32) -> String {
    format!("{uid}_{container}_{attempt}")
}

/// The pod uid of a runtime container id made by [`container_id`].
pub fn uid_of_container(id: &str) -> Option<&str> {
    let (uid, _) = id.split_once('_')?;
    Some(uid)
}

/// (container name, attempt) of a runtime container id of pod `uid`.
fn parse_container_id<'a>(uid: &str, id: &'a str) -> Option<(&'a str, i32)> {
    let rest = id.strip_prefix(uid)?.strip_prefix('_')?;
    let (name, attempt) = rest.rsplit_once('_')?;
    Some((name, attempt.parse().ok()?))
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Kubelet's restart back-off: the first restart is immediate, then
/// `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    pub next_delay: Duration,
    pub not_before: Option<Instant>,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Whether a restart may happen at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Records a restart at `now`; the one after waits longer.
    pub fn restarted(&mut self, now: Instant, initial: Duration, max: Duration) {
        self.next_delay = if self.next_delay.is_zero() {
            initial
        } else {
            (self.next_delay * 2).min(max)
        };
        self.not_before = Some(now + self.next_delay);
    }
}

/// A probe running for a container, and what it last said.
struct Probes {
    liveness: Option<probe::ProbeHandle>,
    readiness: Option<probe::ProbeHandle>,
    startup: Option<probe::ProbeHandle>,
    /// Failures already turned into events and actions.
    seen_failures: (u64, u64, u64),
}

/// What the worker knows of one container.
struct Ctr {
    spec: Container,
    kind: Kind,
    field_path: String,
    /// Attempt of the current (or last) run; -1 before the first.
    attempt: i32,
    run_id: Option<String>,
    image_id: String,
    state: State,
    last_terminated: Option<Terminated>,
    started_at: Option<Instant>,
    backoff: Backoff,
    pull_backoff: Backoff,
    ready: bool,
    started: bool,
    probes: Option<Probes>,
    /// A liveness or startup failure asked for a restart.
    kill_requested: bool,
    /// The run whose end is already recorded in `state`.
    ended_run: Option<String>,
}

impl Ctr {
    fn new(spec: Container, kind: Kind, index_field: &str) -> Ctr {
        let field_path = format!("spec.{index_field}{{{}}}", spec.name);
        Ctr {
            spec,
            kind,
            field_path,
            attempt: -1,
            run_id: None,
            image_id: String::new(),
            state: State::Waiting {
                reason: match kind {
                    Kind::Regular => "ContainerCreating",
                    _ => "PodInitializing",
                }
                .into(),
                message: None,
            },
            last_terminated: None,
            started_at: None,
            backoff: Backoff::new(),
            pull_backoff: Backoff::new(),
            ready: false,
            started: false,
            probes: None,
            kill_requested: false,
            ended_run: None,
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    fn terminated(&self) -> Option<&Terminated> {
        match &self.state {
            State::Terminated(t) => Some(t),
            _ => None,
        }
    }

    fn view(&self) -> ContainerView {
        ContainerView {
            name: self.spec.name.clone(),
            kind: self.kind,
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            container_id: self.run_id.as_ref().map(|id| format!("shoal://{id}")),
            state: self.state.clone(),
            last_terminated: self.last_terminated.clone(),
            restart_count: self.attempt.max(0),
            ready: self.ready,
            started: self.started,
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    pod_dir: PathBuf,
    host_network: bool,
    sandbox: Option<shoal_overlay::Sandbox>,
    refs: Option<env::Refs>,
    refs_read_at: Option<Instant>,
    volumes: Option<volumes::PodVolumes>,
    setup_retry_at: Option<Instant>,
    init: Vec<Ctr>,
    containers: Vec<Ctr>,
    initialized: bool,
    init_failed: bool,
    start_time: String,
    last_status: Option<Value>,
    ended: bool,
    /// The pod had ended when this worker started (an agent restarted).
    found_ended: bool,
}

/// Runs the worker of one pod until the pod is gone.
pub async fn run(shared: Arc<Shared>, mut updates: watch::Receiver<Update>) {
    let Update::Present(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let mut worker = Worker::new(shared, pod);
    let span = tracing::info_span!("pod", pod = %format!("{}/{}", worker.namespace, worker.name));
    let _guard = span.enter();
    drop(_guard);
    worker.adopt().await;
    loop {
        let update = updates.borrow_and_update().clone();
        match update {
            Update::Gone => {
                worker.terminate(Duration::ZERO).await;
                worker.clean_up().await;
                return;
            }
            Update::Present(pod) => worker.pod = pod,
        }
        if worker.pod.metadata.deletion_timestamp.is_some() {
            let grace = worker.grace_period();
            worker.terminate(grace).await;
            worker.report().await;
            worker.finish_deletion().await;
            // Wait for the object to go (or for a new object, if the
            // deletion could not finish).
            match tokio::time::timeout(SETUP_RETRY, updates.changed()).await {
                Ok(Ok(())) | Err(_) => continue,
                Ok(Err(_)) => return,
            }
        }
        worker.step().await;
        worker.report().await;
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    // The agent is stopping: the pod keeps running.
                    return;
                }
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Arc<Pod>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let init = spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let kind = if c.restart_policy.as_deref() == Some("Always") {
                    Kind::Sidecar
                } else {
                    Kind::Init
                };
                Ctr::new(c, kind, "initContainers")
            })
            .collect();
        let containers = spec
            .containers
            .clone()
            .into_iter()
            .map(|c| Ctr::new(c, Kind::Regular, "containers"))
            .collect();
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| rfc3339(t.0))
            .unwrap_or_else(now);
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        Worker {
            pod_dir: shared.config.data_dir.join("pods").join(&uid),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            host_network: spec.host_network.unwrap_or(false),
            shared,
            uid,
            sandbox: None,
            refs: None,
            refs_read_at: None,
            volumes: None,
            setup_retry_at: None,
            init,
            containers,
            initialized: false,
            init_failed: false,
            start_time,
            last_status: None,
            // A pod that ended before (this agent restarted) stays ended.
            ended: matches!(phase.as_str(), "Succeeded" | "Failed"),
            found_ended: matches!(phase.as_str(), "Succeeded" | "Failed"),
            pod,
        }
    }

    fn restart_policy(&self) -> &str {
        status::restart_policy(&self.pod)
    }

    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    fn event(&self, field_path: Option<&str>, kind: EventKind, reason: &str, message: String) {
        self.shared.events.record(
            &self.pod,
            field_path.map(str::to_string),
            kind,
            reason,
            message,
        );
    }

    /// Finds the runs of this pod's containers that a previous agent
    /// started, so that nothing runs twice.
    async fn adopt(&mut self) {
        let runtime = self.shared.runtime.clone();
        let uid = self.uid.clone();
        let found = tokio::task::spawn_blocking(move || {
            runtime
                .list()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| uid_of_container(&c.id) == Some(uid.as_str()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if found.is_empty() {
            return;
        }
        let mut latest: BTreeMap<String, Vec<(i32, runtime::ContainerInfo)>> = BTreeMap::new();
        for info in found {
            if let Some((name, attempt)) = parse_container_id(&self.uid, &info.id) {
                latest
                    .entry(name.to_string())
                    .or_default()
                    .push((attempt, info));
            }
        }
        for ctr in self.init.iter_mut().chain(self.containers.iter_mut()) {
            let Some(mut runs) = latest.remove(&ctr.spec.name) else {
                continue;
            };
            runs.sort_by_key(|(attempt, _)| *attempt);
            for (attempt, info) in &runs {
                self.shared.registry.started(
                    &self.namespace,
                    &self.name,
                    &self.uid,
                    &ctr.spec.name,
                    Run {
                        id: info.id.clone(),
                        log_path: info.log_path.clone(),
                    },
                );
                ctr.attempt = *attempt;
            }
            if let Some((_, info)) = runs.last() {
                ctr.run_id = Some(info.id.clone());
                ctr.image_id = info.image_id.clone();
                ctr.started_at = Some(Instant::now());
            }
            if runs.len() >= 2 {
                let (_, previous) = &runs[runs.len() - 2];
                ctr.last_terminated = terminated_of(&previous.status, &previous.id);
            }
        }
        if !self.host_network {
            if let Ok(Some(sandbox)) = self.shared.network.sandbox(&self.uid).await {
                self.sandbox = Some(sandbox);
            }
        }
        // Its init containers ran under the previous agent.
        self.initialized = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Initialized" && c.status == "True")
            });
        tracing::info!(pod = %self.name, "re-adopted the pod's containers");
        self.refresh().await;
        // What ran on: its probes start again (postStart ran long ago).
        for (init, list) in [(true, self.init.len()), (false, self.containers.len())] {
            for index in 0..list {
                let ctr = if init {
                    &self.init[index]
                } else {
                    &self.containers[index]
                };
                if ctr.running() {
                    self.start_probes(init, index);
                }
            }
        }
    }

    /// Sandbox, files and volumes; false while something is missing.
    async fn setup(&mut self) -> bool {
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
                    self.event(
                        None,
                        EventKind::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    return false;
                }
            }
        }
        let refs = match env::gather(&self.shared.client, &self.pod).await {
            Ok(refs) => refs,
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "cannot read what the pod refers to");
                return false;
            }
        };
        if let Err(e) = self.write_files() {
            self.event(
                None,
                EventKind::Warning,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e}"),
            );
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
        true
    }

    fn pod_ip(&self) -> Option<String> {
        if self.host_network {
            return Some(self.shared.host_ip.to_string());
        }
        self.sandbox.as_ref().map(|s| s.ip.to_string())
    }

    fn volume_context(&self) -> volumes::Context {
        volumes::Context {
            node_name: self.shared.config.node_name.clone(),
            host_ip: self.shared.host_ip.to_string(),
            pod_ip: self.pod_ip().unwrap_or_default(),
            node_allocatable_cpu_millis: self.shared.allocatable.0,
            node_allocatable_memory_bytes: self.shared.allocatable.1,
        }
    }

    /// /etc/hosts and /etc/resolv.conf of the pod.
    fn write_files(&self) -> std::io::Result<()> {
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

    /// Reads the runtime's view of every container with a run.
    async fn refresh(&mut self) {
        let runtime = self.shared.runtime.clone();
        let ids: Vec<Option<String>> = self
            .init
            .iter()
            .chain(self.containers.iter())
            .map(|c| c.run_id.clone())
            .collect();
        let statuses = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| id.and_then(|id| runtime.status(&id).ok()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (ctr, status) in self
            .init
            .iter_mut()
            .chain(self.containers.iter_mut())
            .zip(statuses)
        {
            let (Some(status), Some(id)) = (status, ctr.run_id.clone()) else {
                continue;
            };
            match status {
                runtime::Status::Running { started_at, .. } => {
                    ctr.state = State::Running {
                        started_at: rfc3339(started_at),
                    };
                    if ctr.started_at.is_none() {
                        ctr.started_at = Some(Instant::now());
                    }
                }
                runtime::Status::Created => {}
                other => {
                    if ctr.ended_run.as_deref() == Some(id.as_str()) {
                        continue;
                    }
                    if let Some(t) = terminated_of(&other, &id) {
                        {
                            ctr.ended_run = Some(id.clone());
                            ctr.state = State::Terminated(t);
                            ctr.ready = false;
                            ctr.probes = None;
                            if ctr.kind == Kind::Regular {
                                ctr.started = false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One pass: refresh, then start, restart or kill what needs it.
    async fn step(&mut self) {
        self.refresh().await;
        if self.ended {
            return;
        }
        if !self.setup().await {
            return;
        }
        self.follow_probes();
        // Init containers, one after another.
        if !self.initialized {
            let mut all_done = true;
            for i in 0..self.init.len() {
                let ctr = &self.init[i];
                match ctr.kind {
                    Kind::Init => {
                        if ctr.terminated().is_some_and(|t| t.exit_code == 0) {
                            continue;
                        }
                        all_done = false;
                        if ctr.running() {
                            break;
                        }
                        if ctr.terminated().is_some() && self.restart_policy() == "Never" {
                            self.init_failed = true;
                            break;
                        }
                        self.start_or_back_off(true, i).await;
                        break;
                    }
                    Kind::Sidecar => {
                        if !ctr.running() {
                            all_done = false;
                            self.start_or_back_off(true, i).await;
                            break;
                        }
                        if !self.init[i].started {
                            all_done = false;
                            break;
                        }
                    }
                    Kind::Regular => {}
                }
            }
            if self.init_failed {
                self.end().await;
                return;
            }
            if !all_done {
                return;
            }
            self.initialized = true;
        }
        // Sidecars keep running.
        for i in 0..self.init.len() {
            if self.init[i].kind == Kind::Sidecar && !self.init[i].running() {
                self.start_or_back_off(true, i).await;
            }
        }
        // The containers.
        let policy = self.restart_policy().to_string();
        for i in 0..self.containers.len() {
            let ctr = &self.containers[i];
            if ctr.running() {
                continue;
            }
            let restart = match ctr.terminated() {
                None => true,
                Some(t) => match policy.as_str() {
                    "Always" => true,
                    "OnFailure" => t.exit_code != 0,
                    _ => false,
                },
            };
            if restart {
                self.start_or_back_off(false, i).await;
            }
        }
        let view = self.view();
        if matches!(status::phase(&view), "Succeeded" | "Failed") {
            self.end().await;
        }
    }

    /// The pod ended for good: sidecars stop, the network is released
    /// (the status keeps the address it had, as in Kubernetes).
    async fn end(&mut self) {
        self.ended = true;
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
                tracing::warn!(pod = %self.name, error = %e, "cannot release the pod's network");
            }
        }
    }

    /// Starts the container (init list or main list) now, or says why not
    /// yet (image missing, back-off, bad configuration).
    async fn start_or_back_off(&mut self, init: bool, index: usize) {
        let now = Instant::now();
        let (initial, max) = (
            self.shared.config.backoff_initial,
            self.shared.config.backoff_max,
        );
        let pod_ref = format!("{}_{}({})", self.name, self.namespace, self.uid);
        let ctr = if init {
            &mut self.init[index]
        } else {
            &mut self.containers[index]
        };
        // A run that ended moves to lastState.
        if let State::Terminated(t) = &ctr.state {
            let t = t.clone();
            if !ctr.backoff.ready(now) {
                let message = format!(
                    "back-off {} restarting failed container={} pod={pod_ref}",
                    human_duration(ctr.backoff.next_delay),
                    ctr.spec.name
                );
                if !matches!(&ctr.state, State::Waiting { reason, .. } if reason == "CrashLoopBackOff")
                {
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
                }
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
        let resolved = match resolved {
            Ok(Ok(image)) => Some(image),
            _ => None,
        };
        let ctr = if init {
            &mut self.init[index]
        } else {
            &mut self.containers[index]
        };
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
            let reason = format!(
                "failed to pull and unpack image \"{image}\": image not in the node's local store and no registry is reachable (load it with `shoal image load`)"
            );
            ctr.pull_backoff.restarted(now, initial, max);
            ctr.state = State::Waiting {
                reason: "ErrImagePull".into(),
                message: Some(reason.clone()),
            };
            self.event(
                Some(&field),
                EventKind::Normal,
                "Pulling",
                format!("Pulling image \"{image}\""),
            );
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
        if policy == "Always" {
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
            if let Ok(refs) = env::gather(&self.shared.client, &self.pod).await {
                self.refs = Some(refs);
                self.refs_read_at = Some(Instant::now());
            }
        }
        let config = match self.container_config(init, index) {
            Ok(config) => config,
            Err(message) => {
                let ctr = if init {
                    &mut self.init[index]
                } else {
                    &mut self.containers[index]
                };
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
        let started = tokio::task::spawn_blocking(move || {
            // A leftover of the same id (a start that failed half-way).
            if runtime.status(&config.id).is_ok() {
                let _ = runtime.remove(&config.id);
            }
            runtime.create_and_start(&config)
        })
        .await;
        let ctr = if init {
            &mut self.init[index]
        } else {
            &mut self.containers[index]
        };
        ctr.attempt += 1;
        ctr.run_id = Some(id.clone());
        ctr.image_id = resolved.id.clone();
        ctr.kill_requested = false;
        if was_run_before {
            ctr.backoff.restarted(now, initial, max);
        }
        self.shared.registry.started(
            &self.namespace,
            &self.name,
            &self.uid,
            &ctr.spec.name,
            Run {
                id: id.clone(),
                log_path,
            },
        );
        let name = ctr.spec.name.clone();
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
    fn container_config(&self, init: bool, index: usize) -> Result<ContainerConfig, String> {
        let ctr = if init {
            &self.init[index]
        } else {
            &self.containers[index]
        };
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
                        scale: f64| {
            map.and_then(|m| m.get(key))
                .and_then(|q| crate::quantity::parse_quantity(&q.0, scale))
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
            memory_limit_bytes: quantity(limits, "memory", 1.0),
            cpu_request_millis: quantity(requests, "cpu", 1000.0),
            cpu_limit_millis: quantity(limits, "cpu", 1000.0),
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
        })
    }

    /// postStart hook and probes of a container that just started.
    async fn after_start(&mut self, init: bool, index: usize) {
        let pod_ip = self.pod_ip().and_then(|ip| ip.parse().ok());
        let runtime = self.shared.runtime.clone();
        let ctr = if init {
            &mut self.init[index]
        } else {
            &mut self.containers[index]
        };
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
    fn start_probes(&mut self, init: bool, index: usize) {
        let pod_ip = self.pod_ip().and_then(|ip| ip.parse().ok());
        let runtime = self.shared.runtime.clone();
        let ctr = if init {
            &mut self.init[index]
        } else {
            &mut self.containers[index]
        };
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

    /// Turns what the probes last said into readiness, events and kills.
    fn follow_probes(&mut self) {
        let pod = self.pod.clone();
        let events = self.shared.events.clone();
        let runtime = self.shared.runtime.clone();
        for ctr in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if !ctr.running() {
                continue;
            }
            let Some(probes) = ctr.probes.as_mut() else {
                continue;
            };
            let field = Some(ctr.field_path.clone());
            let mut restart_reason = None;
            let report = |state: &probe::State, seen: &mut u64| {
                if state.failures > *seen {
                    *seen = state.failures;
                    if let Some(m) = &state.last_failure {
                        events.record(
                            &pod,
                            field.clone(),
                            EventKind::Warning,
                            "Unhealthy",
                            m.clone(),
                        );
                    }
                }
            };
            if let Some(startup) = &probes.startup {
                let state = startup.results().borrow().clone();
                report(&state, &mut probes.seen_failures.2);
                match state.health {
                    probe::Health::Success => ctr.started = true,
                    probe::Health::Failure => restart_reason = Some("failed startup probe"),
                    probe::Health::Unknown => {}
                }
            }
            if let Some(liveness) = &probes.liveness {
                let state = liveness.results().borrow().clone();
                report(&state, &mut probes.seen_failures.0);
                if ctr.started && state.health == probe::Health::Failure {
                    restart_reason = Some("failed liveness probe");
                }
            }
            if ctr.started {
                ctr.ready = match &probes.readiness {
                    Some(readiness) => {
                        let state = readiness.results().borrow().clone();
                        report(&state, &mut probes.seen_failures.1);
                        state.health == probe::Health::Success
                    }
                    None => true,
                };
            }
            if let (Some(reason), false) = (restart_reason, ctr.kill_requested) {
                ctr.kill_requested = true;
                events.record(
                    &pod,
                    field,
                    EventKind::Normal,
                    "Killing",
                    format!("Container {} {reason}, will be restarted", ctr.spec.name),
                );
                if let Some(id) = ctr.run_id.clone() {
                    let runtime = runtime.clone();
                    let grace = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                        .unwrap_or(30)
                        .max(0) as u64;
                    tokio::spawn(async move {
                        let _ = stop_container(runtime, id, Duration::from_secs(grace)).await;
                    });
                }
                ctr.probes = None;
                ctr.ready = false;
            }
        }
    }

    /// Stops every container: main ones first, then sidecars, in the
    /// grace period.
    async fn terminate(&mut self, grace: Duration) {
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
        self.ended = true;
    }

    /// The containers stopped: remove the pod object (kubelet's final
    /// delete with grace 0 and the uid as precondition).
    async fn finish_deletion(&self) {
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
                tracing::warn!(pod = %self.name, error = %e, "cannot finish the pod's deletion")
            }
        }
    }

    /// Removes everything of the pod from the node.
    async fn clean_up(&mut self) {
        let runtime = self.shared.runtime.clone();
        let uid = self.uid.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for c in runtime.list().unwrap_or_default() {
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
            tracing::warn!(pod = %self.name, error = %e, "cannot remove the pod's sandbox");
        }
        let pod_dir = self.pod_dir.clone();
        let _ = tokio::task::spawn_blocking(move || volumes::teardown(&pod_dir)).await;
        self.shared
            .registry
            .forget(&self.namespace, &self.name, &self.uid);
    }

    fn view(&self) -> PodView<'_> {
        PodView {
            pod: &self.pod,
            sandbox_ready: self.host_network || self.sandbox.is_some(),
            pod_ip: self.pod_ip(),
            host_ip: self.shared.host_ip.to_string(),
            start_time: self.start_time.clone(),
            init: self.init.iter().map(Ctr::view).collect(),
            containers: self.containers.iter().map(Ctr::view).collect(),
            init_failed: self.init_failed,
            initialized: self.initialized,
            terminating: self.pod.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Writes the status when it changed.
    async fn report(&mut self) {
        let view = self.view();
        // A pod this agent found ended keeps the status it ended with.
        if self.found_ended {
            return;
        }
        let status = status::pod_status(&view, &now());
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let patch = json!({"status": status});
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(pod) => {
                self.pod = Arc::new(pod);
                self.last_status = Some(status);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "cannot write the pod status"),
        }
    }
}

fn now_string() -> String {
    now()
}

/// `Terminated` of a runtime status that ended.
fn terminated_of(status: &runtime::Status, id: &str) -> Option<Terminated> {
    match status {
        runtime::Status::Exited {
            code,
            oom_killed,
            started_at,
            finished_at,
            message,
        } => {
            let reason = if *oom_killed {
                "OOMKilled"
            } else if started_at.is_none() {
                "StartError"
            } else if *code == 0 {
                "Completed"
            } else {
                "Error"
            };
            Some(Terminated {
                exit_code: *code,
                reason: reason.into(),
                message: message.clone(),
                started_at: started_at.map(rfc3339),
                finished_at: rfc3339(*finished_at),
                container_id: Some(format!("shoal://{id}")),
            })
        }
        runtime::Status::Unknown { message } => Some(Terminated {
            exit_code: 137,
            reason: "Error".into(),
            message: Some(message.clone()),
            started_at: None,
            finished_at: now(),
            container_id: Some(format!("shoal://{id}")),
        }),
        _ => None,
    }
}

/// A lifecycle handler as a probe (the same exec/httpGet/tcpSocket).
fn handler_probe(handler: &k8s_openapi::api::core::v1::LifecycleHandler) -> Probe {
    Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        timeout_seconds: Some(30),
        ..Default::default()
    }
}

async fn run_handler(
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

/// preStop, SIGTERM, up to `grace`, SIGKILL, for every running container
/// of `list`, all at once.
async fn stop_all(shared: &Arc<Shared>, pod: &Arc<Pod>, list: &mut [Ctr], grace: Duration) {
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

/// SIGTERM, wait up to `grace`, SIGKILL; waits for the exit.
async fn stop_container(
    runtime: Arc<runtime::Runtime>,
    id: String,
    grace: Duration,
) -> runtime::Result<()> {
    tokio::task::spawn_blocking(move || {
        if !grace.is_zero() {
            runtime.kill(&id, Signal::SIGTERM)?;
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

/// `10s`, `1m20s`, `5m0s`, as Go prints durations in these messages.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_round_trip() {
        let uid = "0f6b6b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        let id = container_id(uid, "my-app", 3);
        assert!(runtime::valid_id(&id));
        assert_eq!(uid_of_container(&id), Some(uid));
        assert_eq!(parse_container_id(uid, &id), Some(("my-app", 3)));
        assert_eq!(parse_container_id("other", &id), None);
    }

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let (initial, max) = (Duration::from_secs(10), Duration::from_secs(40));
        let t0 = Instant::now();
        let mut b = Backoff::new();
        assert!(b.ready(t0));
        b.restarted(t0, initial, max);
        assert!(!b.ready(t0 + Duration::from_secs(9)));
        assert!(b.ready(t0 + Duration::from_secs(10)));
        let delays: Vec<u64> = (0..4)
            .map(|_| {
                b.restarted(t0, initial, max);
                b.next_delay.as_secs()
            })
            .collect();
        assert_eq!(delays, [20, 40, 40, 40]);
        assert_eq!(human_duration(Duration::from_secs(80)), "1m20s");
    }
}
