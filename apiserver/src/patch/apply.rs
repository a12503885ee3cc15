//! Server-side apply (`application/apply-patch+yaml`).
//!
//! The applied configuration is merged into the live object with the
//! strategic-merge rules, and the set of fields it contains is recorded in
//! `metadata.managedFields` for its field manager (in `FieldsV1` form). A
//! field that the manager applied before and no longer applies is removed,
//! which is how apply deletes what the user took out of a manifest.
//!
//! Every other write records, for its field manager (operation Update),
//! the fields it changed, and takes them away from the other managers, so
//! ownership follows the last writer as in Kubernetes. An apply that would
//! change a field another manager owns is a 409 conflict naming the field
//! and the manager, unless `force=true` (`kubectl apply --server-side
//! --force-conflicts`), which takes the fields over.

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
    // Fields this apply would change that another manager owns.
    let wanted = leaves(&new_fields);
    let mut conflicts: Vec<(String, String, Vec<String>)> = Vec::new();
    for entry in &managed {
        let other = entry
            .get("manager")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let operation = entry
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if other == manager && operation == "Apply" {
            continue;
        }
        let owned = entry
            .get("fieldsV1")
            .and_then(Value::as_object)
            .map(leaves)
            .unwrap_or_default();
        let clashing: Vec<Vec<String>> = wanted
            .iter()
            .filter(|path| owned.contains(path))
            .filter(|path| value_at(current, path) != value_at(&applied, path))
            .cloned()
            .collect();
        if !clashing.is_empty() {
            let version = entry
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            conflicts.push((
                other.to_string(),
                version,
                clashing.iter().map(|p| render(p)).collect(),
            ));
        }
    }
    if !conflicts.is_empty() {
        if ctx.param("force") == Some("true") {
            let taken: Vec<Vec<String>> = wanted.clone();
            for entry in managed.iter_mut() {
                let own = entry.get("manager").and_then(Value::as_str) == Some(manager.as_str())
                    && entry.get("operation").and_then(Value::as_str) == Some("Apply");
                if !own {
                    if let Some(Value::Object(tree)) = entry.get_mut("fieldsV1") {
                        remove_leaves(tree, &taken);
                    }
                }
            }
        } else {
            return Err(conflict_error(ctx, &conflicts));
        }
    }
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

fn conflict_error(ctx: &Ctx, conflicts: &[(String, String, Vec<String>)]) -> ApiError {
    let count: usize = conflicts.iter().map(|(_, _, fields)| fields.len()).sum();
    let mut causes = Vec::new();
    let mut lines = Vec::new();
    for (manager, version, fields) in conflicts {
        for field in fields {
            causes.push(json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {version}"),
                "field": field,
            }));
            lines.push((manager.clone(), version.clone(), field.clone()));
        }
    }
    let message = if count == 1 {
        let (manager, version, field) = &lines[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{manager}\" using {version}: {field}"
        )
    } else {
        let list: Vec<String> = lines
            .iter()
            .map(|(m, v, f)| format!("conflict with \"{m}\" using {v}: {f}"))
            .collect();
        format!("Apply failed with {count} conflicts: {}", list.join("\n"))
    };
    ApiError {
        details: Some(json!({
            "name": ctx.name.clone().unwrap_or_default(),
            "group": ctx.resource.group,
            "kind": ctx.resource.plural,
            "causes": causes,
        })),
        ..ApiError::new(409, "Conflict", message)
    }
}

/// Records a write that is not an apply: the fields it changed become its
/// manager's (operation Update) and stop being anyone else's.
pub fn record_update(ctx: &Ctx, old: Option<&Value>, object: &mut Value) {
    let manager = ctx.field_manager();
    let kind = ctx.resource.kind;
    let mut managed: Vec<Value> = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| {
            old.and_then(|o| o.pointer("/metadata/managedFields"))
                .and_then(Value::as_array)
                .cloned()
        })
        .unwrap_or_default();
    let all = field_set(kind, object, &mut Vec::new());
    let changed: Vec<Vec<String>> = leaves(&all)
        .into_iter()
        .filter(|path| !is_server_owned(path))
        .filter(|path| old.is_none_or(|o| value_at(o, path) != value_at(object, path)))
        .collect();
    if changed.is_empty() {
        if !managed.is_empty() {
            crate::object::meta_mut(object).insert("managedFields".into(), Value::Array(managed));
        }
        return;
    }
    for entry in managed.iter_mut() {
        if let Some(Value::Object(tree)) = entry.get_mut("fieldsV1") {
            remove_leaves(tree, &changed);
        }
    }
    managed.retain(|e| {
        e.get("fieldsV1")
            .and_then(Value::as_object)
            .is_some_and(|t| !t.is_empty())
    });
    let mut mine = managed
        .iter()
        .position(|e| {
            e.get("manager").and_then(Value::as_str) == Some(manager.as_str())
                && e.get("operation").and_then(Value::as_str) == Some("Update")
        })
        .map(|i| managed.remove(i))
        .and_then(|e| e.get("fieldsV1").and_then(Value::as_object).cloned())
        .unwrap_or_default();
    for path in &changed {
        insert_leaf(&mut mine, path);
    }
    managed.push(json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": ctx.resource.api_version(),
        "time": crate::object::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": Value::Object(mine),
    }));
    crate::object::meta_mut(object).insert("managedFields".into(), Value::Array(managed));
}

