//! Objects as JSON values: the few edits made on them without a type.

use serde_json::{Map, Value};

/// `value` as an object, replaced by an empty one if it is anything else.
pub fn as_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

/// Sets a field at a JSON path, turning what is on the way into objects.
pub fn set_path(object: &mut Value, path: &[&str], value: Value) {
    let mut current = object;
    for part in path {
        current = as_object(current)
            .entry(part.to_string())
            .or_insert(Value::Null);
    }
    *current = value;
}

/// Drops nulls, so that objects compare equal however they were written
/// (for revision hashes and comparisons).
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_nulls() {
        let mut v = json!({"a": 1});
        set_path(&mut v, &["a", "b", "c"], json!(2));
        assert_eq!(v, json!({"a": {"b": {"c": 2}}}));
        let mut v = json!({"a": null, "b": [{"c": null, "d": 1}]});
        strip_nulls(&mut v);
        assert_eq!(v, json!({"b": [{"d": 1}]}));
    }
}
