"""Each row of the decision table (design.md, "Decision", rules 1-8) through the whole app.

An alert goes in through the webhook, the worker decides on a fresh read of the Kubernetes
stand-in, and the outcome is read back from ``GET /api/incidents``: the incident's state and
reason, what reached the cluster (no PATCH, or exactly one template change where the row
acts) and whether the Deployment was written at all (its resourceVersion).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from receiver.annotations import BAD as ANNOTATION_BAD
from receiver.annotations import PAUSED as ANNOTATION_PAUSED
from receiver.app import NOTIFIER
from tests.standins.slack import TOKEN as SLACK_TOKEN
from tests.worker.conftest import (
    ADMIN,
    MODEL,
    NS,
    SAMPLE_REQUEST,
    alert_started,
    backdate_current,
    deliver,
    serving_version,
    template_changes,
)
from tests.worker.helpers import (
    REFIRED,
    alert,
    decided,
    first_rollback,
    resource_version,
    settled,
    v3_serves_again,
)

SLACK_CHANNEL = "#ml-oncall"
FRESH = "fraud-scorer-next"  # a Deployment a test creates itself, with its own history


# --- helpers -----------------------------------------------------------------------------


def write_rows_policy(world: Any, tmp_path: Path, **model: Any) -> Path:
    """The world's policy (write_policy's shape) with extra keys on the model's entry."""
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
        "models": [entry],
    }
    path = tmp_path / "rows-policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def the_incident(client: Any, jobs: int = 1) -> dict[str, Any]:
    items = await decided(client, jobs)
    assert len(items) == 1, items
    return items[0]


async def events_of(client: Any, incident: dict[str, Any]) -> list[str]:
    resp = await client.get(f"/api/incidents/{incident['id']}", headers=ADMIN)
    assert resp.status == 200
    return [e["kind"] for e in (await resp.json())["events"]]


def no_patch(world: Any) -> None:
    """Nothing was written to any object: no Deployment, no ReplicaSet PATCH."""
    assert world.kube.requests_to("PATCH") == []


async def fresh_deployment(kube: Any, name: str, *versions: str | tuple[str, str]) -> None:
    """A Deployment rolled out through ``versions`` now (a version, or (version, image))."""

    def split(v: str | tuple[str, str]) -> tuple[str, str]:
        return v if isinstance(v, tuple) else (v, f"registry.example/{MODEL}:{v}")

    first, image = split(versions[0])
    await kube.create_deployment(NS, name, first, image=image)
    for v in versions[1:]:
        version, image = split(v)
        await kube.set_version(NS, name, version, image=image, wait=True)


async def mark_bad(kube: Any, name: str, version: str) -> None:
    """An earlier incident marked the ReplicaSet(s) of ``version`` bad."""
    marked = 0
    for rs in kube.replicasets(NS, name):
        if rs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == version:
            await kube.patch(
                "replicasets",
                NS,
                rs["metadata"]["name"],
                {"metadata": {"annotations": {ANNOTATION_BAD: "inc-earlier"}}},
            )
            marked += 1
    assert marked, f"no ReplicaSet of {name} runs {version}"


"""When the captured alert fires anew after v3 is redeployed."""


# --- rule 1: unknown model -----------------------------------------------------------------


async def test_unknown_model_is_notified_without_touching_the_cluster(world, delivery):
    client = await world.make_app()
    rv = await settled(world.kube)
    other = alert(delivery, labels={"model": "churn-predictor"}, fingerprint="7f00c0ffee5eed01")
    body = await deliver(client, other)
    assert body["alerts"][0]["outcome"] == "accepted"

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "unknown_model")
    assert item["model"] == "churn-predictor"
    no_patch(world)
    assert resource_version(world.kube) == rv


# --- rule 2: mode ----------------------------------------------------------------------------


async def test_mode_notify_recommends_the_target_in_slack_and_changes_nothing(
    world, delivery, tmp_path, slack
):
    policy = write_rows_policy(world, tmp_path, mode="notify")
    client = await world.make_app(
        policy=policy,
        slack_bot_token=SLACK_TOKEN,
        slack_api_url=slack.base_url,
        slack_channel=SLACK_CHANNEL,
    )
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "mode_notify")
    assert (item["bad_version"], item["target_version"]) == ("v3", "v2")
    no_patch(world)
    assert resource_version(world.kube) == rv
    assert serving_version(world.kube) == "v3"

    assert await client.app[NOTIFIER].flush(5)
    message = slack.only_message()
    assert "v3 → v2" in message.text and "mode_notify" in message.text


