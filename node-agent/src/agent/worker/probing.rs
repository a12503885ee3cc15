//! What the probes say: readiness, Unhealthy events, and restarts after
//! liveness or startup failures.

use super::*;

impl Worker {
    /// Turns what the probes last said into readiness, events and kills.
    pub(super) fn follow_probes(&mut self) {
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
            if let Some(startup) = &mut probes.startup {
                let state = startup.latest();
                report(&state, &mut probes.seen_failures.2);
                match state.health {
                    probe::Health::Success => ctr.started = true,
                    probe::Health::Failure => restart_reason = Some("failed startup probe"),
                    probe::Health::Unknown => {}
                }
            }
            if let Some(liveness) = &mut probes.liveness {
                let state = liveness.latest();
                report(&state, &mut probes.seen_failures.0);
                if ctr.started && state.health == probe::Health::Failure {
                    restart_reason = Some("failed liveness probe");
                }
            }
            if ctr.started {
                ctr.ready = match &mut probes.readiness {
                    Some(readiness) => {
                        let state = readiness.latest();
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
}
