//! What an HPA should do now, as Kubernetes' `horizontal.go`
//! (`reconcileAutoscaler`) decides it, over plain data:
//!
//! ```text
//!  scale (spec.replicas, status.selector) ─┐
//!  pods matched by the selector  ──────────┼─> replicas per metric (replicas.rs), the largest wins
//!  their samples (metrics.k8s.io) ─────────┘        │
//!                                                   ▼
//!   out of [min, max]: go to the bound   /   else stabilize (recommendation window)
//!   then limit the rate (behavior policies, or ×2/+4 without behavior), clamp
//!                                                   │
//!                                                   ▼
//!            Decision: status + conditions, the new size and why, events
//! ```
//!
//! The recommendation and scale-event history lives in memory per HPA
//! (`History`), as in Kubernetes' controller; after a leader change it
//! starts empty.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::replicas::{self, minus, PodMetric};

/// `--horizontal-pod-autoscaler-downscale-stabilization` (without `behavior`).
pub const DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);
/// Without `behavior`, one step goes at most to max(2 × current, 4).
const SCALE_UP_LIMIT_FACTOR: i32 = 2;
const SCALE_UP_LIMIT_MINIMUM: i32 = 4;

/// The target's `scale` subresource, as far as the HPA needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub replicas: i32,
    pub selector: String,
}

/// An event to record about the HPA.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn warning(reason: &'static str, message: impl Into<String>) -> Note {
        Note {
            kind: "Warning",
            reason,
            message: message.into(),
        }
    }
}

/// What one HPA remembers between syncs.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Unstabilized recommendations.
    recommendations: Vec<(i32, jiff::Timestamp)>,
    /// Replicas added / removed by rescales (only with `behavior`).
    scale_ups: Vec<(i32, jiff::Timestamp)>,
    scale_downs: Vec<(i32, jiff::Timestamp)>,
}

/// A change of the target's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescale {
    pub from: i32,
    pub to: i32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status to write if no rescale happens (or before it does).
    pub status: HorizontalPodAutoscalerStatus,
    pub rescale: Option<Rescale>,
    pub events: Vec<Note>,
    /// Why the sync did not finish, for the log.
    pub error: Option<String>,
}

/// Scaling rules with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    window: i32,
    select: String,
    policies: Vec<HPAScalingPolicy>,
}

fn policy(kind: &str, value: i32, period: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: kind.into(),
        value,
        period_seconds: period,
    }
}

fn rules(given: Option<&HPAScalingRules>, up: bool) -> Rules {
    let default_policies = if up {
        vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]
    } else {
        vec![policy("Percent", 100, 15)]
    };
    Rules {
        window: given
            .and_then(|r| r.stabilization_window_seconds)
            .unwrap_or(if up { 0 } else { 300 }),
        select: given
            .and_then(|r| r.select_policy.clone())
            .unwrap_or_else(|| "Max".into()),
        policies: given
            .and_then(|r| r.policies.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or(default_policies),
    }
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

/// Sets a condition, moving its transition time only when the status
/// changes.
pub fn set_condition(
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    now: jiff::Timestamp,
) {
    let status = if status { "True" } else { "False" };
    let message = Some(message.into());
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(Time(now));
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = message;
        }
        None => conditions.push(HorizontalPodAutoscalerCondition {
            type_: kind.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message,
            last_transition_time: Some(Time(now)),
        }),
    }
}

fn status_with(
    hpa: &HorizontalPodAutoscaler,
    current: i32,
    desired: i32,
    metrics: Vec<MetricStatus>,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
) -> HorizontalPodAutoscalerStatus {
    let previous = hpa.status.clone().unwrap_or_default();
    HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: desired,
        last_scale_time: previous.last_scale_time,
        current_metrics: (!metrics.is_empty()).then_some(metrics),
        conditions: (!conditions.is_empty()).then_some(conditions),
        observed_generation: previous.observed_generation,
    }
}

