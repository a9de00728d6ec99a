"""``GET /api/models``, ``POST /api/models/{namespace}/{model}/check`` and ``models`` on the
command line, against a receiver on the Kubernetes stand-in."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from receiver import annotations as ours
from receiver import keys
from receiver.cli import main as cli_main
from receiver.models import Incident, IncidentKind, IncidentState
from tests.conftest import ADMIN_TOKEN
from tests.worker.conftest import MODEL, NS

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHECK = f"/api/models/{NS}/{MODEL}/check"
BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def incident(n: int, kind: IncidentKind = IncidentKind.ALERT) -> Incident:
    at = BASE + timedelta(minutes=n)
    return Incident(
        id=f"inc-{n:012x}",
        namespace=NS,
        model=MODEL,
        bad_version="v2",
        target_version="v1",
        strategy="rollout-undo",
        kind=kind,
        state=IncidentState.VERIFIED,
        reason="rollback",
        created_at=at,
        updated_at=at,
    )


@pytest.fixture
async def receiver(stand):
    await stand.kube.create_deployment(NS, MODEL, "v1")
    await stand.kube.set_version(NS, MODEL, "v2", wait=True)
    value = ours.pause_value("admin:ana", "load test tonight", at=BASE)
    await stand.kube.patch(
        "deployments",
        NS,
        MODEL,
        {"metadata": {"annotations": {ours.PAUSED: value}}},
        "application/merge-patch+json",
    )
    return await stand.start(drills=True)


async def test_models_before_any_check_say_so(receiver):
    resp = await receiver.get("/api/models", headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    # The control layer reports the global pause (none set here).
    assert body["global"] == {"paused": False, "actor": None, "reason": None, "at": None}
    (item,) = body["items"]
    assert item == {
        "name": MODEL,
        "namespace": NS,
        "cluster": "",
        "strategy": "rollout-undo",
        "mode": "auto",
        "data_quality_mode": "notify",
        "drills": True,
        "paused": None,
        "pause": None,
        "serving_version": None,
        "target": None,
        "readiness": {"ready": None, "result": "unknown", "reasons": [], "checked_at": None},
        "last_incident": None,
        "last_drill": None,
    }


async def test_a_check_on_demand_answers_the_result_and_every_listing_shows_it(receiver):
    resp = await receiver.post(CHECK, headers=ADMIN)
    assert resp.status == 200
    item = await resp.json()
    assert item["readiness"]["result"] == "ready"
    assert item["readiness"]["ready"] is True
    assert item["readiness"]["reasons"] == []
    checked = datetime.fromisoformat(item["readiness"]["checked_at"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - checked).total_seconds()) < 600
    assert item["serving_version"] == "v2"
    assert item["target"]["version"] == "v1"
    assert item["target"]["revision"] == "1"
    assert item["target"]["name"].startswith(f"{MODEL}-")
    assert item["paused"] is True
    assert item["pause"] == {
        "actor": "admin:ana",
        "reason": "load test tonight",
        "at": "2026-11-25T08:00:00Z",
    }

    listed = (await (await receiver.get("/api/models", headers=ADMIN)).json())["items"][0]
    assert listed == item

    metrics = (await (await receiver.get("/metrics")).read()).decode()
    assert f'receiver_rollback_ready{{model="{MODEL}",namespace="{NS}"}} 1.0' in metrics
    assert 'receiver_readiness_checks_total{result="ready"} 1.0' in metrics


async def test_the_listing_names_the_last_incident_and_the_last_drill(receiver):
    store = receiver.app[keys.STORE]
    for inc in (incident(1, IncidentKind.DRILL), incident(2), incident(3)):
        await store.put_incident(inc)

    (item,) = (await (await receiver.get("/api/models", headers=ADMIN)).json())["items"]

    assert item["last_incident"] == {
        "id": "inc-000000000003",
        "kind": "alert",
        "state": "verified",
        "reason": "rollback",
        "bad_version": "v2",
        "target_version": "v1",
        "created_at": "2026-11-25T08:03:00Z",
        "updated_at": "2026-11-25T08:03:00Z",
    }
    assert item["last_drill"] == {
        "id": "inc-000000000001",
        "state": "verified",
        "at": "2026-11-25T08:01:00Z",
    }


async def test_checking_a_model_not_in_the_policy_is_404(receiver):
    resp = await receiver.post(f"/api/models/{NS}/nope/check", headers=ADMIN)
    assert resp.status == 404
    assert "no model ml-prod/nope in the policy" in (await resp.json())["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
@pytest.mark.parametrize(("method", "path"), [("GET", "/api/models"), ("POST", CHECK)])
async def test_the_models_routes_need_the_admin_token(receiver, headers, method, path, stand):
    resp = await receiver.request(method, path, headers=headers)
    assert resp.status == 401
    assert "admin token" in (await resp.json())["error"]
    assert stand.dry_runs() == []  # nothing was checked for an anonymous caller


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/models"), ("POST", CHECK)])
async def test_the_models_routes_are_403_without_an_admin_token_on_the_receiver(
    stand, method, path
):
    await stand.kube.create_deployment(NS, MODEL, "v1")
    client = await stand.start(settings={"admin_token": None})
    resp = await client.request(method, path, headers=ADMIN)
    assert resp.status == 403
    assert "RECEIVER_ADMIN_TOKEN" in (await resp.json())["error"]


async def cli(*args: str) -> int:
    return await asyncio.to_thread(cli_main, list(args))


async def test_the_models_command_prints_a_table_with_the_reasons(
    receiver, stand, monkeypatch, capsys
):
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
    url = str(receiver.make_url(""))
    stand.kube.fail("PATCH", f"*/deployments/{MODEL}", 403, times=None)
    assert (await receiver.post(CHECK, headers=ADMIN)).status == 200

    assert await cli("models", "--url", url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "MODEL", "STRATEGY", "MODE", "SERVING", "TARGET", "READY", "PAUSED", "CHECKED"
    ]  # fmt: skip
    row = lines[1].split()
    assert row[:8] == [f"{NS}/{MODEL}", "rollout-undo", "auto", "v2", "v1", "(rev", "1)", "NO"]
    assert row[8:10] == ["by", "admin:ana"]
    assert lines[2].startswith("    - the rollback PATCH would be refused: patch deployment")

    assert await cli("models", "--url", url, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["items"][0]["readiness"]["result"] == "not_ready"


async def test_the_models_command_without_a_token_exits_3(receiver, monkeypatch, capsys):
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN_FILE", raising=False)
    assert await cli("models", "--url", str(receiver.make_url(""))) == 3
    assert "RECEIVER_ADMIN_TOKEN" in capsys.readouterr().err
