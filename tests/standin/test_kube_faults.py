"""Fault injection and request recording."""

from __future__ import annotations

import asyncio
import re

import pytest
from kubernetes.aio import client

from tests.standins.kube.clients import aio_api_client
from tests.standins.kube.server import KubeStandIn

NS, NAME = "ml-prod", "fraud-scorer"
PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"


async def test_nth_matching_request_fails_with_500_once(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    fault = kube.fail("GET", PATH, 500, nth=2)
    async with await aio_api_client(kube.kubeconfig) as api:
        apps = client.AppsV1Api(api)
        await apps.read_namespaced_deployment(NAME, NS)
        with pytest.raises(client.ApiException) as raised:
            await apps.read_namespaced_deployment(NAME, NS)
        await apps.read_namespaced_deployment(NAME, NS)
    assert raised.value.status == 500
    assert '"reason":"InternalError"' in raised.value.body
    assert fault.hits == 1
    assert [r.status for r in kube.requests_to("GET", PATH)] == [200, 500, 200]
    assert [r.fault for r in kube.requests_to("GET", PATH)] == [False, True, False]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(409, "Conflict"), (429, "TooManyRequests"), (403, "Forbidden"), (503, "ServiceUnavailable")],
)
async def test_fault_statuses_use_the_api_server_wording(
    kube: KubeStandIn, status: int, reason: str
) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    kube.fail("PATCH", re.compile(r"/deployments/fraud-scorer$"), status, retry_after=2)
    async with await aio_api_client(kube.kubeconfig) as api:
        apps = client.AppsV1Api(api)
        response = await apps.patch_namespaced_deployment_without_preload_content(
            NAME, NS, {"metadata": {"annotations": {"a": "b"}}}
        )
        async with response:
            body = await response.json()
    assert response.status == status
    assert body["kind"] == "Status" and body["reason"] == reason and body["code"] == status
    if status == 429:
        assert response.headers["Retry-After"] == "2"
        assert body["details"] == {"retryAfterSeconds": 2}
    if status == 409:
        assert body["message"].startswith("Operation cannot be fulfilled on deployments.apps")
    if status == 403:
        assert 'cannot patch resource "deployments" in API group "apps"' in body["message"]
    assert "a" not in kube.deployment(NS, NAME)["metadata"].get("annotations", {})


async def test_times_none_fails_forever_and_clear_faults_stops_it(kube: KubeStandIn) -> None:
    await kube.create_namespace(NS)
    kube.fail("*", "/api/v1/namespaces/*/services*", 500, times=None)
    async with await aio_api_client(kube.kubeconfig) as api:
        core = client.CoreV1Api(api)
        for _ in range(3):
            with pytest.raises(client.ApiException):
                await core.list_namespaced_service(NS)
        kube.clear_faults()
        services = await core.list_namespaced_service(NS)
    assert services.items == []


async def test_delay_fault_holds_the_answer(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    kube.fail("GET", PATH, None, delay=0.3)
    async with await aio_api_client(kube.kubeconfig) as api:
        apps = client.AppsV1Api(api)
        with pytest.raises(asyncio.TimeoutError):
            await apps.read_namespaced_deployment(NAME, NS, _request_timeout=0.05)
        deployment = await apps.read_namespaced_deployment(NAME, NS)
    assert deployment.metadata.name == NAME


async def test_requests_are_recorded_with_headers_and_parsed_bodies(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    async with await aio_api_client(kube.kubeconfig) as api:
        apps = client.AppsV1Api(api)
        await apps.read_namespaced_deployment(NAME, NS)
        await apps.patch_namespaced_deployment(
            NAME,
            NS,
            {"spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/version": "v2"}}}}},
        )
    patches = kube.requests_to("PATCH", PATH)
    assert len(patches) == 1
    (patch,) = patches
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {
        "spec": {"template": {"metadata": {"labels": {"app.kubernetes.io/version": "v2"}}}}
    }
    assert patch.headers["authorization"] == f"Bearer {kube.token}"
    assert patch.status == 200
    (get,) = kube.requests_to("GET", PATH)
    # the asyncio client sends a JSON content type even on GET (fixture 017)
    assert get.headers["Content-Type"] == "application/json"
    assert get.headers["User-Agent"].startswith("OpenAPI-Generator/")
