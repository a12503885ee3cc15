//! Strategic merge patch: a JSON merge patch in which some lists are merged
//! element by element, matched by a key field (containers by `name`, volume
//! mounts by `mountPath`, ...), with the directives kubectl sends:
//! `$patch: replace|delete|merge`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.
//!
//! Which lists merge, and by which key, is the `patchMergeKey` /
//! `patchStrategy` metadata of the built-in types; `list_strategy` holds it
//! as a table over field paths.

use serde_json::{Map, Value};

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMerge {
    /// Elements are objects matched by this field.
    Key(&'static str),
    /// Elements are scalars; the patch's are added (a set union).
    Primitive,
}

fn is_container_list(field: &str) -> bool {
    matches!(
        field,
        "containers" | "initContainers" | "ephemeralContainers"
    )
}

/// The merge strategy of the list at `path` (field names, no indices) in an
/// object of `kind`; `None` for lists that are replaced whole.
pub fn list_strategy(kind: &str, path: &[&str]) -> Option<ListMerge> {
    let last = *path.last()?;
    let parent = path.len().checked_sub(2).map(|i| path[i]);
    Some(match last {
        "containers" | "initContainers" | "ephemeralContainers" => ListMerge::Key("name"),
        "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates" => {
            ListMerge::Key("name")
        }
        "env" if parent.is_some_and(is_container_list) => ListMerge::Key("name"),
        "volumeMounts" => ListMerge::Key("mountPath"),
        "volumeDevices" => ListMerge::Key("devicePath"),
        "hostAliases" => ListMerge::Key("ip"),
        "ports" if parent.is_some_and(is_container_list) => ListMerge::Key("containerPort"),
        "ports" if kind == "Service" && path == ["spec", "ports"] => ListMerge::Key("port"),
        "conditions" if parent == Some("status") => ListMerge::Key("type"),
        "addresses" if kind == "Node" && parent == Some("status") => ListMerge::Key("type"),
        "podIPs" | "hostIPs" if parent == Some("status") => ListMerge::Key("ip"),
        "ownerReferences" if parent == Some("metadata") => ListMerge::Key("uid"),
        "finalizers" if parent == Some("metadata") => ListMerge::Primitive,
        "topologySpreadConstraints" => ListMerge::Key("topologyKey"),
        _ => return None,
    })
}

/// Applies a strategic merge `patch` to `original`.
pub fn merge(kind: &str, original: &Value, patch: &Value) -> Result<Value, String> {
    let mut path = Vec::new();
    merge_value(kind, original.clone(), patch, &mut path)
        .map(|v| v.unwrap_or(Value::Object(Map::new())))
}

/// `None` means the value is deleted (`$patch: delete`).
fn merge_value(
    kind: &str,
    original: Value,
    patch: &Value,
    path: &mut Vec<String>,
) -> Result<Option<Value>, String> {
    let Some(patch_map) = patch.as_object() else {
        return Ok(Some(patch.clone()));
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch_map.clone();
            replaced.remove("$patch");
            return Ok(Some(Value::Object(replaced)));
        }
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    let mut object = match original {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut retain: Option<Vec<String>> = None;
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (key, value) in patch_map {
        if key == "$patch" {
            continue;
        }
        if key == "$retainKeys" {
            let keys = value
                .as_array()
                .ok_or("$retainKeys must be a list")?
                .iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect();
            retain = Some(keys);
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            if let Some(order) = value.as_array() {
                orders.push((field.to_string(), order.clone()));
            }
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value
                .as_array()
                .ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(list) = object.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(format!("unknown directive {key}"));
        }
        if value.is_null() {
            object.remove(key);
            continue;
        }
        path.push(key.clone());
        let current = object.remove(key).unwrap_or(Value::Null);
        let merged = match value {
            Value::Array(items) => {
                let strategy = {
                    let names: Vec<&str> = path.iter().map(String::as_str).collect();
                    list_strategy(kind, &names)
                };
                Some(merge_list(kind, current, items, strategy, path)?)
            }
            Value::Object(_) => merge_value(kind, current, value, path)?,
            scalar => Some(scalar.clone()),
        };
        path.pop();
        if let Some(merged) = merged {
            object.insert(key.clone(), merged);
        }
    }
    if let Some(keep) = retain {
        object.retain(|k, _| keep.iter().any(|r| r == k));
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = object.get_mut(&field) {
            let names: Vec<&str> = path
                .iter()
                .map(String::as_str)
                .chain([field.as_str()])
                .collect();
            reorder(list, &order, list_strategy(kind, &names));
        }
    }
    Ok(Some(Value::Object(object)))
}

fn merge_list(
    kind: &str,
    original: Value,
    patch: &[Value],
    strategy: Option<ListMerge>,
    path: &mut Vec<String>,
) -> Result<Value, String> {
    // `[{"$patch": "replace"}, ...]` replaces the list with the rest.
    let replace = patch
        .iter()
        .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace {
        return Ok(Value::Array(
            patch
                .iter()
                .filter(|v| v.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    }
    let mut list = match original {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    match strategy {
        None => Ok(Value::Array(patch.to_vec())),
        Some(ListMerge::Primitive) => {
            for item in patch {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
            Ok(Value::Array(list))
        }
        Some(ListMerge::Key(field)) => {
            for item in patch {
                let Some(key) = item.get(field) else {
                    return Err(format!(
                        "map: {item} does not contain declared merge key: {field}"
                    ));
                };
                let position = list.iter().position(|e| e.get(field) == Some(key));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        list.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let current = std::mem::take(&mut list[i]);
                        match merge_value(kind, current, item, path)? {
                            Some(merged) => list[i] = merged,
                            None => {
                                list.remove(i);
                            }
                        }
                    }
                    (None, false) => {
                        if let Some(merged) = merge_value(kind, Value::Null, item, path)? {
                            list.push(merged);
                        }
                    }
                }
            }
            Ok(Value::Array(list))
        }
    }
}

/// Puts the elements named in `order` first, in that order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: Option<ListMerge>) {
    let rank = |item: &Value| {
        order.iter().position(|o| match strategy {
            Some(ListMerge::Key(field)) => {
                o.get(field).is_some() && o.get(field) == item.get(field)
            }
            _ => o == item,
        })
    };
    let mut ranked: Vec<(usize, Value)> = list
        .drain(..)
        .enumerate()
        .map(|(i, item)| (rank(&item).unwrap_or(order.len() + i), item))
        .collect();
    ranked.sort_by_key(|(r, _)| *r);
    list.extend(ranked.into_iter().map(|(_, item)| item));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
               "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
                        "template": {"spec": {"containers": [
                            {"name": "nginx", "image": "nginx:1.14", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
                            {"name": "sidecar", "image": "busybox"}]}}}})
    }

    #[test]
    fn containers_merge_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.16"}]}}}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        let containers = merged.pointer("/spec/template/spec/containers").unwrap();
        assert_eq!(containers.as_array().unwrap().len(), 2);
        assert_eq!(containers[0]["image"], "nginx:1.16");
        assert_eq!(containers[0]["env"][0]["value"], "1");
    }

    #[test]
    fn delete_directive_removes_an_element() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(
            merged
                .pointer("/spec/template/spec/containers")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn retain_keys_drops_the_old_strategy() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(
            merged.pointer("/spec/strategy"),
            Some(&json!({"type": "Recreate"}))
        );
    }

    #[test]
    fn primitive_lists_union_and_delete() {
        let patch = json!({"metadata": {"finalizers": ["b"]}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(
            merged.pointer("/metadata/finalizers"),
            Some(&json!(["a", "b"]))
        );
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        let merged = merge("Deployment", &merged, &patch).unwrap();
        assert_eq!(merged.pointer("/metadata/finalizers"), Some(&json!(["b"])));
    }

    #[test]
    fn set_element_order_reorders() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "nginx"}],
            "containers": [{"name": "nginx", "image": "nginx:2"}]}}}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(
            merged.pointer("/spec/template/spec/containers/0/name"),
            Some(&json!("sidecar"))
        );
        assert_eq!(
            merged.pointer("/spec/template/spec/containers/1/image"),
            Some(&json!("nginx:2"))
        );
    }

    #[test]
    fn atomic_lists_and_scalars_are_replaced() {
        let patch =
            json!({"spec": {"replicas": 5, "template": {"spec": {"tolerations": [{"key": "x"}]}}}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(merged.pointer("/spec/replicas"), Some(&json!(5)));
        assert_eq!(
            merged.pointer("/spec/template/spec/tolerations"),
            Some(&json!([{"key": "x"}]))
        );
        let patch = json!({"metadata": {"labels": {"app": null}}});
        let merged = merge("Deployment", &deployment(), &patch).unwrap();
        assert_eq!(merged.pointer("/metadata/labels"), Some(&json!({})));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
        let merged = merge("Service", &svc, &patch).unwrap();
        assert_eq!(
            merged.pointer("/spec/ports/0/targetPort"),
            Some(&json!(9090))
        );
        assert_eq!(merged.pointer("/spec/ports/1/port"), Some(&json!(443)));
    }

    #[test]
    fn bad_directives_are_errors() {
        assert!(merge("Pod", &json!({}), &json!({"$patch": "explode"})).is_err());
        assert!(merge(
            "Pod",
            &json!({}),
            &json!({"spec": {"containers": [{"image": "x"}]}})
        )
        .is_err());
    }
}