/// The target's scale could not be read.
pub fn scale_unavailable(
    hpa: &HorizontalPodAutoscaler,
    error: &str,
    now: jiff::Timestamp,
) -> Decision {
    let previous = hpa.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    set_condition(
        &mut conditions,
        "AbleToScale",
        false,
        "FailedGetScale",
        format!("the HPA controller was unable to get the target's current scale: {error}"),
        now,
    );
    Decision {
        status: HorizontalPodAutoscalerStatus {
            conditions: Some(conditions),
            ..previous
        },
        rescale: None,
        events: vec![Note::warning("FailedGetScale", error)],
        error: Some(format!("cannot get the target's scale: {error}")),
    }
}

/// One metric's outcome.
struct Computed {
    replicas: i32,
    name: String,
    status: MetricStatus,
}

/// A failed metric: the condition it sets (reason, message) and the error.
struct Failed {
    reason: &'static str,
    condition_message: String,
    error: String,
}

fn compute_metric(
    spec: &k8s_openapi::api::autoscaling::v2::MetricSpec,
    current: i32,
    pods: &[Pod],
    samples: &Result<Vec<serde_json::Value>, String>,
    now: jiff::Timestamp,
    events: &mut Vec<Note>,
) -> Result<Computed, Failed> {
    let unable = |reason: &'static str, error: String, events: &mut Vec<Note>| {
        events.push(Note::warning(reason, error.clone()));
        Failed {
            reason,
            condition_message: format!("the HPA was unable to compute the replica count: {error}"),
            error,
        }
    };
    let Some(resource) = spec.resource.as_ref().filter(|_| spec.type_ == "Resource") else {
        let reason = match spec.type_.as_str() {
            "Pods" => "FailedGetPodsMetric",
            "Object" => "FailedGetObjectMetric",
            "External" => "FailedGetExternalMetric",
            "ContainerResource" => "FailedGetContainerResourceMetric",
            _ => "InvalidMetricSourceType",
        };
        let error = if reason == "InvalidMetricSourceType" {
            format!("unknown metric source type {:?}", spec.type_)
        } else {
            format!(
                "{} metrics are not served by shoal (only Resource cpu and memory)",
                spec.type_
            )
        };
        let failed = unable(reason, error, events);
        return Err(Failed {
            error: format!("failed to get {} metric: {}", spec.type_, failed.error),
            ..failed
        });
    };
    let name = resource.name.as_str();
    let outer = |failed: Failed| Failed {
        error: format!(
            "failed to get {name} resource metric value: {}",
            failed.error
        ),
        ..failed
    };
    let average_value = resource
        .target
        .average_value
        .as_ref()
        .and_then(|q| replicas::milli(&q.0));
    let target = match (average_value, resource.target.average_utilization) {
        (Some(_), _) => None,
        (None, Some(target)) => Some(target),
        (None, None) => {
            let error = "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".to_string();
            return Err(outer(unable("FailedGetResourceMetric", error, events)));
        }
    };
    let items = match samples {
        Ok(items) => items,
        Err(e) => {
            let error = format!(
                "failed to get {name} utilization: unable to get metrics for resource {name}: unable to fetch metrics from resource metrics API: {e}"
            );
            return Err(outer(unable("FailedGetResourceMetric", error, events)));
        }
    };
    let samples: BTreeMap<String, PodMetric> = replicas::samples_of(items, name);
    let computed = match (target, average_value) {
        (Some(target), _) => {
            replicas::resource_replicas(current, target, name, pods, &samples, now)
                .map(|p| {
                    (
                        p,
                        format!("{name} resource utilization (percentage of request)"),
                        true,
                    )
                })
                .map_err(|e| format!("failed to get {name} utilization: {e}"))
        }
        (None, value) => {
            replicas::raw_resource_replicas(current, value.unwrap_or(1), name, pods, &samples, now)
                .map(|p| (p, format!("{name} resource"), false))
                .map_err(|e| format!("failed to get {name} usage: {e}"))
        }
    };
    match computed {
        Ok((p, metric_name, utilization)) => Ok(Computed {
            replicas: p.replicas,
            name: metric_name,
            status: MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: name.into(),
                    current: MetricValueStatus {
                        average_utilization: utilization.then_some(p.utilization),
                        average_value: Some(Quantity(replicas::milli_quantity(p.raw_average))),
                        value: None,
                    },
                }),
                ..Default::default()
            },
        }),
        Err(error) => Err(outer(unable("FailedGetResourceMetric", error, events))),
    }
}

