"""The core loop end to end: alert in, rollout-undo applied once, verified, recorded."""

from __future__ import annotations

import asyncio
from collections import Counter

from receiver import keys
from receiver.annotations import BAD as ANNOTATION_BAD
from receiver.annotations import CHANGED_AT as ANNOTATION_CHANGED_AT
from receiver.annotations import INCIDENT as ANNOTATION_INCIDENT
from receiver.annotations import ROLLED_BACK_FROM as ANNOTATION_ROLLED_BACK_FROM
from receiver.annotations import ROLLED_BACK_TO as ANNOTATION_ROLLED_BACK_TO
from tests.worker.conftest import (
    ADMIN,
    MODEL,
    NS,
    deliver,
    incidents,
    serving_version,
    template_changes,
    wait_state,
)


async def test_fixture_alert_rolls_back_to_the_previous_good_revision_and_verifies(world, delivery):
    client = await world.make_app()
    body = await deliver(client, delivery("firing_single"))
    assert body["alerts"][0]["outcome"] == "accepted"

    item = await wait_state(client, "verified")
    assert (item["bad_version"], item["target_version"], item["strategy"]) == (
        "v3",
        "v2",
        "rollout-undo",
    )
    assert item["triggers"] == ["error_rate"]
    times = item["times"]
    assert times["received"] and times["acting"] and times["switched"] and times["healthy"]
    assert times["received"] <= times["acting"] <= times["switched"] <= times["healthy"]

    assert serving_version(world.kube) == "v2"
    assert len(template_changes(world)) == 1
    annotations = world.deployment()["metadata"]["annotations"]
    assert annotations[ANNOTATION_INCIDENT] == item["id"]
    assert annotations[ANNOTATION_ROLLED_BACK_FROM] == "v3"
    assert annotations[ANNOTATION_ROLLED_BACK_TO] == "v2"
    assert ANNOTATION_CHANGED_AT in annotations
    # The undo re-adopted the v2 ReplicaSet as revision 4, as the real controller does.
    assert world.kube.rollout_history(NS, MODEL) == [1, 3, 4]
    bad = [
        rs
        for rs in world.kube.replicasets(NS, MODEL)
        if ANNOTATION_BAD in rs["metadata"].get("annotations", {})
    ]
    assert [
        rs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] for rs in bad
    ] == ["v3"]
    reasons = [e["reason"] for e in world.kube.events(NS)]
    assert reasons.count("ModelRolledBack") == 1 and reasons.count("ModelRollbackVerified") == 1

    detail = await (await client.get(f"/api/incidents/{item['id']}", headers=ADMIN)).json()
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds[0] == "opened" and "switched" in kinds
    # Without a Prometheus URL the record says confirmation is off, right after healthy.
    assert kinds[-2:] == ["healthy", "confirmation_off"]

    registry = client.app[keys.METRICS].registry
    labels = {"strategy": "rollout-undo"}
    assert registry.get_sample_value("receiver_received_to_switched_seconds_count", labels) == 1
    assert registry.get_sample_value("receiver_received_to_healthy_seconds_count", labels) == 1
    assert (
        registry.get_sample_value("receiver_rollbacks_total", {**labels, "result": "verified"}) == 1
    )
    text = await (await client.get("/metrics")).text()
    assert "receiver_received_to_healthy_seconds_bucket" in text


async def test_fifty_deliveries_across_two_instances_change_the_template_once(world, delivery):
    a = await world.make_app()
    b = await world.make_app()
    d = delivery("ha_replica_a")
    e = delivery("ha_replica_b")

    async def send(i: int) -> str:
        client, payload = (a, d) if i % 2 else (b, e)
        return (await deliver(client, payload))["alerts"][0]["outcome"]

    outcomes = Counter(await asyncio.gather(*(send(i) for i in range(50))))
    assert outcomes == Counter({"accepted": 1, "duplicate": 49})
    await wait_state(a, "verified")
    assert len(template_changes(world)) == 1
    assert len(await incidents(a)) == 1
