//! Server-side apply (`application/apply-patch+yaml`).
//!
//! The applied configuration is merged into the live object with the
//! strategic-merge rules, and the set of fields it contains is recorded in
//! `metadata.managedFields` for its field manager (in `FieldsV1` form). A
//! field that the manager applied before and no longer applies is removed,
//! which is how apply deletes what the user took out of a manifest.
//!
//! Not done: conflict detection between managers (Kubernetes answers 409
//! when another manager owns a field with a different value unless `force`
//! is set); here the last applier wins.

use serde_json::{json, Map, Value};

use super::strategic::{list_strategy, merge, ListMerge};
use crate::error::{ApiError, Result};
use crate::rest::Ctx;

pub fn decode(body: &[u8]) -> Result<Value> {
    let value: Value = serde_norway::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    Ok(value)
}

fn manager(ctx: &Ctx) -> Result<String> {
    ctx.param("fieldManager")
        .map(String::from)
        .ok_or_else(|| ApiError::bad_request("PATCH: fieldManager is required for apply requests"))
}

fn entry(ctx: &Ctx, manager: &str, fields: Map<String, Value>) -> Value {
    json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": ctx.resource.api_version(),
        "time": crate::object::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": Value::Object(fields),
    })
}

/// The object to create when the first apply finds nothing.
pub fn new_object(ctx: &Ctx, applied: Value) -> Result<Value> {
    let manager = manager(ctx)?;
    let fields = field_set(ctx.resource.kind, &applied, &mut Vec::new());
    let mut object = applied;
    crate::object::meta_mut(&mut object).insert(
        "managedFields".into(),
        json!([entry(ctx, &manager, fields)]),
    );
    Ok(object)
}

pub fn apply(ctx: &Ctx, current: &Value, applied: Value) -> Result<Value> {
    let manager = manager(ctx)?;
    let kind = ctx.resource.kind;
    let new_fields = field_set(kind, &applied, &mut Vec::new());
    let mut managed: Vec<Value> = current
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let position = managed.iter().position(|m| {
        m.get("manager").and_then(Value::as_str) == Some(manager.as_str())
            && m.get("operation").and_then(Value::as_str) == Some("Apply")
    });
    let old_fields = position
        .and_then(|i| {
            managed[i]
                .get("fieldsV1")
                .and_then(Value::as_object)
                .cloned()
        })
        .unwrap_or_default();
    let mut merged = merge(kind, current, &applied).map_err(ApiError::bad_request)?;
    remove_dropped(&mut merged, &old_fields, &new_fields);
    let fresh = entry(ctx, &manager, new_fields);
    match position {
        Some(i) => managed[i] = fresh,
        None => managed.push(fresh),
    }
    crate::object::meta_mut(&mut merged).insert("managedFields".into(), Value::Array(managed));
    Ok(merged)
}

/// The fields `value` sets, as a FieldsV1 tree.
pub fn field_set(kind: &str, value: &Value, path: &mut Vec<String>) -> Map<String, Value> {
    let mut set = Map::new();
    let Some(map) = value.as_object() else {
        return set;
    };
    for (key, child) in map {
        let top = path.is_empty();
        if top && (key == "apiVersion" || key == "kind") {
            continue;
        }
        if path.len() == 1
            && path[0] == "metadata"
            && (key == "name"
                || key == "namespace"
                || key == "managedFields"
                || key == "resourceVersion")
        {
            continue;
        }
        path.push(key.clone());
        let sub = match child {
            Value::Object(_) => field_set(kind, child, path),
            Value::Array(items) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                match list_strategy(kind, &names) {
                    Some(ListMerge::Key(field)) => {
                        let mut elements = Map::new();
                        for item in items {
                            let Some(k) = item.get(field) else { continue };
                            let mut inner = field_set(kind, item, path);
                            inner.insert(".".into(), json!({}));
                            elements
                                .insert(format!("k:{}", json!({ field: k })), Value::Object(inner));
                        }
                        elements
                    }
                    Some(ListMerge::Primitive) => items
                        .iter()
                        .map(|v| (format!("v:{v}"), json!({})))
                        .collect(),
                    None => Map::new(),
                }
            }
            _ => Map::new(),
        };
        path.pop();
        set.insert(format!("f:{key}"), Value::Object(sub));
    }
    set
}

/// Removes from `object` what `old` holds and `new` does not.
fn remove_dropped(object: &mut Value, old: &Map<String, Value>, new: &Map<String, Value>) {
    for (key, old_child) in old {
        if key == "." {
            continue;
        }
        let new_child = new.get(key).and_then(Value::as_object);
        let old_child = old_child.as_object().cloned().unwrap_or_default();
        if let Some(field) = key.strip_prefix("f:") {
            let Some(map) = object.as_object_mut() else {
                continue;
            };
            match new_child {
                None => {
                    map.remove(field);
                }
                Some(new_child) => {
                    if let Some(inner) = map.get_mut(field) {
                        remove_dropped(inner, &old_child, new_child);
                    }
                }
            }
        } else if let Some(key_json) = key.strip_prefix("k:") {
            let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(key_json) else {
                continue;
            };
            let Some(list) = object.as_array_mut() else {
                continue;
            };
            let matches = |item: &Value| wanted.iter().all(|(k, v)| item.get(k) == Some(v));
            match new_child {
                None => list.retain(|item| !matches(item)),
                Some(new_child) => {
                    if let Some(item) = list.iter_mut().find(|item| matches(item)) {
                        remove_dropped(item, &old_child, new_child);
                    }
                }
            }
        } else if let Some(value_json) = key.strip_prefix("v:") {
            if new_child.is_none() {
                let Ok(value) = serde_json::from_str::<Value>(value_json) else {
                    continue;
                };
                if let Some(list) = object.as_array_mut() {
                    list.retain(|item| *item != value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sets_use_list_keys() {
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}});
        let set = field_set("Deployment", &applied, &mut Vec::new());
        assert_eq!(
            Value::Object(set),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let first = json!({"metadata": {"labels": {"app": "web", "tier": "x"}}, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "j"}]}}}});
        let second = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i2"}]}}}});
        let old = field_set("Deployment", &first, &mut Vec::new());
        let new = field_set("Deployment", &second, &mut Vec::new());
        let mut live = merge("Deployment", &first, &second).unwrap();
        remove_dropped(&mut live, &old, &new);
        assert_eq!(
            live.pointer("/metadata/labels"),
            Some(&json!({"app": "web"}))
        );
        assert_eq!(live.pointer("/spec/replicas"), None);
        let containers = live
            .pointer("/spec/template/spec/containers")
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["image"], "i2");
    }
}
