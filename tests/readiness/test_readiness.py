"""Rollback readiness, row by row, on the Kubernetes stand-in: what makes a model ready to
roll back, what does not, and that asking changes nothing."""

from __future__ import annotations

import json

from receiver import annotations as ours
from tests.readiness.conftest import check, readiness_of
from tests.worker.conftest import MODEL, NS

DEPLOYMENT = f"*/deployments/{MODEL}"


async def rolled_out(kube, *versions: str) -> None:
    await kube.create_deployment(NS, MODEL, versions[0])
    for version in versions[1:]:
        await kube.set_version(NS, MODEL, version, wait=True)


async def test_a_model_with_an_earlier_good_revision_is_ready_and_nothing_changes(stand):
    await rolled_out(stand.kube, "v1", "v2", "v3")
    client = await stand.start()
    before = stand.kube.deployment(NS, MODEL)

    result = await check(client)

    assert result.result == "ready", result.reasons
    assert result.reasons == []
    assert (result.serving_version, result.serving_revision) == ("v3", "3")
    assert result.target is not None
    assert (result.target.version, result.target.revision) == ("v2", "2")
    # The rollback's own PATCH went to the API server, as a dry run: the v2 template, our
    # annotations and the resourceVersion read.
    (patch,) = stand.dry_runs(DEPLOYMENT)
    labels = patch.body["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "v2"
    assert patch.body["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert patch.body["metadata"]["annotations"][ours.ROLLED_BACK_TO] == "v2"
    (mark,) = stand.dry_runs("*/replicasets/*")
    assert ours.BAD in mark.body["metadata"]["annotations"]
    assert [r for r in stand.kube.requests_to("PATCH") if "dryRun" not in r.query] == []
    after = stand.kube.deployment(NS, MODEL)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert all(
        ours.BAD not in (rs["metadata"].get("annotations") or {})
        for rs in stand.kube.replicasets(NS, MODEL)
    )
    # The health routes were asked; no inference was sent on production's behalf.
    routes = {r.route for r in stand.model_server.requests}
    assert {"live", "ready", "model_ready", "model_metadata"} <= routes
    assert "infer" not in routes


async def test_only_one_revision_is_not_ready_and_says_there_is_nothing_earlier(stand):
    await rolled_out(stand.kube, "v1")
    client = await stand.start()

    result = await check(client)

    assert result.result == "not_ready"
    assert result.target is None
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith(f"no earlier revision of Deployment {NS}/{MODEL}")
    assert "revisionHistoryLimit" in result.reasons[0]
    # The permission is still asked (annotations only, no template).
    (patch,) = stand.dry_runs(DEPLOYMENT)
    assert "spec" not in patch.body


async def test_an_earlier_revision_marked_bad_on_its_replicaset_is_no_target(stand):
    await rolled_out(stand.kube, "v1", "v2")
    (v1_rs,) = [
        rs
        for rs in stand.kube.replicasets(NS, MODEL)
        if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    ]
    await stand.kube.patch(
        "replicasets",
        NS,
        v1_rs["metadata"]["name"],
        {"metadata": {"annotations": {ours.BAD: "inc-000000000001"}}},
        "application/merge-patch+json",
    )
    client = await stand.start()

    result = await check(client)

    assert result.result == "not_ready"
    assert result.target is None
    assert result.reasons == [
        f"no earlier revision of Deployment {NS}/{MODEL} with another version that is not"
        " marked bad: revision 1 (v1) is marked bad"
    ]


async def test_a_version_listed_bad_on_the_workload_is_skipped_for_an_older_one(stand):
    await rolled_out(stand.kube, "v1", "v2", "v3")
    await stand.kube.patch(
        "deployments",
        NS,
        MODEL,
        {"metadata": {"annotations": {ours.BAD_VERSIONS: json.dumps(["v2"])}}},
        "application/merge-patch+json",
    )
    client = await stand.start()

    result = await check(client)

    assert result.result == "ready", result.reasons
    assert result.target is not None
    assert (result.target.version, result.target.revision) == ("v1", "1")


async def test_a_forbidden_rollback_patch_is_not_ready_with_the_api_servers_words(stand):
    await rolled_out(stand.kube, "v1", "v2")
    client = await stand.start()
    denied = stand.kube.fail(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}", 403, times=None
    )

    result = await check(client)

    assert denied.hits == 1
    assert result.result == "not_ready"
    assert result.target is not None and result.target.version == "v1"
    (reason,) = result.reasons
    assert reason.startswith(f"the rollback PATCH would be refused: patch deployment {NS}/{MODEL}")
    assert "403" in reason and "forbidden" in reason and "deploy/rbac-" in reason


async def test_a_forbidden_bad_mark_is_not_ready(stand):
    await rolled_out(stand.kube, "v1", "v2")
    client = await stand.start()
    stand.kube.fail("PATCH", f"/apis/apps/v1/namespaces/{NS}/replicasets/*", 403, times=None)

    result = await check(client)

    assert result.result == "not_ready"
    (reason,) = result.reasons
    assert reason.startswith("the bad revision could not be marked: patch replicaset")


async def test_a_missing_deployment_is_not_ready_and_names_the_policy_key(stand):
    client = await stand.start()

    result = await check(client)

    assert result.result == "not_ready"
    assert result.reasons == [
        f"Deployment {NS}/{MODEL} not found: create it, or fix `deployment` of {NS}/{MODEL}"
        " in the policy"
    ]
    assert result.serving_version == "" and result.target is None


async def test_health_routes_that_do_not_answer_make_it_not_ready(stand):
    await rolled_out(stand.kube, "v1", "v2")
    stand.model_server.ready = False
    client = await stand.start()

    result = await check(client)

    assert result.result == "not_ready"
    (reason,) = result.reasons
    assert reason.startswith("health routes (service): ready check failed")


async def test_a_deployment_paused_by_a_person_is_not_ready(stand):
    await rolled_out(stand.kube, "v1", "v2")
    await stand.kube.pause(NS, MODEL)
    client = await stand.start()

    result = await check(client)

    assert result.result == "not_ready"
    assert any("spec.paused" in r and "never unpauses" in r for r in result.reasons)


async def test_our_pause_is_shown_and_is_not_a_readiness_problem(stand):
    await rolled_out(stand.kube, "v1", "v2")
    value = ours.pause_value("admin:ana", "investigating <drift>", at=_time("2026-11-25T08:00:00Z"))
    await stand.kube.patch(
        "deployments",
        NS,
        MODEL,
        {"metadata": {"annotations": {ours.PAUSED: value}}},
        "application/merge-patch+json",
    )
    client = await stand.start()

    result = await check(client)

    assert result.result == "ready", result.reasons
    assert result.pause is not None
    assert (result.pause.actor, result.pause.reason) == ("admin:ana", "investigating <drift>")


async def test_an_unreachable_api_server_cannot_tell_and_counts_as_an_error(stand):
    await rolled_out(stand.kube, "v1", "v2")
    client = await stand.start()
    stand.kube.fail("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}", 503, times=None)

    result = await check(client)

    assert result.result == "error"
    assert result.reasons[0].startswith("Kubernetes could not be reached to tell:")
    metrics = readiness_of(client).metrics
    assert metrics.readiness_checks.labels(result="error")._value.get() == 1
    assert metrics.rollback_ready.labels(namespace=NS, model=MODEL)._value.get() == 0


async def test_a_blue_green_model_whose_service_is_missing_is_not_ready(stand):
    await rolled_out(stand.kube, "v1", "v2")
    url = stand.model_server.url
    client = await stand.start(
        strategy="blue-green",
        service=MODEL,
        slots={"blue": f"{MODEL}-blue", "green": f"{MODEL}-green"},
        health={"base_url": url, "slot_urls": {"blue": url, "green": url}},
    )

    result = await check(client)

    assert result.result == "not_ready"
    assert result.strategy == "blue-green"
    assert f'services "{MODEL}" not found' in result.reasons[0]


async def test_a_rollout_changing_the_deployment_during_the_dry_run_is_read_again(stand):
    await rolled_out(stand.kube, "v1", "v2")
    client = await stand.start()
    conflict = stand.kube.fail("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}", 409)

    result = await check(client)

    assert conflict.hits == 1
    assert result.result == "ready", result.reasons
    assert len(stand.kube.requests_to("GET", f"*/deployments/{MODEL}")) == 2


def _time(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))
