"""The views blue-green and canary build for the decision table, and what the table then
decides, on recorded objects: pure, no I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from receiver import annotations as ours
from receiver.decide import Action, Facts, decide
from receiver.models import Job
from receiver.policy import parse_policy, resolve
from receiver.rollback.blue_green import Slots, blue_green_view, standby_problem
from receiver.rollback.canary import canary_gone, canary_view
from tests.kinds.helpers import recorded
from tests.kinds.recorded import load

VERSION = "app.kubernetes.io/version"


def deployment(name: str, version: str, *, generation: int = 1, available: int = 2) -> Any:
    obj = copy.deepcopy(load("016"))
    obj["metadata"]["name"] = name
    obj["metadata"]["generation"] = generation
    obj["status"]["observedGeneration"] = generation
    obj["spec"]["template"]["metadata"]["labels"][VERSION] = version
    obj["status"]["availableReplicas"] = available
    return obj


def scale(obj: Any, replicas: int) -> None:
    """A complete rollout at ``replicas`` (the API omits zero counts)."""
    obj["spec"]["replicas"] = replicas
    for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
        obj["status"].pop(key, None)
        if replicas:
            obj["status"][key] = replicas


def service(slot: str = "green", annotations: dict[str, str] | None = None) -> Any:
    obj = copy.deepcopy(recorded("059"))
    obj["metadata"]["name"] = "ranker"
    obj["spec"]["selector"]["slot"] = slot
    if annotations:
        obj["metadata"]["annotations"] = annotations
    return obj


def slots(svc: Any = None, *, active: Any = None, standby: Any = "default") -> Slots:
    return Slots(
        service=svc if svc is not None else service(),
        active_slot="green",
        active=active if active is not None else deployment("ranker-green", "v2", generation=3),
        standby_slot="blue",
        standby=deployment("ranker-blue", "v1") if standby == "default" else standby,
        standby_name="ranker-blue",
    )


def test_blue_green_serves_the_selected_slot_and_offers_the_standby() -> None:
    view = blue_green_view(slots())
    assert (view.strategy, view.name, view.resource_version) == ("blue-green", "ranker", "397")
    assert (view.serving_version, view.serving_revision) == ("v2", "3")
    assert [(c.number, c.version, c.name, c.bad) for c in view.candidates] == [
        (1, "v1", "ranker-blue", False)
    ]
    # The later of the slot's last rollout (08:41:3x) and the selector's change (08:41:40).
    assert view.became_current_at == datetime(2026, 11, 25, 8, 41, 40, tzinfo=UTC)
    assert not view.made_current_by_us and not view.spec_paused


def test_a_standby_version_listed_bad_is_a_bad_candidate() -> None:
    view = blue_green_view(slots(service(annotations={ours.BAD_VERSIONS: '["v1"]'})))
    assert view.candidates[0].bad


def test_a_missing_standby_leaves_no_candidate() -> None:
    assert blue_green_view(slots(standby=None)).candidates == ()


def switched_by_us(**extra: str) -> dict[str, str]:
    return {
        ours.INCIDENT: "inc-1",
        ours.CHANGED_AT: "2026-11-25T09:00:00Z",
        ours.ROLLED_BACK_FROM: "v1",
        ours.ROLLED_BACK_TO: "v2",
        ours.PREVIOUS_SLOT: "blue",
        ours.GENERATION: "3",
        **extra,
    }


@pytest.mark.parametrize(
    ("annotations", "ours_"),
    [
        (switched_by_us(), True),
        (switched_by_us(**{ours.GENERATION: "2"}), False),  # the slot changed since
        (switched_by_us(**{ours.PREVIOUS_SLOT: "green"}), False),  # switched back by hand
        (switched_by_us(**{ours.ROLLED_BACK_TO: "v9"}), False),
    ],
)
def test_a_version_made_current_by_our_switch_is_dated_by_it(annotations, ours_) -> None:
    view = blue_green_view(slots(service(annotations=annotations)))
    assert view.made_current_by_us is ours_
    if ours_:
        assert view.became_current_at == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: None, ""),
        (lambda s: s.standby.clear() or s.standby.update({"metadata": {}}), "has no"),
        (lambda s: s.standby["spec"].update(paused=True), "is paused"),
        (lambda s: scale(s.standby, 1), "1 available replicas, fewer than the active"),
        (lambda s: scale(s.standby, 0) or scale(s.active, 0), "0 available replicas"),
        (lambda s: s.standby["status"].update(availableReplicas=1), "is not rolled out"),
        (lambda s: s.standby["metadata"].update(generation=9), "is not rolled out"),
        (
            lambda s: s.standby["spec"]["template"]["metadata"]["labels"].update({VERSION: "v2"}),
            "runs v2 too",
        ),
        (
            lambda s: s.service["metadata"].update(annotations={ours.BAD_VERSIONS: '["v1"]'}),
            "marked bad",
        ),
    ],
)
def test_the_standby_checks_without_requests(edit, problem) -> None:
    checked = slots()
    edit(checked)
    found = standby_problem(checked)
    assert (problem in found) if problem else found == ""
    if problem:
        assert found.startswith("standby ranker-blue (slot blue)")


def test_a_standby_that_does_not_exist_is_named() -> None:
    assert "Deployment ml-prod/ranker-blue does not exist" in standby_problem(slots(standby=None))


# --- canary ---------------------------------------------------------------------------------


def canary(replicas: int = 1, version: str = "v2", **annotations: str) -> Any:
    obj = deployment("scorer-canary", version, generation=2, available=replicas)
    obj["spec"]["replicas"] = replicas
    obj["status"]["replicas"] = replicas
    obj["metadata"]["annotations"] = dict(annotations)
    return obj


def test_a_live_canary_serves_its_version_with_the_stable_as_target() -> None:
    view = canary_view(canary(), deployment("scorer-stable", "v1"))
    assert (view.strategy, view.name) == ("canary", "scorer-canary")
    assert (view.serving_version, view.serving_revision) == ("v2", "2")
    assert [(c.version, c.name) for c in view.candidates] == [("v1", "scorer-stable")]
    assert "does not fix the stable version" in view.unaffected_versions["v1"]
    assert view.target_problem == ""
    assert not view.made_current_by_us


def test_a_canary_at_zero_no_longer_serves_and_the_stable_does() -> None:
    view = canary_view(canary(0), deployment("scorer-stable", "v1"))
    assert view.serving_version == "v1" and view.candidates == ()


@pytest.mark.parametrize(
    ("stable", "problem"),
    [
        (None, "does not exist"),
        (deployment("scorer-stable", "v1", available=0), "no available replicas"),
    ],
)
def test_a_stable_that_cannot_serve_alone_is_a_target_problem(stable, problem) -> None:
    assert problem in canary_view(canary(), stable).target_problem


@pytest.mark.parametrize(
    ("status", "done"),
    [
        ({"observedGeneration": 2, "replicas": 1}, False),
        ({"observedGeneration": 2}, True),
        ({"observedGeneration": 1}, False),
    ],
)
def test_the_canary_is_gone_once_its_scale_down_is_observed_and_no_pod_is_left(
    status, done
) -> None:
    obj = canary(0)
    obj["status"] = status
    assert canary_gone(obj).done is done


POLICY = """
models:
  - name: scorer
    namespace: ml-prod
    strategy: canary
    canary: {deployment: scorer-canary, stable: scorer-stable}
