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

/// A certificate request as kubectl would send it, the CSR made by openssl.
fn csr_manifest(
    dir: &std::path::Path,
    name: &str,
    subject: &str,
    san: &str,
    signer: &str,
) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .args([
            "-subj",
            subject,
            "-addext",
            &format!("subjectAltName={san}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request = base64_of(&std::fs::read(&csr).unwrap());
    format!(
        "apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: {name}
spec:
  request: {request}
  signerName: {signer}
  username: system:node:somebody-else
  usages: [digital signature, key encipherment, server auth, client auth]
"
    )
}

fn base64_of(bytes: &[u8]) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn certificate_signing_requests_with_kubectl() {
    let up = ShoalUp::start();
    let dir = tempfile::tempdir().unwrap();
    let apply = |yaml: &str| {
        let out = up.kubectl_with(&["apply", "-f", "-"], Some(yaml), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // A node overlay request made by an admin: approved and signed by the
    // cluster CA; who asked is the token's user, not what the client wrote.
    apply(&csr_manifest(
        dir.path(),
        "node-n9",
        "/CN=system:node:n9/O=system:nodes",
        "DNS:n9",
        "shoal.dev/node-overlay",
    ));
    let mut certificate = String::new();
    let issued = support::kube::eventually(std::time::Duration::from_secs(20), || {
        certificate = up.ok(&[
            "get",
            "csr",
            "node-n9",
            "-o",
            "jsonpath={.status.certificate}",
        ]);
        !certificate.is_empty()
    });
    assert!(
        issued,
        "{}",
        up.ok(&["get", "csr", "node-n9", "-o", "yaml"])
    );
    let table = up.ok(&["get", "csr"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.split_whitespace().eq([
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("node-n9")).unwrap();
    assert!(
        row.contains("shoal.dev/node-overlay")
            && row.contains(" admin ")
            && row.ends_with("Approved,Issued"),
        "{table}"
    );
    let pem = dir.path().join("n9.crt");
    let decoded = Command::new("base64")
        .args(["-d"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(certificate.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    std::fs::write(&pem, &decoded.stdout).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(up.data_dir().join("apiserver/ca.crt"))
        .arg(&pem)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Another signer's request waits for a person: kubectl certificate
    // approve and deny go through the approval subresource.
    apply(&csr_manifest(
        dir.path(),
        "other",
        "/CN=someone",
        "DNS:someone",
        "example.com/other",
    ));
    apply(&csr_manifest(
        dir.path(),
        "refused",
        "/CN=someone",
        "DNS:someone",
        "example.com/other",
    ));
    assert!(up
        .ok(&["get", "csr", "other", "--no-headers"])
        .trim_end()
        .ends_with("Pending"));
    up.ok(&["certificate", "approve", "other"]);
    up.ok(&["certificate", "deny", "refused"]);
    assert!(up
        .ok(&["get", "csr", "other", "--no-headers"])
        .trim_end()
        .ends_with("Approved"));
    assert!(up
        .ok(&["get", "csr", "refused", "--no-headers"])
        .trim_end()
        .ends_with("Denied"));
    assert_eq!(
        up.ok(&["get", "csr", "other", "-o", "jsonpath={.spec.username}"]),
        "admin"
    );
    // A request for a node overlay certificate that is not one is denied.
    apply(&csr_manifest(
        dir.path(),
        "bogus",
        "/CN=system:node:n9/O=system:nodes",
        "DNS:elsewhere",
        "shoal.dev/node-overlay",
    ));
    assert!(support::kube::eventually(
        std::time::Duration::from_secs(20),
        || {
            up.ok(&["get", "csr", "bogus", "--no-headers"])
                .trim_end()
                .ends_with("Denied")
        }
    ));
}
