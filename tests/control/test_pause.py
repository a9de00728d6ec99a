"""Pauses: durable before the answer, on Kubernetes objects, surviving Redis and restarts."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from receiver import annotations as ours
from receiver import keys
from tests.control.conftest import (
    ADMIN,
    OWN_NAMESPACE,
    get,
    post,
    refired,
    template_changes,
    wait_incident,
)
from tests.worker.conftest import MODEL, NS, deliver, serving_version, wait_state

PAUSE = f"/api/models/{NS}/{MODEL}/pause"
RESUME = f"/api/models/{NS}/{MODEL}/resume"


def paused_annotation(world: Any) -> dict[str, Any] | None:
    value = world.deployment()["metadata"].get("annotations", {}).get(ours.PAUSED)
    return json.loads(value) if value else None


def state_configmap(world: Any) -> dict[str, Any] | None:
    return world.kube.get("configmaps", OWN_NAMESPACE, "rollback-receiver-state")


async def test_a_model_pause_is_on_the_workload_when_answered_and_alerts_are_not_acted_on(
    world, delivery
):
    client = await world.make_app()
    answer = await post(client, PAUSE, {"actor": "alice", "reason": "bad data upstream"}, 200)
    # Durable before the answer: the annotation is there as soon as the call returns.
    pause = paused_annotation(world)
    assert pause is not None
    assert (pause["actor"], pause["reason"]) == ("admin:alice", "bad data upstream")
    assert answer["paused"] is True and answer["actor"] == "admin:alice"

    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "refused")
    assert item["reason"] == "paused"
    assert serving_version(world.kube) == "v3"
    assert template_changes(world) == []

    await world.kube.wait_for(
        lambda: [e for e in world.kube.events(NS) if e["reason"] == "ModelAutomationPaused"],
        timeout=5,
        what="the pause Event on the workload",
    )
    registry = client.app[keys.METRICS].registry
    series = {"namespace": NS, "model": MODEL}
    assert registry.get_sample_value("receiver_model_paused", series) == 1

    await post(client, RESUME, {"actor": "alice"}, 200)
    assert paused_annotation(world) is None
    assert registry.get_sample_value("receiver_model_paused", series) == 0
    await deliver(client, refired(delivery("firing_single"), 1))
    await wait_state(client, "verified")
    assert serving_version(world.kube) == "v2"


async def test_a_pause_without_a_body_is_by_the_api(world):
    client = await world.make_app()
    resp = await client.post(PAUSE, headers=ADMIN)
    assert resp.status == 200
    assert paused_annotation(world)["actor"] == "admin:api"


async def test_pausing_a_model_not_in_the_policy_is_404(world):
    client = await world.make_app()
    answer = await post(client, f"/api/models/{NS}/no-such-model/pause", {}, 404)
    assert "not in the policy" in answer["error"]
    # The entry has no cluster: the same name in another cluster is another model.
    answer = await post(client, f"{PAUSE}?cluster=eu-1", {}, 404)
    assert "in cluster 'eu-1' is not in the policy" in answer["error"]
    assert paused_annotation(world) is None


async def test_the_global_pause_is_on_the_state_configmap_and_refuses_every_alert(world, delivery):
    await world.kube.create_namespace(OWN_NAMESPACE)
    client = await world.make_app(namespace=OWN_NAMESPACE)
    assert state_configmap(world) is None
    answer = await post(client, "/api/pause", {"actor": "bob", "reason": "3 a.m. storm"}, 200)
    assert answer["scope"] == "global" and answer["paused"] is True
    # Created when missing, with the pause in it, before the answer.
    data = state_configmap(world)["data"]
    assert json.loads(data["paused"])["actor"] == "admin:bob"
    registry = client.app[keys.METRICS].registry
    assert registry.get_sample_value("receiver_global_paused") == 1

    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "refused")
    assert item["reason"] == "paused"
    assert template_changes(world) == []

    models = await get(client, "/api/models")
    assert models["global"]["paused"] is True and models["global"]["actor"] == "admin:bob"

    await post(client, "/api/resume", {"actor": "bob"}, 200)
    assert "paused" not in (state_configmap(world).get("data") or {})
    assert registry.get_sample_value("receiver_global_paused") == 0
    await deliver(client, refired(delivery("firing_single"), 1))
    await wait_state(client, "verified")


async def test_both_pauses_survive_a_redis_flush_and_a_restart(
    world, delivery, redis_process, aiohttp_client
):
    await world.kube.create_namespace(OWN_NAMESPACE)
    options = {"namespace": OWN_NAMESPACE, "redis_url": redis_process.url}
    first = await world.make_app(**options)
    await post(first, PAUSE, {"actor": "alice", "reason": "investigating"}, 200)
    await post(first, "/api/pause", {"actor": "alice", "reason": "freeze"}, 200)
    await first.close()

    flush = aioredis.Redis.from_url(redis_process.url)
    try:
        await flush.flushall()
    finally:
        await flush.aclose()

    second = await world.make_app(**options)
    # The listing shows each model's pause as its last readiness check read it: check now.
    await post(second, f"/api/models/{NS}/{MODEL}/check", {}, 200)
    models = await get(second, "/api/models")
    assert models["global"]["paused"] is True
    assert [m["paused"] for m in models["items"]] == [True]
    d = await deliver(second, delivery("firing_single"))
    assert d["alerts"][0]["outcome"] == "accepted"  # the flush forgot the dedup key too
    item = await wait_state(second, "refused")
    assert item["reason"] == "paused"
    # The global pause alone still refuses once the model's is lifted.
    await post(second, RESUME, {}, 200)
    detail_id = item["id"]
    await deliver(second, refired(delivery("firing_single"), 1))
    await wait_incident(
        second,
        detail_id,
        lambda d: sum(e["kind"] == "joined" for e in d["events"]) >= 1,
        what="the second alert recorded",
    )
    detail = await get(second, f"/api/incidents/{detail_id}")
    assert "paused globally" in detail["events"][-1]["message"]
    assert template_changes(world) == []


async def test_a_pause_is_posted_to_slack_and_written_to_the_audit_log(world, slack, caplog):
    client = await world.make_app(
        slack_bot_token=slack.token, slack_api_url=slack.base_url, slack_channel="#ml-oncall"
    )
    caplog.set_level("INFO", logger="receiver.audit")
    await post(client, PAUSE, {"actor": "kim", "reason": "retraining"}, 200)
    await slack.wait_for(lambda: len(slack.messages) == 1, timeout=10)
    message = slack.only_message()
    assert f"Automation paused for {NS}/{MODEL}" in message.text
    assert "admin:kim" in message.text and "retraining" in message.text
    (record,) = [r for r in caplog.records if getattr(r, "control", None) == "pause"]
    assert (record.actor, record.reason, record.model) == ("admin:kim", "retraining", MODEL)
    assert record.audit is True
