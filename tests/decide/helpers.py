"""Helpers shared by this package's tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver.annotations import CHANGED_AT as ANNOTATION_CHANGED_AT
from receiver.annotations import INCIDENT as ANNOTATION_INCIDENT
from receiver.annotations import ROLLED_BACK_FROM as ANNOTATION_ROLLED_BACK_FROM
from receiver.annotations import ROLLED_BACK_FROM_REVISION as ANNOTATION_ROLLED_BACK_FROM_REVISION
from receiver.annotations import ROLLED_BACK_TO as ANNOTATION_ROLLED_BACK_TO
from receiver.decide import (
    Decision,
    Facts,
)
from receiver.decide import decide as decide_resolved
from receiver.models import (
    Job,
    Revision,
    WorkloadView,
    incident_id,
    rfc3339,
)
from receiver.policy import Policy, parse_policy, resolve

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


BECAME = NOW - timedelta(hours=1)


POLICY = parse_policy(
    """\
defaults: {cooldown: 30m, max_rollbacks: 3, window: 24h, causality_window: 24h}
models:
  - {name: fraud-scorer, namespace: ml-prod, tier: critical}
  - {name: exp-model, namespace: ml-prod, tier: experimental}
  - {name: quiet, namespace: ml-prod, mode: off}
  - {name: drifty, namespace: ml-prod, data_quality_mode: auto}
  - {name: fraud-scorer, namespace: ml-prod, cluster: eu-1, mode: notify}
"""
)


V1 = Revision(number=1, version="v1", name="fraud-scorer-1", template={"v": 1})


V2 = Revision(number=2, version="v2", name="fraud-scorer-2", template={"v": 2})


V3 = Revision(number=3, version="v3", name="fraud-scorer-3", template={"v": 3})


def make_job(**labels: str) -> Job:
    base = {
        "alertname": "ModelServingHighErrorRate",
        "remediation": "rollback",
        "namespace": "ml-prod",
        "model": "fraud-scorer",
        "model_version": "v3",
        "category": "operational",
        "trigger": "error_rate",
        "severity": "critical",
    }
    base.update(labels)
    return Job(
        received_at=NOW,
        labels={k: v for k, v in base.items() if v is not None},
        starts_at=NOW - timedelta(minutes=10),
        fingerprint="f00d",
    )


def make_view(**changes: Any) -> WorkloadView:
    view = WorkloadView(
        strategy="rollout-undo",
        namespace="ml-prod",
        name="fraud-scorer",
        resource_version="344",
        serving_version="v3",
        serving_revision="3",
        became_current_at=BECAME,
        annotations={},
        spec_paused=False,
        gitops=None,
        candidates=(V2, V1),
        made_current_by_us=False,
        serving=V3,
    )
    return replace(view, **changes)


def facts(**changes: Any) -> Facts:
    return replace(Facts(now=NOW), **changes)


def decide(job: Job, policy: Policy, view: WorkloadView | None, facts: Facts) -> Decision:
    """The table with the policy resolved for the job, as the service resolves it once."""
    return decide_resolved(job, resolve(policy, job), view, facts)


def applied_annotations(bad_version: str = "v3", revision: str = "3") -> dict[str, str]:
    """What our rollback of ``bad_version`` (at ``revision``) left on the Deployment."""
    return {
        ANNOTATION_INCIDENT: incident_id("", "ml-prod", "fraud-scorer", bad_version, revision),
        ANNOTATION_CHANGED_AT: rfc3339(NOW - timedelta(minutes=2)) or "",
        ANNOTATION_ROLLED_BACK_FROM: bad_version,
        ANNOTATION_ROLLED_BACK_FROM_REVISION: revision,
        ANNOTATION_ROLLED_BACK_TO: "v2",
    }


AFTER_OUR_UNDO = {
    "serving_version": "v2",
    "serving_revision": "4",
    "serving": replace(V2, number=4),
    # Our rollback marked the bad version's ReplicaSet.
    "candidates": (replace(V3, bad=True), V1),
    "annotations": applied_annotations(),
    "made_current_by_us": True,
    "became_current_at": NOW - timedelta(minutes=2),
}
