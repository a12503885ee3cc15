"""kubernetes_asyncio (generated from the OpenAPI document, asynchronous, on
aiohttp) against shoal: list, get, create, patch (merge, strategic,
apply), watch from a resourceVersion with bookmarks, scale, logs, delete.
Run by tests/client_libraries.rs with KUBECONFIG pointing at a cluster with
a node; prints one line per step and exits non-zero on the first failure."""
import asyncio
import sys

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

ns = sys.argv[1] if len(sys.argv) > 1 else "default"


async def main():
    await config.load_kube_config()
    async with client.ApiClient() as api:
        v1 = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)

        listed = await v1.list_namespaced_config_map(ns)
        rv = listed.metadata.resource_version
        print("listed", len(listed.items), "rv", rv)

        # Watch from the list's resourceVersion, asking for bookmarks.
        events = []

        async def watch_config_maps():
            w = watch.Watch()
            async with w.stream(v1.list_namespaced_config_map, ns, resource_version=rv,
                                allow_watch_bookmarks=True, timeout_seconds=20) as stream:
                async for event in stream:
                    obj = event["object"]
                    name = obj.metadata.name if hasattr(obj, "metadata") else None
                    events.append((event["type"], name))
                    if event["type"] == "DELETED":
                        return

        watcher = asyncio.create_task(watch_config_maps())

        body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="aio", labels={"app": "aio"}),
                                  data={"a": "1"})
        created = await v1.create_namespaced_config_map(ns, body)
        managers = [m.manager for m in created.metadata.managed_fields]
        print("created", created.metadata.name, "managers", managers)
        got = await v1.read_namespaced_config_map("aio", ns)
        assert got.data == {"a": "1"}, got.data

        # Merge and strategic patches (the client picks by content type),
        # then a server-side apply.
        await v1.patch_namespaced_config_map("aio", ns, {"data": {"b": "2"}},
                                             _content_type="application/merge-patch+json")
        await v1.patch_namespaced_config_map("aio", ns, {"data": {"c": "3"}},
                                             _content_type="application/strategic-merge-patch+json")
        applied = await v1.patch_namespaced_config_map(
            "aio", ns,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "aio"}, "data": {"d": "4"}},
            field_manager="aio-apply", _content_type="application/apply-patch+yaml")
        assert applied.data == {"a": "1", "b": "2", "c": "3", "d": "4"}, applied.data
        print("patched", sorted(applied.data))

        # Scale a Deployment through its scale subresource.
        labels = {"app": "aio-web"}
        await apps.create_namespaced_deployment(ns, client.V1Deployment(
            metadata=client.V1ObjectMeta(name="aio-web"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[client.V1Container(
                        name="c", image="busybox", command=["sleep", "3600"])]),
                ),
            ),
        ))
        scale = await apps.read_namespaced_deployment_scale("aio-web", ns)
        assert scale.spec.replicas == 1
        await apps.patch_namespaced_deployment_scale("aio-web", ns, {"spec": {"replicas": 3}})
        scaled = await apps.read_namespaced_deployment("aio-web", ns)
        print("scaled", scaled.spec.replicas)
        assert scaled.spec.replicas == 3
        await apps.patch_namespaced_deployment_scale("aio-web", ns, {"spec": {"replicas": 0}})
        await apps.delete_namespaced_deployment("aio-web", ns)

        # Logs.
        await v1.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name="aio-logs"),
            spec=client.V1PodSpec(containers=[client.V1Container(
                name="c", image="busybox", command=["sh", "-c", "echo hello from asyncio; sleep 3600"])]),
        ))
        text = ""
        for _ in range(120):
            try:
                text = await v1.read_namespaced_pod_log("aio-logs", ns)
                if text:
                    break
            except ApiException:
                pass
            await asyncio.sleep(0.5)
        print("logs", repr(text))
        assert text == "hello from asyncio\n", text
        await v1.delete_namespaced_pod("aio-logs", ns, grace_period_seconds=0)

        # Errors come back as ApiException with Kubernetes' codes.
        try:
            await v1.create_namespaced_config_map(ns, body)
            raise SystemExit("a second create should fail")
        except ApiException as e:
            print("conflict", e.status, e.reason)
            assert e.status == 409

        await v1.delete_namespaced_config_map("aio", ns)
        await asyncio.wait_for(watcher, 30)
        print("watched", events)
        mine = [e for e in events if e[1] == "aio"]
        assert mine[0][0] == "ADDED" and mine[-1][0] == "DELETED", events
        assert all(kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK") for kind, _ in events), events
        print("ok")


asyncio.run(main())
