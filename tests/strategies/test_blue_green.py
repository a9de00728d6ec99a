"""Blue-green through the whole receiver: the standby checked, the Service switched once,
the Deployments never written, verified through the Service's own URL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from receiver import keys
from receiver.annotations import (
    BAD_VERSIONS,
    CHANGED_AT,
    INCIDENT,
    PREVIOUS_SLOT,
    ROLLED_BACK_FROM,
    ROLLED_BACK_TO,
)
from tests.conftest import wait_for
from tests.strategies.conftest import (
    NS,
    RANKER,
    SERVICE_PATH,
    SLOTS,
    alert_body,
    deliver,
    incident_detail,
    incidents,
    wait_state,
    writes,
)

DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments/*"


async def test_an_alert_on_the_active_slot_switches_the_service_to_the_standby_and_verifies(
    blue_green,
):
    client = await blue_green.make_app()
    assert await deliver(client, alert_body(RANKER, "v2")) == "accepted"

    item = await wait_state(client, "verified")
    assert (item["strategy"], item["bad_version"], item["target_version"]) == (
        "blue-green",
        "v2",
        "v1",
    )
    assert blue_green.selected() == "blue"
    (switch,) = writes(blue_green.kube, SERVICE_PATH)
    assert switch.content_type == "application/merge-patch+json"
    assert switch.body["spec"] == {"selector": {"slot": "blue"}}
    assert switch.body["metadata"]["resourceVersion"]
    # The selector's other keys stay: a merge patch merges maps.
    assert blue_green.service()["spec"]["selector"] == {"app": RANKER, "slot": "blue"}

    annotations = blue_green.service()["metadata"]["annotations"]
    assert annotations[INCIDENT] == item["id"]
    assert (annotations[ROLLED_BACK_FROM], annotations[ROLLED_BACK_TO]) == ("v2", "v1")
    assert annotations[PREVIOUS_SLOT] == "green"
    assert json.loads(annotations[BAD_VERSIONS]) == ["v2"]
    assert CHANGED_AT in annotations
    # The slots' Deployments are never written.
    assert blue_green.kube.requests_to("PATCH", DEPLOYMENTS) == []
    assert blue_green.kube.requests_to("PUT", DEPLOYMENTS) == []

    # The standby was checked through its own URL before the switch, with an inference.
    assert blue_green.servers["blue"].requests_to("infer")
    assert blue_green.servers["service"].requests_to("infer")
    events = blue_green.kube.events(NS, reason="ModelRolledBack")
    assert len(events) == 1 and events[0]["regarding"]["kind"] == "Service"
    assert len(blue_green.kube.events(NS, reason="ModelRollbackVerified")) == 1
    registry = client.app[keys.METRICS].registry
    labels = {"strategy": "blue-green"}
    assert registry.get_sample_value("receiver_received_to_switched_seconds_count", labels) == 1
    assert registry.get_sample_value("receiver_received_to_healthy_seconds_count", labels) == 1


async def make_standby_unhealthy(world) -> str:
    world.servers["blue"].bad_versions = {"v1"}  # inference fails on the standby
    return "infer check failed"


async def mark_standby_bad(world) -> str:
    await world.kube.patch(
        "services", NS, RANKER, {"metadata": {"annotations": {BAD_VERSIONS: '["v1"]'}}}
    )
    return "marked bad on the Service"


async def delete_standby(world) -> str:
    await world.kube.delete("deployments", NS, SLOTS["blue"])
    return "does not exist"


async def shrink_standby(world) -> str:
    await world.kube.scale(NS, SLOTS["blue"], 1)
    await world.kube.wait_rollout_complete(NS, SLOTS["blue"])
    return "1 available replicas, fewer than the active slot's 2"


async def standby_runs_the_bad_version(world) -> str:
    await world.kube.set_version(NS, SLOTS["blue"], "v2", wait=True)
    return "runs v2 too"


@pytest.mark.parametrize(
    "spoil",
    [
        make_standby_unhealthy,
        mark_standby_bad,
        delete_standby,
        shrink_standby,
        standby_runs_the_bad_version,
    ],
)
async def test_a_standby_that_fails_its_check_is_refused_with_the_reason(blue_green, spoil):
    expected = await spoil(blue_green)
    blue_green.kube.requests.clear()
    client = await blue_green.make_app()
    await deliver(client, alert_body(RANKER, "v2"))

    item = await wait_state(client, "notified")
    assert item["reason"] == "no_target"
    detail = await incident_detail(client, item["id"])
    messages = " ".join(e["message"] for e in detail["events"])
    assert f"standby {SLOTS['blue']} (slot blue" in messages
    assert expected in messages
    assert blue_green.selected() == "green"
    assert blue_green.kube.requests_to("PATCH", SERVICE_PATH) == []


async def test_a_conflict_on_the_service_reads_again_and_switches_once(blue_green):
    blue_green.kube.fail("PATCH", SERVICE_PATH, 409)
    client = await blue_green.make_app()
    await deliver(client, alert_body(RANKER, "v2"))
    await wait_state(client, "verified")

    patches = writes(blue_green.kube, SERVICE_PATH)
    assert [p.status for p in patches] == [409, 200]
    # Read again (and decided again) between the two.
    requests = blue_green.kube.requests
    first, second = (requests.index(p) for p in patches)
    assert any(r.method == "GET" and r.path == SERVICE_PATH for r in requests[first:second])
    assert blue_green.selected() == "blue"


async def test_many_deliveries_at_two_replicas_switch_once(blue_green):
    a = await blue_green.make_app()
    b = await blue_green.make_app()
    body = alert_body(RANKER, "v2")
    outcomes = Counter(await asyncio.gather(*(deliver(a if i % 2 else b, body) for i in range(40))))
    assert outcomes == Counter({"accepted": 1, "duplicate": 39})
    await wait_state(a, "verified")
    assert len(writes(blue_green.kube, SERVICE_PATH)) == 1
    assert len(await incidents(a)) == 1
    assert len(blue_green.kube.events(NS, reason="ModelRolledBack")) == 1


async def test_a_worker_lost_right_after_the_switch_is_finished_without_a_second_one(blue_green):
    # Nothing answers healthy through the Service yet: the first worker stays verifying.
    blue_green.servers["service"].ready = False
    first = await blue_green.make_app(job_lease_seconds=1.0)
    await deliver(first, alert_body(RANKER, "v2"))
    await wait_for(lambda: blue_green.selected() == "blue", what="the switch")
    await first.close()

    second = await blue_green.make_app(job_lease_seconds=1.0)
    blue_green.servers["service"].ready = True
    item = await wait_state(second, "verified", timeout=30)
    assert len(writes(blue_green.kube, SERVICE_PATH)) == 1
    assert len(blue_green.kube.events(NS, reason="ModelRolledBack")) == 1
    assert item["times"]["switched"] is not None
    assert blue_green.selected() == "blue"


async def test_dry_run_checks_the_standby_and_changes_nothing(blue_green):
    rv = blue_green.service()["metadata"]["resourceVersion"]
    client = await blue_green.make_app(dry_run=True)
    await deliver(client, alert_body(RANKER, "v2"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "dry_run" and item["target_version"] == "v1"
    assert blue_green.service()["metadata"]["resourceVersion"] == rv
    assert blue_green.selected() == "green"
    assert writes(blue_green.kube, SERVICE_PATH) == []
    assert [r.query.get("dryRun") for r in blue_green.kube.requests_to("PATCH", SERVICE_PATH)] == [
        "All"
    ]
    assert blue_green.kube.events(NS, reason="ModelRolledBack") == []


async def test_an_alert_on_the_standby_version_is_not_acted_on(blue_green):
    client = await blue_green.make_app()
    await deliver(client, alert_body(RANKER, "v1"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "no_longer_serving"
    assert blue_green.kube.requests_to("PATCH", SERVICE_PATH) == []