/// Fields the server sets, which no manager owns.
fn is_server_owned(path: &[String]) -> bool {
    matches!(
        path,
        [m, f] if m == "f:metadata"
            && ["f:uid", "f:creationTimestamp", "f:generation", "f:deletionTimestamp", "f:deletionGracePeriodSeconds"].contains(&f.as_str())
    )
}

/// Paths to the leaves of a FieldsV1 tree (a `.` entry is the element
/// itself, not a field, and is left out).
pub fn leaves(tree: &Map<String, Value>) -> Vec<Vec<String>> {
    fn walk(tree: &Map<String, Value>, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        for (key, child) in tree {
            if key == "." {
                continue;
            }
            prefix.push(key.clone());
            match child.as_object() {
                Some(inner) if inner.keys().any(|k| k != ".") => walk(inner, prefix, out),
                _ => out.push(prefix.clone()),
            }
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

fn insert_leaf(tree: &mut Map<String, Value>, path: &[String]) {
    let mut current = tree;
    for (i, key) in path.iter().enumerate() {
        let map =
            shoal_core::json::as_object(current.entry(key.clone()).or_insert_with(|| json!({})));
        if key.starts_with("k:") && i + 1 < path.len() {
            map.entry(".").or_insert_with(|| json!({}));
        }
        current = map;
    }
}

/// Removes leaves from a tree, and the branches they leave empty.
fn remove_leaves(tree: &mut Map<String, Value>, paths: &[Vec<String>]) {
    fn remove(tree: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            tree.remove(first);
            return;
        }
        if let Some(Value::Object(child)) = tree.get_mut(first) {
            remove(child, rest);
            if child.keys().all(|k| k == ".") {
                tree.remove(first);
            }
        }
    }
    for path in paths {
        remove(tree, path);
    }
}

/// The value a FieldsV1 path names in an object.
fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for key in path {
        current = if let Some(field) = key.strip_prefix("f:") {
            current.get(field)?
        } else if let Some(wanted) = key.strip_prefix("k:") {
            let wanted: Map<String, Value> = serde_json::from_str(wanted).ok()?;
            current
                .as_array()?
                .iter()
                .find(|item| wanted.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(value) = key.strip_prefix("v:") {
            let value: Value = serde_json::from_str(value).ok()?;
            current.as_array()?.iter().find(|item| **item == value)?
        } else {
            return None;
        };
    }
    Some(current)
}

/// `.spec.template.spec.containers[name="nginx"].image`, as Kubernetes
/// names fields in conflicts.
fn render(path: &[String]) -> String {
    let mut text = String::new();
    for key in path {
        if let Some(field) = key.strip_prefix("f:") {
            text.push('.');
            text.push_str(field);
        } else if let Some(keys) = key.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = key.strip_prefix("v:") {
            text.push_str(&format!("[={value}]"));
        }
    }
    text
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
        // An object whose only fields are not tracked (metadata holding just
        // the name) sets nothing.
        if sub.is_empty() && child.as_object().is_some_and(|m| !m.is_empty()) {
            continue;
        }
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
    fn leaves_paths_and_rendering() {
        let set = field_set(
            "Deployment",
            &json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "nginx", "image": "x"}]}}}}),
            &mut Vec::new(),
        );
        let paths = leaves(&set);
        assert!(paths.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        let image: Vec<String> = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"nginx\"}",
            "f:image",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(paths.contains(&image));
        assert_eq!(
            render(&image),
            ".spec.template.spec.containers[name=\"nginx\"].image"
        );
        let object = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "x"}]}}}});
        assert_eq!(value_at(&object, &image), Some(&json!("x")));
        let mut tree = set.clone();
        remove_leaves(&mut tree, std::slice::from_ref(&image));
        assert!(!leaves(&tree).contains(&image));
        let mut rebuilt = Map::new();
        insert_leaf(&mut rebuilt, &image);
        assert_eq!(leaves(&rebuilt), vec![image]);
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
