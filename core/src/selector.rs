//! Label selectors on the client side: does a `metav1.LabelSelector`
//! match a set of labels, and the selector as the `labelSelector` query
//! of a list. (The apiserver parses and matches the query form itself, to
//! answer with Kubernetes' error messages.)

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` matches `labels` (none: no labels). An empty
/// selector matches everything; an expression with an unknown operator
/// matches nothing.
pub fn matches(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |key: &str| labels.and_then(|l| l.get(key));
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v))
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => !value.is_some_and(|v| values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether the selector has no requirement at all.
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// The selector as a list's `labelSelector` query (`app=web,tier in
/// (a,b),!legacy`); empty when it has no requirement.
pub fn to_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        let key = &e.key;
        parts.push(match e.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "DoesNotExist" => format!("!{key}"),
            _ => key.clone(),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: serde_json::Value) -> LabelSelector {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn matching() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let s = selector(json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}));
        assert!(matches(&s, Some(&labels)));
        assert!(!matches(&s, None));
        assert!(matches(&selector(json!({})), None));
        let s = selector(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}),
        );
        assert!(!matches(&s, Some(&labels)));
        let s = selector(json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]}));
        assert!(!matches(&s, Some(&labels)));
    }

    #[test]
    fn queries() {
        let s = selector(json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "env", "operator": "Exists"}]}));
        assert_eq!(to_query(&s), "app=web,tier in (a,b),!legacy,env");
        assert_eq!(to_query(&selector(json!({}))), "");
        assert!(is_empty(&selector(json!({"matchLabels": {}}))));
    }
}
