"""Every ``/api`` route needs the admin token, by construction; errors are JSON."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from receiver import keys
from receiver.app import create_app
from receiver.metrics import Metrics
from receiver.web.middleware import REQUEST_COUNTS, RequestCounts, admin_app, observe
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WRONG = [{}, {"Authorization": "Bearer nope"}, {"Authorization": ADMIN_TOKEN}]


def api_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route under /api, path parameters filled in."""
    out = []
    for route in app.router.routes():  # sub-applications' routes included, prefixed
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        if route.method != "HEAD" and path.startswith("/api"):
            out.append((route.method, path.replace("{id}", "inc-000000000001")))
    return out


@pytest.fixture
async def guarded(make_settings, aiohttp_client) -> Any:
    app = create_app(make_settings(redis_url=None), run_workers=False, read_block_seconds=0.1)
    client = await aiohttp_client(app)
    routes = api_routes(app)
    assert ("GET", "/api/incidents") in routes, routes
    return client, routes


@pytest.mark.parametrize("headers", WRONG)
async def test_every_api_route_is_401_without_the_right_token(guarded, headers):
    client, routes = guarded
    for method, path in routes:
        resp = await client.request(method, path, headers=headers)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert "admin token" in (await resp.json())["error"]


async def test_every_api_route_is_403_when_the_receiver_has_no_admin_token(
    make_settings, aiohttp_client
):
    app = create_app(
        make_settings(redis_url=None, admin_token=None), run_workers=False, read_block_seconds=0.1
    )
    client = await aiohttp_client(app)
    for method, path in [*api_routes(app), ("GET", "/api/no-such-route")]:
        resp = await client.request(method, path, headers=ADMIN)
        assert resp.status == 403, (method, path)
        assert "RECEIVER_ADMIN_TOKEN" in (await resp.json())["error"]


async def test_an_unknown_api_route_reveals_nothing_without_the_token(guarded):
    client, _ = guarded
    assert (await client.get("/api/no-such-route")).status == 401
    known = await client.get("/api/no-such-route", headers=ADMIN)
    assert known.status == 404
    assert "/api/no-such-route" in (await known.json())["error"]


async def test_a_route_added_to_the_admin_app_is_guarded_without_asking(
    make_settings, aiohttp_client
):
    async def new_route(request: web.Request) -> web.Response:
        return web.json_response({"secret": "data"})

    app = web.Application(middlewares=[observe])
    app[keys.SETTINGS] = make_settings()
    app[keys.METRICS] = Metrics()
    app[REQUEST_COUNTS] = RequestCounts(app[keys.METRICS])
    api = admin_app()
    api.router.add_post("/models/{namespace}/{model}/pause", new_route)
    app.add_subapp("/api", api)
    client = await aiohttp_client(app)
    path = "/api/models/ml-prod/fraud-scorer/pause"
    assert (await client.post(path)).status == 401
    assert (await client.post(path, headers={"Authorization": "Bearer nope"})).status == 401
    ok = await client.post(path, headers=ADMIN)
    assert ok.status == 200 and await ok.json() == {"secret": "data"}
    wrong_method = await client.get(path, headers=ADMIN)
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert "allowed: POST" in (await wrong_method.json())["error"]
