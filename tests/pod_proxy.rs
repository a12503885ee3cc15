//! `kubectl logs` and `kubectl exec` through the apiserver's proxy to the
//! node agent. The agent's side comes with the agent; until then a
//! stand-in speaking the agent's interface (tests/python/agent_standin.py)
//! answers, so what is tested here is the apiserver's half: finding the
//! node, authenticating to it, passing the query and splicing the upgrade.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::kube::{kubectl_at, Apiserver};
use support::{free_port, TestCluster};

struct Standin(Child);

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_and_exec_reach_the_agent() {
    let store = TestCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    // A CA for agents and a serving certificate for 127.0.0.1 signed by it.
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (ca, ca_key, cert, key) = (
        path("ca.crt"),
        path("ca.key"),
        path("agent.crt"),
        path("agent.key"),
    );
    std::fs::write(dir.path().join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for args in [
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                &ca_key,
                "-out",
                &ca,
                "-days",
                "1",
                "-subj",
                "/CN=agents-ca",
            ][..],
        ]
        .concat(),
        [
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                &key,
                "-out",
                &path("agent.csr"),
                "-subj",
                "/CN=agent",
            ][..],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &path("agent.csr"),
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "1",
            "-extfile",
            &path("ext"),
        ],
    ] {
        let status = Command::new("openssl")
            .args(&args)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    }
    let token_file = dir.path().join("agent-token");
    std::fs::write(&token_file, "agent-secret\n").unwrap();

    let port = free_port();
    let script = format!(
        "{}/../tests/python/agent_standin.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg("agent-secret")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the stand-in agent");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let _standin = Standin(child);

    let api = Apiserver::start_with(
        &store.endpoints(),
        &dir.path().join("apiserver"),
        None,
        &[
            // The node here has no agent renewing its Lease: without the
            // control loops nothing marks it lost or evicts its pod.
            "--no-controllers",
            "--kubelet-certificate-authority",
            &ca,
            "--kubelet-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}"#;
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"main","image":"busybox"},{"name":"side","image":"busybox"}]}}"#;
    let pending = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"pending"},"spec":{"containers":[{"name":"main","image":"busybox"}]}}"#;
    for (name, object) in [("node", node), ("pod", pod), ("pending", pending)] {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, object).unwrap();
        api.ok(&["create", "-f", file.to_str().unwrap()]);
    }
    let status = format!(
        r#"{{"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    api.ok(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);

    let logs = api.ok(&["logs", "p", "-c", "main"]);
    assert_eq!(logs.lines().next(), Some("log of default/p/main"), "{logs}");
    let logs = api.ok(&["logs", "p", "-c", "side", "--tail=3", "--timestamps"]);
    assert!(logs.starts_with("log of default/p/side"), "{logs}");
    assert!(
        logs.contains("tailLines=3") && logs.contains("timestamps=true"),
        "{logs}"
    );

    let out = kubectl_at(&api.kubeconfig, &["logs", "p", "-c", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("container nope is not valid for pod p"),
        "{err}"
    );
    let out = kubectl_at(&api.kubeconfig, &["logs", "pending"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pod pending does not have a host assigned"),
        "{err}"
    );

    let out = kubectl_at(
        &api.kubeconfig,
        &["exec", "p", "-c", "main", "--", "echo", "hi", "there"],
    );
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        api.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo hi there\n");
    std::thread::sleep(Duration::from_millis(10));
}
