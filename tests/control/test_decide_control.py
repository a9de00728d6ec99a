"""The new rows of the decision table: roll forward, drills, acceptance, a drill's dating."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from receiver import annotations as ours
from receiver.decide import (
    Action,
    became_current,
    decide_drill,
    decide_roll_forward,
    newest_revision,
)
from receiver.models import Job, JobKind
from receiver.policy import parse_policy, resolve
from tests.decide.helpers import (
    AFTER_OUR_UNDO,
    BECAME,
    NOW,
    V1,
    V2,
    V3,
    decide,
    facts,
    make_job,
    make_view,
)

POLICY = parse_policy(
    """\
models:
  - {name: fraud-scorer, namespace: ml-prod, tier: critical, drills: true}
  - {name: quiet, namespace: ml-prod}
"""
)
LAST = AFTER_OUR_UNDO["annotations"][ours.INCIDENT]


def control_job(kind: JobKind, incident: str = LAST, model: str = "fraud-scorer") -> Job:
    labels = {"namespace": "ml-prod", "model": model, "model_version": "v3"}
    return Job(kind=kind, received_at=NOW, labels=labels, actor="admin:x", incident=incident)


def roll_forward(view_changes: dict[str, Any] | None, forward: Any = V3, **job: Any) -> Any:
    j = control_job(JobKind.ROLL_FORWARD, **job)
    view = None if view_changes is None else make_view(**view_changes)
    return decide_roll_forward(j, resolve(POLICY, j), view, forward)


@pytest.mark.parametrize(
    ("name", "view", "forward", "job", "expected"),
    [
        ("acts", AFTER_OUR_UNDO, V3, {}, (Action.ROLLBACK, "roll_forward")),
        ("no-rollback-of-ours", {}, V3, {}, (Action.REFUSE, "nothing_to_roll_forward")),
        (
            "another-incident-last",
            AFTER_OUR_UNDO,
            V3,
            {"incident": "inc-x"},
            (Action.REFUSE, "not_last_rollback"),
        ),
        ("revision-gone", AFTER_OUR_UNDO, None, {}, (Action.REFUSE, "no_forward_target")),
        (
            "paused-by-a-person",
            {**AFTER_OUR_UNDO, "spec_paused": True},
            V3,
            {},
            (Action.REFUSE, "deployment_paused"),
        ),
        ("gitops", {**AFTER_OUR_UNDO, "gitops": "Flux"}, V3, {}, (Action.REFUSE, "gitops")),
        (
            "redeployed-already",
            {**AFTER_OUR_UNDO, "serving_version": "v3"},
            V3,
            {},
            (Action.REFUSE, "already_serving"),
        ),
        (
            "unknown-model",
            AFTER_OUR_UNDO,
            V3,
            {"model": "nobody"},
            (Action.REFUSE, "unknown_model"),
        ),
        ("no-view", None, None, {}, (Action.REFUSE, "workload_unavailable")),
    ],
)
def test_roll_forward_rows(name, view, forward, job, expected):
    decision = roll_forward(view, forward, **job)
    assert (decision.action, decision.reason) == expected
    assert decision.incident_id == job.get("incident", LAST)


def test_a_re_driven_roll_forward_verifies():
    accepted = ours.accepted_value("v3", "admin:x", NOW, revision=4)
    view = {"annotations": {ours.INCIDENT: LAST, ours.ACCEPTED: accepted}}
    decision = roll_forward(view)
    assert (decision.action, decision.reason) == (Action.VERIFY, "already_rolled_forward")


def test_an_accepted_version_is_refused_until_another_replaces_it():
    accepted = {ours.ACCEPTED: ours.accepted_value("v3", "admin:x", NOW, revision=3)}
    job = make_job()
    held = decide(job, POLICY, make_view(annotations=accepted), facts())
    assert (held.action, held.reason) == (Action.REFUSE, "accepted")
    # v4 was rolled out after the acceptance (revision 4), then v3 came back (revision 5).
    v4 = replace(V2, number=4, version="v4", name="fraud-scorer-4")
    back = make_view(
        annotations=accepted,
        serving=replace(V3, number=5),
        serving_revision="5",
        candidates=(v4, V2, V1),
    )
    acted = decide(job, POLICY, back, facts())
    assert (acted.action, acted.reason) == (Action.ROLLBACK, "rollback")
    # An acceptance recorded without a revision holds by version alone.
    by_version = {ours.ACCEPTED: json.dumps({"version": "v3", "actor": "admin:x"})}
    held = decide(job, POLICY, replace(back, annotations=by_version), facts())
    assert held.reason == "accepted"


def drill(view_changes: dict[str, Any] | None = None, model: str = "fraud-scorer", **f: Any):
    j = control_job(JobKind.DRILL, incident="inc-drill", model=model)
    view = make_view(**(view_changes or {}))
    return decide_drill(j, resolve(POLICY, j), view, facts(**f))


@pytest.mark.parametrize(
    ("view", "model", "fact", "expected"),
    [
        ({}, "fraud-scorer", {}, (Action.ROLLBACK, "drill", "v2")),
        ({}, "quiet", {}, (Action.REFUSE, "drills_disabled", None)),
        ({}, "fraud-scorer", {"global_paused": True}, (Action.REFUSE, "paused", None)),
        ({"annotations": {ours.PAUSED: "{}"}}, "fraud-scorer", {}, (Action.REFUSE, "paused", None)),
        ({"spec_paused": True}, "fraud-scorer", {}, (Action.REFUSE, "deployment_paused", None)),
        ({"gitops": "Argo CD"}, "fraud-scorer", {}, (Action.REFUSE, "gitops", None)),
        (AFTER_OUR_UNDO, "fraud-scorer", {}, (Action.REFUSE, "recovering", None)),
        (
            {"candidates": (replace(V2, bad=True), replace(V1, bad=True))},
            "fraud-scorer",
            {},
            (Action.REFUSE, "no_target", None),
        ),
        ({"serving_version": ""}, "fraud-scorer", {}, (Action.REFUSE, "version_unknown", None)),
    ],
)
def test_drill_rows(view, model, fact, expected):
    decision = drill(view, model, **fact)
    target = decision.target.version if decision.target else None
    assert (decision.action, decision.reason, target) == expected
    assert decision.incident_id == "inc-drill"


def test_a_drill_return_keeps_the_version_dated_as_before():
    before = BECAME - timedelta(hours=2)
    marks = {
        ours.CURRENT_SINCE: ours.current_since_value("v3", before),
        ours.GENERATION: "7",
    }
    view = make_view(annotations=marks, generation=7, became_current_at=NOW)
    assert became_current(view) == before
    # An alert that started before the drill (but after v3 really became current) acts.
    job = make_job().model_copy(update={"starts_at": NOW - timedelta(hours=2)})
    assert decide(job, POLICY, view, facts()).reason == "rollback"
    undated = replace(view, annotations={ours.GENERATION: "7"})
    assert decide(job, POLICY, undated, facts()).reason == "alert_predates_version"
    # Anyone's later change (the generation moved) ends it; so does another version.
    assert became_current(replace(view, generation=8)) == NOW
    assert became_current(replace(view, serving_version="v4")) == NOW


def test_a_pinned_incident_is_the_one_a_manual_job_records_under():
    job = control_job(JobKind.FORCE, incident="inc-pinned")
    decision = decide(job, POLICY, make_view(), facts())
    assert (decision.action, decision.incident_id) == (Action.ROLLBACK, "inc-pinned")
    assert newest_revision(make_view()) == 3
