//! Property-based fuzzing of everything that takes untrusted input before
//! it reaches the store: protobuf decoding, strategic merge / JSON / apply
//! patches, selectors, decoding into the kinds' types, defaulting,
//! validation and printing. Each must return (an error at most), never
//! panic. Bounded in cases so that CI stays fast; raise
//! `PROPTEST_CASES` to search longer.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Map, Value};
use shoal_apiserver::{defaults, patch, protobuf, resources, selectors, table, validation};

/// Field names that steer values into the interesting code paths.
const KEYS: &[&str] = &[
    "metadata",
    "name",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "spec",
    "status",
    "template",
    "containers",
    "initContainers",
    "ports",
    "containerPort",
    "port",
    "env",
    "volumes",
    "volumeMounts",
    "mountPath",
    "selector",
    "matchLabels",
    "matchExpressions",
    "replicas",
    "strategy",
    "type",
    "conditions",
    "$patch",
    "$retainKeys",
    "$setElementOrder/containers",
    "$deleteFromPrimitiveList/finalizers",
    "nodePort",
    "clusterIP",
    "restartPolicy",
    "image",
    "jobTemplate",
    "schedule",
    "x",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z$%/ -]{0,8}".prop_map(Value::from),
        prop::sample::select(vec![
            "replace",
            "delete",
            "merge",
            "Always",
            "RollingUpdate",
            "NodePort",
            "None"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(400),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn protobuf_decoding_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = protobuf::decode_object(&body);
        let mut prefixed = b"k8s\0".to_vec();
        prefixed.extend(&body);
        let _ = protobuf::decode_object(&prefixed);
    }

    #[test]
    fn strategic_merge_never_panics(original in json_value(), patch in json_value()) {
        for kind in ["Deployment", "Service", "Pod", "Node"] {
            let _ = patch::strategic::merge(kind, &original, &patch);
        }
    }

    #[test]
    fn apply_field_sets_never_panic(original in json_value(), applied in json_value()) {
        let _ = patch::apply::field_set("Deployment", &applied, &mut Vec::new());
        let _ = patch::strategic::merge("Deployment", &original, &applied);
    }

    #[test]
    fn json_patches_never_panic(original in json_value(), ops in prop::collection::vec(
        (prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test"]),
         "(/[a-z0-9~-]{0,6}){0,4}", json_value()), 0..4)) {
        let operations: Vec<Value> = ops.into_iter().map(|(op, path, value)| {
            serde_json::json!({"op": op, "path": path, "from": path, "value": value})
        }).collect();
        if let Ok(p) = serde_json::from_value::<json_patch::Patch>(Value::Array(operations)) {
            let mut doc = original;
            let _ = json_patch::patch(&mut doc, &p);
        }
    }

    #[test]
    fn selectors_never_panic(text in "[a-z0-9=!,() .~/-]{0,40}") {
        let _ = selectors::LabelSelector::parse(&text);
        let _ = selectors::FieldSelector::parse(&text);
    }

    #[test]
    fn objects_never_panic_on_the_way_in_or_out(object in json_value()) {
        for resource in resources::all() {
            let mut defaulted = object.clone();
            if defaulted.is_object() {
                defaults::apply(resource, &mut defaulted);
            }
            let _ = (resource.normalize)(object.clone());
            let _ = validation::metadata(resource, &object);
            let _ = validation::spec(resource, &object);
            let _ = validation::immutable(resource, &object, &defaulted);
            let _ = table::table(resource, &object, "Object");
        }
    }
}
