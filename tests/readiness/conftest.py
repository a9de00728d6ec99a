"""A receiver on the Kubernetes stand-in, real Redis and a model server stand-in, for
readiness: each test shapes the cluster first, then starts the receiver on it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver import keys
from receiver.app import create_app
from receiver.policy import ModelPolicy
from receiver.readiness import ReadinessResult, RollbackReadiness
from receiver.web.models import VIEWS, Views
from tests.conftest import wait_for
from tests.worker.conftest import MODEL, NS, serving_version, write_policy


@dataclass
class Stand:
    kube: Any
    model_server: Any
    policy_file: Path
    start: Callable[..., Awaitable[TestClient]]

    def dry_runs(self, path: str = "*") -> list[Any]:
        return [r for r in self.kube.requests_to("PATCH", path) if r.query.get("dryRun") == "All"]


@pytest.fixture
async def stand(kube, make_model_server, make_settings, aiohttp_client, tmp_path) -> Stand:
    await kube.create_namespace(NS)
    server = await make_model_server(MODEL, version_source=lambda: serving_version(kube))
    policy_file = tmp_path / "policy.yaml"

    async def start(
        *,
        settings: dict[str, Any] | None = None,
        views: Views | None = None,
        ready: bool = True,
        **model: Any,
    ) -> TestClient:
        write_policy(policy_file, server.url, **model)
        app = create_app(
            make_settings(kubeconfig=kube.kubeconfig, policy_file=policy_file, **(settings or {})),
            read_block_seconds=0.1,
        )
        if views is not None:
            app[VIEWS] = views
        client = await aiohttp_client(app)
        # Start-up facts read first, so what the test counts is the readiness check's own.
        if ready:
            await wait_for(
                lambda: app[keys.READINESS].ready, timeout=20, what="the receiver to be ready"
            )
        kube.requests.clear()
        return client

    return Stand(kube, server, policy_file, start)


def readiness_of(client: TestClient) -> RollbackReadiness:
    return client.app[keys.ROLLBACK_READINESS]


def the_model(client: TestClient) -> ModelPolicy:
    return readiness_of(client).policy.models[0]


async def check(client: TestClient) -> ReadinessResult:
    """Check the policy's one model now, as the periodic check would."""
    return await readiness_of(client).check(the_model(client))