async def test_mode_off_records_only_without_a_slack_message(world, delivery, tmp_path, slack):
    policy = write_rows_policy(world, tmp_path, mode="off")
    client = await world.make_app(
        policy=policy,
        slack_bot_token=SLACK_TOKEN,
        slack_api_url=slack.base_url,
        slack_channel=SLACK_CHANNEL,
    )
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "mode_off")
    assert item["target_version"] is None
    no_patch(world)
    assert resource_version(world.kube) == rv

    assert await client.app[NOTIFIER].flush(5)
    assert slack.calls == []


async def test_data_quality_alert_uses_data_quality_mode_notify_by_default(world, delivery):
    client = await world.make_app()  # the model's mode is auto; data_quality_mode is not set
    rv = await settled(world.kube)
    await deliver(
        client,
        alert(delivery, labels={"category": "data_quality"}, fingerprint="5d1e2f3a4b5c6d7e"),
    )

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "mode_notify")
    assert item["target_version"] == "v2"
    no_patch(world)
    assert resource_version(world.kube) == rv


# --- rule 3: pauses --------------------------------------------------------------------------


async def test_paused_by_us_is_refused(world, delivery):
    await world.kube.patch(
        "deployments", NS, MODEL, {"metadata": {"annotations": {ANNOTATION_PAUSED: "true"}}}
    )
    client = await world.make_app()
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("refused", "paused")
    no_patch(world)
    assert resource_version(world.kube) == rv
    assert world.deployment()["metadata"]["annotations"][ANNOTATION_PAUSED] == "true"


async def test_deployment_paused_by_a_person_is_refused_and_stays_paused(world, delivery):
    await world.kube.pause(NS, MODEL)
    client = await world.make_app()
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("refused", "deployment_paused")
    no_patch(world)
    assert resource_version(world.kube) == rv
    deployment = world.deployment()
    assert deployment["spec"]["paused"] is True
    assert serving_version(world.kube) == "v3"


# --- rule 4: GitOps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "marks",
    [
        {"annotations": {"argocd.argoproj.io/tracking-id": "ml:apps/Deployment:ml-prod/fraud"}},
        {"labels": {"kustomize.toolkit.fluxcd.io/name": "ml-models"}},
    ],
    ids=["argo-cd-tracking-id", "flux-kustomization-label"],
)
async def test_gitops_managed_deployment_is_notified_only(world, delivery, marks):
    await world.kube.patch("deployments", NS, MODEL, {"metadata": marks})
    client = await world.make_app()
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "gitops")
    assert item["target_version"] == "v2"
    no_patch(world)
    assert resource_version(world.kube) == rv


# --- rule 5: the serving version -------------------------------------------------------------


async def test_a_version_no_longer_serving_is_recorded_without_action(world, delivery):
    await world.kube.set_version(NS, MODEL, "v4", wait=True)
    client = await world.make_app()
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "no_longer_serving")
    assert item["bad_version"] == "v3"
    no_patch(world)
    assert resource_version(world.kube) == rv
    assert serving_version(world.kube) == "v4"


# --- rule 6: causality -----------------------------------------------------------------------


async def test_alert_outside_the_causality_window_is_refused(world, delivery, tmp_path):
    # The serving ReplicaSet dates from 3 minutes before the alert started.
    policy = write_rows_policy(world, tmp_path, causality_window="1m")
    client = await world.make_app(policy=policy)
    rv = await settled(world.kube)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("refused", "outside_causality_window")
    no_patch(world)
    assert resource_version(world.kube) == rv


async def test_alert_that_predates_the_version_is_refused(world, delivery, tmp_path):
    # v2 -> v3 rolled out just now; the captured alert started hours earlier.
    await fresh_deployment(world.kube, FRESH, "v2", "v3")
    created = world.kube.replicasets(NS, FRESH)[-1]["metadata"]["creationTimestamp"]
    assert datetime.fromisoformat(created) - alert_started() > timedelta(minutes=5)
    policy = write_rows_policy(world, tmp_path, deployment=FRESH)
    client = await world.make_app(policy=policy)
    rv = await settled(world.kube, FRESH)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("refused", "alert_predates_version")
    no_patch(world)
    assert resource_version(world.kube, FRESH) == rv
    assert serving_version(world.kube, name=FRESH) == "v3"


