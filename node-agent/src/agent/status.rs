//! A pod's status as the agent reports it: a pure function of what the
//! worker knows about its sandbox and containers (kubelet's
//! `generateAPIPodStatus` and `getPhase`).
//!
//! - Phase: Pending until the init containers are done and every
//!   container has run once; Running while one runs (or will be restarted);
//!   Succeeded/Failed once all have ended for good, by the restart policy.
//! - Conditions, in kubelet's order: PodReadyToStartContainers,
//!   Initialized, Ready, ContainersReady, PodScheduled (the scheduler's,
//!   kept). A condition keeps its lastTransitionTime while its status
//!   stays the same.

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use serde_json::{json, Value};

/// A container's state, as `ContainerStatus.state` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

/// How a run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    /// Completed, Error, OOMKilled, StartError.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: String,
    pub container_id: Option<String>,
}

impl Terminated {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "finishedAt": self.finished_at,
        });
        if let Some(s) = &self.started_at {
            v["startedAt"] = json!(s);
        }
        if let Some(m) = &self.message {
            v["message"] = json!(m);
        }
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// What kind of container: kubelet treats each differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    Regular,
}

/// What the worker knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub kind: Kind,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl ContainerView {
    fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => json!({"terminated": t.to_json()}),
        };
        let last = match &self.last_terminated {
            Some(t) => json!({"terminated": t.to_json()}),
            None => json!({}),
        };
        let mut v = json!({
            "name": self.name,
            "state": state,
            "lastState": last,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image,
            "imageID": self.image_id,
            "started": self.started,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: String,
    /// Init containers (and sidecars) in spec order.
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    /// An init container failed and will not be retried (restartPolicy
    /// Never): the pod failed.
    pub init_failed: bool,
    /// All init containers completed (sidecars started).
    pub initialized: bool,
    /// The pod is being terminated (deletionTimestamp): not ready.
    pub terminating: bool,
}

/// The phase, by kubelet's rules.
pub fn phase(view: &PodView<'_>) -> &'static str {
    let policy = restart_policy(view.pod);
    if view.init_failed {
        return "Failed";
    }
    if !view.initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last_terminated.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match policy {
        "Always" => "Running",
        "OnFailure" if succeeded == stopped => "Succeeded",
        "OnFailure" => "Running",
        _ if view.containers.iter().any(|c| !c.succeeded()) => "Failed",
        _ => "Succeeded",
    }
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn names(list: impl Iterator<Item = String>) -> String {
    format!("[{}]", list.collect::<Vec<_>>().join(" "))
}

/// The whole `status` the agent writes.
pub fn pod_status(view: &PodView<'_>, now: &str) -> Value {
    let phase = phase(view);
    let previous: &[PodCondition] = view
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let condition = |kind: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| now.to_string());
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let incomplete_init: Vec<String> = view
        .init
        .iter()
        .filter(|c| match c.kind {
            Kind::Sidecar => !c.started,
            _ => !c.succeeded(),
        })
        .map(|c| c.name.clone())
        .collect();
    let initialized = condition(
        "Initialized",
        view.initialized,
        (!view.initialized).then_some("ContainersNotInitialized"),
        (!view.initialized).then(|| {
            format!(
                "containers with incomplete status: {}",
                names(incomplete_init.into_iter())
            )
        }),
    );
    let unready: Vec<String> = view
        .init
        .iter()
        .filter(|c| c.kind == Kind::Sidecar)
        .chain(&view.containers)
        .filter(|c| !c.ready)
        .map(|c| c.name.clone())
        .collect();
    let containers_ready = unready.is_empty() && !view.terminating;
    let (reason, message) = if terminal {
        (Some("PodCompleted"), None)
    } else if !containers_ready {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                names(unready.into_iter())
            )),
        )
    } else {
        (None, None)
    };
    let ready = condition(
        "Ready",
        containers_ready && !terminal,
        reason,
        message.clone(),
    );
    let containers_ready = condition(
        "ContainersReady",
        containers_ready && !terminal,
        reason,
        message,
    );
    let mut conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, None, None),
        initialized,
        ready,
        containers_ready,
    ];
    if let Some(scheduled) = previous.iter().find(|c| c.type_ == "PodScheduled") {
        if let Ok(v) = serde_json::to_value(scheduled) {
            conditions.push(v);
        }
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": view.start_time,
        "containerStatuses": view.containers.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
        "qosClass": qos_class(view.pod),
    });
    if !view.init.is_empty() {
        status["initContainerStatuses"] = json!(view
            .init
            .iter()
            .map(ContainerView::to_json)
            .collect::<Vec<_>>());
    }
    if let Some(ip) = &view.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

