"""The decision table (design.md, Decision): one case per rule, first match decides."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from receiver.annotations import BAD as ANNOTATION_BAD
from receiver.annotations import CHANGED_AT as ANNOTATION_CHANGED_AT
from receiver.annotations import INCIDENT as ANNOTATION_INCIDENT
from receiver.annotations import PAUSED as ANNOTATION_PAUSED
from receiver.annotations import ROLLED_BACK_FROM as ANNOTATION_ROLLED_BACK_FROM
from receiver.annotations import ROLLED_BACK_FROM_REVISION as ANNOTATION_ROLLED_BACK_FROM_REVISION
from receiver.annotations import ROLLED_BACK_TO as ANNOTATION_ROLLED_BACK_TO
from receiver.annotations import ROLLED_BACK_TO_REVISION, rollback_annotations
from receiver.decide import (
    CAUSALITY_TOLERANCE_SECONDS,
    Action,
    Decision,
    select_target,
)
from receiver.models import (
    IncidentState,
    Job,
    JobKind,
    Revision,
    incident_id,
    rfc3339,
)
from receiver.policy import Mode
from tests.decide.helpers import (
    AFTER_OUR_UNDO,
    NOW,
    POLICY,
    V1,
    V2,
    applied_annotations,
    decide,
    facts,
    make_job,
    make_view,
)


def annotations_of(decision: Decision, *, at: datetime) -> dict[str, str]:
    assert decision.target is not None
    return rollback_annotations(
        incident_id=decision.incident_id,
        bad_version=decision.bad_version,
        bad_revision=decision.bad_revision,
        target_version=decision.target.version,
        target_revision=str(decision.target.number),
        at=at,
    )


def case(
    name: str,
    action: Action,
    reason: str,
    target: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    view: dict[str, Any] | None = None,
    no_view: bool = False,
    facts: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
    escalate: bool = False,
) -> Any:
    """One row: the changes to the baseline inputs, then the expected decision."""
    inputs = (labels or {}, None if no_view else (view or {}), facts or {}, job or {})
    return pytest.param(*inputs, (action, reason, target, escalate), id=name)


ROLLBACK_V2 = (Action.ROLLBACK, "rollback", "v2")
CASES = [
    case("baseline-acts", *ROLLBACK_V2),
    case("resolved-is-recorded", Action.RECORD, "resolved", job={"status": "resolved"}),
    # Rule 0: our action is on the workload.
    case(
        "rule0-re-driven-job-verifies", Action.VERIFY, "already_applied", "v2", view=AFTER_OUR_UNDO
    ),
    case(
        "rule0-comes-before-pause",
        Action.VERIFY,
        "already_applied",
        "v2",
        view=AFTER_OUR_UNDO,
        facts={"global_paused": True},
    ),
    case(
        "rule0-another-version-does-not-verify",
        Action.REFUSE,
        "made_current_by_us",
        labels={"model_version": "v2"},
        view=AFTER_OUR_UNDO,
        escalate=True,
    ),
    # Rule 1: unknown model.
    case(
        "rule1-unknown-model",
        Action.NOTIFY,
        "unknown_model",
        labels={"model": "nobody"},
        no_view=True,
    ),
    case(
        "rule1-unknown-namespace",
        Action.NOTIFY,
        "unknown_model",
        labels={"namespace": "ml-staging"},
        no_view=True,
    ),
    case(
        "rule1-unknown-cluster",
        Action.NOTIFY,
        "unknown_model",
        labels={"cluster": "us-2"},
        no_view=True,
    ),
    # Rule 2: mode.
    case("rule2-tier-critical-is-auto", *ROLLBACK_V2),
    case(
        "rule2-tier-experimental-is-notify",
        Action.NOTIFY,
        "mode_notify",
        "v2",
        labels={"model": "exp-model"},
    ),
    case(
        "rule2-model-override-notify",
        Action.NOTIFY,
        "mode_notify",
        "v2",
        labels={"cluster": "eu-1"},
    ),
    case("rule2-off-records", Action.RECORD, "mode_off", labels={"model": "quiet"}),
    # Notify recommends only what rules 3-7 allow: without a view there is nothing to check.
    case(
        "rule2-notify-without-a-view",
        Action.NOTIFY,
        "workload_unavailable",
        labels={"model": "exp-model"},
        no_view=True,
    ),
    case(
        "rule2-data-quality-defaults-to-notify",
        Action.NOTIFY,
        "mode_notify",
        "v2",
        labels={"category": "data_quality", "trigger": "feature_drift"},
    ),
    case(
        "rule2-data-quality-mode-auto",
        *ROLLBACK_V2,
        labels={"model": "drifty", "category": "data_quality"},
    ),
    case(
        "rule2-accuracy-uses-mode",
        *ROLLBACK_V2,
        labels={"category": "accuracy", "trigger": "accuracy_slo"},
    ),
    case("rule2-policy-tier-beats-alert-tier", *ROLLBACK_V2, labels={"tier": "experimental"}),
    case(
        "rule2-alert-tier-without-policy-tier",
        Action.NOTIFY,
        "mode_notify",
        "v2",
        labels={"model": "drifty", "tier": "experimental"},
    ),
    # Rule 3: paused.
    case("rule3-paused-globally", Action.REFUSE, "paused", facts={"global_paused": True}),
    case(
        "rule3-paused-by-annotation",
        Action.REFUSE,
        "paused",
        view={"annotations": {ANNOTATION_PAUSED: "true"}},
    ),
    case(
        "rule3-pause-annotation-false-is-no-pause",
        *ROLLBACK_V2,
        view={"annotations": {ANNOTATION_PAUSED: "false"}},
    ),
    case(
        "rule3-spec-paused-by-a-person",
        Action.REFUSE,
        "deployment_paused",
        view={"spec_paused": True},
    ),
    # Rule 4: GitOps.
    case("rule4-argo-cd", Action.NOTIFY, "gitops", "v2", view={"gitops": "Argo CD"}),
    case("rule4-flux", Action.NOTIFY, "gitops", "v2", view={"gitops": "Flux"}),
    # Rule 5: serving version.
    case(
        "rule5-no-longer-serving",
        Action.RECORD,
        "no_longer_serving",
        view={"serving_version": "v4", "serving_revision": "5"},
    ),
    case(
        "rule5-version-label-missing",
        Action.NOTIFY,
        "version_unknown",
        view={"serving_version": ""},
    ),
    # Rule 6: causality.
    case(
        "rule6-inside-window", *ROLLBACK_V2, view={"became_current_at": NOW - timedelta(hours=23)}
    ),
    case(
        "rule6-outside-window",
        Action.REFUSE,
        "outside_causality_window",
        view={"became_current_at": NOW - timedelta(hours=25)},
    ),
    case(
        "rule6-alert-predates-version",
        Action.REFUSE,
        "alert_predates_version",
        view={"became_current_at": NOW},
    ),
    case(
        "rule6-within-clock-skew-tolerance",
        *ROLLBACK_V2,
        view={
            "became_current_at": NOW
            - timedelta(minutes=10)
            + timedelta(seconds=CAUSALITY_TOLERANCE_SECONDS)
        },
    ),
    case(
        "rule6-unknown-became-current",
        Action.NOTIFY,
        "causality_unknown",
        view={"became_current_at": None},
    ),
    case("rule6-unknown-starts-at", Action.NOTIFY, "causality_unknown", job={"starts_at": None}),
    case(
        "rule6-made-current-by-our-rollback-escalates",
        Action.REFUSE,
        "made_current_by_us",
        labels={"model_version": "v2"},
        view={**AFTER_OUR_UNDO, "annotations": {}},
        escalate=True,
    ),
    # Rule 7: target.
    case("rule7-no-earlier-revision", Action.NOTIFY, "no_target", view={"candidates": ()}),
    case(
        "rule7-only-same-version-or-bad",
        Action.NOTIFY,
        "no_target",
        view={"candidates": (replace(V2, version="v3"), replace(V1, bad=True))},
    ),
    case(
        "rule7-skips-bad-marked",
        Action.ROLLBACK,
        "rollback",
        "v1",
        view={"candidates": (replace(V2, bad=True), V1)},
    ),
    case(
        "rule7-skips-same-version",
        Action.ROLLBACK,
        "rollback",
        "v1",
        view={"candidates": (replace(V2, version="v3"), V1)},
    ),
    case(
        "rule7-by-revision-number-not-version-string",
        Action.ROLLBACK,
        "rollback",
        "v10",
        labels={"model_version": "v11"},
        view={
            "serving_version": "v11",
            "serving_revision": "12",
            "candidates": (
                Revision(9, "v9", "rs-9"),
                Revision(11, "v10", "rs-11"),
                Revision(10, "v9", "rs-10"),
            ),
        },
    ),
    # Rule 8: guards.
    case(
        "rule8-cooldown-from-the-store",
        Action.REFUSE,
        "cooldown",
        "v2",
        facts={"recent_rollbacks": (NOW - timedelta(minutes=12),)},
    ),
    case(
        "rule8-cooldown-from-the-annotation",
        Action.REFUSE,
        "cooldown",
        "v2",
        view={"annotations": {ANNOTATION_CHANGED_AT: rfc3339(NOW - timedelta(minutes=5))}},
    ),
    case(
        "rule8-cooldown-over",
        *ROLLBACK_V2,
        facts={"recent_rollbacks": (NOW - timedelta(minutes=31),)},
    ),
    case(
        "rule8-max-rollbacks",
        Action.REFUSE,
        "max_rollbacks",
        "v2",
        facts={"recent_rollbacks": tuple(NOW - timedelta(hours=h) for h in (1, 5, 20))},
    ),
    case(
        "rule8-old-rollbacks-leave-the-window",
        *ROLLBACK_V2,
        facts={"recent_rollbacks": tuple(NOW - timedelta(hours=h) for h in (1, 5, 25))},
    ),
    # Forced (manual) rollbacks skip guards and causality, nothing else.
    case(
        "forced-skips-guards",
        Action.ROLLBACK,
        "forced",
        "v2",
        facts={
            "forced": True,
            "actor": "slack:U123",
            "recent_rollbacks": (NOW - timedelta(minutes=1),) * 5,
        },
    ),
    case(
        "forced-skips-causality",
        Action.ROLLBACK,
        "forced",
        "v2",
        view={"became_current_at": None},
        facts={"forced": True},
    ),
    case(
        "forced-acts-in-notify-mode",
        Action.ROLLBACK,
        "forced",
        "v2",
        labels={"model": "exp-model"},
        facts={"forced": True},
    ),
    # A person's rollback is not automation: mode off and our pauses do not stop it.
    case(
        "forced-acts-in-off-mode",
        Action.ROLLBACK,
        "forced",
        "v2",
        labels={"model": "quiet"},
        facts={"forced": True},
    ),
    case(
        "forced-acts-while-paused",
        Action.ROLLBACK,
        "forced",
        "v2",
        facts={"forced": True, "global_paused": True},
    ),
    case(
        "forced-refused-on-a-paused-deployment",
        Action.REFUSE,
        "deployment_paused",
        view={"spec_paused": True},
        facts={"forced": True},
    ),
    case(
        "forced-refused-under-gitops",
        Action.REFUSE,
        "gitops",
        "v2",
        view={"gitops": "Argo CD"},
        facts={"forced": True},
    ),
    case(
        "forced-refused-without-target",
        Action.REFUSE,
        "no_target",
        view={"candidates": ()},
        facts={"forced": True},
    ),
    case(
        "forced-refused-for-unknown-model",
        Action.REFUSE,
        "unknown_model",
        labels={"model": "nobody"},
        no_view=True,
        facts={"forced": True},
    ),
    case(
        "forced-may-undo-our-own-rollback",
        Action.ROLLBACK,
        "forced",
        "v1",
        labels={"model_version": "v2"},
        view=AFTER_OUR_UNDO,
        facts={"forced": True},
    ),
    # A version we rolled back serves again: decided afresh, and people are paged.
    case(
        "redeployed-bad-version-acts-and-escalates",
        *ROLLBACK_V2,
        view={
            "serving_revision": "5",
            "candidates": (replace(V2, number=4), V1),
            "annotations": {
                **applied_annotations(),
                ANNOTATION_CHANGED_AT: rfc3339(NOW - timedelta(hours=2)),
            },
        },
        escalate=True,
    ),
]
# fmt: on


@pytest.mark.parametrize(
    ("labels", "view_changes", "fact_changes", "job_changes", "expected"), CASES
)
def test_the_decision_table(
    labels: dict[str, str],
    view_changes: dict[str, Any] | None,
    fact_changes: dict[str, Any],
    job_changes: dict[str, Any],
    expected: tuple[Action, str, str | None, bool],
) -> None:
    decision = run(labels, view_changes, fact_changes, job_changes)
    target = decision.target.version if decision.target else None
    assert (decision.action, decision.reason, target, decision.escalate) == expected, (
        decision.detail
    )
    assert decision.detail


def run(
    labels: dict[str, str],
    view_changes: dict[str, Any] | None,
    fact_changes: dict[str, Any],
    job_changes: dict[str, Any],
) -> Decision:
    fact_changes = dict(fact_changes)
    if fact_changes.pop("forced", False):
        job_changes = {**job_changes, "kind": JobKind.FORCE}
    if "actor" in fact_changes:
        job_changes = {**job_changes, "actor": fact_changes.pop("actor")}
    job = make_job(**labels).model_copy(update=job_changes)
    view = None if view_changes is None else make_view(**view_changes)
    return decide(job, POLICY, view, facts(**fact_changes))


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (Action.ROLLBACK, IncidentState.ACTING),
        (Action.VERIFY, IncidentState.ACTING),
        (Action.NOTIFY, IncidentState.NOTIFIED),
        (Action.REFUSE, IncidentState.REFUSED),
        (Action.RECORD, IncidentState.OPEN),
    ],
)
def test_each_action_maps_to_an_incident_state(action: Action, state: IncidentState) -> None:
    decisions = [run(*c.values[:4]) for c in CASES]
    states = {d.state for d in decisions if d.action is action}
    assert states == {state}


def test_the_incident_id_names_the_bad_version_and_the_revision_running_it() -> None:
    decision = decide(make_job(), POLICY, make_view(), facts())
    assert decision.incident_id == incident_id("", "ml-prod", "fraud-scorer", "v3", "3")
    assert (decision.bad_version, decision.bad_revision) == ("v3", "3")


def test_the_incident_id_is_the_same_before_and_after_our_rollback() -> None:
    before = decide(make_job(), POLICY, make_view(), facts())
    annotations = annotations_of(before, at=NOW - timedelta(minutes=2))
    after = decide(
        make_job(), POLICY, make_view(**{**AFTER_OUR_UNDO, "annotations": annotations}), facts()
    )
    assert after.action is Action.VERIFY
    assert after.incident_id == before.incident_id
    assert after.target == replace(V2, number=4)


def test_rollback_annotations_record_the_change() -> None:
    decision = decide(make_job(), POLICY, make_view(), facts())
    assert annotations_of(decision, at=NOW) == {
        ANNOTATION_INCIDENT: decision.incident_id,
        ANNOTATION_CHANGED_AT: "2026-11-25T12:00:00Z",
        ANNOTATION_ROLLED_BACK_FROM: "v3",
        ANNOTATION_ROLLED_BACK_FROM_REVISION: "3",
        ANNOTATION_ROLLED_BACK_TO: "v2",
        ROLLED_BACK_TO_REVISION: "2",
    }


def test_a_no_longer_serving_alert_joins_the_incident_of_our_rollback() -> None:
    after = make_view(**AFTER_OUR_UNDO)
    decision = decide(
        make_job(alertname="ModelServingLatencyHigh"),
        POLICY,
        replace(after, annotations={**after.annotations, ANNOTATION_INCIDENT: "inc-other"}),
        facts(),
    )
    assert decision.reason == "no_longer_serving"
    assert decision.incident_id == incident_id("", "ml-prod", "fraud-scorer", "v3", "3")


def test_a_forced_job_without_a_version_is_about_the_serving_version() -> None:
    job = Job(
        kind=JobKind.FORCE,
        received_at=NOW,
        labels={"namespace": "ml-prod", "model": "fraud-scorer"},
        actor="api:alice",
    )
    decision = decide(job, POLICY, make_view(), facts())
    assert decision.action is Action.ROLLBACK
    assert decision.bad_version == "v3"
    assert "api:alice" in decision.detail


def test_cooldown_detail_says_how_long_ago_and_the_setting() -> None:
    d = decide(
        make_job(), POLICY, make_view(), facts(recent_rollbacks=(NOW - timedelta(minutes=12),))
    )
    assert d.detail.endswith("last rollback 12m ago, cooldown 30m")


def test_unknown_model_detail_points_at_an_entry_in_another_cluster() -> None:
    d = decide(make_job(model="exp-model", cluster="eu-1"), POLICY, None, facts())
    assert d.reason == "unknown_model"
    assert "add cluster: eu-1" in d.detail


def test_notify_mode_records_the_mode_in_the_decision() -> None:
    d = decide(make_job(model="exp-model"), POLICY, make_view(), facts())
    assert d.mode is Mode.NOTIFY
    assert "v2 (revision 2)" in d.detail


@pytest.mark.parametrize(
    ("candidates", "bad", "expected"),
    [
        ((), "v3", None),
        ((Revision(2, "v2", "a"), Revision(1, "v1", "b")), "v3", 2),
        ((Revision(1, "v1", "b"), Revision(2, "v2", "a")), "v3", 2),
        ((Revision(2, "v3", "a"), Revision(1, "v1", "b")), "v3", 1),
        ((Revision(2, "v2", "a", bad=True), Revision(1, "v1", "b")), "v3", 1),
        ((Revision(2, "", "a"), Revision(1, "v1", "b")), "v3", 1),
        ((Revision(9, "v9", "a"), Revision(10, "v10", "b")), "v11", 10),
        ((Revision(10, "v9", "a"), Revision(9, "v10", "b")), "v11", 10),
    ],
)
def test_select_target_orders_by_revision_number(
    candidates: tuple[Revision, ...], bad: str, expected: int | None
) -> None:
    target = select_target(candidates, bad)
    assert (target.number if target else None) == expected


def test_a_bad_marked_revision_is_never_chosen_whatever_its_number() -> None:
    marked = Revision(2, "v2", "rs-2", bad=True, template={ANNOTATION_BAD: "x"})
    assert select_target((marked,), "v3") is None
