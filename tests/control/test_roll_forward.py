"""Roll forward: undo our last rollback, vouch for the version, keep its alerts notified."""

from __future__ import annotations

import json

from receiver import annotations as ours
from tests.control.conftest import (
    event_kinds,
    get,
    post,
    refired,
    template_changes,
    wait_incident,
)
from tests.worker.conftest import MODEL, NS, deliver, serving_version, wait_state, write_policy

ROLL_FORWARD = f"/api/models/{NS}/{MODEL}/roll-forward"


def rolled_forward(detail: dict) -> bool:
    return "roll_forward_healthy" in event_kinds(detail)


def replicaset_annotations(world, version: str) -> dict:
    for rs in world.kube.replicasets(NS, MODEL):
        labels = rs["spec"]["template"]["metadata"]["labels"]
        if labels["app.kubernetes.io/version"] == version:
            return rs["metadata"].get("annotations", {})
    raise AssertionError(f"no ReplicaSet of {version}")


async def rolled_back(world, delivery, **app_options):
    client = await world.make_app(**app_options)
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verified")
    assert serving_version(world.kube) == "v2"
    assert ours.BAD in replicaset_annotations(world, "v3")
    return client, item


async def test_roll_forward_then_the_same_alert_again_does_not_roll_back(world, delivery):
    client, item = await rolled_back(world, delivery)
    answer = await post(client, ROLL_FORWARD, {"actor": "gina", "reason": "false alarm"}, 202)
    assert answer["incident"] == item["id"]
    detail = await wait_incident(client, item["id"], rolled_forward, what="roll forward verified")
    assert detail["state"] == "verified", "the rollback's outcome is kept"
    assert serving_version(world.kube) == "v3"

    annotations = world.deployment()["metadata"]["annotations"]
    accepted = json.loads(annotations[ours.ACCEPTED])
    assert (accepted["version"], accepted["actor"]) == ("v3", "admin:gina")
    assert "v3" not in json.loads(annotations.get(ours.BAD_VERSIONS, "[]"))
    assert ours.ROLLED_BACK_FROM not in annotations
    assert ours.BAD not in replicaset_annotations(world, "v3")
    reasons = [e["reason"] for e in world.kube.events(NS)]
    assert "ModelRolledForward" in reasons and "ModelRollForwardVerified" in reasons

    changes = len(template_changes(world))
    await deliver(client, refired(delivery("firing_single"), 30))

    async def refused() -> dict | None:
        items = (await get(client, "/api/incidents"))["items"]
        return next((i for i in items if i["reason"] == "accepted"), None)

    from tests.conftest import wait_for

    item2 = await wait_for(refused, timeout=10, what="the alert about v3 refused as accepted")
    assert item2["state"] == "refused"
    assert serving_version(world.kube) == "v3"
    assert len(template_changes(world)) == changes


async def test_a_version_replacing_the_accepted_one_is_rolled_back_as_usual(
    world, delivery, tmp_path
):
    policy = write_policy(tmp_path / "p.yaml", world.model_server.url, cooldown="0s")
    client, item = await rolled_back(world, delivery, policy=policy)
    await post(client, f"/api/incidents/{item['id']}/roll-forward", {}, 202)
    await wait_incident(client, item["id"], rolled_forward)
    # v4 replaces the accepted v3, then the team goes back to v3 by hand: the acceptance
    # ended with v4, so an alert about v3 is acted on again.
    await world.kube.set_version(NS, MODEL, "v4", wait=True)
    await world.kube.set_version(NS, MODEL, "v3", wait=True)
    from tests.worker.conftest import alert_started, backdate_current

    backdate_current(world.kube, alert_started())
    await deliver(client, refired(delivery("firing_single"), 1))

    async def decided() -> dict | None:
        items = (await get(client, "/api/incidents"))["items"]
        return next((i for i in items if i["id"] != item["id"]), None)

    from tests.conftest import wait_for

    other = await wait_for(decided, timeout=10, what="the redeployed v3's alert decided")
    assert other["bad_version"] == "v3"
    detail = await wait_incident(client, other["id"], lambda d: d["state"] == "verified")
    assert detail["reason"] == "rollback"
    assert serving_version(world.kube) == "v4"


async def test_nothing_to_roll_forward_is_409(world):
    client = await world.make_app()
    answer = await post(client, ROLL_FORWARD, {}, 409)
    assert "nothing to roll forward" in answer["error"]


async def test_rolling_forward_an_incident_that_is_not_the_last_is_409(world, delivery):
    client, item = await rolled_back(world, delivery)
    answer = await post(client, "/api/incidents/inc-000000000000/roll-forward", {}, 404)
    assert "inc-000000000000" in answer["error"]
    # A forced rollback of v2 makes another incident the last one.
    forced = await post(client, f"/api/models/{NS}/{MODEL}/rollback", {"to_revision": 1}, 202)
    await wait_incident(client, forced["incident"], lambda d: d["state"] == "verified")
    answer = await post(client, f"/api/incidents/{item['id']}/roll-forward", {}, 409)
    assert f"the last is {forced['incident']}" in answer["error"]