/// Decides the HPA's next size from the target's scale, the pods its
/// selector matches and their samples (`items` of a PodMetricsList, or why
/// they could not be read).
pub fn decide(
    hpa: &HorizontalPodAutoscaler,
    scale: &Scale,
    pods: &[Pod],
    samples: &Result<Vec<serde_json::Value>, String>,
    history: &mut History,
    now: jiff::Timestamp,
) -> Decision {
    let spec = hpa.spec.clone().unwrap_or_default();
    let previous = hpa.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    let mut events = Vec::new();
    set_condition(
        &mut conditions,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        now,
    );
    let current = scale.replicas;
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut metric_statuses = Vec::new();

    let (desired, reason) = if current == 0 && min != 0 {
        set_condition(
            &mut conditions,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            now,
        );
        (0, None)
    } else if current > max {
        (
            max,
            Some("Current number of replicas above Spec.MaxReplicas".to_string()),
        )
    } else if current < min {
        (
            min,
            Some("Current number of replicas below Spec.MinReplicas".to_string()),
        )
    } else {
        // Without metrics, Kubernetes' default: 80% of the cpu request.
        let metrics = spec
            .metrics
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                vec![k8s_openapi::api::autoscaling::v2::MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(k8s_openapi::api::autoscaling::v2::ResourceMetricSource {
                        name: "cpu".into(),
                        target: k8s_openapi::api::autoscaling::v2::MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(80),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]
            });
        let mut proposal: Option<(i32, String)> = None;
        let mut first_failure: Option<Failed> = None;
        let mut invalid = 0usize;
        if scale.selector.is_empty() {
            events.push(Note::warning("SelectorRequired", "selector is required"));
            set_condition(
                &mut conditions,
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
                now,
            );
            let status = status_with(
                hpa,
                current,
                previous.desired_replicas,
                Vec::new(),
                conditions,
            );
            events.push(Note::warning(
                "FailedComputeMetricsReplicas",
                "selector is required",
            ));
            return Decision {
                status,
                rescale: None,
                events,
                error: Some("selector is required".into()),
            };
        }
        for metric in &metrics {
            match compute_metric(metric, current, pods, samples, now, &mut events) {
                Ok(c) => {
                    metric_statuses.push(c.status);
                    if proposal.as_ref().is_none_or(|(r, _)| c.replicas > *r) {
                        proposal = Some((c.replicas, c.name));
                    }
                }
                Err(f) => {
                    metric_statuses.push(MetricStatus {
                        type_: String::new(),
                        ..Default::default()
                    });
                    invalid += 1;
                    first_failure.get_or_insert(f);
                }
            }
        }
        let error = first_failure.as_ref().map(|f| {
            format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                metrics.len(),
                f.error
            )
        });
        let proposed = proposal.as_ref().map(|(r, _)| *r).unwrap_or(0);
        if let (Some(failure), Some(error)) = (&first_failure, &error) {
            if invalid >= metrics.len() || proposed < current {
                set_condition(
                    &mut conditions,
                    "ScalingActive",
                    false,
                    failure.reason,
                    failure.condition_message.clone(),
                    now,
                );
                let status = status_with(
                    hpa,
                    current,
                    previous.desired_replicas,
                    metric_statuses,
                    conditions,
                );
                events.push(Note::warning("FailedComputeMetricsReplicas", error.clone()));
                return Decision {
                    status,
                    rescale: None,
                    events,
                    error: Some(error.clone()),
                };
            }
        }
        let metric_name = proposal.map(|(_, n)| n).unwrap_or_default();
        set_condition(
            &mut conditions,
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {metric_name}"
            ),
            now,
        );
        let mut desired = proposed.max(0);
        let mut reason = String::new();
        if desired > current {
            reason = format!("{metric_name} above target");
        }
        if desired < current {
            reason = "All metrics below target".into();
        }
        desired = match &spec.behavior {
            None => normalize(history, &mut conditions, current, desired, min, max, now),
            Some(behavior) => normalize_with_behavior(
                history,
                &mut conditions,
                &rules(behavior.scale_up.as_ref(), true),
                &rules(behavior.scale_down.as_ref(), false),
                current,
                desired,
                min,
                max,
                now,
            ),
        };
        (desired, Some(reason))
    };
    let rescale = reason.filter(|_| desired != current).map(|reason| Rescale {
        from: current,
        to: desired,
        reason,
    });
    let status = status_with(hpa, current, current, metric_statuses, conditions);
    Decision {
        status,
        rescale,
        events,
        error: None,
    }
}

