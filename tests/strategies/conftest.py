"""Whole receivers against the Kubernetes stand-in, real Redis and model server stand-ins,
for the blue-green and canary strategies.

Blue-green: ``ml-prod/ranker`` is a Service whose ``slot`` selector chose ``green``, where
v2 was just rolled out; ``blue`` still runs v1 warm. Each slot has its own model server
(its ``slot_urls`` entry) and the Service has one that serves what the selected slot runs.

Canary: ``ml-prod/scorer-stable`` runs v1 (2 replicas), ``scorer-canary`` the new v2 (1
replica). The model server behind the Service answers as the canary while it has pods.

Alerts are the captured ``firing_single`` delivery with the model, version and
``startsAt`` (now, just after the version became current) of the scenario.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from receiver.app import create_app
from receiver.models import rfc3339
from tests.conftest import ADMIN_TOKEN, AM_FIXTURES, WEBHOOK_TOKEN, wait_for

NS = "ml-prod"
VERSION_LABEL = "app.kubernetes.io/version"
SAMPLE_REQUEST = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

RANKER = "ranker"
SLOTS = {"blue": "ranker-blue", "green": "ranker-green"}
SERVICE_PATH = f"/api/v1/namespaces/{NS}/services/{RANKER}"

SCORER = "scorer"
CANARY = "scorer-canary"
STABLE = "scorer-stable"


def alert_body(model: str, version: str, *, starts_at: datetime | None = None) -> bytes:
    """The captured delivery, about ``model`` ``version``, started ``starts_at`` (now)."""
    payload = json.loads((AM_FIXTURES / "firing_single.json").read_text())
    alert = payload["alerts"][0]
    alert["labels"].update({"model": model, "model_version": version})
    alert["startsAt"] = rfc3339(starts_at or datetime.now(UTC))
    alert["fingerprint"] = uuid.uuid4().hex[:16]
    payload["commonLabels"] = dict(alert["labels"])
    payload["groupLabels"] = {"model": model, "namespace": NS}
    payload["groupKey"] = f'{{}}:{{model="{model}", namespace="{NS}"}}'
    return json.dumps(payload).encode()


async def deliver(client: TestClient, body: bytes) -> str:
    resp = await client.post(
        "/webhook/alertmanager",
        data=body,
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    return (await resp.json())["alerts"][0]["outcome"]


async def incidents(client: TestClient) -> list[dict[str, Any]]:
    resp = await client.get("/api/incidents", headers=ADMIN)
    assert resp.status == 200
    return (await resp.json())["items"]


async def incident_detail(client: TestClient, incident_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/incidents/{incident_id}", headers=ADMIN)
    assert resp.status == 200
    return await resp.json()


async def wait_state(client: TestClient, state: str, timeout: float = 15) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        return next((i for i in await incidents(client) if i["state"] == state), None)

    return await wait_for(reached, timeout=timeout, interval=0.05, what=f"an incident {state}")


def version_of(kube: Any, name: str) -> str | None:
    deployment = kube.store.get("deployments", NS, name)
    if deployment is None:
        return None
    return deployment["spec"]["template"]["metadata"]["labels"].get(VERSION_LABEL)


def writes(kube: Any, path: str) -> list[Any]:
    """PATCHes to ``path`` that change the spec for real (not dry runs, not annotations)."""
    return [
        r
        for r in kube.requests_to("PATCH", path)
        if "spec" in (r.body or {}) and "dryRun" not in r.query
    ]


@dataclass
class World:
    kube: Any
    servers: dict[str, Any]
    """Model servers: ``blue``, ``green`` and ``service`` (blue-green) or ``service``."""
    policy_file: Path
    make_app: Callable[..., Any]

    def service(self) -> dict[str, Any]:
        return self.kube.service(NS, RANKER)

    def selected(self) -> str:
        return self.service()["spec"]["selector"]["slot"]


def write_policy(path: Path, model: dict[str, Any]) -> Path:
    policy = {"defaults": {"verify_timeout": "10s", "cooldown": "30m"}, "models": [model]}
    path.write_text(yaml.safe_dump(policy))
    return path


def app_factory(
    kube: Any, policy_file: Path, make_settings: Any, aiohttp_client: Any
) -> Callable[..., Any]:
    async def make_app(*, policy: Path | None = None, **overrides: Any) -> TestClient:
        settings = make_settings(
            kubeconfig=kube.kubeconfig, policy_file=policy or policy_file, **overrides
        )
        app = create_app(
            settings, read_block_seconds=0.1, service_options={"verify_poll_seconds": 0.05}
        )
        return await aiohttp_client(app)

    return make_app


def blue_green_model(servers: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": RANKER,
        "namespace": NS,
        "tier": "critical",
        "strategy": "blue-green",
        "service": RANKER,
        "slots": dict(SLOTS),
        "health": {
            "base_url": servers["service"].url,
            "slot_urls": {"blue": servers["blue"].url, "green": servers["green"].url},
            "sample_request": SAMPLE_REQUEST,
        },
    }


@pytest.fixture
async def blue_green(kube, make_model_server, make_settings, aiohttp_client, tmp_path) -> World:
    await kube.create_namespace(NS)
    await kube.create_deployment(NS, SLOTS["blue"], "v1", app=RANKER, labels={"slot": "blue"})
    await kube.create_deployment(NS, SLOTS["green"], "v2", app=RANKER, labels={"slot": "green"})
    await kube.create_service(NS, RANKER, {"app": RANKER, "slot": "green"})

    def selected_version() -> str | None:
        slot = kube.store.get("services", NS, RANKER)["spec"]["selector"]["slot"]
        return version_of(kube, SLOTS[slot])

    servers = {
        slot: await make_model_server(RANKER, version_source=lambda n=name: version_of(kube, n))
        for slot, name in SLOTS.items()
    }
    servers["service"] = await make_model_server(RANKER, version_source=selected_version)
    policy_file = write_policy(tmp_path / "policy.yaml", blue_green_model(servers))
    kube.requests.clear()
    return World(
        kube, servers, policy_file, app_factory(kube, policy_file, make_settings, aiohttp_client)
    )


def canary_model(servers: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": SCORER,
        "namespace": NS,
        "tier": "critical",
        "strategy": "canary",
        "canary": {"deployment": CANARY, "stable": STABLE},
        "health": {"base_url": servers["service"].url, "sample_request": SAMPLE_REQUEST},
    }


@pytest.fixture
async def canary(kube, make_model_server, make_settings, aiohttp_client, tmp_path) -> World:
    await kube.create_namespace(NS)
    await kube.create_deployment(NS, STABLE, "v1", app=SCORER, labels={"track": "stable"})
    await kube.create_deployment(
        NS, CANARY, "v2", app=SCORER, replicas=1, labels={"track": "canary"}
    )

    def answering_version() -> str | None:
        # Requests through the Service land on the canary while it has pods.
        canary_pods = (kube.store.get("deployments", NS, CANARY).get("status") or {}).get(
            "replicas"
        )
        return version_of(kube, CANARY if canary_pods else STABLE)

    servers = {"service": await make_model_server(SCORER, version_source=answering_version)}
    policy_file = write_policy(tmp_path / "policy.yaml", canary_model(servers))
    kube.requests.clear()
    return World(
        kube, servers, policy_file, app_factory(kube, policy_file, make_settings, aiohttp_client)
    )
