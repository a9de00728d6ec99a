"""The core loop when things go wrong: unhealthy targets, races, crashes, API failures."""

from __future__ import annotations

from receiver import keys
from receiver.annotations import PAUSED as ANNOTATION_PAUSED
from tests.conftest import wait_for
from tests.worker.conftest import (
    MODEL,
    NS,
    deliver,
    incidents,
    serving_version,
    template_changes,
    wait_state,
    write_policy,
)

DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}"


def short_verify(world, tmp_path):
    """The harness policy with a 2s verify_timeout, for cases that must time out."""
    return write_policy(tmp_path / "short.yaml", world.model_server.url, verify_timeout="2s")


async def test_a_target_that_stays_unhealthy_fails_verification_and_pauses_the_model(
    world, delivery, tmp_path
):
    world.model_server.bad_versions = {"v2"}  # inference fails on the restored version too
    client = await world.make_app(policy=short_verify(world, tmp_path))
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verification_failed")
    assert item["reason"] == "verification_failed"
    annotations = world.deployment()["metadata"]["annotations"]
    assert ANNOTATION_PAUSED in annotations and item["id"] in annotations[ANNOTATION_PAUSED]
    events = world.kube.events(NS, reason="ModelRollbackVerificationFailed")
    assert len(events) == 1 and events[0]["type"] == "Warning"
    detail = await client.get(
        f"/api/incidents/{item['id']}", headers={"Authorization": "Bearer admin-test-token"}
    )
    kinds = [e["kind"] for e in (await detail.json())["events"]]
    assert "escalated" in kinds and "paused" in kinds
    registry = client.app[keys.METRICS].registry
    assert (
        registry.get_sample_value(
            "receiver_rollbacks_total",
            {"strategy": "rollout-undo", "result": "verification_failed"},
        )
        == 1
    )


async def test_a_ready_server_serving_the_wrong_version_fails_verification(
    world, delivery, tmp_path
):
    world.model_server.versions = ["v3"]  # ready, but model metadata names the bad version
    client = await world.make_app(policy=short_verify(world, tmp_path))
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verification_failed")
    detail = await client.get(
        f"/api/incidents/{item['id']}", headers={"Authorization": "Bearer admin-test-token"}
    )
    failed = [e for e in (await detail.json())["events"] if e["kind"] == "verification_failed"]
    assert "ready is not the right model" in failed[0]["message"]


async def test_a_conflict_on_the_patch_reads_again_and_applies_once(world, delivery):
    world.kube.fail("PATCH", DEPLOYMENT_PATH, 409)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    await wait_state(client, "verified")
    patches = [r for r in world.template_patches() if "spec" in (r.body or {})]
    assert [p.status for p in patches] == [409, 200]
    registry = client.app[keys.METRICS].registry
    assert (
        registry.get_sample_value(
            "receiver_rollbacks_total", {"strategy": "rollout-undo", "result": "conflict"}
        )
        == 1
    )


async def test_a_worker_killed_after_the_patch_is_finished_by_another_without_a_second_one(
    world, delivery
):
    # The restored version's pods stay unready: the first worker is stuck verifying.
    world.kube.hold_version_unready("v2")
    first = await world.make_app(job_lease_seconds=1.0)
    await deliver(first, delivery("firing_single"))
    await wait_state(first, "acting")
    await wait_for(lambda: serving_version(world.kube) == "v2", what="the PATCH to land")
    await first.close()  # the replica dies mid-verification; its job stays pending

    second = await world.make_app(job_lease_seconds=1.0)
    world.kube.release_version("v2")
    item = await wait_state(second, "verified", timeout=30)
    assert len(template_changes(world)) == 1
    assert len(world.kube.events(NS, reason="ModelRolledBack")) == 1
    assert item["times"]["switched"] is not None


