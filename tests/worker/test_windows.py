"""The narrow windows of the pipeline, each with its fault injected exactly there.

Between the PATCH and the record (a lost reply, a Redis error, a worker cancelled, a
process killed), a PATCH the API server refuses, a restart that makes a new ReplicaSet of
the serving version, two models on one Deployment, an object gone while verifying, a bad
mark that needs a second try, a bad version back after our rollback, a stale mark of ours
and conflicts caused by the controller's status writes. Everything runs through the whole
app: the webhook, real Redis, the Kubernetes stand-in and the model server stand-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from receiver import keys
from receiver.annotations import BAD, BAD_VERSIONS, GENERATION, PAUSED, ROLLED_BACK_TO
from receiver.app import HANDLER
from receiver.models import Job, rfc3339
from receiver.store import RedisStore
from tests.conftest import ADMIN_TOKEN, REDIS_URL, WEBHOOK_TOKEN, free_port, wait_for
from tests.worker.conftest import (
    ADMIN,
    MODEL,
    NS,
    SAMPLE_REQUEST,
    VERSION_LABEL,
    alert_started,
    deliver,
    incidents,
    serving_version,
    template_changes,
    wait_state,
)
from tests.worker.helpers import (
    REFIRED,
    alert,
    decided,
    first_rollback,
    jobs_done,
    settled,
    v3_serves_again,
)

DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}"
REPLICASETS_PATH = f"/apis/apps/v1/namespaces/{NS}/replicasets/*"
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"
WORKLOAD = f"{NS}/deployment/{MODEL}"
"""The lease and the guards' history are kept per workload (``RollbackService.lease_key``)."""
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
SHADOW = "fraud-scorer-shadow"
"""A second model the policy serves from the same Deployment."""
HELD_REPLY_SECONDS = 30.0
"""The most the stand-in holds a landed PATCH's reply while the receiver is stopped: far
longer than stopping takes; the test releases it as soon as the receiver is gone."""


# --- helpers -----------------------------------------------------------------------------


def write_policy(world: Any, tmp_path: Path, *extra_models: dict[str, Any], **model: Any) -> Path:
    """The world's policy (its model entry with ``model``'s keys) plus other model entries."""
    entry = {
        "name": MODEL,
        "namespace": NS,
        "tier": "critical",
        "deployment": MODEL,
        "health": {"base_url": world.model_server.url, "sample_request": SAMPLE_REQUEST},
        **model,
    }
    document = {
        "defaults": {"verify_timeout": "10s", "cooldown": "30m"},
        "models": [entry, *extra_models],
    }
    path = tmp_path / "windows-policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def detail(client: Any, incident_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/incidents/{incident_id}", headers=ADMIN)
    assert resp.status == 200
    return await resp.json()


async def event_kinds(client: Any, incident_id: str) -> list[str]:
    return [e["kind"] for e in (await detail(client, incident_id))["events"]]


async def kube_events(kube: Any, reason: str, count: int = 1) -> list[dict[str, Any]]:
    """The Events of ``reason`` once ``count`` are posted (they are posted in the background)."""
    await wait_for(
        lambda: len(kube.events(NS, reason=reason)) >= count,
        timeout=10,
        interval=0.02,
        what=f"{count} {reason} Event(s)",
    )
    return kube.events(NS, reason=reason)


def versions_marked_bad(kube: Any, name: str = MODEL) -> list[str]:
    """Versions of the ReplicaSets carrying ``rollback-receiver.io/bad``, by revision."""
    return [
        rs["spec"]["template"]["metadata"]["labels"][VERSION_LABEL]
        for rs in kube.replicasets(NS, name)
        if BAD in (rs["metadata"].get("annotations") or {})
    ]


def listed_bad(kube: Any) -> list[str]:
    """The Deployment's ``rollback-receiver.io/bad-versions``."""
    annotations = kube.deployment(NS, MODEL)["metadata"].get("annotations") or {}
    return json.loads(annotations.get(BAD_VERSIONS, "[]"))