"""


def job(version: str, started: datetime) -> Job:
    labels = {
        "alertname": "ModelServingHighErrorRate",
        "remediation": "rollback",
        "namespace": "ml-prod",
        "model": "scorer",
        "model_version": version,
        "category": "operational",
        "trigger": "error_rate",
        "severity": "critical",
    }
    return Job(received_at=started, labels=labels, starts_at=started)


@pytest.mark.parametrize(
    ("version", "replicas", "action", "reason"),
    [
        ("v2", 1, Action.ROLLBACK, "rollback"),
        ("v1", 1, Action.NOTIFY, "no_target"),
        ("v1", 0, Action.NOTIFY, "no_target"),
        ("v2", 0, Action.RECORD, "no_longer_serving"),
    ],
)
def test_the_table_on_a_canary(version, replicas, action, reason) -> None:
    policy = parse_policy(POLICY)
    view = canary_view(canary(replicas), deployment("scorer-stable", "v1"))
    started = (view.became_current_at or datetime.now(UTC)) + timedelta(minutes=5)
    the_job = job(version, started)
    decision = decide(the_job, resolve(policy, the_job), view, Facts(now=started))
    assert (decision.action, decision.reason) == (action, reason)
    if action is Action.ROLLBACK:
        assert decision.target is not None and decision.target.name == "scorer-stable"