async def test_a_version_we_made_current_is_escalated_not_rolled_back(world, delivery):
    client = await world.make_app()
    first = await first_rollback(world, client, delivery)
    rv = await settled(world.kube)

    # The restored v2 alerts in turn (its own labels, so its own fingerprint).
    v2_alert = alert(delivery, labels={"model_version": "v2"}, fingerprint="9a8b7c6d5e4f3a2b")
    await deliver(client, v2_alert)
    items = await decided(client, jobs=2)
    assert len(items) == 2, items
    second = next(i for i in items if i["id"] != first["id"])
    assert (second["state"], second["reason"]) == ("refused", "made_current_by_us")
    assert second["bad_version"] == "v2"
    assert "escalated" in await events_of(client, second)
    reasons = [e["reason"] for e in world.kube.events(NS)]
    assert reasons.count("ModelRollbackEscalated") == 1

    assert len(template_changes(world)) == 1
    assert resource_version(world.kube) == rv
    assert serving_version(world.kube) == "v2"
    first_now = next(i for i in items if i["id"] == first["id"])
    assert first_now["state"] == "verified"


# --- rule 7: the target ----------------------------------------------------------------------


async def _v3_only(world: Any) -> str:
    await fresh_deployment(world.kube, FRESH, "v3")
    return FRESH


async def _earlier_same_version_or_bad(world: Any) -> str:
    # Revision 1 runs v2 (marked bad), revision 2 runs v3 too (another image), 3 serves v3.
    await fresh_deployment(
        world.kube, FRESH, "v2", "v3", ("v3", f"registry.example/{MODEL}:v3-hotfix")
    )
    await mark_bad(world.kube, FRESH, "v2")
    return FRESH


async def _every_earlier_marked_bad(world: Any) -> str:
    await mark_bad(world.kube, MODEL, "v1")
    await mark_bad(world.kube, MODEL, "v2")
    return MODEL


@pytest.mark.parametrize(
    "history",
    [_v3_only, _earlier_same_version_or_bad, _every_earlier_marked_bad],
    ids=["only-one-revision", "earlier-same-version-or-bad", "every-earlier-marked-bad"],
)
async def test_no_target_is_notified(world, delivery, tmp_path, history):
    name = await history(world)
    backdate_current(world.kube, alert_started() - timedelta(minutes=3), name=name)
    policy = write_rows_policy(world, tmp_path, deployment=name)
    client = await world.make_app(policy=policy)
    rv = await settled(world.kube, name)
    await deliver(client, delivery("firing_single"))

    item = await the_incident(client)
    assert (item["state"], item["reason"]) == ("notified", "no_target")
    assert item["target_version"] is None
    no_patch(world)
    assert resource_version(world.kube, name) == rv
    assert serving_version(world.kube, name=name) == "v3"


# --- rule 8: guards --------------------------------------------------------------------------


async def test_second_rollback_within_the_cooldown_is_refused(world, delivery):
    client = await world.make_app()
    first = await first_rollback(world, client, delivery)
    rv = await v3_serves_again(world)

    # v3 serves again and the same alert fires anew: same fingerprint, a new startsAt.
    await deliver(client, alert(delivery, starts_at=REFIRED))
    items = await decided(client, jobs=2)
    # The redeployed bad version reopens the incident of its first rollback (design.md).
    assert len(items) == 1, items
    second = items[0]
    assert second["id"] == first["id"]
    assert (second["state"], second["reason"]) == ("refused", "cooldown")
    assert "reopened" in await events_of(client, second)
    assert second["bad_version"] == "v3"
    # A version we rolled back serves again: people are paged whatever the decision.
    assert "escalated" in await events_of(client, second)
    assert len(template_changes(world)) == 1
    assert resource_version(world.kube) == rv
    assert serving_version(world.kube) == "v3"


async def test_rollbacks_beyond_max_rollbacks_are_refused(world, delivery, tmp_path):
    policy = write_rows_policy(world, tmp_path, cooldown="0s", max_rollbacks=1)
    client = await world.make_app(policy=policy)
    first = await first_rollback(world, client, delivery)
    rv = await v3_serves_again(world)

    await deliver(client, alert(delivery, starts_at=REFIRED))
    items = await decided(client, jobs=2)
    # The redeployed bad version reopens the incident of its first rollback (design.md).
    assert len(items) == 1, items
    second = items[0]
    assert second["id"] == first["id"]
    assert (second["state"], second["reason"]) == ("refused", "max_rollbacks")
    assert "reopened" in await events_of(client, second)
    assert len(template_changes(world)) == 1
    assert resource_version(world.kube) == rv
    assert serving_version(world.kube) == "v3"