async def rollbacks_counted(client: Any) -> list[datetime]:
    """The rollbacks of the workload the guards count (the store's history)."""
    store = client.app[keys.STORE]
    return await store.recent_rollbacks(WORKLOAD, datetime(2000, 1, 1, tzinfo=UTC))


def metric(client: Any, name: str, **labels: str) -> float:
    value = client.app[keys.METRICS].registry.get_sample_value(name, labels)
    return value or 0.0


def rollbacks_metric(client: Any, result: str) -> float:
    return metric(client, "receiver_rollbacks_total", strategy="rollout-undo", result=result)


def template_patch_statuses(world: Any) -> list[int | None]:
    return [p.status for p in template_changes(world)]


async def unfreeze_once_verifying(world: Any) -> None:
    """The controller stood still while the re-driven job read the workload; let it roll out
    once verification has started (the first pod list: nothing else lists pods)."""
    await wait_for(
        lambda: world.kube.requests_to("GET", PODS_PATH),
        timeout=20,
        interval=0.02,
        what="verification to start",
    )
    world.kube.unfreeze(NS, MODEL)


async def assert_finished_as_on_the_first_run(world: Any, client: Any) -> dict[str, Any]:
    """What a rollback leaves behind, whichever run of the job got past the PATCH."""
    item = await wait_state(client, "verified", timeout=30)
    assert (item["bad_version"], item["target_version"]) == ("v3", "v2")
    assert item["times"]["switched"] is not None
    assert item["times"]["acting"] <= item["times"]["switched"] <= item["times"]["healthy"]
    assert "switched" in await event_kinds(client, item["id"])
    # One template change: the re-driven job finished the first one instead of a second.
    assert len(template_changes(world)) == 1
    assert serving_version(world.kube) == "v2"
    assert versions_marked_bad(world.kube) == ["v3"]
    assert listed_bad(world.kube) == ["v3"]
    events = await kube_events(world.kube, "ModelRolledBack")
    assert item["id"] in events[0]["note"] and "v3 -> v2" in events[0]["note"]
    assert len(await rollbacks_counted(client)) == 1
    assert metric(client, "receiver_received_to_switched_seconds_count", strategy="rollout-undo")
    return item


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.asynccontextmanager
async def redis_admin(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


# --- 1. between the PATCH and the record -------------------------------------------------


@pytest.mark.parametrize("lost", ["500", "dropped"])
async def test_a_patch_whose_reply_is_lost_is_finished_by_the_redriven_job(world, delivery, lost):
    # The PATCH lands; its answer is a 500 or a closed connection. The controller lags, so
    # the re-driven job reads the workload before the restored ReplicaSet is re-adopted.
    world.kube.fail(
        "PATCH", DEPLOYMENT_PATH, 500 if lost == "500" else None, after=True, drop=lost != "500"
    )
    world.kube.freeze(NS, MODEL)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    await unfreeze_once_verifying(world)

    await assert_finished_as_on_the_first_run(world, client)
    # The one template PATCH is the lost one (a dropped reply has no status at all).
    assert template_patch_statuses(world) == [500 if lost == "500" else None]


async def test_a_redis_error_on_the_first_save_after_the_patch_loses_nothing(
    world, delivery, redis_process
):
    # WATCH is used by incident updates only, and no incident is written before the PATCH:
    # refusing it makes exactly the first save after the PATCH fail.
    async with redis_admin(redis_process.url) as admin:
        await admin.execute_command("ACL", "SETUSER", "default", "-watch")
        world.kube.freeze(NS, MODEL)
        client = await world.make_app(redis_url=redis_process.url)
        await deliver(client, delivery("firing_single"))

        async def save_refused() -> bool:
            return any(_text(e.get("object")) == "watch" for e in await admin.acl_log())

        await wait_for(save_refused, timeout=15, interval=0.02, what="the save to be refused")
        assert serving_version(world.kube) == "v2", "the PATCH landed before the save"
        assert await incidents(client) == []
        await admin.execute_command("ACL", "SETUSER", "default", "+watch")
    await unfreeze_once_verifying(world)

    # The Event was handed over before the failed save, and again by the re-driven job:
    # posting it is at-least-once, never lost.
    await assert_finished_as_on_the_first_run(world, client)


async def test_a_worker_cancelled_right_after_the_patch_is_finished_by_another(
    world, delivery, key_prefix
):
    # The PATCH lands and its reply is held back while the first replica shuts down: its
    # worker is cancelled with the change made and nothing recorded.
    held = world.kube.fail("PATCH", DEPLOYMENT_PATH, None, after=True, delay=HELD_REPLY_SECONDS)
    world.kube.freeze(NS, MODEL)
    first = await world.make_app(job_lease_seconds=1.0)
    await deliver(first, delivery("firing_single"))
    await wait_for(lambda: serving_version(world.kube) == "v2", what="the PATCH to land")
    await first.close()
    assert await recorded_incidents(key_prefix) == [], "cancelled before anything was recorded"
    await answer_held(world, held)

    second = await world.make_app(job_lease_seconds=1.0)
    await unfreeze_once_verifying(world)
    await assert_finished_as_on_the_first_run(world, second)


async def test_a_receiver_process_killed_right_after_the_patch_is_finished_by_another(
    world, delivery, key_prefix, tmp_path
):
    held = world.kube.fail("PATCH", DEPLOYMENT_PATH, None, after=True, delay=HELD_REPLY_SECONDS)
    world.kube.freeze(NS, MODEL)
    with receiver_process(world, key_prefix, tmp_path) as url:
        async with aiohttp.ClientSession() as session:
            await wait_for(
                lambda: ready(session, url), timeout=30, interval=0.1, what="the receiver ready"
            )
            payload = delivery("firing_single")
            async with session.post(
                f"{url}/webhook/alertmanager", data=payload.body, headers=payload.headers
            ) as resp:
                assert resp.status == 200
        await wait_for(
            lambda: serving_version(world.kube) == "v2", timeout=15, what="the PATCH to land"
        )
    # The process got SIGKILL while waiting for the reply.
    assert await recorded_incidents(key_prefix) == [], "killed before anything was recorded"
    await answer_held(world, held)

    client = await world.make_app(job_lease_seconds=1.0)
    await unfreeze_once_verifying(world)
    await assert_finished_as_on_the_first_run(world, client)


async def answer_held(world: Any, held: Any) -> None:
    """Let the stand-in answer the held PATCH (to nobody) so no request outlives the test."""
    held.release()
    await wait_for(
        lambda: all(r.status is not None for r in world.kube.requests_to("PATCH")),
        what="the held reply to be written",
    )


async def recorded_incidents(key_prefix: str) -> list[Any]:
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=3600.0)
    try:
        return (await store.list_incidents()).items
    finally:
        await store.close()


