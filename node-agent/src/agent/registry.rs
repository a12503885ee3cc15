//! Which runtime containers belong to which pod container: kept by the pod
//! workers, read by the agent's server (logs, exec, attach) and the probes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// One run of a container: the runtime's id and its log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub log_path: PathBuf,
}

/// The runs of one container of a pod that the agent knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRuns {
    /// The latest run (running or ended).
    pub current: Option<Run>,
    /// The run before it (`kubectl logs --previous`).
    pub previous: Option<Run>,
}

/// A pod and the current run id of each of its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRuns {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// (container name, run id), by name.
    pub runs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
struct PodEntry {
    uid: String,
    containers: HashMap<String, ContainerRuns>,
}

/// Pods by namespace and name. Cheap to share (`Arc<Registry>`).
#[derive(Debug, Default)]
pub struct Registry {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

impl Registry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(String, String), PodEntry>) -> R) -> R {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut pods)
    }

    /// Records a new run of `container`: the current one becomes previous.
    pub fn started(&self, namespace: &str, pod: &str, uid: &str, container: &str, run: Run) {
        self.with(|pods| {
            let entry = pods
                .entry((namespace.to_string(), pod.to_string()))
                .or_default();
            if entry.uid != uid {
                *entry = PodEntry {
                    uid: uid.to_string(),
                    containers: HashMap::new(),
                };
            }
            let runs = entry.containers.entry(container.to_string()).or_default();
            if runs.current.as_ref().is_some_and(|c| c.id == run.id) {
                return;
            }
            runs.previous = runs.current.replace(run);
        })
    }

    /// Forgets a pod (its worker ended), if it is still the pod of `uid`.
    pub fn forget(&self, namespace: &str, pod: &str, uid: &str) {
        self.with(|pods| {
            let key = (namespace.to_string(), pod.to_string());
            if pods.get(&key).is_some_and(|e| e.uid == uid) {
                pods.remove(&key);
            }
        })
    }

    /// The runs of a container, if the pod and the container are known.
    pub fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRuns> {
        self.with(|pods| {
            pods.get(&(namespace.to_string(), pod.to_string()))?
                .containers
                .get(container)
                .cloned()
        })
    }

    /// Every pod the agent runs, with each container's current run.
    pub fn snapshot(&self) -> Vec<PodRuns> {
        self.with(|pods| {
            let mut all: Vec<_> = pods
                .iter()
                .map(|((namespace, name), entry)| {
                    let mut runs: Vec<(String, String)> = entry
                        .containers
                        .iter()
                        .filter_map(|(c, runs)| {
                            Some((c.clone(), runs.current.as_ref()?.id.clone()))
                        })
                        .collect();
                    runs.sort();
                    PodRuns {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        uid: entry.uid.clone(),
                        runs,
                    }
                })
                .collect();
            all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            all
        })
    }

    /// The names of the containers of a pod the agent has started, if any.
    pub fn containers_of(&self, namespace: &str, pod: &str) -> Option<Vec<String>> {
        self.with(|pods| {
            let entry = pods.get(&(namespace.to_string(), pod.to_string()))?;
            let mut names: Vec<String> = entry.containers.keys().cloned().collect();
            names.sort();
            Some(names)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str) -> Run {
        Run {
            id: id.into(),
            log_path: PathBuf::from(format!("/logs/{id}")),
        }
    }

    #[test]
    fn a_new_run_moves_the_current_one_to_previous() {
        let r = Registry::default();
        r.started("ns", "p", "u1", "c", run("a"));
        r.started("ns", "p", "u1", "c", run("a"));
        assert_eq!(r.container("ns", "p", "c").unwrap().previous, None);
        r.started("ns", "p", "u1", "c", run("b"));
        let runs = r.container("ns", "p", "c").unwrap();
        assert_eq!(runs.current, Some(run("b")));
        assert_eq!(runs.previous, Some(run("a")));
    }

    #[test]
    fn a_new_pod_of_the_same_name_starts_empty_and_forget_checks_the_uid() {
        let r = Registry::default();
        r.started("ns", "p", "u1", "c", run("a"));
        r.started("ns", "p", "u2", "c", run("b"));
        assert_eq!(r.container("ns", "p", "c").unwrap().previous, None);
        r.forget("ns", "p", "u1");
        assert!(r.container("ns", "p", "c").is_some());
        r.forget("ns", "p", "u2");
        assert!(r.container("ns", "p", "c").is_none());
    }
}
