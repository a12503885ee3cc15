//! schemathesis (PyPI) against every OpenAPI v3 document `shoal up`
//! serves, exactly as served and authenticated: generated requests for
//! every operation must never get a 5xx (`not_a_server_error`), and each
//! document must load without schema errors. Then the apps/v1 document
//! again without credentials (every answer 401 or 403) and as a
//! ServiceAccount bound to `view` (no 5xx). Bounded: a few examples per
//! operation, one-second watches (tests/python/schemathesis_hooks.py).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::kube::ShoalUp;

#[test]
fn every_openapi_document_survives_schemathesis() {
    let st = support::venv_program("schemathesis");
    let up = ShoalUp::start();
    let (code, root) = up.curl("GET", "/openapi/v3", "application/json", None);
    assert_eq!(code, 200, "{root}");
    let root: serde_json::Value = serde_json::from_str(&root).unwrap();
    let documents: Vec<String> = root["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(documents.len() > 10, "{documents:?}");
    let hooks = format!("{}/../tests/python", env!("CARGO_MANIFEST_DIR"));
    // schemathesis on one document, with this Authorization (if any) and
    // these checks; the failure text, if it failed.
    let fuzz = |file: &std::path::Path, token: Option<&str>, checks: &str, refused: bool| {
        let mut command = Command::new(&st);
        command.arg("run").arg(file).args(["--url", &up.server()]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if refused {
            command.env("SHOAL_EXPECT_REFUSED", "1");
        }
        let out = command
            .arg("--tls-verify")
            .arg(up.ca_file())
            .args(["--checks", checks])
            .args(["--phases", "examples,fuzzing"])
            .args(["--max-examples", "3", "--request-timeout", "10"])
            .args(["--generation-deterministic"])
            .current_dir(up.data_dir())
            .env("PYTHONPATH", &hooks)
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!(
            "{} ({}):\n{summary}",
            file.display(),
            if token.is_some() {
                "with a token"
            } else {
                "no credentials"
            }
        );
        (!out.status.success() || summary.contains("Schema Error")).then(|| {
            format!(
                "{}:\n{stdout}\n{}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let admin = up.token();
    let mut failures = Vec::new();
    let mut files = Vec::new();
    for path in &documents {
        let (code, body) = up.curl(
            "GET",
            &format!("/openapi/v3/{path}"),
            "application/json",
            None,
        );
        assert_eq!(code, 200, "{path}");
        let file = up
            .data_dir()
            .join(format!("{}.json", path.replace('/', "_")));
        std::fs::write(&file, body).unwrap();
        failures.extend(fuzz(&file, Some(&admin), "not_a_server_error", false));
        files.push((path.clone(), file));
    }
    // Without credentials (system:anonymous): refused, never served.
    // As a ServiceAccount that may only read one namespace: no 5xx.
    up.ok(&["create", "serviceaccount", "fuzz"]);
    up.ok(&[
        "create",
        "rolebinding",
        "fuzz-view",
        "--clusterrole=view",
        "--serviceaccount=default:fuzz",
    ]);
    let viewer = up.ok(&["create", "token", "fuzz"]);
    for (path, file) in files.iter().filter(|(p, _)| p == "apis/apps/v1") {
        eprintln!("{path} again, without credentials and as a viewer");
        failures.extend(fuzz(
            file,
            None,
            "not_a_server_error,refused_without_credentials",
            true,
        ));
        failures.extend(fuzz(file, Some(viewer.trim()), "not_a_server_error", false));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
