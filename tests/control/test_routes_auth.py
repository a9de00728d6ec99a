"""Every control route needs the admin token: 401 without it or with a wrong one, and 403
whatever is sent when the receiver has no admin token (disabled, never open)."""

from __future__ import annotations

import pytest

from receiver.app import create_app
from tests.conftest import ADMIN_TOKEN

ROUTES = [
    ("POST", "/api/models/ml-prod/fraud-scorer/pause"),
    ("POST", "/api/models/ml-prod/fraud-scorer/resume"),
    ("POST", "/api/models/ml-prod/fraud-scorer/rollback"),
    ("POST", "/api/models/ml-prod/fraud-scorer/roll-forward"),
    ("POST", "/api/models/ml-prod/fraud-scorer/drill"),
    ("POST", "/api/pause"),
    ("POST", "/api/resume"),
    ("POST", "/api/incidents/inc-000000000001/acknowledge"),
    ("POST", "/api/incidents/inc-000000000001/execute"),
    ("POST", "/api/incidents/inc-000000000001/roll-forward"),
    ("GET", "/api/stats"),
    ("GET", "/api/models"),
]
WRONG = [{}, {"Authorization": "Bearer nope"}, {"Authorization": ADMIN_TOKEN}]


@pytest.mark.parametrize("headers", WRONG)
async def test_every_control_route_is_401_without_the_right_token(
    make_settings, aiohttp_client, headers
):
    app = create_app(make_settings(redis_url=None), run_workers=False, read_block_seconds=0.1)
    client = await aiohttp_client(app)
    for method, path in ROUTES:
        resp = await client.request(method, path, headers=headers, json={"actor": "x"})
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_every_control_route_is_403_when_the_receiver_has_no_admin_token(
    make_settings, aiohttp_client
):
    app = create_app(
        make_settings(redis_url=None, admin_token=None), run_workers=False, read_block_seconds=0.1
    )
    client = await aiohttp_client(app)
    for method, path in ROUTES:
        resp = await client.request(
            method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert resp.status == 403, (method, path)
        assert "RECEIVER_ADMIN_TOKEN" in (await resp.json())["error"]
