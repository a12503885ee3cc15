//! What client libraries other than kubectl send, answered as
//! kube-apiserver answers it: trailing slashes, Go-style query parameters,
//! default field managers from the User-Agent, OpenAPI v2.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use serde_json::Value;
use support::kube::ShoalUp;

const CM: &str = "/api/v1/namespaces/default/configmaps";
const JSON: &str = "application/json";

/// method, path, content type, body, expected code, expected message part
type Case<'a> = (&'a str, String, &'a str, &'a [u8], u16, &'a str);

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn paths_with_trailing_slashes_are_served_as_without() {
    let up = ShoalUp::start();
    let ok = |path: &str| {
        let (code, body) = up.curl("GET", path, JSON, None);
        assert_eq!(code, 200, "{path}: {body}");
        body
    };
    assert!(json(&ok("/version/"))["gitVersion"].is_string());
    assert_eq!(json(&ok("/api/"))["kind"], "APIVersions");
    assert_eq!(json(&ok("/apis/"))["kind"], "APIGroupList");
    assert_eq!(json(&ok("/api/v1/"))["kind"], "APIResourceList");
    assert_eq!(json(&ok("/apis/apps/v1/"))["kind"], "APIResourceList");
    assert_eq!(ok("/healthz/"), "ok");
    assert!(json(&ok("/openapi/v3/"))["paths"]["api/v1"].is_object());
    assert_eq!(json(&ok(&format!("{CM}/")))["kind"], "ConfigMapList");

    // What kube-apiserver refuses, refused the same way.
    let (code, body) = up.curl("GET", "/api/v1/nothings/", JSON, None);
    assert_eq!(code, 404, "{body}");
    let (code, body) = up.curl("DELETE", "/api/v1/namespaces", JSON, None);
    assert_eq!(code, 405, "{body}");
    assert_eq!(json(&body)["reason"], "MethodNotAllowed");
    let discovery = json(&ok("/api/v1"));
    let namespaces = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap();
    assert!(!namespaces["verbs"]
        .as_array()
        .unwrap()
        .contains(&Value::from("deletecollection")));
}

#[test]
fn query_parameters_are_read_as_go_reads_them() {
    let up = ShoalUp::start();
    up.ok(&["create", "configmap", "one", "--from-literal=a=1"]);
    // `watch=True` is a watch (a stream of events), not a list.
    for watch in ["True", "TRUE", "t", "yes", ""] {
        let (code, body) = up.curl(
            "GET",
            &format!("{CM}?watch={watch}&timeoutSeconds=1"),
            JSON,
            None,
        );
        assert_eq!(code, 200, "watch={watch}: {body}");
        let first = json(body.lines().next().unwrap_or("{}"));
        assert_eq!(first["type"], "ADDED", "watch={watch}: {body}");
    }
    for not_watch in ["false", "False", "0"] {
        let (_, body) = up.curl("GET", &format!("{CM}?watch={not_watch}"), JSON, None);
        assert_eq!(json(&body)["kind"], "ConfigMapList", "watch={not_watch}");
    }
    // Integers as strconv.ParseInt, refused with its message.
    let (code, body) = up.curl("GET", &format!("{CM}?limit=abc"), JSON, None);
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        json(&body)["message"],
        "strconv.ParseInt: parsing \"abc\": invalid syntax"
    );
    let (code, body) = up.curl("GET", &format!("{CM}?limit=1&limit=x"), JSON, None);
    assert_eq!(code, 200, "the first of repeated parameters counts: {body}");
    // Options kube-apiserver validates, refused as it refuses them.
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"two"}}"#;
    let cases: [Case; 7] = [
        (
            "POST",
            format!("{CM}?dryRun=Bogus"),
            JSON,
            body,
            422,
            "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value",
        ),
        (
            "POST",
            format!("{CM}?fieldValidation=Loose"),
            JSON,
            body,
            422,
            "fieldValidation: Unsupported value: \"Loose\"",
        ),
        (
            "PATCH",
            format!("{CM}/one?force=true"),
            "application/merge-patch+json",
            b"{}",
            422,
            "force: Forbidden: may not be specified for non-apply patch",
        ),
        (
            "GET",
            format!("{CM}?resourceVersionMatch=Exact"),
            JSON,
            b"",
            422,
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "GET",
            format!("{CM}?sendInitialEvents=true"),
            JSON,
            b"",
            422,
            "sendInitialEvents is forbidden for list",
        ),
        (
            "DELETE",
            format!("{CM}/one?orphanDependents=false&propagationPolicy=Orphan"),
            JSON,
            b"",
            422,
            "orphanDependents and deletionPropagation cannot be both set",
        ),
        (
            "DELETE",
            format!("{CM}/one?gracePeriodSeconds=soon"),
            JSON,
            b"",
            400,
            "strconv.ParseInt: parsing \"soon\": invalid syntax",
        ),
    ];
    for (method, path, content_type, body, code, message) in cases {
        let body = (!body.is_empty()).then_some(body);
        let (got, text) = up.curl(method, &path, content_type, body);
        assert_eq!(got, code, "{method} {path}: {text}");
        let status = json(&text);
        assert!(
            status["message"].as_str().unwrap_or("").contains(message),
            "{method} {path}: {text}"
        );
    }
    // The deprecated orphanDependents=true is propagationPolicy=Orphan.
    let (code, text) = up.curl(
        "DELETE",
        &format!("{CM}/one?orphanDependents=true"),
        JSON,
        None,
    );
    assert_eq!(code, 200, "{text}");
    // Unknown parameters are ignored.
    let (code, _) = up.curl("GET", &format!("{CM}?nonsense=1&pretty=true"), JSON, None);
    assert_eq!(code, 200);
}

#[test]
fn writes_without_a_field_manager_are_recorded_under_the_user_agent() {
    let up = ShoalUp::start();
    let body =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"ua"},"data":{"a":"1"}}"#;
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "--cacert"])
        .arg(up.ca_file())
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {}", up.token())])
        .args(["-A", "lightkube/0.15.0 (python)"])
        .args(["--data-binary", body])
        .arg(format!("{}{CM}", up.server()))
        .output()
        .unwrap();
    let created = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        created["metadata"]["managedFields"][0]["manager"], "lightkube",
        "{created}"
    );
    // An explicit fieldManager wins.
    let (_, patched) = up.curl(
        "PATCH",
        &format!("{CM}/ua?fieldManager=mine"),
        "application/merge-patch+json",
        Some(br#"{"data":{"b":"2"}}"#),
    );
    let managers: Vec<Value> = json(&patched)["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].clone())
        .collect();
    assert!(managers.contains(&Value::from("mine")), "{managers:?}");
}

#[test]
fn openapi_v2_and_v3_declare_parameters() {
    let up = ShoalUp::start();
    let (code, body) = up.curl("GET", "/openapi/v2", JSON, None);
    assert_eq!(code, 200);
    let v2 = json(&body);
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["definitions"]["io.k8s.api.core.v1.ConfigMap"].is_object());
    let (_, body) = up.curl("GET", "/openapi/v3/api/v1", JSON, None);
    let v3 = json(&body);
    let item = &v3["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"];
    let names: Vec<&str> = item["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"name") && names.contains(&"namespace"),
        "{names:?}"
    );
    assert!(v3["paths"]["/api/v1/namespaces"].get("delete").is_none());
}
