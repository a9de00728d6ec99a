"""GET /api/incidents and /api/incidents/{id}: schema, filters, paging, auth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from receiver import keys
from receiver.app import create_app
from receiver.cli import main as cli_main
from receiver.models import Incident, IncidentState
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def incident(
    n: int, *, model: str = "fraud-scorer", state: IncidentState = IncidentState.VERIFIED
) -> Incident:
    at = BASE + timedelta(minutes=n)
    inc = Incident(
        id=f"inc-{n:012x}",
        namespace="ml-prod",
        model=model,
        bad_version="v3",
        target_version="v2",
        strategy="rollout-undo",
        state=state,
        reason="rolled_back",
        triggers=["error_rate"],
        created_at=at,
        updated_at=at,
    )
    inc.times.alert_started = at - timedelta(minutes=10)
    inc.times.received = at
    inc.add_event("opened", "alert ModelServingHighErrorRate", at=at, actor="alertmanager")
    return inc


@pytest.fixture(params=["redis", "embedded"])
async def api(request, make_settings, aiohttp_client) -> Any:
    overrides = {} if request.param == "redis" else {"redis_url": None}
    app = create_app(make_settings(**overrides), run_workers=False, read_block_seconds=0.1)
    return await aiohttp_client(app)


async def seed(client: Any, *incidents: Incident) -> None:
    for inc in incidents:
        await client.app[keys.STORE].put_incident(inc)


async def test_items_have_the_documented_schema_and_rfc3339_utc_times(api):
    await seed(api, incident(1))
    resp = await api.get("/api/incidents", headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert body["next"] is None
    (item,) = body["items"]
    assert set(item) == {
        "id",
        "cluster",
        "namespace",
        "model",
        "bad_version",
        "target_version",
        "strategy",
        "state",
        "reason",
        "triggers",
        "times",
        "actors",
        "kind",
        "acknowledgement",
    }
    assert set(item["times"]) == {
        "alert_started",
        "received",
        "acting",
        "switched",
        "healthy",
        "confirmed",
    }
    assert item["times"]["received"] == "2026-11-25T08:01:00Z"
    assert item["times"]["alert_started"] == "2026-11-25T07:51:00Z"
    assert item["times"]["healthy"] is None
    assert item["actors"] == ["alertmanager"]


async def test_newest_first_and_paging_with_the_cursor_visits_each_once(api):
    await seed(api, *(incident(n) for n in range(7)))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/api/incidents?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = await (await api.get(url, headers=ADMIN)).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"inc-{n:012x}" for n in reversed(range(7))]


async def test_filters_by_model_state_and_since(api):
    await seed(
        api,
        incident(1, model="ranker"),
        incident(2, state=IncidentState.REFUSED),
        incident(3),
        incident(4, model="ranker", state=IncidentState.REFUSED),
    )

    async def ids(query: str) -> list[str]:
        body = await (await api.get("/api/incidents?" + query, headers=ADMIN)).json()
        return [i["id"][-1] for i in body["items"]]

    assert await ids("model=ranker") == ["4", "1"]
    assert await ids("model=ml-prod/fraud-scorer") == ["3", "2"]
    assert await ids("state=refused") == ["4", "2"]
    assert await ids("model=ranker&state=refused") == ["4"]
    assert await ids("since=2026-11-25T08:02:30Z") == ["4", "3"]
    assert await ids("since=1000w") == ["4", "3", "2", "1"]
    assert await ids("since=604800000") == ["4", "3", "2", "1"]  # seconds, like 1000w


async def test_a_state_change_moves_the_incident_between_state_filters(api):
    await seed(api, incident(1, state=IncidentState.ACTING))
    store = api.app[keys.STORE]

    def verify(inc: Incident) -> None:
        inc.state = IncidentState.VERIFIED

    await store.update_incident(f"inc-{1:012x}", verify)
    acting = await (await api.get("/api/incidents?state=acting", headers=ADMIN)).json()
    verified = await (await api.get("/api/incidents?state=verified", headers=ADMIN)).json()
    assert acting["items"] == []
    assert [i["state"] for i in verified["items"]] == ["verified"]


async def test_detail_has_the_event_list_and_unknown_id_is_404(api):
    await seed(api, incident(5))
    body = await (await api.get(f"/api/incidents/inc-{5:012x}", headers=ADMIN)).json()
    assert body["events"] == [
        {
            "at": "2026-11-25T08:05:00Z",
            "kind": "opened",
            "message": "alert ModelServingHighErrorRate",
            "actor": "alertmanager",
            "data": {},
        }
    ]
    missing = await api.get("/api/incidents/inc-000000000000", headers=ADMIN)
    assert missing.status == 404
    assert "inc-000000000000" in (await missing.json())["error"]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("state=happy", "unknown state"),
        ("since=yesterday", "since"),
        ("cursor=bm9wZQ", "cursor"),
        ("cursor=%%%", "cursor"),
    ],
)
async def test_bad_query_parameters_are_400_naming_the_parameter(api, query, needle):
    resp = await api.get("/api/incidents?" + query, headers=ADMIN)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]


@pytest.mark.parametrize("path", ["/api/incidents", "/api/incidents/inc-000000000001"])
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": ADMIN_TOKEN}]
)
async def test_admin_routes_need_the_admin_token(api, path, headers):
    resp = await api.get(path, headers=headers)
    assert resp.status == 401


async def test_admin_routes_are_403_when_no_admin_token_is_set(make_settings, aiohttp_client):
    client = await aiohttp_client(
        create_app(make_settings(admin_token=None), run_workers=False, read_block_seconds=0.1)
    )
    resp = await client.get("/api/incidents", headers=ADMIN)
    assert resp.status == 403
    assert "RECEIVER_ADMIN_TOKEN" in (await resp.json())["error"]


async def test_history_command_lists_incidents_from_a_running_receiver(
    make_settings, aiohttp_server, monkeypatch, capsys
):
    app = create_app(make_settings(redis_url=None), run_workers=False, read_block_seconds=0.1)
    server = await aiohttp_server(app)
    await app[keys.STORE].put_incident(incident(1))
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
    code = await asyncio.to_thread(cli_main, ["history", "--url", str(server.make_url("/"))])
    out = capsys.readouterr().out
    assert code == 0
    assert "inc-000000000001" in out and "ml-prod/fraud-scorer" in out and "verified" in out

    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", "wrong")
    code = await asyncio.to_thread(cli_main, ["history", "--url", str(server.make_url("/"))])
    assert code == 1
    assert "401" in capsys.readouterr().err
