"""What the signed-in page shows: the global pause and the statistics through the views the
application wires (``receiver.web.models.Views``), a model's pause, and a store that
cannot be read."""

from __future__ import annotations

import html as htmllib
import re
from datetime import UTC, datetime
from typing import Any

from receiver import annotations as ours
from receiver.web.models import Views
from tests.status.helpers import session_of
from tests.worker.conftest import MODEL, NS

STATS = {
    "since": None,
    "until": "2026-11-25T09:00:00Z",
    "granularity_seconds": 3600,
    "rollbacks": {
        "total": 3,
        "by_model": {f"{NS}/{MODEL}": 3},
        "by_strategy": {"rollout-undo": 3},
        "by_trigger": {"error_rate": 2, "latency_p99": 1},
        "by_root_cause": {"model_quality": 2, "unacknowledged": 1},
    },
    "acknowledged": {"by_root_cause": {"model_quality": 2}},
    "durations_seconds": {
        "received_to_switched": {"count": 3, "p50": 0.04, "p90": 0.08, "max": 0.09},
        "received_to_healthy": {"count": 3, "p50": 31.5, "p90": 58.0, "max": 61.2},
        "received_to_confirmed": {"count": 0, "p50": None, "p90": None, "max": None},
    },
    "drills": {
        "total": 1,
        "passed": 1,
        "failed": 0,
        "durations_seconds": {},
        "last_success": {f"{NS}/{MODEL}": "2026-11-01T06:00:00Z"},
    },
}


def text_of(page: str) -> str:
    """The page as text: tags dropped, entities decoded, spaces folded."""
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


async def signed_in_page(client: Any) -> tuple[int, str]:
    session_id = await session_of(client)
    resp = await client.get("/", headers={"Cookie": f"rr_session={session_id}"})
    return resp.status, await resp.text()


async def test_the_global_pause_the_statistics_and_a_models_pause_are_shown(stand):
    await stand.kube.create_deployment(NS, MODEL, "v1")
    await stand.kube.set_version(NS, MODEL, "v2", wait=True)
    pause = ours.pause_value(
        "admin:ana", "feature store migration", datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    )
    await stand.kube.patch(
        "deployments",
        NS,
        MODEL,
        {"metadata": {"annotations": {ours.PAUSED: pause}}},
        "application/merge-patch+json",
    )
    asked: list[Any] = []

    async def stats(since: datetime | None) -> dict[str, Any]:
        asked.append(since)
        return STATS

    views = Views(
        global_pause=lambda: {
            "paused": True,
            "actor": "admin:bob",
            "reason": "change freeze",
            "at": "2026-11-25T06:00:00Z",
        },
        stats=stats,
    )
    client = await stand.start(views=views)
    await client.post(
        f"/api/models/{NS}/{MODEL}/check", headers={"Authorization": "Bearer admin-test-token"}
    )

    status, page = await signed_in_page(client)
    text = text_of(page)

    assert status == 200
    assert asked == [None]
    assert (
        "Automation is paused for every model by admin:bob: change freeze (since"
        " 2026-11-25 06:00:00 UTC)" in text
    )
    assert "Paused by admin:ana: feature store migration (since 2026-11-25 07:00:00 UTC" in text
    assert "Rollbacks: 3" in text
    assert "error_rate 2" in text and "model_quality 2" in text
    assert "Received → switched p50 0.04s · p90 0.08s · max 0.09s" in text
    assert "Received → confirmed —" in text
    assert "Drills: 1" in text and f"Last passed: {NS}/{MODEL} 2026-11-01 06:00:00 UTC" in text


async def test_without_a_global_pause_view_the_page_says_it_is_not_reported(stand):
    client = await stand.start(views=Views(global_pause=None, stats=None))
    status, page = await signed_in_page(client)
    assert status == 200
    assert "Global pause: not reported by this receiver." in text_of(page)
    assert 'id="statistics"' not in page  # nothing wired: no empty section
    assert "Not checked yet" in page  # the policy's model, before its first check
    assert "No incident recorded" in text_of(page)


async def test_a_store_that_cannot_be_read_is_503_without_its_address(stand):
    client = await stand.start(settings={"redis_url": "redis://127.0.0.1:1/0"}, ready=False)
    resp = await client.get("/", headers={"Cookie": "rr_session=" + "x" * 43})
    page = await resp.text()
    assert resp.status == 503
    assert "cannot reach its store" in page
    assert "127.0.0.1:1" not in page and "redis://" not in page
