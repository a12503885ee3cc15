"""The official Python client against shoal: list, create, patch and watch
pods. Run by tests/python_client.rs with KUBECONFIG pointing at the cluster;
prints one line per step and exits non-zero on the first failure."""
import sys
import threading

from kubernetes import client, config, watch

config.load_kube_config()
v1 = client.CoreV1Api()
ns = sys.argv[1] if len(sys.argv) > 1 else "default"

pods = v1.list_namespaced_pod(ns)
print("listed", len(pods.items), "rv", pods.metadata.resource_version)

events = []
ready = threading.Event()


def watch_pods():
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_pod, ns, resource_version=pods.metadata.resource_version,
                          timeout_seconds=20):
        events.append((event["type"], event["object"].metadata.name,
                       (event["object"].metadata.labels or {}).get("stage")))
        if event["type"] == "DELETED":
            w.stop()
            break


watcher = threading.Thread(target=watch_pods)
watcher.start()

pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="py-pod", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox", command=["sleep", "3600"])]),
)
created = v1.create_namespaced_pod(ns, pod)
print("created", created.metadata.name, created.status.phase, created.spec.restart_policy)
assert created.status.phase == "Pending"
assert created.spec.restart_policy == "Always"

patched = v1.patch_namespaced_pod("py-pod", ns, {"metadata": {"labels": {"stage": "patched"}}})
print("patched", patched.metadata.labels["stage"])
assert patched.metadata.labels == {"app": "py", "stage": "patched"}

selected = v1.list_namespaced_pod(ns, label_selector="stage=patched")
assert [p.metadata.name for p in selected.items] == ["py-pod"], selected.items

try:
    v1.create_namespaced_pod(ns, pod)
    raise SystemExit("a second create should fail")
except client.exceptions.ApiException as e:
    print("conflict", e.status, e.reason)
    assert e.status == 409

v1.delete_namespaced_pod("py-pod", ns)
watcher.join(30)
print("watched", events)
assert events[0][:2] == ("ADDED", "py-pod"), events
assert ("MODIFIED", "py-pod", "patched") in events, events
assert events[-1][:2] == ("DELETED", "py-pod"), events
print("ok")
