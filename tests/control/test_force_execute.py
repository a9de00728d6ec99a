"""Forced rollbacks and executed recommendations: queued like alerts, decided on a fresh read."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from receiver import annotations as ours
from tests.control.conftest import (
    event_kinds,
    get,
    post,
    template_changes,
    wait_incident,
)
from tests.worker.conftest import (
    MODEL,
    NS,
    alert_started,
    backdate_current,
    deliver,
    serving_version,
    wait_state,
    write_policy,
)

FORCE = f"/api/models/{NS}/{MODEL}/rollback"


def done(detail: dict) -> bool:
    return detail["state"] in ("verified", "refused", "failed", "verification_failed")


async def test_force_acts_on_an_alert_refused_for_causality(world, delivery):
    # v3 served for days before the alert started: the alert is not its fault, by rule 6.
    backdate_current(world.kube, alert_started() - timedelta(days=3))
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    refused = await wait_state(client, "refused")
    assert refused["reason"] == "outside_causality_window"
    assert template_changes(world) == []

    answer = await post(client, FORCE, {"actor": "carol", "reason": "it is v3, trust me"}, 202)
    assert answer["incident"] == refused["id"], "the force joins the incident of v3"
    assert answer["job"].startswith("job-")
    detail = await wait_incident(client, answer["incident"], lambda d: d["state"] == "verified")
    assert detail["reason"] == "forced"
    assert "admin:carol" in detail["actors"]
    assert serving_version(world.kube) == "v2"
    assert len(template_changes(world)) == 1


async def test_force_to_a_chosen_revision(world):
    client = await world.make_app()
    answer = await post(client, FORCE, {"to_revision": 1}, 202)
    detail = await wait_incident(client, answer["incident"], done)
    assert (detail["state"], detail["target_version"]) == ("verified", "v1")
    assert serving_version(world.kube) == "v1"


async def test_force_to_a_revision_that_does_not_exist_is_400(world):
    client = await world.make_app()
    answer = await post(client, FORCE, {"to_revision": 9}, 400)
    assert "earlier revisions: 2, 1" in answer["error"]
    assert (await post(client, FORCE, {"to_revision": "two"}, 400))["error"]


async def test_force_never_overrides_a_deployment_paused_by_a_person(world):
    await world.kube.pause(NS, MODEL)
    client = await world.make_app()
    answer = await post(client, FORCE, {"reason": "now"}, 202)
    detail = await wait_incident(client, answer["incident"], done)
    assert (detail["state"], detail["reason"]) == ("refused", "deployment_paused")
    assert "never unpaused" in detail["events"][-1]["message"]
    assert world.deployment()["spec"]["paused"] is True
    assert template_changes(world) == []
    assert serving_version(world.kube) == "v3"


async def notified(world, delivery, tmp_path):
    policy = write_policy(tmp_path / "notify.yaml", world.model_server.url, mode="notify")
    client = await world.make_app(policy=policy)
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "notified")
    assert (item["reason"], item["target_version"]) == ("mode_notify", "v2")
    return client, item


async def test_execute_carries_out_the_recommendation(world, delivery, tmp_path):
    client, item = await notified(world, delivery, tmp_path)
    answer = await post(client, f"/api/incidents/{item['id']}/execute", {"actor": "dan"}, 202)
    assert answer["incident"] == item["id"]
    detail = await wait_incident(client, item["id"], lambda d: d["state"] == "verified")
    assert detail["reason"] == "executed"
    assert serving_version(world.kube) == "v2"


async def test_execute_when_the_version_no_longer_serves_changes_nothing_and_says_why(
    world, delivery, tmp_path
):
    client, item = await notified(world, delivery, tmp_path)
    await world.kube.set_version(NS, MODEL, "v4", wait=True)  # a person shipped a fix
    world.kube.requests.clear()
    answer = await post(client, f"/api/incidents/{item['id']}/execute", {"actor": "dan"}, 202)
    detail = await wait_incident(client, answer["incident"], lambda d: d["state"] == "refused")
    assert detail["reason"] == "no_longer_serving"
    assert "now serves v4; nothing to roll back" in detail["events"][-1]["message"]
    assert serving_version(world.kube) == "v4"
    assert world.template_patches() == []


async def test_execute_is_refused_once_the_incident_acted(world, delivery):
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verified")
    answer = await post(client, f"/api/incidents/{item['id']}/execute", {}, 409)
    assert "verified" in answer["error"]
    assert (await post(client, "/api/incidents/inc-000000000000/execute", {}, 404))["error"]


async def test_a_force_and_an_alert_at_once_act_once(world, delivery):
    client = await world.make_app()
    forced, _ = await asyncio.gather(
        post(client, FORCE, {"actor": "erin"}, 202), deliver(client, delivery("firing_single"))
    )
    await wait_incident(client, forced["incident"], lambda d: d["state"] == "verified")

    async def both_recorded() -> bool:
        detail = await get(client, f"/api/incidents/{forced['incident']}")
        kinds = event_kinds(detail)
        return "opened" in kinds and "joined" in kinds

    from tests.conftest import wait_for

    await wait_for(both_recorded, timeout=10, what="the alert and the force on one incident")
    assert len(template_changes(world)) == 1
    assert serving_version(world.kube) == "v2"
    items = (await get(client, "/api/incidents"))["items"]
    assert len(items) == 1
    assert world.deployment()["metadata"]["annotations"][ours.INCIDENT] == forced["incident"]
