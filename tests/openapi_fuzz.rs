//! schemathesis (PyPI) against every OpenAPI v3 document `shoal up`
//! serves, exactly as served and authenticated: generated requests for
//! every operation must never get a 5xx (`not_a_server_error`), and each
//! document must load without schema errors. Bounded: a few examples per
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
    let mut failures = Vec::new();
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
        let out = Command::new(&st)
            .arg("run")
            .arg(&file)
            .args(["--url", &up.server()])
            .args(["-H", &format!("Authorization: Bearer {}", up.token())])
            .arg("--tls-verify")
            .arg(up.ca_file())
            .args(["--checks", "not_a_server_error"])
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
        eprintln!("{path}:\n{summary}");
        if !out.status.success() || summary.contains("Schema Error") {
            failures.push(format!(
                "{path}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
