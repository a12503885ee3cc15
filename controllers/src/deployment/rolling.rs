//! The rolling-update arithmetic of Kubernetes' deployment controller
//! (`pkg/controller/deployment/rolling.go`), as pure functions over replica
//! counts: how far the new ReplicaSet may grow (maxSurge) and how far the
//! old ones may shrink (maxUnavailable) at each step.

/// One ReplicaSet as the arithmetic sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    pub name: String,
    /// spec.replicas
    pub replicas: i32,
    /// status.availableReplicas
    pub available: i32,
}

/// An int-or-percent of `total`: `25%` of 10 is 3 when rounding up, 2 when
/// rounding down (as `intstr.GetScaledValueFromIntOrPercent`).
pub fn resolve(
    value: Option<&serde_json::Value>,
    total: i32,
    round_up: bool,
    default: &str,
) -> i32 {
    let text = match value {
        Some(serde_json::Value::Number(n)) => {
            return n.as_i64().unwrap_or(0).clamp(0, i32::MAX as i64) as i32
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => default.to_string(),
    };
    match text.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(percent) => {
            let scaled = percent * i64::from(total);
            let value = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            value.clamp(0, i32::MAX as i64) as i32
        }
        None => text.parse::<i32>().unwrap_or(0).max(0),
    }
}

/// maxSurge and maxUnavailable for `desired` replicas; both 0 is not
/// allowed to stall a rollout, so maxUnavailable becomes 1.
pub fn surge_and_unavailable(
    max_surge: Option<&serde_json::Value>,
    max_unavailable: Option<&serde_json::Value>,
    desired: i32,
) -> (i32, i32) {
    let surge = resolve(max_surge, desired, true, "25%");
    let mut unavailable = resolve(max_unavailable, desired, false, "25%");
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(desired))
}

/// The new ReplicaSet's replica count after this step.
pub fn scale_new(desired: i32, surge: i32, new: &Set, olds: &[Set]) -> i32 {
    if new.replicas >= desired {
        return desired;
    }
    let current: i32 = new.replicas + olds.iter().map(|s| s.replicas).sum::<i32>();
    let max_total = desired + surge;
    if current >= max_total {
        return new.replicas;
    }
    new.replicas + (max_total - current).min(desired - new.replicas)
}

/// The old ReplicaSets' replica counts after this step (same order).
pub fn scale_olds(desired: i32, unavailable: i32, new: &Set, olds: &[Set]) -> Vec<i32> {
    let mut counts: Vec<i32> = olds.iter().map(|s| s.replicas).collect();
    let old_total: i32 = counts.iter().sum();
    if old_total == 0 {
        return counts;
    }
    let all: i32 = new.replicas + old_total;
    let min_available = desired - unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all - min_available - new_unavailable;
    if budget <= 0 {
        return counts;
    }
    // First the old pods that are not available anyway.
    for (count, set) in counts.iter_mut().zip(olds) {
        if budget == 0 {
            break;
        }
        let unhealthy = (*count - set.available.min(*count)).max(0);
        let cut = unhealthy.min(budget);
        *count -= cut;
        budget -= cut;
    }
    // Then available ones, while enough stay available overall.
    let available: i32 = new.available
        + olds
            .iter()
            .zip(&counts)
            .map(|(s, c)| s.available.min(*c))
            .sum::<i32>();
    let mut total_cut = (available - min_available).max(0).min(budget);
    for count in counts.iter_mut() {
        if total_cut == 0 {
            break;
        }
        let cut = (*count).min(total_cut);
        *count -= cut;
        total_cut -= cut;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(name: &str, replicas: i32, available: i32) -> Set {
        Set {
            name: name.into(),
            replicas,
            available,
        }
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        assert_eq!(resolve(Some(&json!("25%")), 10, true, "25%"), 3);
        assert_eq!(resolve(Some(&json!("25%")), 10, false, "25%"), 2);
        assert_eq!(resolve(Some(&json!(2)), 10, false, "25%"), 2);
        assert_eq!(resolve(None, 3, true, "25%"), 1);
        assert_eq!(resolve(None, 3, false, "25%"), 0);
        assert_eq!(
            surge_and_unavailable(Some(&json!(0)), Some(&json!(0)), 3),
            (0, 1)
        );
    }

    /// The guide's timeline: 3 replicas, defaults (maxSurge 1, maxUnavailable 0).
    #[test]
    fn three_replicas_with_default_strategy() {
        let (surge, unavailable) = surge_and_unavailable(None, None, 3);
        assert_eq!((surge, unavailable), (1, 0));
        let old = vec![set("old", 3, 3)];
        // Step 1: one new pod above the desired count.
        let new = set("new", 0, 0);
        assert_eq!(scale_new(3, surge, &new, &old), 1);
        // Old ones cannot shrink until the new pod is available.
        assert_eq!(scale_olds(3, unavailable, &set("new", 1, 0), &old), vec![3]);
        // Once it is, one old pod goes.
        assert_eq!(scale_olds(3, unavailable, &set("new", 1, 1), &old), vec![2]);
        assert_eq!(
            scale_new(3, surge, &set("new", 1, 1), &[set("old", 2, 2)]),
            2
        );
        assert_eq!(
            scale_olds(3, unavailable, &set("new", 3, 3), &[set("old", 1, 1)]),
            vec![0]
        );
    }

    /// maxSurge=2, maxUnavailable=0 with 10 replicas: never below 10
    /// available, never above 12 pods.
    #[test]
    fn surge_two_unavailable_zero_keeps_ten_available() {
        let desired = 10;
        let (surge, unavailable) = surge_and_unavailable(Some(&json!(2)), Some(&json!(0)), desired);
        let mut new = set("new", 0, 0);
        let mut old = vec![set("old", 10, 10)];
        for _ in 0..50 {
            new.replicas = scale_new(desired, surge, &new, &old);
            assert!(new.replicas + old[0].replicas <= 12);
            // The new pods become available.
            new.available = new.replicas;
            let counts = scale_olds(desired, unavailable, &new, &old);
            old[0].replicas = counts[0];
            old[0].available = old[0].available.min(counts[0]);
            assert!(new.available + old[0].available >= 10);
        }
        assert_eq!((new.replicas, old[0].replicas), (10, 0));
    }

    #[test]
    fn unavailable_old_pods_go_first() {
        let new = set("new", 2, 2);
        let olds = vec![set("a", 2, 0), set("b", 2, 2)];
        assert_eq!(scale_olds(4, 1, &new, &olds), vec![0, 1]);
    }
}
