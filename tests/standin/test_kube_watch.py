"""Watch streams: live through a rollout (aio, fixture 068), replay from an old RV (sync, 087)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kubernetes
import pytest
from kubernetes.aio import client, watch

from tests.standins.kube.clients import aio_api_client, sync_api_client
from tests.standins.kube.recorded import exchange
from tests.standins.kube.server import KubeStandIn
from tests.standins.kube.threaded import ThreadedKube

NS, NAME = "ml-prod", "fraud-scorer"


def progressing(obj: dict[str, Any]) -> str | None:
    for condition in obj["status"].get("conditions") or []:
        if condition["type"] == "Progressing":
            return condition["reason"]
    return None


async def test_aio_watch_follows_a_rollout_like_the_recorded_stream(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    since = kube.deployment(NS, NAME)["metadata"]["resourceVersion"]
    seen: list[dict[str, Any]] = []
    async with await aio_api_client(kube.kubeconfig) as api:
        apps = client.AppsV1Api(api)
        async with watch.Watch() as stream:

            async def consume() -> None:
                async for event in stream.stream(
                    apps.list_namespaced_deployment, NS, resource_version=since, timeout_seconds=10
                ):
                    seen.append({"type": event["type"], "object": event["raw_object"]})
                    obj = event["raw_object"]
                    if (
                        obj["metadata"]["generation"] == 2
                        and obj["status"].get("observedGeneration") == 2
                        and progressing(obj) == "NewReplicaSetAvailable"
                    ):
                        stream.stop()
                        return

            consumer = asyncio.create_task(consume())
            await kube.wait_for(
                lambda: kube.requests_to("GET", "*/deployments"), 5.0, "the watch request"
            )
            await apps.patch_namespaced_deployment(NAME, NS, exchange(69)["request"]["body"])
            await asyncio.wait_for(consumer, 10)

    watch_request = kube.requests_to("GET", f"/apis/apps/v1/namespaces/{NS}/deployments")[-1]
    assert watch_request.query["watch"] == "true"
    recorded_first = json.loads(exchange(68)["response"]["body"].splitlines()[0])
    first = seen[0]
    assert first["type"] == "MODIFIED" == recorded_first["type"]
    assert set(first["object"]) == set(recorded_first["object"])
    assert first["object"]["kind"] == "Deployment" and first["object"]["apiVersion"] == "apps/v1"
    # the first event is the PATCH itself: new generation, old status
    assert first["object"]["metadata"]["generation"] == 2
    assert first["object"]["status"]["observedGeneration"] == 1
    reasons = [progressing(e["object"]) for e in seen]
    steps = [r for n, r in enumerate(reasons) if n == 0 or reasons[n - 1] != r]
    assert steps == [
        "NewReplicaSetAvailable",
        "NewReplicaSetCreated",
        "ReplicaSetUpdated",
        "NewReplicaSetAvailable",
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
    assert versions == sorted(versions)
    assert any(e["object"]["status"].get("unavailableReplicas") for e in seen)


def test_sync_watch_replays_every_change_since_an_old_resource_version(
    kube_threaded: ThreadedKube,
) -> None:
    created = kube_threaded.create_deployment(NS, NAME, "v1", wait=False)
    kube_threaded.wait_rollout_complete(NS, NAME)
    kube_threaded.set_version(NS, NAME, "v2", wait=True)
    with sync_api_client(kube_threaded.kubeconfig) as api:
        apps = kubernetes.client.AppsV1Api(api)
        stream = kubernetes.watch.Watch()
        events = list(
            stream.stream(
                apps.list_namespaced_deployment,
                NS,
                resource_version=created["metadata"]["resourceVersion"],
                timeout_seconds=1,
            )
        )
    assert {e["type"] for e in events} == {"MODIFIED"}
    revisions = [
        e["raw_object"]["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
        for e in events
    ]
    assert revisions[0] == "1" and revisions[-1] == "2"
    assert events[-1]["object"].status.updated_replicas == 2
    assert kube_threaded.requests_to("GET", "*/deployments")[-1].query["watch"] == "true"


async def test_watch_1_from_rv_0_sends_current_objects_then_ends_at_timeout(
    kube: KubeStandIn,
) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    url = f"{kube.url}/apis/apps/v1/namespaces/{NS}/deployments"
    async with aiohttp.ClientSession() as session:
        response = await session.get(url, params={"watch": "1", "timeoutSeconds": "1"})
        lines = (await response.text()).splitlines()
    assert response.status == 200
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]


async def test_watch_from_a_compacted_resource_version_is_410(kube: KubeStandIn) -> None:
    seeded = await kube.create_deployment(NS, NAME, "v1", wait=False)
    await kube.wait_rollout_complete(NS, NAME)
    kube.compact()
    async with await aio_api_client(kube.kubeconfig) as api, watch.Watch() as stream:
        apps = client.AppsV1Api(api)
        with pytest.raises(client.ApiException) as raised:
            async for _ in stream.stream(
                apps.list_namespaced_deployment,
                NS,
                resource_version=seeded["metadata"]["resourceVersion"],
                timeout_seconds=5,
            ):
                pass
    assert raised.value.status == 410


async def test_bookmarks_carry_the_resource_version_of_the_last_change(
    kube: KubeStandIn,
) -> None:
    kube.bookmark_interval = 0.3  # the API server's heartbeat is a minute; 3 in this 1 s watch
    await kube.create_deployment(NS, NAME, "v1")
    since = kube.deployment(NS, NAME)["metadata"]["resourceVersion"]
    seen: list[dict[str, Any]] = []
    async with await aio_api_client(kube.kubeconfig) as api, watch.Watch() as stream:
        apps = client.AppsV1Api(api)
        async for event in stream.stream(
            apps.list_namespaced_deployment,
            NS,
            resource_version=since,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        ):
            seen.append({"type": event["type"], "object": event["raw_object"]})
            if len(seen) == 1:
                await kube.patch("deployments", NS, NAME, {"metadata": {"labels": {"x": "y"}}})
    bookmarks = [e["object"] for e in seen if e["type"] == "BOOKMARK"]
    assert len(bookmarks) == 3
    recorded = json.loads(exchange(124)["response"]["body"].splitlines()[-1])["object"]
    last_rv = kube.deployment(NS, NAME)["metadata"]["resourceVersion"]
    assert int(last_rv) > int(since)
    assert bookmarks[-1] == {**recorded, "metadata": {"resourceVersion": last_rv}}
    assert [e["type"] for e in seen if e["type"] != "BOOKMARK"] == ["MODIFIED"]


async def test_no_bookmarks_unless_asked(kube: KubeStandIn) -> None:
    kube.bookmark_interval = 0.3
    await kube.create_namespace(NS)
    url = f"{kube.url}/apis/apps/v1/namespaces/{NS}/deployments"
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            url, params={"watch": "true", "timeoutSeconds": "1", "resourceVersion": "1"}
        )
        assert await response.text() == ""