async def ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


@contextlib.contextmanager
def receiver_process(world: Any, key_prefix: str, tmp_path: Path) -> Iterator[str]:
    """``rollback-receiver serve`` in its own process, killed with SIGKILL on exit."""
    port = free_port()
    env = {
        **os.environ,
        "RECEIVER_HOST": "127.0.0.1",
        "RECEIVER_PORT": str(port),
        "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
        "RECEIVER_REDIS_URL": REDIS_URL,
        "RECEIVER_KEY_PREFIX": key_prefix,
        "RECEIVER_POLICY_FILE": str(world.policy_file),
        "RECEIVER_JOB_LEASE": "1s",
        "RECEIVER_LOG_FORMAT": "text",
        "KUBECONFIG": str(world.kube.kubeconfig),
    }
    log = (tmp_path / "receiver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()


# --- 2. a PATCH the API server refuses ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, 'cannot patch resource "deployments" in API group "apps"'),
        (422, "the server rejected our request due to an error in our request"),
        (404, f'deployments.apps "{MODEL}" not found'),
    ],
    ids=["rbac-403", "admission-422", "gone-404"],
)
async def test_a_patch_the_api_server_refuses_fails_the_incident_once(
    world, delivery, status, message
):
    world.kube.fail("PATCH", DEPLOYMENT_PATH, status, times=None)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))

    item = await wait_state(client, "failed")
    assert str(status) in item["reason"] and message in item["reason"]
    kinds = await event_kinds(client, item["id"])
    assert "failed" in kinds and "escalated" in kinds and "switched" not in kinds
    (warning,) = await kube_events(world.kube, "ModelRollbackFailed")
    assert warning["type"] == "Warning" and message in warning["note"]
    assert rollbacks_metric(client, "failed") == 1
    # Done once, not retried: one PATCH, one job finished, nothing left pending.
    await wait_for(lambda: jobs_done(client) == 1, what="the job done")
    assert template_patch_statuses(world) == [status]
    assert serving_version(world.kube) == "v3"
    assert world.kube.events(NS, reason="ModelRolledBack") == []
    # The job is counted done just before it is acknowledged: wait for the ack, not race it.
    store = client.app[keys.STORE]

    async def acknowledged() -> bool:
        return (await store.queue_stats()).depth == 0

    await wait_for(acknowledged, what="the job acknowledged")


