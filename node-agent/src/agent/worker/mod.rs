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
//!
//! Here: the worker's state, its loop, adoption, status reports. Beside
//! it, by stage: `setup.rs` (Setup), `start.rs` (starting containers, for
//! Initializing and Running), `probing.rs` (what probes decide), `stop.rs`
//! (Ended, Terminating, removal).

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

mod probing;
mod setup;
mod start;
mod stop;

use stop::stop_container;

/// How often a worker looks at its containers while something is under
/// way (starting, restarting, not ready, status just changed).
const TICK: Duration = Duration::from_millis(200);
/// How often a settled pod's containers are looked at (every container
/// running and its status unchanged since the last pass): as the kubelet's
/// PLEG relists, once a second. A probe's verdict wakes the worker at once.
const SETTLED_TICK: Duration = Duration::from_secs(1);
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

/// Where a worker is in its pod's life: the stages of the module's
/// diagram, each mapping to a phase (`status.rs` computes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Sandbox, files and volumes not ready yet (`setup.rs`). Pending.
    Setup,
    /// Init containers run one after another; sidecars are kept. Pending.
    Initializing,
    /// The init containers are done: the containers run. Running.
    Running,
    /// Every container ended for good. Succeeded or Failed.
    Ended {
        /// Whether the init containers had all succeeded.
        initialized: bool,
        /// An init container failed under restartPolicy Never.
        init_failed: bool,
        /// It had ended before this worker started (an agent restarted):
        /// the pod keeps the status it ended with.
        found: bool,
    },
    /// Being deleted: the containers were stopped.
    Terminating { initialized: bool },
}

impl Stage {
    /// Whether the init containers had all succeeded (the pod's
    /// Initialized condition).
    fn initialized(self) -> bool {
        match self {
            Stage::Setup | Stage::Initializing => false,
            Stage::Running => true,
            Stage::Ended { initialized, .. } | Stage::Terminating { initialized } => initialized,
        }
    }

