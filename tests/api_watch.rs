//! API watches served from one shared store watch per kind (the
//! apiserver's watch cache): several watches of one kind at once, each
//! with its own namespace, selector and starting version, see exactly
//! their own events, in order; a watch from before what the cache holds
//! still gets every change (from a store watch of its own).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};

use serde_json::Value;
use support::kube::ShoalUp;

const JSON: &str = "application/json";

/// (type, namespace/name, the `v` label) of each event line about the
/// config maps this test makes.
fn events(body: &str) -> Vec<(String, String, String)> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let e: Value = serde_json::from_str(l).expect("a JSON event per line");
            let meta = &e["object"]["metadata"];
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                format!(
                    "{}/{}",
                    meta["namespace"].as_str().unwrap_or_default(),
                    meta["name"].as_str().unwrap_or_default()
                ),
                meta["labels"]["v"].as_str().unwrap_or_default().to_string(),
            )
        })
        .filter(|(_, name, _)| name.ends_with("/one") || name.ends_with("/two"))
        .collect()
}

fn ev(kind: &str, name: &str, v: &str) -> (String, String, String) {
    (kind.into(), name.into(), v.into())
}

/// A watch that runs for `seconds` in the background (curl).
fn watch_in_background(up: &ShoalUp, path: &str, seconds: u32) -> Child {
    let sep = if path.contains('?') { '&' } else { '?' };
    Command::new("curl")
        .args(["-sS", "-N", "--cacert"])
        .arg(up.ca_file())
        .args(["-H", &format!("Authorization: Bearer {}", up.token())])
        .arg(format!(
            "{}{path}{sep}watch=1&timeoutSeconds={seconds}",
            up.server()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl")
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().expect("curl ends");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The events of a watch from `version` that ends after a second.
fn watch_for_a_second(up: &ShoalUp, path: &str, version: &str) -> String {
    let (code, body) = up.curl(
        "GET",
        &format!("{path}?watch=1&resourceVersion={version}&timeoutSeconds=1"),
        JSON,
        None,
    );
    assert_eq!(code, 200, "{body}");
    body
}

fn resource_version(up: &ShoalUp) -> String {
    let (code, body) = up.curl("GET", "/api/v1/configmaps?limit=1", JSON, None);
    assert_eq!(code, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("a list");
    list["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list version")
        .to_string()
}

#[test]
fn shared_watches_each_see_their_own_events() {
    let up = ShoalUp::start();
    up.ok(&["create", "namespace", "a"]);
    up.ok(&["create", "namespace", "b"]);
    let start = resource_version(&up);

    // Live: all namespaces, one namespace, and a label selector, at once.
    let all = watch_in_background(
        &up,
        &format!("/api/v1/configmaps?resourceVersion={start}"),
        6,
    );
    let in_a = watch_in_background(
        &up,
        &format!("/api/v1/namespaces/a/configmaps?resourceVersion={start}"),
        6,
    );
    let v1 = watch_in_background(
        &up,
        &format!("/api/v1/configmaps?resourceVersion={start}&labelSelector=v%3D1"),
        6,
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    up.ok(&["-n", "a", "create", "configmap", "one"]);
    up.ok(&["-n", "a", "label", "configmap", "one", "v=1"]);
    up.ok(&["-n", "b", "create", "configmap", "two"]);
    up.ok(&["-n", "b", "label", "configmap", "two", "v=1"]);
    up.ok(&["-n", "a", "label", "--overwrite", "configmap", "one", "v=2"]);
    up.ok(&["-n", "b", "delete", "configmap", "two"]);

    let expected_all = vec![
        ev("ADDED", "a/one", ""),
        ev("MODIFIED", "a/one", "1"),
        ev("ADDED", "b/two", ""),
        ev("MODIFIED", "b/two", "1"),
        ev("MODIFIED", "a/one", "2"),
        ev("DELETED", "b/two", "1"),
    ];
    assert_eq!(events(&finish(all)), expected_all);
    assert_eq!(
        events(&finish(in_a)),
        vec![
            ev("ADDED", "a/one", ""),
            ev("MODIFIED", "a/one", "1"),
            ev("MODIFIED", "a/one", "2"),
        ]
    );
    // An object that starts matching is ADDED; one that stops is DELETED,
    // as it was before the change (Kubernetes' cacher does the same).
    assert_eq!(
        events(&finish(v1)),
        vec![
            ev("ADDED", "a/one", "1"),
            ev("ADDED", "b/two", "1"),
            ev("DELETED", "a/one", "1"),
            ev("DELETED", "b/two", "1"),
        ]
    );

    // Afterwards, from the same version: the same changes, from what the
    // cache holds.
    assert_eq!(
        events(&watch_for_a_second(&up, "/api/v1/configmaps", &start)),
        expected_all
    );

    // A version that does not exist yet: nothing before it is sent (the
    // watch waits for it, as a store watch does).
    let future = (start.parse::<i64>().unwrap() + 100_000).to_string();
    assert_eq!(
        events(&watch_for_a_second(&up, "/api/v1/configmaps", &future)),
        vec![]
    );

    // From the very first version, before anything the cache holds: still
    // every change (the namespaces' default objects aside, the same ones).
    let body = watch_for_a_second(&up, "/api/v1/namespaces/b/configmaps", "1");
    let from_b: Vec<_> = events(&body)
        .into_iter()
        .filter(|(_, name, _)| name == "b/two")
        .collect();
    assert_eq!(
        from_b,
        vec![
            ev("ADDED", "b/two", ""),
            ev("MODIFIED", "b/two", "1"),
            ev("DELETED", "b/two", "1"),
        ]
    );
}