async def test_a_drift_alert_is_notified_and_an_error_rate_alert_of_the_model_then_acts(
    world, delivery
):
    client = await world.make_app()
    drift = delivery("firing_single").payload
    alert = drift["alerts"][0]
    alert["labels"].update(
        {
            "alertname": "ModelServingFeatureDrift",
            "category": "data_quality",
            "trigger": "feature_drift",
        }
    )
    alert["fingerprint"] = "0000feature0drift"
    resp = await client.post(
        "/webhook/alertmanager", json=drift, headers={"Authorization": "Bearer test-token"}
    )
    assert (await resp.json())["alerts"][0]["outcome"] == "accepted"
    item = await wait_state(client, "notified")
    assert item["reason"] == "mode_notify"
    assert template_changes(world) == []

    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verified")
    assert set(item["triggers"]) == {"feature_drift", "error_rate"}
    assert len(template_changes(world)) == 1
    assert len(await incidents(client)) == 1, "both alerts group into one incident"


async def test_a_redelivered_alert_after_the_rollback_changes_nothing(world, delivery):
    client = await world.make_app(dedup_ttl_seconds=0.2)
    d = delivery("firing_single")
    await deliver(client, d)
    item = await wait_state(client, "verified")
    rv = world.deployment()["metadata"]["resourceVersion"]
    events = len(world.kube.events(NS))
    ran = client.app[keys.METRICS].registry.get_sample_value(
        "receiver_jobs_total", {"result": "done"}
    )

    async def accepted_again() -> bool:
        return (await deliver(client, d))["alerts"][0]["outcome"] == "accepted"

    await wait_for(accepted_again, timeout=5, interval=0.05, what="the dedup key to expire")
    await wait_for(
        lambda: (
            client.app[keys.METRICS].registry.get_sample_value(
                "receiver_jobs_total", {"result": "done"}
            )
            == ran + 1
        ),
        what="the redelivered job to finish",
    )
    assert world.deployment()["metadata"]["resourceVersion"] == rv
    assert len(world.kube.events(NS)) == events
    assert len(template_changes(world)) == 1
    (after,) = await incidents(client)
    assert after["id"] == item["id"] and after["state"] == "verified"


async def test_dry_run_decides_and_records_but_changes_nothing(world, delivery):
    rv = world.deployment()["metadata"]["resourceVersion"]
    client = await world.make_app(dry_run=True)
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "dry_run" and item["target_version"] == "v2"
    assert world.deployment()["metadata"]["resourceVersion"] == rv
    assert serving_version(world.kube) == "v3"
    assert template_changes(world) == []
    assert [r.query.get("dryRun") for r in world.template_patches()] == ["All"]
    assert world.kube.events(NS, reason="ModelRolledBack") == []


async def test_an_api_server_failing_for_a_while_is_retried_until_it_answers(world, delivery):
    world.kube.fail("GET", DEPLOYMENT_PATH, 500, times=2)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    await wait_state(client, "verified", timeout=30)
    gets = world.kube.requests_to("GET", DEPLOYMENT_PATH)
    assert [g.status for g in gets[:3]] == [500, 500, 200]


async def test_a_forbidden_workload_is_recorded_and_notified_not_retried(world, delivery):
    world.kube.fail("GET", DEPLOYMENT_PATH, 403, times=None)
    client = await world.make_app()
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "notified")
    assert item["reason"] == "workload_unavailable"
    # One read at start-up (the facts), one by the job: a 403 is not retried.
    assert len(world.kube.requests_to("GET", DEPLOYMENT_PATH)) == 2
    assert template_changes(world) == []


async def test_an_api_server_that_times_out_is_retried_within_the_job(world, delivery):
    client = await world.make_app(kube_request_timeout=1.0)
    # From the job's first read on (the start-up read is done once ready).
    await wait_for(lambda: world.kube.requests_to("GET", DEPLOYMENT_PATH), what="start-up read")
    world.kube.fail("GET", DEPLOYMENT_PATH, None, delay=3.0)
    await deliver(client, delivery("firing_single"))
    await wait_state(client, "verified", timeout=30)
    registry = client.app[keys.METRICS].registry
    # The job ends just after its last save: wait for it rather than race it.
    await wait_for(
        lambda: registry.get_sample_value("receiver_jobs_total", {"result": "done"}) == 1,
        what="the job done",
    )
