"""Canary through the whole receiver: an alert on the canary's version scales it to zero in
one PATCH, the stable is never written, and the stable is verified to serve alone."""

from __future__ import annotations

import json

from receiver.annotations import BAD_VERSIONS, INCIDENT, PREVIOUS_REPLICAS, ROLLED_BACK_FROM
from tests.conftest import wait_for
from tests.strategies.conftest import (
    CANARY,
    NS,
    SCORER,
    STABLE,
    alert_body,
    deliver,
    incident_detail,
    wait_state,
    writes,
)

CANARY_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{CANARY}"
STABLE_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{STABLE}"


async def test_an_alert_on_the_canary_version_scales_it_to_zero_and_verifies_the_stable(canary):
    stable_rv = canary.kube.deployment(NS, STABLE)["metadata"]["resourceVersion"]
    client = await canary.make_app()
    assert await deliver(client, alert_body(SCORER, "v2")) == "accepted"

    item = await wait_state(client, "verified")
    assert (item["strategy"], item["bad_version"], item["target_version"]) == (
        "canary",
        "v2",
        "v1",
    )
    (scale,) = writes(canary.kube, CANARY_PATH)
    assert scale.content_type == "application/merge-patch+json"
    assert scale.body["spec"] == {"replicas": 0}
    assert scale.body["metadata"]["resourceVersion"]
    deployment = canary.kube.deployment(NS, CANARY)
    assert deployment["spec"]["replicas"] == 0
    annotations = deployment["metadata"]["annotations"]
    assert annotations[PREVIOUS_REPLICAS] == "1"
    assert annotations[INCIDENT] == item["id"] and annotations[ROLLED_BACK_FROM] == "v2"
    assert json.loads(annotations[BAD_VERSIONS]) == ["v2"]
    assert canary.kube.pods(NS, deployment=CANARY) == []

    # The stable is never written.
    assert canary.kube.requests_to("PATCH", STABLE_PATH) == []
    assert canary.kube.deployment(NS, STABLE)["metadata"]["resourceVersion"] == stable_rv
    # Verified through the Service once only the stable answered.
    metadata = canary.servers["service"].requests_to("model_metadata")
    assert metadata
    events = canary.kube.events(NS, reason="ModelRolledBack")
    assert len(events) == 1 and events[0]["regarding"]["name"] == CANARY


async def test_an_alert_on_the_stable_version_is_notified_not_acted_on(canary):
    client = await canary.make_app()
    await deliver(client, alert_body(SCORER, "v1"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "no_target"
    detail = await incident_detail(client, item["id"])
    messages = " ".join(e["message"] for e in detail["events"])
    assert "a canary rollback" in messages and "does not fix the stable version" in messages
    assert canary.kube.requests_to("PATCH", CANARY_PATH) == []
    assert canary.kube.deployment(NS, CANARY)["spec"]["replicas"] == 1


async def test_a_canary_already_at_zero_no_longer_serves(canary):
    await canary.kube.scale(NS, CANARY, 0)
    await canary.kube.wait_rollout_complete(NS, CANARY)
    canary.kube.requests.clear()
    client = await canary.make_app()
    await deliver(client, alert_body(SCORER, "v2"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "no_longer_serving"
    assert canary.kube.requests_to("PATCH", CANARY_PATH) == []


async def test_a_stable_without_available_replicas_is_not_left_alone_serving(canary):
    canary.kube.hold_version_unready("v1")
    await wait_for(
        lambda: not canary.kube.deployment(NS, STABLE)["status"].get("availableReplicas"),
        what="the stable to lose its available replicas",
    )
    client = await canary.make_app()
    await deliver(client, alert_body(SCORER, "v2"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "no_target"
    detail = await incident_detail(client, item["id"])
    assert any("would leave nothing serving" in e["message"] for e in detail["events"])
    assert writes(canary.kube, CANARY_PATH) == []


async def test_dry_run_changes_nothing(canary):
    rv = canary.kube.deployment(NS, CANARY)["metadata"]["resourceVersion"]
    client = await canary.make_app(dry_run=True)
    await deliver(client, alert_body(SCORER, "v2"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "dry_run" and item["target_version"] == "v1"
    assert canary.kube.deployment(NS, CANARY)["metadata"]["resourceVersion"] == rv
    assert canary.kube.deployment(NS, CANARY)["spec"]["replicas"] == 1
    assert writes(canary.kube, CANARY_PATH) == []
    assert [r.query.get("dryRun") for r in canary.kube.requests_to("PATCH", CANARY_PATH)] == ["All"]
    assert canary.kube.events(NS, reason="ModelRolledBack") == []


async def test_a_worker_lost_right_after_the_scale_down_is_finished_without_a_second_one(canary):
    canary.servers["service"].ready = False
    first = await canary.make_app(job_lease_seconds=1.0)
    await deliver(first, alert_body(SCORER, "v2"))
    await wait_for(
        lambda: canary.kube.deployment(NS, CANARY)["spec"]["replicas"] == 0,
        what="the scale-down",
    )
    await first.close()

    second = await canary.make_app(job_lease_seconds=1.0)
    canary.servers["service"].ready = True
    await wait_state(second, "verified", timeout=30)
    assert len(writes(canary.kube, CANARY_PATH)) == 1
    assert len(canary.kube.events(NS, reason="ModelRolledBack")) == 1
