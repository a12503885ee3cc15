//! Bad input gets a `Status` with Kubernetes' code and reason, never a 500
//! or a dropped connection; the server keeps serving afterwards.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::kube::ShoalUp;

const CM: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SVCS: &str = "/api/v1/namespaces/default/services";
const JSON: &str = "application/json";

fn deployment(selector: &str, labels: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"d"}},"spec":{{{selector}"template":{{"metadata":{{"labels":{labels}}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}}}}}"#
    )
}

#[test]
fn bad_requests_get_status_objects() {
    let up = ShoalUp::start();
    up.ok(&["create", "configmap", "exists", "--from-literal=a=1"]);
    let current = up.ok(&[
        "get",
        "cm",
        "exists",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let stale = (current.trim().parse::<i64>().unwrap() - 1).to_string();
    let big = format!(
        r#"{{"metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#,
        "a".repeat(4 << 20)
    );
    let wrong_kind = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#;
    let stale_update = format!(
        r#"{{"metadata":{{"name":"exists","resourceVersion":"{stale}"}},"data":{{"a":"2"}}}}"#
    );

    // (method, path, content type, body, code, reason, message fragment)
    let cases: Vec<(&str, String, &str, String, u16, &str, &str)> = vec![
        ("POST", CM.into(), JSON, "{not json".into(), 400, "BadRequest", "json"),
        ("POST", CM.into(), "application/yaml", "a: [b".into(), 400, "BadRequest", "yaml"),
        ("POST", CM.into(), JSON, "[1,2]".into(), 400, "BadRequest", "object"),
        ("POST", CM.into(), JSON, "".into(), 400, "BadRequest", "empty"),
        ("POST", CM.into(), "text/plain", "hello".into(), 415, "UnsupportedMediaType", "text/plain"),
        ("POST", CM.into(), "application/vnd.kubernetes.protobuf", "garbage".into(), 400, "BadRequest", "protobuf"),
        ("POST", CM.into(), JSON, r#"{"metadata":{"name":"Bad_Name"}}"#.into(), 422, "Invalid", "metadata.name: Invalid value: \"Bad_Name\""),
        ("POST", CM.into(), JSON, r#"{"metadata":{"name":"x","labels":{"a":"-bad-"}}}"#.into(), 422, "Invalid", "metadata.labels"),
        ("POST", CM.into(), JSON, r#"{"metadata":{}}"#.into(), 422, "Invalid", "name or generateName is required"),
        ("POST", CM.into(), JSON, wrong_kind.into(), 400, "BadRequest", "does not match the expected kind"),
        ("POST", CM.into(), JSON, r#"{"metadata":{"name":"exists"}}"#.into(), 409, "AlreadyExists", "configmaps \"exists\" already exists"),
        ("POST", format!("{CM}?fieldValidation=Strict"), JSON, r#"{"metadata":{"name":"s"},"dta":{}}"#.into(), 400, "BadRequest", "unknown field \"dta\""),
        ("POST", CM.into(), JSON, big, 413, "RequestEntityTooLarge", "limit"),
        ("PUT", format!("{CM}/exists"), JSON, stale_update, 409, "Conflict", "the object has been modified"),
        ("PUT", CM.into(), JSON, "{}".into(), 405, "MethodNotAllowed", "PUT"),
        ("GET", format!("{CM}/missing"), JSON, String::new(), 404, "NotFound", "configmaps \"missing\" not found"),
        ("GET", "/api/v1/nothings".into(), JSON, String::new(), 404, "NotFound", "could not find"),
        ("GET", format!("{CM}?labelSelector=a%20in%20b"), JSON, String::new(), 400, "BadRequest", "("),
        ("POST", PODS.into(), JSON, r#"{"metadata":{"name":"p"},"spec":{"containers":[]}}"#.into(), 422, "Invalid", "spec.containers: Required value"),
        ("POST", PODS.into(), JSON, r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#.into(), 422, "Invalid", "spec.containers[0].image: Required value"),
        ("POST", PODS.into(), JSON, r#"{"metadata":{"name":"p"},"spec":{"restartPolicy":"Sometimes","containers":[{"name":"c","image":"i"}]}}"#.into(), 422, "Invalid", "Unsupported value: \"Sometimes\""),
        ("POST", DEPLOYS.into(), JSON, deployment("", r#"{"app":"x"}"#), 422, "Invalid", "spec.selector: Required value"),
        ("POST", DEPLOYS.into(), JSON, deployment(r#""selector":{"matchLabels":{"app":"y"}},"#, r#"{"app":"x"}"#), 422, "Invalid", "`selector` does not match template `labels`"),
        ("POST", DEPLOYS.into(), JSON, r#"{"metadata":{"name":"d"},"spec":{"replicas":"three"}}"#.into(), 400, "BadRequest", "spec.replicas"),
        ("PATCH", format!("{CM}/exists"), "text/plain", "{}".into(), 415, "UnsupportedMediaType", "text/plain"),
        ("PATCH", format!("{CM}/exists"), "application/json-patch+json", "{}".into(), 400, "BadRequest", "JSON patch"),
        ("PATCH", format!("{CM}/exists"), "application/merge-patch+json", "not json".into(), 400, "BadRequest", "patch"),
        ("PATCH", format!("{CM}/exists"), "application/strategic-merge-patch+json", r#"{"$patch":"explode"}"#.into(), 400, "BadRequest", "explode"),
        ("PATCH", format!("{CM}/exists"), "application/apply-patch+yaml", "data: {a: b}".into(), 422, "Invalid", "fieldManager: Required value: is required for apply patch"),
        ("DELETE", format!("{CM}/exists?propagationPolicy=Sideways"), JSON, String::new(), 422, "Invalid", "propagationPolicy: Unsupported value: \"Sideways\""),
        ("PATCH", format!("{CM}/exists"), "application/json-patch+json", r#"[{"op":"replace","path":"","value":1}]"#.into(), 422, "Invalid", "not an object"),
        ("PATCH", format!("{CM}/other?fieldManager=t"), "application/apply-patch+yaml", "metadata: {name: exists}".into(), 400, "BadRequest", "does not match the name on the URL"),
        ("PUT", format!("{PODS}/p/binding"), JSON, "{}".into(), 405, "MethodNotAllowed", "PUT"),
        ("GET", format!("{CM}?watch=1&resourceVersion=9223372036854775807"), JSON, String::new(), 400, "BadRequest", "invalid resource version"),
        ("GET", format!("{CM}?watch=1&resourceVersion=-5"), JSON, String::new(), 400, "BadRequest", "strconv.ParseUint: parsing \"-5\": invalid syntax"),
        ("POST", SVCS.into(), JSON, r#"{"metadata":{"name":"s"},"spec":{"ports":[{"port":80,"nodePort":30080}]}}"#.into(), 422, "Invalid", "may not be used when `type` is 'ClusterIP'"),
        ("POST", SVCS.into(), JSON, r#"{"metadata":{"name":"s"},"spec":{"type":"ExternalName","externalName":"x.example","clusterIP":"10.96.0.50"}}"#.into(), 422, "Invalid", "must be empty for ExternalName services"),
    ];
    for (method, path, content_type, body, code, reason, fragment) in cases {
        let body_bytes = (!body.is_empty() || method != "GET").then_some(body.as_bytes());
        let (status, text) = up.curl(method, &path, content_type, body_bytes);
        let what = format!("{method} {path} ({content_type}, {} bytes)", body.len());
        assert_eq!(status, code, "{what}: {text}");
        let status_object: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!(status_object["kind"], "Status", "{what}: {text}");
        assert_eq!(status_object["reason"], reason, "{what}: {text}");
        assert_eq!(status_object["code"], code, "{what}: {text}");
        let message = status_object["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(fragment),
            "{what}: {message:?} lacks {fragment:?}"
        );
    }

    // 422s name the field in details.causes.
    let (_, text) = up.curl(
        "POST",
        CM,
        JSON,
        Some(br#"{"metadata":{"name":"Bad_Name"}}"#),
    );
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );

    // Without a token: system:anonymous, whom RBAC refuses (403); with a
    // wrong one: 401.
    let (code, text) = up.curl_as("GET", CM, JSON, None, None);
    assert_eq!(code, 403, "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        status["message"],
        "configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(status["reason"], "Forbidden");
    let (code, _) = up.curl_as("GET", CM, JSON, None, Some("wrong-token"));
    assert_eq!(code, 401);
    // Refused with a large body still being sent: the answer arrives (the
    // body is read first), not a reset connection.
    let big = vec![b' '; 2 << 20];
    let (code, text) = up.curl_as("POST", CM, JSON, Some(&big), None);
    assert_eq!(code, 403, "{text}");
    let (code, text) = up.curl_as("POST", CM, JSON, Some(&big), Some("wrong-token"));
    assert_eq!(code, 401, "{text}");

    // A server-side dry run of a namespace deletion deletes nothing, and
    // the system namespaces cannot be deleted at all.
    up.ok(&["create", "namespace", "scratch"]);
    up.ok(&["delete", "namespace", "scratch", "--dry-run=server"]);
    assert!(up.ok(&["get", "namespace", "scratch"]).contains("Active"));
    let err = up.fails(&["delete", "namespace", "default"]);
    assert!(err.contains("this namespace may not be deleted"), "{err}");

    // Still serving, and nothing was half-written.
    assert_eq!(
        up.ok(&["get", "cm", "exists", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    let names = up.ok(&["get", "cm", "-o", "name"]);
    assert!(
        !names.contains("big") && !names.contains("configmap/s\n"),
        "{names}"
    );
}
