"""probe_model against the Open Inference Protocol stand-in on loopback.

Needs the ``tests.standins.model_server`` plugin (registered in tests/conftest.py, or
``-p tests.standins.model_server``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from receiver.errors import TEXT_ERROR_MAX_SIZE
from receiver.models import Verdict
from receiver.policy import HealthPaths
from receiver.verify.probe import probe_model
from tests.standins.model_server import DEPENDENCIES_PATH, MakeModelServer, ModelServer

SAMPLE = {
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]
}
WITH_DEPENDENCIES = HealthPaths(dependencies=DEPENDENCIES_PATH)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def probe(
    session: aiohttp.ClientSession,
    base_url: str,
    *,
    model: str = "fraud-scorer",
    version: str = "v1",
    paths: HealthPaths = WITH_DEPENDENCIES,
    sample_request: dict[str, Any] | None = SAMPLE,
    request_timeout: float = 2.0,
) -> Verdict:
    return await probe_model(
        session,
        base_url=base_url,
        model=model,
        version=version,
        paths=paths,
        sample_request=sample_request,
        request_timeout=request_timeout,
    )


async def test_a_healthy_server_passes_every_check_in_order(
    session: aiohttp.ClientSession, model_server: ModelServer
) -> None:
    verdict = await probe(session, model_server.url)

    assert verdict.healthy, verdict.reason
    assert [c.name for c in verdict.checks] == [
        "live",
        "ready",
        "model_ready",
        "model_metadata",
        "dependencies",
        "infer",
    ]
    assert all(c.ok and c.status == 200 for c in verdict.checks)
    assert verdict.checks[3].url == f"{model_server.url}/v2/models/fraud-scorer"
    assert [r.path for r in model_server.requests] == [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/fraud-scorer/ready",
        "/v2/models/fraud-scorer",
        DEPENDENCIES_PATH,
        "/v2/models/fraud-scorer/infer",
    ]
    (infer,) = model_server.requests_to("infer")
    assert (infer.method, infer.body) == ("POST", SAMPLE)


async def test_optional_checks_are_skipped_when_not_configured(
    session: aiohttp.ClientSession, model_server: ModelServer
) -> None:
    verdict = await probe(session, model_server.url, paths=HealthPaths(), sample_request=None)

    assert verdict.healthy, verdict.reason
    assert [c.name for c in verdict.checks] == ["live", "ready", "model_ready", "model_metadata"]
    assert model_server.requests_to("infer") == []
    assert model_server.requests_to("dependencies") == []


@pytest.mark.parametrize(
    ("knobs", "failing", "status", "path", "says"),
    [
        ({"live": False}, "live", 503, "/v2/health/live", '{"live": false}'),
        ({"ready": False}, "ready", 503, "/v2/health/ready", '{"ready": false}'),
        ({"version": None}, "ready", 503, "/v2/health/ready", '{"ready": false}'),
        (
            {"model_ready": False},
            "model_ready",
            503,
            "/v2/models/fraud-scorer/ready",
            '"ready": false',
        ),
        (
            {"dependencies_ok": False},
            "dependencies",
            503,
            DEPENDENCIES_PATH,
            "feature store unreachable",
        ),
        ({"infer_status": 500}, "infer", 500, "/v2/models/fraud-scorer/infer", "inference failed"),
        (
            {"infer_outputs": False},
            "infer",
            200,
            "/v2/models/fraud-scorer/infer",
            "answered without outputs",
        ),
        (
            {"versions": []},
            "model_metadata",
            200,
            "/v2/models/fraud-scorer",
            "serves none, expected v1",
        ),
    ],
)
async def test_a_failing_route_is_named_with_its_status_and_body(
    session: aiohttp.ClientSession,
    make_model_server: MakeModelServer,
    knobs: dict[str, Any],
    failing: str,
    status: int,
    path: str,
    says: str,
) -> None:
    server = await make_model_server("fraud-scorer", **knobs)

    verdict = await probe(session, server.url)

    assert not verdict.healthy
    last = verdict.checks[-1]
    assert (last.name, last.ok, last.status) == (failing, False, status)
    assert all(c.ok for c in verdict.checks[:-1])
    assert verdict.reason.startswith(f"{failing} check failed (")
    assert f"{server.url}{path}" in verdict.reason
    assert says in verdict.reason
    if status != 200:
        assert f"answered {status}" in verdict.reason
    # The probe stops at the first failure.
    assert len(server.requests) == len(verdict.checks)


async def test_a_ready_server_with_the_wrong_version_is_unhealthy(
    session: aiohttp.ClientSession, make_model_server: MakeModelServer
) -> None:
    server = await make_model_server("fraud-scorer", version="v3")

    verdict = await probe(session, server.url, version="v2")

    assert not verdict.healthy
    assert [c.ok for c in verdict.checks] == [True, True, True, False]
    assert "ready is not the right model: fraud-scorer serves v3, expected v2" in verdict.reason
    assert server.requests_to("infer") == []


async def test_a_versions_list_that_includes_the_target_is_enough(
    session: aiohttp.ClientSession, make_model_server: MakeModelServer
) -> None:
    server = await make_model_server("fraud-scorer", version="v2", versions=["v1", "v2"])

    assert (await probe(session, server.url, version="v2")).healthy


async def test_another_model_behind_the_url_is_not_found(
    session: aiohttp.ClientSession, make_model_server: MakeModelServer
) -> None:
    server = await make_model_server("ranker")

    verdict = await probe(session, server.url, model="fraud-scorer")

    assert not verdict.healthy
    assert verdict.checks[-1].name == "model_ready"
    assert "answered 404" in verdict.reason
    assert "not found" in verdict.reason


async def test_health_follows_the_version_source(
    session: aiohttp.ClientSession, make_model_server: MakeModelServer
) -> None:
    serving = {"version": "v3"}
    server = await make_model_server(
        "fraud-scorer", version_source=lambda: serving["version"], bad_versions={"v3"}
    )

    bad = await probe(session, server.url, version="v3")
    serving["version"] = "v2"
    good = await probe(session, server.url, version="v2")

    assert not bad.healthy
    assert bad.checks[-1].name == "infer"
    assert "answered 500" in bad.reason and "fraud-scorer v3" in bad.reason
    assert good.healthy, good.reason


async def test_a_slow_route_fails_on_its_own_request_timeout(
    session: aiohttp.ClientSession, make_model_server: MakeModelServer
) -> None:
    server = await make_model_server("fraud-scorer", route_delays={"model_ready": 30.0})

    started = time.monotonic()
    verdict = await probe(session, server.url, request_timeout=0.2)
    elapsed = time.monotonic() - started

    assert not verdict.healthy
    last = verdict.checks[-1]
    assert (last.name, last.ok, last.status) == ("model_ready", False, None)
    assert last.detail == "no answer within 0.2s"
    assert "/v2/models/fraud-scorer/ready" in verdict.reason
    assert 0.2 <= last.seconds < 5
    assert elapsed < 5


async def test_a_closed_port_is_an_unhealthy_verdict(session: aiohttp.ClientSession) -> None:
    base_url = f"http://127.0.0.1:{unused_port()}"

    verdict = await probe(session, base_url)

    assert not verdict.healthy
    (check,) = verdict.checks
    assert (check.name, check.ok, check.status) == ("live", False, None)
    assert "ClientConnectorError" in check.detail
    assert verdict.reason.startswith(f"live check failed (GET {base_url}/v2/health/live): ")


async def test_a_large_error_body_is_truncated(
    session: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    async def flood(request: web.Request) -> web.Response:
        return web.Response(status=500, text="x" * 100_000)

    app = web.Application()
    app.router.add_get("/v2/health/live", flood)
    server = await aiohttp_server(app)

    verdict = await probe(session, str(server.make_url("")))

    assert not verdict.healthy
    detail = verdict.checks[-1].detail
    assert detail.startswith("answered 500: xxx")
    assert detail.endswith("...")
    assert len(detail) <= len("answered 500: ") + TEXT_ERROR_MAX_SIZE