# --- 3. a restart does not re-date the version --------------------------------------------


def date_revision(kube: Any, revision: int, at: datetime, name: str = MODEL) -> None:
    """Move one ReplicaSet's creation to ``at`` (the stand-in creates everything now)."""
    for rs in kube.store.items("replicasets", NS):
        annotations = rs["metadata"].get("annotations") or {}
        owners = [o.get("name") for o in rs["metadata"].get("ownerReferences", [])]
        if name in owners and annotations.get("deployment.kubernetes.io/revision") == str(revision):
            rs = json.loads(json.dumps(rs))
            rs["metadata"]["creationTimestamp"] = rfc3339(at.replace(microsecond=0))
            kube.store.update("replicasets", rs)
            return
    raise AssertionError(f"no revision {revision} of {name}")


async def restart(kube: Any, name: str = MODEL) -> None:
    """``kubectl rollout restart``: a template annotation, so a new ReplicaSet, same version."""
    before = kube.rollout_history(NS, name)
    stamp = rfc3339(datetime.now(UTC).replace(microsecond=0))
    await kube.patch(
        "deployments",
        NS,
        name,
        {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}},
    )
    await kube.wait_revision(NS, name, max(before) + 1)
    await kube.wait_rollout_complete(NS, name)


async def test_a_restart_does_not_make_an_old_version_look_new(world, delivery):
    started = alert_started()
    date_revision(world.kube, 3, started - timedelta(days=30))  # v3 has served for 30 days
    await restart(world.kube)  # revision 4: v3 again, restarted 10 minutes before the alert
    date_revision(world.kube, 4, started - timedelta(minutes=10))
    client = await world.make_app()
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    (item,) = await decided(client)
    assert (item["state"], item["reason"]) == ("refused", "outside_causality_window")
    assert template_changes(world) == []
    assert world.kube.deployment(NS, MODEL)["metadata"]["resourceVersion"] == rv


async def test_a_restart_after_the_alert_does_not_make_it_look_older_than_its_version(
    world, delivery
):
    # v3 became current 3 minutes before the alert; someone restarts it meanwhile (now,
    # days after the alert started) before the alert is handled.
    await restart(world.kube)
    assert world.kube.rollout_history(NS, MODEL) == [1, 2, 3, 4]
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))

    item = await wait_state(client, "verified")
    assert (item["bad_version"], item["target_version"]) == ("v3", "v2")
    assert serving_version(world.kube) == "v2"
    assert len(template_changes(world)) == 1


# --- 4. two models on one Deployment -------------------------------------------------------


