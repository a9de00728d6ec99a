"""Verbs, errors and the non-Deployment objects, driven by `kubernetes.aio` (fixtures 049-066)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client

from tests.standins.kube.clients import aio_api_client
from tests.standins.kube.recorded import differences, exchange, response_body
from tests.standins.kube.server import KubeStandIn

NS, NAME = "ml-prod", "fraud-scorer"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"


@pytest.fixture
async def api(kube: KubeStandIn) -> AsyncIterator[client.ApiClient]:
    api_client = await aio_api_client(kube.kubeconfig)
    async with api_client:
        yield api_client


@pytest.fixture
async def seeded(kube: KubeStandIn) -> dict[str, Any]:
    """fraud-scorer at v1, rolled out, the controller settled (its resourceVersion current)."""
    return await kube.create_deployment(NS, NAME, "v1")


async def raw(call: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON body) of a client call, errors included, without model coercion."""
    method = getattr(call.__self__, f"{call.__name__}_without_preload_content")
    response = await method(*args, **kwargs)
    async with response:
        return response.status, await response.json()


def assert_status_body(actual: Any, sequence: int) -> None:
    assert actual == response_body(sequence), json.dumps(actual)


# ---------------------------------------------------------------- errors as recorded


async def test_stale_put_is_409_conflict(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    apps = client.AppsV1Api(api)
    _, stale = await raw(apps.read_namespaced_deployment, NAME, NS)
    await kube.scale(NS, NAME, 3)
    stale["metadata"].setdefault("annotations", {})["example.com/touched-by"] = "stale-writer"
    status, body = await raw(apps.replace_namespaced_deployment, NAME, NS, stale)
    assert status == 409
    assert_status_body(body, 49)


async def test_put_with_current_resource_version_is_applied(
    api: client.ApiClient, seeded: dict[str, Any]
) -> None:
    apps = client.AppsV1Api(api)
    _, current = await raw(apps.read_namespaced_deployment, NAME, NS)
    current["metadata"]["annotations"]["example.com/touched-by"] = "fresh-writer"
    status, body = await raw(apps.replace_namespaced_deployment, NAME, NS, current)
    assert status == 200
    assert body["metadata"]["annotations"]["example.com/touched-by"] == "fresh-writer"
    assert int(body["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])
    # a Deployment's annotations count as a change of its generation (fixture 118)
    assert body["metadata"]["generation"] == current["metadata"]["generation"] + 1


async def test_put_of_an_unchanged_object_keeps_generation_and_resource_version(
    api: client.ApiClient, seeded: dict[str, Any]
) -> None:
    apps = client.AppsV1Api(api)
    _, current = await raw(apps.read_namespaced_deployment, NAME, NS)
    status, body = await raw(apps.replace_namespaced_deployment, NAME, NS, current)
    assert status == 200
    assert body["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    assert body["metadata"]["generation"] == current["metadata"]["generation"]


@pytest.mark.parametrize(
    "content_type", ["application/merge-patch+json", "application/strategic-merge-patch+json"]
)
async def test_patch_carrying_a_stale_resource_version_is_409(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn, content_type: str
) -> None:
    apps = client.AppsV1Api(api)
    stale_rv = seeded["metadata"]["resourceVersion"]
    await kube.scale(NS, NAME, 3)
    # the controller writes status after the scale: read the resourceVersion once it is done
    await kube.wait_settled()
    patch = {"metadata": {"resourceVersion": stale_rv, "annotations": {"x": "y"}}}
    status, body = await raw(
        apps.patch_namespaced_deployment, NAME, NS, patch, _content_type=content_type
    )
    assert status == 409
    assert_status_body(body, 49)
    assert "x" not in kube.deployment(NS, NAME)["metadata"]["annotations"]

    fresh = kube.deployment(NS, NAME)["metadata"]["resourceVersion"]
    patch["metadata"]["resourceVersion"] = fresh
    status, body = await raw(
        apps.patch_namespaced_deployment, NAME, NS, patch, _content_type=content_type
    )
    assert status == 200
    assert body["metadata"]["annotations"]["x"] == "y"


async def test_failed_json_patch_test_op_is_422_not_409(
    api: client.ApiClient, seeded: dict[str, Any]
) -> None:
    apps = client.AppsV1Api(api)
    status, body = await raw(
        apps.patch_namespaced_deployment, NAME, NS, exchange(50)["request"]["body"]
    )
    assert status == 422
    assert_status_body(body, 50)


async def test_missing_deployment_is_404(api: client.ApiClient, kube: KubeStandIn) -> None:
    await kube.create_namespace(NS)
    status, body = await raw(client.AppsV1Api(api).read_namespaced_deployment, "no-such-model", NS)
    assert status == 404
    assert_status_body(body, 51)


async def test_negative_replicas_is_422_with_causes(
    api: client.ApiClient, seeded: dict[str, Any]
) -> None:
    status, body = await raw(
        client.AppsV1Api(api).patch_namespaced_deployment, NAME, NS, {"spec": {"replicas": -1}}
    )
    assert status == 422
    assert_status_body(body, 52)


async def test_injected_403_reads_like_rbac(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    user = "system:serviceaccount:ml-prod:nobody"
    kube.fail("GET", DEPLOYMENT_PATH, 403, user=user)
    kube.fail("GET", f"/apis/apps/v1/namespaces/{NS}/deployments", 403, user=user)
    apps = client.AppsV1Api(api)
    status, body = await raw(apps.read_namespaced_deployment, NAME, NS)
    assert (status, body) == (403, response_body(55))
    status, body = await raw(apps.list_namespaced_deployment, NS)
    assert (status, body) == (403, response_body(56))
    status, _ = await raw(apps.read_namespaced_deployment, NAME, NS)
    assert status == 200


async def test_octet_stream_body_is_415(kube: KubeStandIn) -> None:
    await kube.create_namespace(NS)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{kube.url}/apis/apps/v1/namespaces/{NS}/deployments",
            data=json.dumps(exchange(8)["request"]["body"]).encode(),
            headers={"Content-Type": "application/octet-stream"},
        )
        body = await response.json()
    assert response.status == 415
    assert body["reason"] == "UnsupportedMediaType"
    assert body["message"] == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )
    assert kube.get("deployments", NS, NAME) is None


async def test_create_existing_is_409_already_exists(
    api: client.ApiClient, seeded: dict[str, Any]
) -> None:
    status, body = await raw(
        client.AppsV1Api(api).create_namespaced_deployment, NS, exchange(8)["request"]["body"]
    )
    assert status == 409
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'deployments.apps "fraud-scorer" already exists'


async def test_create_in_missing_namespace_is_404(api: client.ApiClient) -> None:
    status, body = await raw(
        client.AppsV1Api(api).create_namespaced_deployment,
        "nowhere",
        exchange(8)["request"]["body"] | {"metadata": {"name": NAME}},
    )
    assert status == 404
    assert body["message"] == 'namespaces "nowhere" not found'


async def test_delete_cascades_to_replicasets_and_pods(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    status, body = await raw(client.AppsV1Api(api).delete_namespaced_deployment, NAME, NS)
    assert status == 200
    assert body["status"] == "Success"
    assert body["details"] == {
        "name": NAME,
        "group": "apps",
        "kind": "deployments",
        "uid": seeded["metadata"]["uid"],
    }
    assert kube.list("replicasets", NS) == []
    assert kube.list("pods", NS) == []


# ---------------------------------------------------------------- list and selectors


async def test_list_with_label_and_field_selectors(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_deployment(NS, "fraud-scorer-blue", "v1", app=NAME, labels={"slot": "blue"})
    await kube.create_deployment(NS, "fraud-scorer-green", "v2", app=NAME, labels={"slot": "green"})
    apps = client.AppsV1Api(api)
    _, body = await raw(apps.list_namespaced_deployment, NS, label_selector="slot=green")
    assert [d["metadata"]["name"] for d in body["items"]] == ["fraud-scorer-green"]
    _, body = await raw(
        apps.list_namespaced_deployment,
        NS,
        field_selector="metadata.name=fraud-scorer-blue",
        limit=500,
        resource_version="0",
    )
    assert [d["metadata"]["name"] for d in body["items"]] == ["fraud-scorer-blue"]
    assert body["metadata"] == {"resourceVersion": str(kube.store.rv)}
    assert "kind" not in body["items"][0]
    _, body = await raw(apps.list_namespaced_deployment, NS, label_selector="slot in (blue,x)")
    assert [d["metadata"]["name"] for d in body["items"]] == ["fraud-scorer-blue"]
    _, pods = await raw(
        client.CoreV1Api(api).list_namespaced_pod, NS, label_selector="app.kubernetes.io/version=v2"
    )
    assert len(pods["items"]) == 2


# ---------------------------------------------------------------- Service (057-059)


async def test_service_strategic_merge_of_selector(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_namespace(NS)
    core = client.CoreV1Api(api)
    status, created = await raw(core.create_namespaced_service, NS, exchange(57)["request"]["body"])
    assert status == 201
    ignore = frozenset({"$.metadata.managedFields", "$.spec.clusterIPs"})
    assert not differences(created, response_body(57), ignore=ignore)
    status, patched = await raw(
        core.patch_namespaced_service, NAME, NS, exchange(58)["request"]["body"]
    )
    assert status == 200
    assert patched["spec"]["selector"] == {"app": "fraud-scorer", "slot": "green"}
    assert not differences(patched, response_body(58), ignore=ignore)
    _, read = await raw(core.read_namespaced_service, NAME, NS)
    assert not differences(read, response_body(59), ignore=ignore)
    # a JSON merge patch replaces lists instead of merging them
    _, merged = await raw(
        core.patch_namespaced_service,
        NAME,
        NS,
        {"spec": {"ports": [{"name": "grpc", "port": 9000}]}},
        _content_type="application/merge-patch+json",
    )
    assert [p["name"] for p in merged["spec"]["ports"]] == ["grpc"]


# ---------------------------------------------------------------- Events (061-063)


async def test_event_created_in_events_v1_reads_back_in_both_views(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    body = exchange(61)["request"]["body"]
    body["regarding"]["uid"] = seeded["metadata"]["uid"]
    events = client.EventsV1Api(api)
    status, created = await raw(events.create_namespaced_event, NS, body)
    assert status == 201
    ignore = frozenset({"$.regarding.resourceVersion"})
    assert not differences(created, response_body(61), ignore=ignore)

    _, listed = await raw(events.list_namespaced_event, NS)
    mine = next(e for e in listed["items"] if e["reason"] == "ModelRolledBack")
    recorded = next(e for e in response_body(62)["items"] if e["reason"] == "ModelRolledBack")
    assert not differences(mine, recorded, ignore=ignore | {"$.metadata.managedFields"})

    _, core_list = await raw(client.CoreV1Api(api).list_namespaced_event, NS)
    core_view = next(e for e in core_list["items"] if e["reason"] == "ModelRolledBack")
    recorded_core = next(e for e in response_body(63)["items"] if e["reason"] == "ModelRolledBack")
    assert not differences(
        core_view,
        recorded_core,
        ignore=frozenset({"$.involvedObject.resourceVersion", "$.metadata.managedFields"}),
    )
    assert core_view["metadata"]["uid"] == mine["metadata"]["uid"]
    assert core_view["metadata"]["resourceVersion"] == mine["metadata"]["resourceVersion"]


async def test_controller_scaling_events_look_like_the_recorded_ones(
    api: client.ApiClient, seeded: dict[str, Any]
) -> None:
    _, listed = await raw(client.EventsV1Api(api).list_namespaced_event, NS)
    scaling = [e for e in listed["items"] if e["reason"] == "ScalingReplicaSet"]
    recorded = next(e for e in response_body(62)["items"] if e["reason"] == "ScalingReplicaSet")
    assert [e["note"].split(" fraud-scorer-")[0] for e in scaling] == ["Scaled up replica set"]
    assert scaling[0]["note"].endswith("from 0 to 2")
    assert not differences(
        scaling[0],
        recorded,
        ignore=frozenset(
            {"$.metadata.managedFields", "$.metadata.name", "$.regarding.resourceVersion"}
        ),
    )
    assert scaling[0]["metadata"]["name"].startswith("fraud-scorer.")


# ---------------------------------------------------------------- scale subresource (064-066)


async def test_scale_subresource(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    apps = client.AppsV1Api(api)
    _, scale = await raw(apps.read_namespaced_deployment_scale, NAME, NS)
    assert not differences(scale, response_body(64))
    generation = seeded["metadata"]["generation"]
    status, patched = await raw(
        apps.patch_namespaced_deployment_scale, NAME, NS, exchange(65)["request"]["body"]
    )
    assert status == 200
    assert not differences(patched, response_body(65))
    await kube.wait_rollout_complete(NS, NAME)
    _, after = await raw(apps.read_namespaced_deployment_scale, NAME, NS)
    assert not differences(after, response_body(66))
    deployment = kube.deployment(NS, NAME)
    assert deployment["metadata"]["generation"] == generation + 1
    managers = [
        (m["manager"], m.get("subresource")) for m in deployment["metadata"]["managedFields"]
    ]
    assert ("OpenAPI-Generator", "scale") in managers
    assert len(kube.pods(NS, NAME)) == 3


async def test_scale_to_zero_by_merge_patch(api: client.ApiClient, kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, "scorer-canary", "v3", replicas=1)
    apps = client.AppsV1Api(api)
    status, scale = await raw(
        apps.patch_namespaced_deployment_scale,
        "scorer-canary",
        NS,
        exchange(116)["request"]["body"],
        _content_type="application/merge-patch+json",
    )
    assert status == 200
    assert not differences(scale, response_body(116))  # `spec: {}`, the old status.replicas
    deployment = await kube.wait_rollout_complete(NS, "scorer-canary")
    # owning no field any more, the scale entry is gone (117)
    managers = [
        (m["manager"], m.get("subresource")) for m in deployment["metadata"]["managedFields"]
    ]
    assert ("OpenAPI-Generator", "scale") not in managers
    status, scale = await raw(
        apps.patch_namespaced_deployment_scale, "scorer-canary", NS, {"spec": {"replicas": 2}}
    )
    entry = next(
        m
        for m in kube.deployment(NS, "scorer-canary")["metadata"]["managedFields"]
        if m.get("subresource") == "scale"
    )
    assert status == 200
    assert "time" not in entry  # as the API server writes it, and so listed first (067)
    assert kube.deployment(NS, "scorer-canary")["metadata"]["managedFields"][0] == entry


# ---------------------------------------------------------------- auth


async def test_a_required_token_is_enforced(api: client.ApiClient, kube: KubeStandIn) -> None:
    kube.require_token("something-else")
    status, body = await raw(client.CoreV1Api(api).list_namespace)
    assert status == 401
    assert body["reason"] == "Unauthorized"
    kube.require_token(kube.token)
    status, _ = await raw(client.CoreV1Api(api).list_namespace)
    assert status == 200
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{kube.url}/api/v1/namespaces")
        assert response.status == 401


async def test_requests_without_authorization_are_accepted_by_default(kube: KubeStandIn) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{kube.url}/api/v1/namespaces/default")
        body = await response.json()
    assert response.status == 200
    assert body["metadata"]["name"] == "default"
