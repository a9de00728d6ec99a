"""Drills: back to the target as an alert would, verified, forward again, verified."""

from __future__ import annotations

import json

from receiver import annotations as ours
from receiver import keys
from tests.control.conftest import (
    event_kinds,
    get,
    post,
    template_changes,
    wait_incident,
    wait_listed,
)
from tests.worker.conftest import MODEL, NS, deliver, serving_version, write_policy

DRILL = f"/api/models/{NS}/{MODEL}/drill"


def finished(detail: dict) -> bool:
    return detail["state"] in ("verified", "verification_failed", "failed", "refused")


async def drill_app(world, tmp_path, **policy):
    path = write_policy(tmp_path / "drills.yaml", world.model_server.url, drills=True, **policy)
    return await world.make_app(policy=path)


async def test_a_drill_goes_back_and_forth_verified_and_leaves_no_mark(world, delivery, tmp_path):
    client = await drill_app(world, tmp_path)
    before = dict(world.deployment()["metadata"].get("annotations", {}))
    answer = await post(client, DRILL, {"schedule": "monthly"}, 202)
    detail = await wait_incident(client, answer["incident"], finished, what="the drill")
    assert (detail["kind"], detail["state"], detail["reason"]) == (
        "drill",
        "verified",
        "drill_passed",
    )
    assert (detail["bad_version"], detail["target_version"]) == ("v3", "v2")
    assert detail["actors"][0] == "drill:monthly"
    kinds = event_kinds(detail)
    for step in ("drill_started", "switched", "healthy", "forward_started", "forward_healthy"):
        assert step in kinds, step
    times = detail["times"]
    assert times["acting"] <= times["switched"] <= times["healthy"]

    assert serving_version(world.kube) == "v3"
    assert len(template_changes(world)) == 2
    after = world.deployment()["metadata"].get("annotations", {})
    ours_after = {k: v for k, v in after.items() if k.startswith(ours.PREFIX)}
    ours_before = {k: v for k, v in before.items() if k.startswith(ours.PREFIX)}
    # Only the dating of v3 is added: the return re-adopted v3's old ReplicaSet, which would
    # otherwise make v3 look current since the drill, and refuse alerts that predate it.
    since = json.loads(ours_after.pop(ours.CURRENT_SINCE))
    assert since["version"] == "v3" and since["at"] < times["acting"]
    assert {k: v for k, v in ours_after.items() if k != ours.GENERATION} == ours_before
    for rs in world.kube.replicasets(NS, MODEL):
        assert ours.BAD not in rs["metadata"].get("annotations", {})
    reasons = [e["reason"] for e in world.kube.events(NS)]
    assert "ModelRollbackDrill" in reasons and "ModelRollbackDrillPassed" in reasons

    registry = client.app[keys.METRICS].registry
    assert registry.get_sample_value("receiver_drills_total", {"result": "passed"}) == 1
    series = {"namespace": NS, "model": MODEL}
    assert registry.get_sample_value("receiver_drill_last_success_timestamp_seconds", series)
    assert registry.get_sample_value("receiver_drill_enabled", series) == 1
    stats = await get(client, "/api/stats")
    assert (stats["drills"]["total"], stats["drills"]["passed"]) == (1, 1)
    assert stats["drills"]["durations_seconds"]["rollback_leg"]["count"] == 1
    assert stats["drills"]["durations_seconds"]["forward_leg"]["count"] == 1
    assert f"{NS}/{MODEL}" in stats["drills"]["last_success"]
    assert stats["rollbacks"]["total"] == 0, "a drill is not a rollback"

    # Nothing marked, no cooldown: a real alert about v3 right after is acted on.
    await deliver(client, delivery("firing_single"))

    item = await wait_listed(client, lambda i: i["kind"] == "alert" and i["state"] == "verified")
    assert item["reason"] == "rollback" and serving_version(world.kube) == "v2"


async def test_a_drill_on_a_model_without_drills_is_refused_with_the_reason(world):
    client = await world.make_app()
    answer = await post(client, DRILL, {}, 409)
    assert "drills: true" in answer["error"]
    assert template_changes(world) == []
    registry = client.app[keys.METRICS].registry
    assert (
        registry.get_sample_value("receiver_drill_enabled", {"namespace": NS, "model": MODEL}) == 0
    )


async def test_a_drill_on_a_paused_model_is_refused(world, tmp_path):
    client = await drill_app(world, tmp_path)
    await post(client, f"/api/models/{NS}/{MODEL}/pause", {"reason": "freeze"}, 200)
    answer = await post(client, DRILL, {}, 409)
    assert "paused" in answer["error"]


async def test_a_drill_whose_first_leg_fails_returns_pauses_and_escalates(world, tmp_path):
    client = await drill_app(world, tmp_path, verify_timeout="2s")
    world.kube.hold_version_unready("v2")
    answer = await post(client, DRILL, {"actor": "hank"}, 202)
    detail = await wait_incident(client, answer["incident"], finished, timeout=30)
    assert (detail["state"], detail["reason"]) == ("verification_failed", "drill_failed")
    kinds = event_kinds(detail)
    assert "forward_healthy" in kinds, "the model was returned to the version it served"
    assert "paused" in kinds and "escalated" in kinds
    assert serving_version(world.kube) == "v3"
    pause = json.loads(world.deployment()["metadata"]["annotations"][ours.PAUSED])
    assert pause["actor"] == "receiver" and answer["incident"] in pause["reason"]
    registry = client.app[keys.METRICS].registry
    assert registry.get_sample_value("receiver_drills_total", {"result": "failed"}) == 1
    stats = await get(client, "/api/stats")
    assert (stats["drills"]["total"], stats["drills"]["failed"]) == (1, 1)
    assert stats["drills"]["last_success"] == {}
