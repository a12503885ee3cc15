"""lightkube (a hand-written, synchronous client on httpx) against shoal:
list, get, create, patch (merge, strategic, apply), watch from a
resourceVersion, scale, logs, delete. Run by tests/client_libraries.rs with
KUBECONFIG pointing at a cluster with a node; prints one line per step and
exits non-zero on the first failure."""
import sys
import threading
import time

from lightkube import ApiError, Client
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.autoscaling_v1 import ScaleSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod
from lightkube.types import PatchType

ns = sys.argv[1] if len(sys.argv) > 1 else "default"
client = Client(namespace=ns)

# Create, get, list.
created = client.create(ConfigMap(metadata=ObjectMeta(name="lk", labels={"app": "lk"}), data={"a": "1"}))
rv = created.metadata.resourceVersion
got = client.get(ConfigMap, "lk")
assert got.data == {"a": "1"}, got.data
# No fieldManager given: the manager is lightkube's User-Agent.
managers = [m.manager for m in got.metadata.managedFields]
print("created", got.metadata.name, "managers", managers)
listed = [c.metadata.name for c in client.list(ConfigMap, labels={"app": "lk"})]
assert listed == ["lk"], listed
print("listed", listed)

# Watch from the create's resourceVersion, in the background.
events = []


def watch():
    for op, obj in client.watch(ConfigMap, resource_version=rv, labels={"app": "lk"}, server_timeout=20):
        events.append((op, obj.metadata.name, dict(obj.data or {})))
        if op == "DELETED":
            return


watcher = threading.Thread(target=watch, daemon=True)
watcher.start()

# Patches: merge, strategic, apply (server-side, with its own manager).
client.patch(ConfigMap, "lk", {"data": {"b": "2"}}, patch_type=PatchType.MERGE)
client.patch(ConfigMap, "lk", {"data": {"c": "3"}}, patch_type=PatchType.STRATEGIC)
applied = client.apply(
    ConfigMap(metadata=ObjectMeta(name="lk", labels={"app": "lk"}), data={"d": "4"}),
    field_manager="lk-apply",
)
assert applied.data == {"a": "1", "b": "2", "c": "3", "d": "4"}, applied.data
managers = sorted({m.manager for m in applied.metadata.managedFields})
print("patched", sorted(applied.data), "managers", managers)
assert "lk-apply" in managers, managers
try:
    client.apply(
        ConfigMap(metadata=ObjectMeta(name="lk"), data={"d": "other"}),
        field_manager="someone-else",
    )
    raise SystemExit("a conflicting apply should fail")
except ApiError as e:
    print("conflict", e.status.code, e.status.reason)
    assert e.status.code == 409

# Scale a Deployment through its scale subresource.
labels = {"app": "lk-web"}
client.create(Deployment(
    metadata=ObjectMeta(name="lk-web"),
    spec=DeploymentSpec(
        replicas=1,
        selector=LabelSelector(matchLabels=labels),
        template=PodTemplateSpec(
            metadata=ObjectMeta(labels=labels),
            spec=PodSpec(containers=[Container(name="c", image="busybox", command=["sleep", "3600"])]),
        ),
    ),
))
# A read-modify-write: the deployment controller writing the status in
# between makes the resourceVersion stale (409, as Kubernetes answers);
# read again and retry, as clients do.
for attempt in range(10):
    scale = client.get(Deployment.Scale, "lk-web")
    assert scale.spec.replicas == 1, scale
    scale.spec = ScaleSpec(replicas=2)
    try:
        client.replace(scale)
        break
    except ApiError as e:
        assert e.status.code == 409 and attempt < 9, e.status
assert client.get(Deployment, "lk-web").spec.replicas == 2
client.patch(Deployment.Scale, "lk-web", {"spec": {"replicas": 0}})
print("scaled", client.get(Deployment.Scale, "lk-web").spec.replicas)
client.delete(Deployment, "lk-web")

# Logs of a pod that printed something.
client.create(Pod(
    metadata=ObjectMeta(name="lk-logs"),
    spec=PodSpec(containers=[Container(name="c", image="busybox", command=["sh", "-c", "echo hello from lightkube; sleep 3600"])]),
))
deadline = time.time() + 60
lines = []
while time.time() < deadline:
    try:
        lines = list(client.log("lk-logs"))
        if lines:
            break
    except ApiError:
        pass
    time.sleep(0.5)
print("logs", lines)
assert lines == ["hello from lightkube\n"], lines
client.delete(Pod, "lk-logs", grace_period=0)

# Delete; the watch sees the whole story.
client.delete(ConfigMap, "lk")
watcher.join(30)
kinds = [e[0] for e in events]
print("watched", kinds)
assert kinds[0] == "MODIFIED" and kinds[-1] == "DELETED", events
assert events[-2][2] == {"a": "1", "b": "2", "c": "3", "d": "4"}, events
try:
    client.get(ConfigMap, "lk")
    raise SystemExit("the ConfigMap should be gone")
except ApiError as e:
    assert e.status.code == 404
print("ok")
