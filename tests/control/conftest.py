"""The control layer through the whole app: the Kubernetes stand-in, real Redis, a model
server stand-in (the world of ``tests/worker``), and the admin API as people call it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from tests.conftest import ADMIN_TOKEN, Delivery, wait_for
from tests.worker.conftest import world  # noqa: F401  (the fixture, shared)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OWN_NAMESPACE = "rollback-receiver"


async def post(client: Any, path: str, body: Any = None, status: int | None = None) -> Any:
    """POST to the admin API; check the status when given; the JSON answer."""
    resp = await client.post(path, json=body, headers=ADMIN)
    data = await resp.json()
    if status is not None:
        assert resp.status == status, (resp.status, data)
    return data


async def get(client: Any, path: str, **params: str) -> Any:
    resp = await client.get(path, params=params, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def incident(client: Any, incident_id: str) -> dict[str, Any] | None:
    resp = await client.get(f"/api/incidents/{incident_id}", headers=ADMIN)
    return await resp.json() if resp.status == 200 else None


async def wait_incident(
    client: Any, incident_id: str, predicate: Any, timeout: float = 15, what: str = ""
) -> dict[str, Any]:
    """The incident once ``predicate(detail)`` holds."""

    async def reached() -> dict[str, Any] | None:
        detail = await incident(client, incident_id)
        return detail if detail is not None and predicate(detail) else None

    return await wait_for(reached, timeout=timeout, interval=0.05, what=what or incident_id)


async def wait_listed(client: Any, predicate: Any, timeout: float = 15, what: str = "") -> Any:
    """The first incident of ``GET /api/incidents`` for which ``predicate(item)`` holds."""

    async def reached() -> dict[str, Any] | None:
        items = (await get(client, "/api/incidents"))["items"]
        return next((i for i in items if predicate(i)), None)

    return await wait_for(reached, timeout=timeout, interval=0.05, what=what or "an incident")


def event_kinds(detail: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in detail["events"]]


def refired(delivery: Delivery, minutes: float) -> Delivery:
    """The same alert fired again ``minutes`` later (a new startsAt: a new dedup key, the
    same labels), as Alertmanager sends it after the alert resolved and fired anew."""
    payload = json.loads(delivery.body)
    for alert in payload["alerts"]:
        started = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
        alert["startsAt"] = (started + timedelta(minutes=minutes)).isoformat()
    return Delivery(delivery.name, json.dumps(payload).encode(), delivery.headers)


def template_changes(stand: Any) -> list[Any]:
    """Our PATCHes that changed the pod template (not annotations alone, not dry runs)."""
    return [
        r
        for r in stand.template_patches()
        if "spec" in (r.body or {}) and "dryRun" not in r.query and (r.status or 0) < 400
    ]