async def test_two_models_on_one_deployment_never_run_at_once(world, delivery, tmp_path):
    shadow = {"name": SHADOW, "namespace": NS, "tier": "critical", "deployment": MODEL}
    policy = write_policy(world, tmp_path, shadow, verify_timeout="3s")
    # The first job verifies until its deadline: the restored version never gets ready.
    world.kube.hold_version_unready("v2")
    client = await world.make_app(policy=policy)
    handler = client.app[HANDLER]
    jobs = [
        Job(received_at=datetime.now(UTC), labels={"namespace": NS, "model": m})
        for m in (MODEL, SHADOW)
    ]
    assert handler.lease_key(jobs[0]) == handler.lease_key(jobs[1]) == WORKLOAD

    await deliver(client, delivery("firing_single"))
    await wait_state(client, "acting")
    await deliver(client, alert(delivery, labels={"model": SHADOW}, fingerprint="5ad0c0ffee5eed02"))
    items = await decided(client, jobs=2)
    world.kube.release_version("v2")
    first = next(i for i in items if i["model"] == MODEL)
    second = next(i for i in items if i["model"] == SHADOW)
    assert first["state"] == "verification_failed"
    ended = max(e["at"] for e in (await detail(client, first["id"]))["events"])
    began = (await detail(client, second["id"]))["events"][0]["at"]
    assert began >= ended, "the second model's job ran while the first held the Deployment"
    # It then sees what the first left: paused by the failed verification.
    assert (second["state"], second["reason"]) == ("refused", "paused")
    assert len(template_changes(world)) == 1


# --- 5. the workload gone or forbidden while verifying -------------------------------------


async def test_pods_forbidden_while_verifying_fails_verification(world, delivery):
    world.kube.fail("GET", PODS_PATH, 403, times=None)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))

    item = await wait_state(client, "verification_failed")
    events = (await detail(client, item["id"]))["events"]
    failed = next(e for e in events if e["kind"] == "verification_failed")
    assert "403" in failed["message"] and 'cannot list resource "pods"' in failed["message"]
    assert "escalated" in [e["kind"] for e in events]
    assert PAUSED in world.kube.deployment(NS, MODEL)["metadata"]["annotations"]
    await kube_events(world.kube, "ModelRollbackVerificationFailed")
    await wait_for(lambda: jobs_done(client) == 1, what="the job done")


async def test_a_deployment_deleted_while_verifying_fails_verification(world, delivery):
    world.kube.hold_version_unready("v2")  # verification waits on the rollout
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    await wait_for(
        lambda: world.kube.requests_to("GET", PODS_PATH), timeout=15, what="verification"
    )
    await world.kube.delete("deployments", NS, MODEL)

    item = await wait_state(client, "verification_failed")
    events = (await detail(client, item["id"]))["events"]
    failed = next(e for e in events if e["kind"] == "verification_failed")
    assert "404" in failed["message"] and "not found" in failed["message"]
    kinds = [e["kind"] for e in events]
    assert "pause_failed" in kinds and "escalated" in kinds
    world.kube.release_version("v2")
    await wait_for(lambda: jobs_done(client) == 1, what="the job done")


# --- 6. the bad mark ---------------------------------------------------------------------


async def test_marking_the_bad_revision_is_retried_after_an_api_error(world, delivery):
    world.kube.fail("PATCH", REPLICASETS_PATH, 500)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    await wait_state(client, "verified")

    assert [r.status for r in world.kube.requests_to("PATCH", REPLICASETS_PATH)] == [500, 200]
    assert versions_marked_bad(world.kube) == ["v3"]