/// Guaranteed, Burstable or BestEffort, from requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    pod.spec
        .as_ref()
        .map_or("BestEffort", shoal_core::pod::qos_class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "busybox"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap()
    }

    fn c(name: &str, state: State) -> ContainerView {
        ContainerView {
            name: name.into(),
            kind: Kind::Regular,
            image: "busybox".into(),
            image_id: "sha256:1".into(),
            container_id: None,
            state,
            last_terminated: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    fn ended(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: "t".into(),
            container_id: None,
        })
    }

    fn view<'a>(pod: &'a Pod, containers: Vec<ContainerView>) -> PodView<'a> {
        PodView {
            pod,
            sandbox_ready: true,
            pod_ip: Some("10.244.0.2".into()),
            host_ip: "192.168.1.2".into(),
            start_time: "t0".into(),
            init: vec![],
            containers,
            init_failed: false,
            initialized: true,
            terminating: false,
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let never = pod("Never");
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let running = State::Running {
            started_at: "t".into(),
        };
        assert_eq!(
            phase(&view(&never, vec![c("a", waiting.clone())])),
            "Pending"
        );
        assert_eq!(
            phase(&view(&never, vec![c("a", running.clone())])),
            "Running"
        );
        assert_eq!(phase(&view(&never, vec![c("a", ended(0))])), "Succeeded");
        assert_eq!(
            phase(&view(&never, vec![c("a", ended(0)), c("b", ended(1))])),
            "Failed"
        );
        let on_failure = pod("OnFailure");
        assert_eq!(phase(&view(&on_failure, vec![c("a", ended(1))])), "Running");
        assert_eq!(
            phase(&view(&on_failure, vec![c("a", ended(0))])),
            "Succeeded"
        );
        let always = pod("Always");
        assert_eq!(phase(&view(&always, vec![c("a", ended(0))])), "Running");
        // Crash-looping: waiting with a last termination counts as stopped.
        let mut looping = c(
            "a",
            State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
        );
        looping.last_terminated = Some(Terminated {
            exit_code: 1,
            reason: "Error".into(),
            message: None,
            started_at: None,
            finished_at: "t".into(),
            container_id: None,
        });
        assert_eq!(phase(&view(&always, vec![looping])), "Running");
        let mut v = view(&never, vec![c("a", waiting)]);
        v.initialized = false;
        assert_eq!(phase(&v), "Pending");
        v.init_failed = true;
        assert_eq!(phase(&v), "Failed");
    }

    #[test]
    fn conditions_name_what_is_missing_and_keep_transition_times() {
        let p = pod("Always");
        let mut init = c("init-myservice", ended(1));
        init.kind = Kind::Init;
        let mut v = view(
            &p,
            vec![c(
                "a",
                State::Waiting {
                    reason: "PodInitializing".into(),
                    message: None,
                },
            )],
        );
        v.init = vec![init];
        v.initialized = false;
        let s = pod_status(&v, "2026-11-29T00:00:00Z");
        let conditions = s["conditions"].as_array().unwrap();
        let types: Vec<&str> = conditions
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert_eq!(
            conditions[1]["message"],
            "containers with incomplete status: [init-myservice]"
        );
        assert_eq!(
            conditions[2]["message"],
            "containers with unready status: [a]"
        );
        assert_eq!(conditions[4]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
            1
        );
    }
}
