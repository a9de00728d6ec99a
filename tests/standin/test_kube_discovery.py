"""Discovery documents and /version as the clients ask for them (fixtures 001-006)."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import kubernetes
import pytest

from tests.standins.kube.clients import sync_api_client
from tests.standins.kube.recorded import response_body
from tests.standins.kube.server import KubeStandIn
from tests.standins.kube.threaded import ThreadedKube


@pytest.fixture
def api(kube_threaded: ThreadedKube) -> Iterator[kubernetes.client.ApiClient]:
    with sync_api_client(kube_threaded.kubeconfig) as api_client:
        yield api_client


def served(recorded: dict, names: set[str]) -> list[dict]:
    return [r for r in recorded["resources"] if r["name"].split("/")[0] in names]


def test_typed_discovery_calls_match_the_recording(
    api: kubernetes.client.ApiClient, kube_threaded: ThreadedKube
) -> None:
    version = kubernetes.client.VersionApi(api).get_code()
    assert api.sanitize_for_serialization(version) == response_body(1)
    assert kubernetes.client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = kubernetes.client.ApisApi(api).get_api_versions()
    assert {"apps", "events.k8s.io"} <= {g.name for g in groups.groups}

    core = api.sanitize_for_serialization(kubernetes.client.CoreV1Api(api).get_api_resources())
    recorded = served(response_body(4), {"namespaces", "pods", "services", "events"})
    mine = {r["name"]: r for r in core["resources"]}
    for entry in recorded:
        if entry["name"] in mine:
            assert mine[entry["name"]] == entry
    assert {"pods", "pods/status", "services", "events", "namespaces"} <= set(mine)

    apps = api.sanitize_for_serialization(kubernetes.client.AppsV1Api(api).get_api_resources())
    recorded = served(response_body(5), {"deployments", "replicasets"})
    assert [r for r in apps["resources"]] == recorded

    events = api.sanitize_for_serialization(kubernetes.client.EventsV1Api(api).get_api_resources())
    assert events["resources"] == response_body(6)["resources"]
    paths = [r.path for r in kube_threaded.requests]
    assert paths == [
        "/version/",
        "/api/",
        "/apis/",
        "/api/v1/",
        "/apis/apps/v1/",
        "/apis/events.k8s.io/v1/",
    ]


@pytest.mark.parametrize(
    "path", ["/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/apis/events.k8s.io/v1"]
)
async def test_discovery_without_trailing_slash(kube: KubeStandIn, path: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{kube.url}{path}", params={"timeout": "32s"})
        body = await response.json()
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-cache, private"
    assert "Audit-Id" in response.headers
    assert body.get("kind", "Version") in (
        "Version",
        "APIVersions",
        "APIGroupList",
        "APIResourceList",
    )