async def test_a_recreated_replicaset_of_a_bad_version_is_never_a_target(world, delivery, tmp_path):
    client = await world.make_app(policy=write_policy(world, tmp_path, cooldown="0s"))
    await first_rollback(world, client, delivery)
    # v3 comes back with another template (a new ReplicaSet carrying no mark), then v4.
    await world.kube.set_version(
        NS, MODEL, "v3", image=f"registry.example/{MODEL}:v3-rebuilt", wait=True
    )
    await world.kube.set_version(NS, MODEL, "v4", wait=True)
    assert versions_marked_bad(world.kube) == ["v3"]  # the old one; the rebuilt is unmarked
    history = world.kube.replicasets(NS, MODEL)
    rebuilt = [
        rs
        for rs in history
        if rs["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == "v3"
        and BAD not in rs["metadata"]["annotations"]
    ]
    assert len(rebuilt) == 1

    v4 = alert(
        delivery,
        labels={"model_version": "v4"},
        fingerprint="4a4a4a4a4a4a4a4a",
        starts_at=datetime.now(UTC),
    )
    await deliver(client, v4)
    items = await decided(client, jobs=2)
    second = next(i for i in items if i["bad_version"] == "v4")
    assert second["target_version"] == "v2", "the rebuilt v3 is listed bad on the Deployment"
    assert second["state"] == "verified"  # its job is done: verified and recorded
    assert serving_version(world.kube) == "v2"


# --- 7. a bad version back after our rollback ---------------------------------------------


async def test_a_redeployed_bad_version_rolled_back_again_reopens_its_incident(
    world, delivery, tmp_path
):
    client = await world.make_app(policy=write_policy(world, tmp_path, cooldown="0s"))
    first = await first_rollback(world, client, delivery)
    await v3_serves_again(world)

    await deliver(client, alert(delivery, starts_at=REFIRED))
    await wait_for(lambda: jobs_done(client) >= 2, timeout=20, what="the second job done")
    items = await incidents(client)
    assert [i["id"] for i in items] == [first["id"]], "the same incident, not a new one"
    (item,) = items
    assert item["state"] == "verified" and item["target_version"] == "v2"
    kinds = await event_kinds(client, item["id"])
    assert "reopened" in kinds and "escalated" in kinds[kinds.index("reopened") :]
    assert kinds.count("switched") == 2
    await kube_events(world.kube, "ModelRollbackEscalated")
    await kube_events(world.kube, "ModelRolledBack", 2)
    assert len(template_changes(world)) == 2
    assert serving_version(world.kube) == "v2"
    assert len(await rollbacks_counted(client)) == 2


# --- 8. a stale mark of ours -------------------------------------------------------------


async def test_a_persons_later_restore_of_our_target_is_not_ours(world, delivery, tmp_path):
    client = await world.make_app(policy=write_policy(world, tmp_path, cooldown="0s"))
    await first_rollback(world, client, delivery)
    ours_generation = world.kube.deployment(NS, MODEL)["metadata"]["annotations"][GENERATION]
    # A person deploys v3 again, then restores v2 by hand: our marks stay on the Deployment.
    await world.kube.set_version(NS, MODEL, "v3", wait=True)
    await world.kube.set_version(NS, MODEL, "v2", wait=True)
    deployment = world.kube.deployment(NS, MODEL)
    assert deployment["metadata"]["annotations"][ROLLED_BACK_TO] == "v2"
    assert str(deployment["metadata"]["generation"]) != ours_generation

    v2 = alert(
        delivery,
        labels={"model_version": "v2"},
        fingerprint="2b2b2b2b2b2b2b2b",
        starts_at=datetime.now(UTC),
    )
    await deliver(client, v2)
    items = await decided(client, jobs=2)
    second = next(i for i in items if i["bad_version"] == "v2")
    assert second["reason"] != "made_current_by_us"
    # Judged by causality (v2 came back just before the alert): rolled back to v1.
    assert (second["reason"], second["target_version"]) == ("rollback", "v1")
    assert second["state"] == "verified"
    assert serving_version(world.kube) == "v1"


# --- 9. conflicts from status writes -------------------------------------------------------


async def test_conflicts_from_status_writes_do_not_use_up_the_attempts(world, delivery):
    # Three times the attempts a job has for concurrent changes, every one status-only (the
    # controller's): the job goes on at once instead of being left for a later retry.
    world.kube.fail("PATCH", DEPLOYMENT_PATH, 409, times=9)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))

    await wait_state(client, "verified")
    await wait_for(lambda: jobs_done(client) == 1, what="the job done")
    assert template_patch_statuses(world) == [409] * 9 + [200]
    assert rollbacks_metric(client, "conflict") == 9
    assert metric(client, "receiver_jobs_total", result="retried") == 0
    assert metric(client, "receiver_jobs_total", result="reclaimed") == 0
