"""A whole receiver against the Kubernetes stand-in, real Redis and a model server stand-in.

The cluster holds ``ml-prod/fraud-scorer`` rolled out v1 -> v2 -> v3 (revisions 1-3), the
version captured in the Alertmanager fixtures as bad. The model server's served version
follows the Deployment's pod template, so verification sees what really serves.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.app import create_app
from receiver.models import rfc3339
from tests.conftest import ADMIN_TOKEN, AM_FIXTURES, wait_for

NS = "ml-prod"
MODEL = "fraud-scorer"
VERSION_LABEL = "app.kubernetes.io/version"
SAMPLE_REQUEST = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}


def alert_started(name: str = "firing_single", index: int = 0) -> datetime:
    payload = json.loads((AM_FIXTURES / f"{name}.json").read_text())
    return datetime.fromisoformat(payload["alerts"][index]["startsAt"].replace("Z", "+00:00"))


def backdate_current(kube: Any, at: datetime, namespace: str = NS, name: str = MODEL) -> None:
    """Make the serving version's ReplicaSets (and the Deployment's Progressing update) date
    from ``at``.

    The captured alerts started at a fixed moment; the stand-in's objects are created now.
    Moving the creation back keeps the causality gate's inputs as they were in reality. Every
    ReplicaSet of the Deployment that runs the serving version moves: the version (not the
    pod template) is what became current.
    """
    store = kube.store
    deployment = copy.deepcopy(store.get("deployments", namespace, name))
    version_label = "app.kubernetes.io/version"
    version = deployment["spec"]["template"]["metadata"]["labels"].get(version_label)
    stamp = rfc3339(at.replace(microsecond=0))
    for rs in store.items("replicasets", namespace):
        owners = [o.get("name") for o in rs["metadata"].get("ownerReferences", [])]
        labels = rs["spec"]["template"]["metadata"].get("labels", {})
        if name in owners and labels.get(version_label) == version:
            rs = copy.deepcopy(rs)
            rs["metadata"]["creationTimestamp"] = stamp
            store.update("replicasets", rs)
    for cond in deployment.get("status", {}).get("conditions", []):
        cond["lastUpdateTime"] = stamp
    store.update("deployments", deployment)


def serving_version(kube: Any, namespace: str = NS, name: str = MODEL) -> str | None:
    dep = kube.store.get("deployments", namespace, name)
    if dep is None:
        return None
    return dep["spec"]["template"]["metadata"]["labels"].get(VERSION_LABEL)


@dataclass
class World:
    kube: Any
    model_server: Any
    policy_file: Path
    make_app: Callable[..., Any]

    def deployment(self) -> dict[str, Any]:
        return self.kube.deployment(NS, MODEL)

    def template_patches(self) -> list[Any]:
        return [r for r in self.kube.requests_to("PATCH", f"*/deployments/{MODEL}")]


def write_policy(path: Path, base_url: str, **model_overrides: Any) -> Path:
    import yaml

    model = {
        "name": MODEL,
        "namespace": NS,
        "tier": "critical",
        "deployment": MODEL,
        "health": {"base_url": base_url, "sample_request": SAMPLE_REQUEST},
        **model_overrides,
    }
    policy = {
        "defaults": {"verify_timeout": "10s", "cooldown": "30m"},
        "models": [model],
    }
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture
async def world(kube, make_model_server, make_settings, aiohttp_client, tmp_path) -> World:
    await kube.create_namespace(NS)
    await kube.create_deployment(NS, MODEL, "v1")
    await kube.set_version(NS, MODEL, "v2", wait=True)
    await kube.set_version(NS, MODEL, "v3", wait=True)
    backdate_current(kube, alert_started() - timedelta(minutes=3))
    server = await make_model_server(MODEL, version_source=lambda: serving_version(kube))
    policy_file = write_policy(tmp_path / "policy.yaml", server.url)
    kube.requests.clear()

    async def make_app(
        *, policy: Path | None = None, kube_request_timeout: float = 10.0, **overrides: Any
    ) -> TestClient:
        settings = make_settings(
            kubeconfig=kube.kubeconfig,
            policy_file=policy or policy_file,
            **overrides,
        )
        app = create_app(
            settings, read_block_seconds=0.1, service_options={"verify_poll_seconds": 0.05}
        )
        return await aiohttp_client(app)

    return World(kube, server, policy_file, make_app)


# --- helpers the worker, control and strategy tests share ----------------------------------

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def deliver(client: Any, delivery: Any) -> dict[str, Any]:
    resp = await client.post("/webhook/alertmanager", data=delivery.body, headers=delivery.headers)
    assert resp.status == 200
    return await resp.json()


async def incidents(client: Any, **query: str) -> list[dict[str, Any]]:
    resp = await client.get("/api/incidents", params=query, headers=ADMIN)
    assert resp.status == 200
    return (await resp.json())["items"]


async def wait_state(client: Any, state: str, timeout: float = 15) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        items = await incidents(client)
        return next((i for i in items if i["state"] == state), None)

    return await wait_for(reached, timeout=timeout, interval=0.05, what=f"an incident {state}")


def template_changes(world: Any) -> list[Any]:
    return [
        r for r in world.template_patches() if "spec" in (r.body or {}) and "dryRun" not in r.query
    ]