/// The scale update went through: status, event and the scale history.
pub fn rescaled(
    decision: &mut Decision,
    hpa: &HorizontalPodAutoscaler,
    history: &mut History,
    now: jiff::Timestamp,
) {
    let Some(rescale) = decision.rescale.clone() else {
        return;
    };
    let mut conditions = decision.status.conditions.clone().unwrap_or_default();
    set_condition(
        &mut conditions,
        "AbleToScale",
        true,
        "SucceededRescale",
        format!(
            "the HPA controller was able to update the target scale to {}",
            rescale.to
        ),
        now,
    );
    decision.status.conditions = Some(conditions);
    decision.status.desired_replicas = rescale.to;
    decision.status.last_scale_time = Some(Time(now));
    decision.events.push(Note {
        kind: "Normal",
        reason: "SuccessfulRescale",
        message: format!("New size: {}; reason: {}", rescale.to, rescale.reason),
    });
    if let Some(behavior) = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref()) {
        let (events, rules) = if rescale.to > rescale.from {
            (
                &mut history.scale_ups,
                rules(behavior.scale_up.as_ref(), true),
            )
        } else {
            (
                &mut history.scale_downs,
                rules(behavior.scale_down.as_ref(), false),
            )
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0);
        let cutoff = minus(now, secs(longest));
        events.retain(|(_, at)| *at > cutoff);
        events.push(((rescale.to - rescale.from).abs(), now));
    }
}

/// The scale update failed.
pub fn rescale_failed(
    decision: &mut Decision,
    hpa: &HorizontalPodAutoscaler,
    error: &str,
    now: jiff::Timestamp,
) {
    let Some(rescale) = decision.rescale.take() else {
        return;
    };
    let mut conditions = decision.status.conditions.clone().unwrap_or_default();
    set_condition(
        &mut conditions,
        "AbleToScale",
        false,
        "FailedUpdateScale",
        format!("the HPA controller was unable to update the target scale: {error}"),
        now,
    );
    decision.status.conditions = Some(conditions);
    decision.status.desired_replicas = hpa
        .status
        .as_ref()
        .map(|s| s.desired_replicas)
        .unwrap_or_default();
    decision.events.push(Note::warning(
        "FailedRescale",
        format!(
            "New size: {}; reason: {}; error: {error}",
            rescale.to, rescale.reason
        ),
    ));
    decision.error = Some(format!("failed to rescale: {error}"));
}

