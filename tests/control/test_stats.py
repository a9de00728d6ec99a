"""Statistics: counted once per fact into hourly aggregates, read without the history."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from receiver import stats
from receiver.models import Acknowledgement, Incident, IncidentKind, IncidentState
from receiver.store import MemoryStore
from tests.control.conftest import get, post, wait_incident, wait_listed
from tests.worker.conftest import MODEL, NS, deliver, write_policy

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def rollback(n: int, *, switched: float, healthy: float, trigger: str = "error_rate") -> Incident:
    incident = Incident(
        id=f"inc-{n:012x}",
        namespace=NS,
        model=MODEL,
        bad_version="v3",
        strategy="rollout-undo",
        state=IncidentState.VERIFIED,
        triggers=[trigger],
        created_at=T0,
        updated_at=T0,
    )
    incident.times.received = T0
    incident.times.switched = T0 + timedelta(seconds=switched)
    incident.times.healthy = T0 + timedelta(seconds=healthy)
    return incident


async def count(store: MemoryStore, incident: Incident) -> None:
    for c in stats.contributions(incident):
        await store.add_stats(c.once, c.bucket, c.counts, c.maxima)


async def test_each_fact_counts_once_and_percentiles_come_from_buckets():
    store = MemoryStore(retention_seconds=30 * 86400.0)
    incidents = [rollback(n, switched=0.05 * (n + 1), healthy=10.0 * (n + 1)) for n in range(10)]
    for incident in incidents:
        await count(store, incident)
        await count(store, incident)  # saved again: nothing counted twice
    summary = stats.summarize(
        await store.read_stats(stats.bucket_of(T0), stats.bucket_of(T0)), since=None, until=T0
    )
    assert summary["rollbacks"]["total"] == 10
    assert summary["rollbacks"]["by_trigger"] == {"error_rate": 10}
    assert summary["rollbacks"]["by_root_cause"] == {"unacknowledged": 10}
    healthy = summary["durations_seconds"]["received_to_healthy"]
    assert healthy["count"] == 10 and healthy["max"] == 100.0
    # Samples 10..100s: the 50th percentile lies in the (30, 60] bucket, the 90th in (60, 120].
    assert 30 < healthy["p50"] <= 60 and 60 < healthy["p90"] <= 100
    switched = summary["durations_seconds"]["received_to_switched"]
    assert switched["max"] == 0.5 and switched["p90"] <= 0.5


async def test_an_acknowledgement_moves_the_root_cause_and_counts_once():
    store = MemoryStore(retention_seconds=30 * 86400.0)
    incident = rollback(1, switched=1, healthy=2)
    await count(store, incident)
    for cause, previous in (("model_quality", None), ("data_pipeline", "model_quality")):
        incident.acknowledgement = Acknowledgement(
            actor="admin:x", at=T0 + timedelta(minutes=len(cause)), root_cause=cause
        )
        c = stats.acknowledgement_contribution(incident, previous)
        assert await store.add_stats(c.once, c.bucket, c.counts, c.maxima)
        assert not await store.add_stats(c.once, c.bucket, c.counts, c.maxima)
    summary = stats.summarize(await store.read_stats(0, 10**9), since=None, until=T0)
    assert summary["rollbacks"]["by_root_cause"] == {"data_pipeline": 1}
    assert summary["acknowledged"]["by_root_cause"] == {"data_pipeline": 1}


def test_a_drill_counts_its_legs_and_its_last_success():
    drill = rollback(2, switched=1, healthy=3)
    drill.kind = IncidentKind.DRILL
    drill.reason = "drill_passed"
    drill.times.acting = T0
    drill.add_event("forward_started", "", at=T0 + timedelta(seconds=4))
    drill.add_event("forward_healthy", "", at=T0 + timedelta(seconds=9))
    (only,) = stats.contributions(drill)
    summary = stats.summarize([dict(only.counts) | dict(only.maxima)], since=None, until=T0)
    assert summary["rollbacks"]["total"] == 0
    assert (summary["drills"]["passed"], summary["drills"]["failed"]) == (1, 0)
    legs = summary["drills"]["durations_seconds"]
    assert legs["rollback_leg"]["max"] == 3.0 and legs["forward_leg"]["max"] == 5.0
    assert list(summary["drills"]["last_success"]) == [f"{NS}/{MODEL}"]
    assert not math.isnan(legs["forward_leg"]["p50"])


async def test_stats_after_a_mix_of_incidents(world, delivery, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", world.model_server.url, drills=True)
    client = await world.make_app(policy=policy)
    drill = await post(client, f"/api/models/{NS}/{MODEL}/drill", {}, 202)
    await wait_incident(client, drill["incident"], lambda d: d["reason"] == "drill_passed")

    await deliver(client, delivery("firing_single"))
    alert = await wait_listed(client, lambda i: i["kind"] == "alert" and i["state"] == "verified")
    ack = {"root_cause": "model_quality", "actor": "ivy"}
    await post(client, f"/api/incidents/{alert['id']}/acknowledge", ack, 200)

    forced = await post(client, f"/api/models/{NS}/{MODEL}/rollback", {"to_revision": 1}, 202)
    await wait_incident(client, forced["incident"], lambda d: d["state"] == "verified")
    ack = {"root_cause": "false_alarm"}
    await post(client, f"/api/incidents/{forced['incident']}/acknowledge", ack, 200)

    summary = await get(client, "/api/stats")
    rollbacks = summary["rollbacks"]
    assert rollbacks["total"] == 2
    assert rollbacks["by_model"] == {f"{NS}/{MODEL}": 2}
    assert rollbacks["by_strategy"] == {"rollout-undo": 2}
    assert rollbacks["by_trigger"] == {"error_rate": 1, "manual": 1}
    assert rollbacks["by_root_cause"] == {"false_alarm": 1, "model_quality": 1}
    durations = summary["durations_seconds"]
    assert durations["received_to_switched"]["count"] == 2
    assert durations["received_to_healthy"]["count"] == 2
    assert durations["received_to_confirmed"]["count"] == 0
    assert durations["received_to_healthy"]["p50"] <= durations["received_to_healthy"]["max"]
    assert (summary["drills"]["total"], summary["drills"]["passed"]) == (1, 1)

    later = await get(client, "/api/stats", since="2099-01-01T00:00:00Z")
    assert later["rollbacks"]["total"] == 0 and later["drills"]["total"] == 0
    recent = await get(client, "/api/stats", since="1h")
    assert recent["rollbacks"]["total"] == 2
    resp = await client.get("/api/stats", params={"since": "yesterday"}, headers=_admin())
    assert resp.status == 400


def _admin() -> dict[str, str]:
    from tests.control.conftest import ADMIN

    return ADMIN