    /// Whether the containers have stopped for good.
    fn is_over(self) -> bool {
        matches!(self, Stage::Ended { .. } | Stage::Terminating { .. })
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
    stage: Stage,
    start_time: String,
    last_status: Option<Value>,
    /// When this agent first saw the pod, until it runs (for
    /// `kubelet_pod_start_duration_seconds`); None for a pod that ran
    /// before (adopted after a restart) or once counted.
    seen_at: Option<Instant>,
}

/// Runs the worker of one pod until the pod is gone. Every line it logs
/// names the pod (`pod = namespace/name`, `uid`).
pub async fn run(shared: Arc<Shared>, mut updates: watch::Receiver<Update>) {
    let Update::Present(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let worker = Worker::new(shared, pod);
    let span = tracing::info_span!(
        "pod",
        pod = %format!("{}/{}", worker.namespace, worker.name),
        uid = %worker.uid
    );
    tracing::Instrument::instrument(work(worker, updates), span).await;
}

async fn work(mut worker: Worker, mut updates: watch::Receiver<Update>) {
    tracing::debug!("a worker for the pod");
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
        let wrote = worker.report().await;
        let tick = if !wrote && worker.settled() {
            SETTLED_TICK
        } else {
            TICK
        };
        let mut probes = worker.probe_results();
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    // The agent is stopping: the pod keeps running.
                    return;
                }
            }
            () = probe_changed(&mut probes) => {}
            _ = tokio::time::sleep(tick) => {}
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
            // A pod that ended before (this agent restarted) stays ended.
            stage: if matches!(phase.as_str(), "Succeeded" | "Failed") {
                Stage::Ended {
                    initialized: false,
                    init_failed: false,
                    found: true,
                }
            } else {
                Stage::Setup
            },
            start_time,
            last_status: None,
            seen_at: (phase.is_empty() || phase == "Pending").then(Instant::now),
            pod,
        }
    }

    /// Container `index` of the init list or of the main list.
    fn ctr(&self, init: bool, index: usize) -> &Ctr {
        if init {
            &self.init[index]
        } else {
            &self.containers[index]
        }
    }

    fn ctr_mut(&mut self, init: bool, index: usize) -> &mut Ctr {
        if init {
            &mut self.init[index]
        } else {
            &mut self.containers[index]
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
                .list_prefixed(&format!("{uid}_"))
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
        let initialized = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Initialized" && c.status == "True")
            });
        if initialized && !self.stage.is_over() {
            self.stage = Stage::Running;
        }
        tracing::info!("re-adopted the pod's containers");
        self.refresh().await;
        // What ran on: its probes start again (postStart ran long ago).
        for (init, list) in [(true, self.init.len()), (false, self.containers.len())] {
            for index in 0..list {
                let ctr = self.ctr(init, index);
                if ctr.running() {
                    self.start_probes(init, index);
                }
            }
        }
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
        // A few small files per container: read in place, as a hand-off
        // to the blocking pool costs more (two context switches a pass)
        // than the reads themselves.
        let statuses: Vec<_> = ids
            .into_iter()
            .map(|id| id.and_then(|id| runtime.status(&id).ok()))
            .collect();
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
        if self.stage.is_over() {
            return;
        }
        if !self.setup().await {
            return;
        }
        if self.stage == Stage::Setup {
            self.stage = Stage::Initializing;
        }
        self.follow_probes();
        // Init containers, one after another.
        if self.stage == Stage::Initializing {
            let mut all_done = true;
            let mut init_failed = false;
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
                            init_failed = true;
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
            if init_failed {
                self.end(true).await;
                return;
            }
            if !all_done {
                return;
            }
            self.stage = Stage::Running;
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
            self.end(false).await;
        }
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
            init_failed: matches!(
                self.stage,
                Stage::Ended {
                    init_failed: true,
                    ..
                }
            ),
            initialized: self.stage.initialized(),
            terminating: self.pod.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Is nothing under way: every container running (or the pod over),
    /// so that the next look can wait [`SETTLED_TICK`]?
    fn settled(&self) -> bool {
        match self.stage {
            Stage::Ended { .. } => true,
            Stage::Running => {
                self.containers.iter().all(|c| c.running())
                    && self
                        .init
                        .iter()
                        .all(|c| c.kind != Kind::Sidecar || c.running())
            }
            _ => false,
        }
    }

    /// The results of every probe still running, each changing only with a
    /// verdict newer than the one the last pass read, to wake on it.
    fn probe_results(&self) -> Vec<watch::Receiver<probe::State>> {
        self.init
            .iter()
            .chain(self.containers.iter())
            .filter_map(|c| c.probes.as_ref())
            .flat_map(|p| [&p.liveness, &p.readiness, &p.startup])
            .flatten()
            .map(probe::ProbeHandle::results)
            // A prober that stopped (a startup verdict, a liveness
            // failure) says nothing more.
            .filter(|results| results.has_changed().is_ok())
            .collect()
    }

    /// Writes the status when it changed; says whether it did.
    async fn report(&mut self) -> bool {
        let view = self.view();
        // A pod this agent found ended keeps the status it ended with.
        if let Stage::Ended { found: true, .. } = self.stage {
            return false;
        }
        let status = status::pod_status(&view, &now());
        if self.last_status.as_ref() == Some(&status) {
            return false;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let patch = json!({"status": status});
        let started = Instant::now();
        let written = api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        crate::metrics::status_synced(started);
        match written {
            Ok(pod) => {
                if status["phase"] == "Running" {
                    if let Some(seen) = self.seen_at.take() {
                        crate::metrics::pod_started(seen);
                    }
                }
                tracing::debug!(phase = %status["phase"], "status written");
                self.pod = Arc::new(pod);
                self.last_status = Some(status);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(error = %e, "cannot write the pod status"),
        }
        true
    }
}

/// Resolves when any of `results` changes (never when there is none, or
/// once every prober stopped).
async fn probe_changed(results: &mut Vec<watch::Receiver<probe::State>>) {
    while !results.is_empty() {
        let changes = results.iter_mut().map(|r| Box::pin(r.changed()));
        let (changed, index, _) = futures::future::select_all(changes).await;
        if changed.is_ok() {
            return;
        }
        // That prober stopped; the others may still speak.
        results.swap_remove(index);
    }
    std::future::pending::<()>().await;
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