/// Without `behavior`: the highest recommendation of the last 5 minutes
/// (scale-down stabilization), then at most max(2 × current, 4) and within
/// [min, max].
fn normalize(
    history: &mut History,
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: jiff::Timestamp,
) -> i32 {
    let cutoff = minus(now, DOWNSCALE_STABILIZATION);
    history.recommendations.retain(|(_, at)| *at >= cutoff);
    let stabilized = history
        .recommendations
        .iter()
        .map(|(r, _)| *r)
        .fold(desired, i32::max);
    history.recommendations.push((desired, now));
    if stabilized != desired {
        set_condition(
            conditions,
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
            now,
        );
    } else {
        set_condition(
            conditions,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size",
            now,
        );
    }
    let scale_up_limit =
        (current.saturating_mul(SCALE_UP_LIMIT_FACTOR)).max(SCALE_UP_LIMIT_MINIMUM);
    let (maximum, (limit_reason, limit_message)) = if max > scale_up_limit {
        (
            scale_up_limit,
            (
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            ),
        )
    } else {
        (
            max,
            (
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            ),
        )
    };
    let (result, reason, message) = if stabilized < min {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if stabilized > maximum {
        (maximum, limit_reason, limit_message)
    } else {
        (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    set_condition(
        conditions,
        "ScalingLimited",
        result != stabilized,
        reason,
        message,
        now,
    );
    result
}

/// Replicas changed by rescales within the last `period` seconds.
fn changed_within(events: &[(i32, jiff::Timestamp)], period: i32, now: jiff::Timestamp) -> i32 {
    let cutoff = minus(now, secs(period));
    events
        .iter()
        .filter(|(_, at)| *at > cutoff)
        .map(|(n, _)| *n)
        .sum()
}

/// How far up the scale-up policies allow from `current`.
fn scale_up_limit(history: &History, rules: &Rules, current: i32, now: jiff::Timestamp) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let min_change = rules.select == "Min";
    let mut result = if min_change { i32::MAX } else { i32::MIN };
    for p in &rules.policies {
        let start = current - changed_within(&history.scale_ups, p.period_seconds, now)
            + changed_within(&history.scale_downs, p.period_seconds, now);
        let proposed = if p.type_ == "Pods" {
            start.saturating_add(p.value)
        } else {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        };
        result = if min_change {
            result.min(proposed)
        } else {
            result.max(proposed)
        };
    }
    result
}

/// How far down the scale-down policies allow from `current`.
fn scale_down_limit(history: &History, rules: &Rules, current: i32, now: jiff::Timestamp) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let min_change = rules.select == "Min";
    let mut result = if min_change { i32::MIN } else { i32::MAX };
    for p in &rules.policies {
        let start = current - changed_within(&history.scale_ups, p.period_seconds, now)
            + changed_within(&history.scale_downs, p.period_seconds, now);
        let proposed = if p.type_ == "Pods" {
            start.saturating_sub(p.value)
        } else {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        };
        result = if min_change {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

/// With `behavior`: stabilize within each direction's window, then limit
/// the rate by the policies and clamp to [min, max].
#[allow(clippy::too_many_arguments)]
fn normalize_with_behavior(
    history: &mut History,
    conditions: &mut Vec<HorizontalPodAutoscalerCondition>,
    up: &Rules,
    down: &Rules,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: jiff::Timestamp,
) -> i32 {
    let up_cutoff = minus(now, secs(up.window));
    let down_cutoff = minus(now, secs(down.window));
    let mut up_recommendation = desired;
    let mut down_recommendation = desired;
    for (r, at) in &history.recommendations {
        if *at > up_cutoff {
            up_recommendation = up_recommendation.min(*r);
        }
        if *at > down_cutoff {
            down_recommendation = down_recommendation.max(*r);
        }
    }
    history
        .recommendations
        .retain(|(_, at)| *at >= up_cutoff || *at >= down_cutoff);
    history.recommendations.push((desired, now));
    let stabilized = current.max(up_recommendation).min(down_recommendation);
    if stabilized != desired {
        let (reason, message) = if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        set_condition(conditions, "AbleToScale", true, reason, message, now);
    } else {
        set_condition(
            conditions,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size",
            now,
        );
    }
    let (result, reason, message) = if stabilized > current {
        let limit = scale_up_limit(history, up, current, now).max(current);
        let (maximum, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if stabilized > maximum {
            (maximum, reason, message)
        } else {
            within(stabilized)
        }
    } else if stabilized < current {
        let limit = scale_down_limit(history, down, current, now).min(current);
        let (minimum, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if stabilized < minimum {
            (minimum, reason, message)
        } else {
            within(stabilized)
        }
    } else {
        within(stabilized)
    };
    set_condition(
        conditions,
        "ScalingLimited",
        result != stabilized,
        reason,
        message,
        now,
    );
    result
}

fn within(n: i32) -> (i32, &'static str, &'static str) {
    (
        n,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-01-01T01:00:00Z";
    const OLD: &str = "2026-01-01T00:00:00Z";

    fn hpa(behavior: serde_json::Value) -> HorizontalPodAutoscaler {
        let mut spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}],
        });
        if !behavior.is_null() {
            spec["behavior"] = behavior;
        }
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn pods(n: usize) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("web-{i}")},
                    "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
                    "status": {"phase": "Running", "startTime": OLD, "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": OLD}]},
                }))
                .unwrap()
            })
            .collect()
    }

    fn samples(n: usize, cpu: &str) -> Result<Vec<serde_json::Value>, String> {
        Ok((0..n)
            .map(|i| {
                json!({"metadata": {"name": format!("web-{i}")}, "timestamp": NOW, "window": "15s",
                       "containers": [{"name": "c", "usage": {"cpu": cpu}}]})
            })
            .collect())
    }

    fn scale(n: i32) -> Scale {
        Scale {
            replicas: n,
            selector: "app=web".into(),
        }
    }

    fn condition<'a>(d: &'a Decision, kind: &str) -> &'a HorizontalPodAutoscalerCondition {
        d.status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn scales_up_with_the_reason_kubernetes_gives() {
        let h = hpa(serde_json::Value::Null);
        let mut history = History::default();
        let mut d = decide(
            &h,
            &scale(1),
            &pods(1),
            &samples(1, "90m"),
            &mut history,
            t(NOW),
        );
        assert_eq!(
            d.rescale,
            Some(Rescale {
                from: 1,
                to: 2,
                reason: "cpu resource utilization (percentage of request) above target".into()
            })
        );
        let metric = &d.status.current_metrics.as_ref().unwrap()[0];
        let current = &metric.resource.as_ref().unwrap().current;
        assert_eq!(current.average_utilization, Some(90));
        assert_eq!(current.average_value, Some(Quantity("90m".into())));
        assert_eq!(
            condition(&d, "ScalingActive").reason.as_deref(),
            Some("ValidMetricFound")
        );
        assert_eq!(condition(&d, "ScalingLimited").status, "False");
        rescaled(&mut d, &h, &mut history, t(NOW));
        assert_eq!(d.status.desired_replicas, 2);
        assert!(d.status.last_scale_time.is_some());
        assert_eq!(
            d.events[0].message,
            "New size: 2; reason: cpu resource utilization (percentage of request) above target"
        );
        assert_eq!(
            condition(&d, "AbleToScale").reason.as_deref(),
            Some("SucceededRescale")
        );
    }

    #[test]
    fn without_behavior_a_step_is_at_most_double_or_four() {
        let mut h = hpa(serde_json::Value::Null);
        h.spec.as_mut().unwrap().max_replicas = 100;
        let mut history = History::default();
        // 500% of 50%: ⌈10 × 2⌉ = 20, limited to max(2×2, 4) = 4.
        let d = decide(
            &h,
            &scale(2),
            &pods(2),
            &samples(2, "500m"),
            &mut history,
            t(NOW),
        );
        assert_eq!(d.rescale.as_ref().map(|r| r.to), Some(4));
        let limited = condition(&d, "ScalingLimited");
        assert_eq!(limited.status, "True");
        assert_eq!(limited.reason.as_deref(), Some("ScaleUpLimit"));
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let h = hpa(serde_json::Value::Null);
        let mut history = History::default();
        let busy = decide(
            &h,
            &scale(4),
            &pods(4),
            &samples(4, "50m"),
            &mut history,
            t(OLD),
        );
        assert_eq!(busy.rescale, None);
        // Idle 4 minutes later: the recommendation of 4 still holds.
        let later = t("2026-01-01T00:04:00Z");
        let d = decide(
            &h,
            &scale(4),
            &pods(4),
            &samples(4, "10m"),
            &mut history,
            later,
        );
        assert_eq!(d.rescale, None);
        assert_eq!(
            condition(&d, "AbleToScale").reason.as_deref(),
            Some("ScaleDownStabilized")
        );
        // After the window: ⌈0.2 × 4⌉ = 1.
        let after = t("2026-01-01T00:05:30Z");
        let d = decide(
            &h,
            &scale(4),
            &pods(4),
            &samples(4, "10m"),
            &mut history,
            after,
        );
        assert_eq!(
            d.rescale.as_ref().map(|r| (r.to, r.reason.as_str())),
            Some((1, "All metrics below target"))
        );
    }

    #[test]
    fn behavior_with_no_window_scales_down_at_once_within_policies() {
        let h = hpa(json!({"scaleDown": {"stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}));
        let mut history = History::default();
        let mut d = decide(
            &h,
            &scale(4),
            &pods(4),
            &samples(4, "10m"),
            &mut history,
            t(NOW),
        );
        assert_eq!(d.rescale.as_ref().map(|r| r.to), Some(3));
        assert_eq!(
            condition(&d, "ScalingLimited").reason.as_deref(),
            Some("ScaleDownLimit")
        );
        rescaled(&mut d, &h, &mut history, t(NOW));
        // Within the policy period, the one pod allowed is spent.
        let soon = t("2026-01-01T01:00:30Z");
        let d = decide(
            &h,
            &scale(3),
            &pods(3),
            &samples(3, "10m"),
            &mut history,
            soon,
        );
        assert_eq!(d.rescale, None);
        let later = t("2026-01-01T01:01:30Z");
        let d = decide(
            &h,
            &scale(3),
            &pods(3),
            &samples(3, "10m"),
            &mut history,
            later,
        );
        assert_eq!(d.rescale.as_ref().map(|r| r.to), Some(2));
    }

    #[test]
    fn default_scale_up_policy_is_four_pods_or_double() {
        let mut h = hpa(json!({}));
        h.spec.as_mut().unwrap().max_replicas = 100;
        let mut history = History::default();
        // ⌈10 × 10⌉ = 100, limited to max(10 + 4, 2 × 10) = 20.
        let d = decide(
            &h,
            &scale(10),
            &pods(10),
            &samples(10, "500m"),
            &mut history,
            t(NOW),
        );
        assert_eq!(d.rescale.as_ref().map(|r| r.to), Some(20));
    }

    #[test]
    fn bounds_and_disabled_scaling() {
        let h = hpa(serde_json::Value::Null);
        let mut history = History::default();
        let d = decide(
            &h,
            &scale(8),
            &pods(8),
            &samples(8, "50m"),
            &mut history,
            t(NOW),
        );
        assert_eq!(
            d.rescale.as_ref().map(|r| (r.to, r.reason.as_str())),
            Some((5, "Current number of replicas above Spec.MaxReplicas"))
        );
        let d = decide(&h, &scale(0), &[], &samples(0, "50m"), &mut history, t(NOW));
        assert_eq!(d.rescale, None);
        assert_eq!(
            condition(&d, "ScalingActive").reason.as_deref(),
            Some("ScalingDisabled")
        );
    }

    #[test]
    fn missing_metrics_are_reported() {
        let h = hpa(serde_json::Value::Null);
        let mut history = History::default();
        let d = decide(
            &h,
            &scale(1),
            &pods(1),
            &Ok(Vec::new()),
            &mut history,
            t(NOW),
        );
        assert_eq!(d.rescale, None);
        let active = condition(&d, "ScalingActive");
        assert_eq!(active.status, "False");
        assert_eq!(active.reason.as_deref(), Some("FailedGetResourceMetric"));
        assert_eq!(
            d.events[0].message,
            "failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API"
        );
        assert_eq!(d.events[1].reason, "FailedComputeMetricsReplicas");
        assert!(d.events[1]
            .message
            .starts_with("invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: "));
        assert_eq!(d.status.current_metrics.as_ref().unwrap()[0].type_, "");
    }

    #[test]
    fn unreadable_scale() {
        let h = hpa(serde_json::Value::Null);
        let d = scale_unavailable(&h, "deployments.apps \"web\" not found", t(NOW));
        assert_eq!(
            condition(&d, "AbleToScale").reason.as_deref(),
            Some("FailedGetScale")
        );
        assert_eq!(d.events[0].reason, "FailedGetScale");
    }
}
