"""The decision table of design.md ("Decision", rules 0-9): what to do about one job.

Pure: the inputs are the job, the policy, a fresh view of the workload and the facts kept
elsewhere (pauses, recent rollbacks, the clock reading); the output is a ``Decision``
value with a stable snake_case ``reason`` code and a human ``detail``. No I/O, no clock
reads, no logging: the worker reads, this module decides, the executors act. Every rule
is a plain ``if`` in ``decide`` so the order of the table is the order of the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from receiver.durations import format_duration
from receiver.models import LABEL_TIER, IncidentState, Job, incident_id, rfc3339
from receiver.policy import CATEGORY_DATA_QUALITY, Mode, Policy

__all__ = [
    "ANNOTATION_BAD",
    "ANNOTATION_CHANGED_AT",
    "ANNOTATION_INCIDENT",
    "ANNOTATION_PAUSED",
    "ANNOTATION_PREFIX",
    "ANNOTATION_ROLLED_BACK_FROM",
    "ANNOTATION_ROLLED_BACK_FROM_REVISION",
    "ANNOTATION_ROLLED_BACK_TO",
    "CAUSALITY_TOLERANCE_SECONDS",
    "Action",
    "Decision",
    "Facts",
    "Revision",
    "WorkloadView",
    "decide",
    "is_paused_by_us",
    "parse_time",
    "rollback_annotations",
    "select_target",
]

# Durable facts live on the Kubernetes objects (design.md, State), under our own prefix.
ANNOTATION_PREFIX = "rollback-receiver.io/"
ANNOTATION_INCIDENT = ANNOTATION_PREFIX + "incident"
"""On the workload: the incident of our last action (rule 0 finds a re-driven job by it)."""
ANNOTATION_CHANGED_AT = ANNOTATION_PREFIX + "changed-at"
"""On the workload: RFC 3339 time of our last change; the cooldown survives Redis loss."""
ANNOTATION_ROLLED_BACK_FROM = ANNOTATION_PREFIX + "rolled-back-from"
"""On the workload: the bad version our last rollback removed."""
ANNOTATION_ROLLED_BACK_FROM_REVISION = ANNOTATION_PREFIX + "rolled-back-from-revision"
"""On the workload: the revision that ran the bad version (part of the incident id)."""
ANNOTATION_ROLLED_BACK_TO = ANNOTATION_PREFIX + "rolled-back-to"
"""On the workload: the version our last rollback restored."""
ANNOTATION_PAUSED = ANNOTATION_PREFIX + "paused"
"""On the workload: automation paused for this model (set by pause, removed by resume)."""
ANNOTATION_BAD = ANNOTATION_PREFIX + "bad"
"""On a ReplicaSet: its version was rolled back; never chosen as a target again."""

CAUSALITY_TOLERANCE_SECONDS = 300.0
"""How far ``startsAt`` may precede the moment the serving version became current and still
be blamed on it. Covers clock skew between Prometheus and the API server, the rule
evaluation interval, and the controller's ``Progressing`` update trailing the start of a
rollout that re-adopts an old ReplicaSet."""


class Action(StrEnum):
    """What the worker does next."""

    VERIFY = "verify"  # rule 0: our action is already applied; verify it
    ROLLBACK = "rollback"  # rule 9: act
    NOTIFY = "notify"  # recommend (with a button when a target is known), no action
    RECORD = "record"  # nothing to do: mode off, no longer serving, resolved
    REFUSE = "refuse"  # a safety rule stopped the action; people are told why


_STATE_OF_ACTION = {
    Action.VERIFY: IncidentState.ACTING,
    Action.ROLLBACK: IncidentState.ACTING,
    Action.NOTIFY: IncidentState.NOTIFIED,
    Action.REFUSE: IncidentState.REFUSED,
    # Recording changes nothing: a new incident stays open, an existing one keeps its state.
    Action.RECORD: IncidentState.OPEN,
}


@dataclass(frozen=True)
class Revision:
    """An earlier revision of the workload; for a Deployment, one of its ReplicaSets."""

    number: int
    """``deployment.kubernetes.io/revision``; the only order that counts (rule 7)."""
    version: str
    """The pod template's ``app.kubernetes.io/version`` label, ``""`` when absent."""
    name: str
    """The ReplicaSet's name."""
    bad: bool = False
    """``rollback-receiver.io/bad`` is on the ReplicaSet."""
    template: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The pod template without the ``pod-template-hash`` label: what an undo restores."""


@dataclass(frozen=True)
class WorkloadView:
    """What the rules read from a fresh GET of the workload (see ``receiver.workload``)."""

    strategy: str
    namespace: str
    name: str
    resource_version: str
    serving_version: str
    serving_revision: str
    became_current_at: datetime | None
    annotations: Mapping[str, str]
    spec_paused: bool
    gitops: str | None
    candidates: tuple[Revision, ...]
    """Earlier revisions, newest (highest number) first."""
    made_current_by_us: bool
    serving: Revision | None = None
    """The revision now serving, when it could be identified."""


@dataclass(frozen=True)
class Facts:
    """What the worker knows besides the workload: the clock and the store's records."""

    now: datetime
    global_paused: bool = False
    recent_rollbacks: tuple[datetime, ...] = ()
    """This model's rollbacks from the store (any age; the window is applied here)."""
    forced: bool = False
    """A person asked for this rollback: guards (8) and causality (6) are skipped."""
    actor: str = "alertmanager"


@dataclass(frozen=True)
class Decision:
    """The outcome of the table: an action, why (a stable code and a sentence), and the
    incident it belongs to."""

    action: Action
    reason: str
    state: IncidentState
    target: Revision | None
    escalate: bool
    incident_id: str
    detail: str = ""
    bad_version: str = ""
    bad_revision: str = ""
    mode: Mode | None = None


def decide(job: Job, policy: Policy, view: WorkloadView | None, facts: Facts) -> Decision:
    """Apply rules 0-9 in order; the first that matches decides.

    ``view`` is ``None`` when no workload could be read (an unknown model has none).
    """
    forced = facts.forced
    bad_version = job.model_version
    if forced and not bad_version and view is not None:
        # A manual rollback may name only the model: it is about what serves now.
        bad_version = view.serving_version
    bad_revision = _bad_revision(bad_version, view)
    the_incident = incident_id(job.cluster, job.namespace, job.model, bad_version, bad_revision)

    def decision(
        action: Action,
        reason: str,
        detail: str,
        *,
        target: Revision | None = None,
        escalate: bool = False,
        mode: Mode | None = None,
    ) -> Decision:
        return Decision(
            action=action,
            reason=reason,
            state=_STATE_OF_ACTION[action],
            target=target,
            escalate=escalate,
            incident_id=the_incident,
            detail=detail,
            bad_version=bad_version,
            bad_revision=bad_revision,
            mode=mode,
        )

    # A person asked to act: "notify" would only repeat the question, so say no and why.
    no_action = Action.REFUSE if forced else Action.NOTIFY
    subject = f"{job.namespace}/{job.model} {bad_version}".strip()

    if job.status == "resolved":
        return decision(
            Action.RECORD,
            "resolved",
            f"{subject}: resolved notification recorded; it proves nothing by itself",
        )

    # Rule 0: our action for this very incident is on the workload (a re-driven job).
    if view is not None and _already_applied(job, bad_version, view):
        return decision(
            Action.VERIFY,
            "already_applied",
            f"{subject}: rolled back to {view.serving_version} already by incident"
            f" {the_incident}; verifying",
            target=view.serving,
        )

    # Rule 1: unknown model.
    model_policy = policy.lookup(job.cluster, job.namespace, job.model)
    if model_policy is None:
        return decision(no_action, "unknown_model", _unknown_model_detail(job, policy))

    # Rule 2: mode (data-quality alerts use data_quality_mode).
    settings = policy.effective(model_policy, alert_tier=job.labels.get(LABEL_TIER) or None)
    mode = settings.mode_for(job.category)
    mode_key = "data_quality_mode" if job.category == CATEGORY_DATA_QUALITY else "mode"
    if mode is Mode.OFF:
        return decision(
            Action.REFUSE if forced else Action.RECORD,
            "mode_off",
            f"{subject}: {mode_key} is off for this model: recorded only; set it to notify"
            " or auto in the policy to allow rollbacks",
            mode=mode,
        )
    if mode is Mode.NOTIFY and not forced:
        target = select_target(view.candidates, bad_version) if view is not None else None
        proposal = (
            f"; suggested target {target.version} (revision {target.number})" if target else ""
        )
        return decision(
            Action.NOTIFY,
            "mode_notify",
            f"{subject}: {mode_key} is notify: recommending a rollback{proposal}",
            target=target,
            mode=mode,
        )

    if view is None:
        return decision(
            no_action,
            "workload_unknown",
            f"{subject}: the workload of this model could not be read; check the policy"
            " entry's workload names",
            mode=mode,
        )
    workload = f"{view.namespace}/{view.name}"

    # Rule 3: paused by us (global or per model), or by a person (spec.paused).
    if facts.global_paused:
        return decision(
            Action.REFUSE,
            "paused",
            f"{subject}: automation is paused globally; resume it (POST /api/resume) to act",
            mode=mode,
        )
    if is_paused_by_us(view.annotations):
        return decision(
            Action.REFUSE,
            "paused",
            f"{subject}: automation is paused for this model ({ANNOTATION_PAUSED} on"
            f" {workload}); resume it (POST /api/models/{job.namespace}/{job.model}/resume)",
            mode=mode,
        )
    if view.spec_paused:
        return decision(
            Action.REFUSE,
            "deployment_paused",
            f"{subject}: {workload} is paused (spec.paused) by a person and is never unpaused"
            " by the receiver; run `kubectl rollout resume` or roll back by hand",
            mode=mode,
        )

    # Rule 4: GitOps would undo us at the next sync.
    if view.gitops:
        target = select_target(view.candidates, bad_version)
        proposal = f" to {target.version} (revision {target.number})" if target else ""
        return decision(
            no_action,
            "gitops",
            f"{subject}: {workload} is managed by {view.gitops}; the next sync would undo a"
            f" rollback: revert the version{proposal} in Git",
            target=target,
            mode=mode,
        )

    # Rule 5: the alert's version is no longer the one serving.
    if not view.serving_version:
        return decision(
            no_action,
            "version_unknown",
            f"{subject}: {workload}'s pod template has no app.kubernetes.io/version label;"
            " add it so alerts can be matched to the serving version",
            mode=mode,
        )
    if view.serving_version != bad_version:
        return decision(
            Action.REFUSE if forced else Action.RECORD,
            "no_longer_serving",
            f"{subject}: {workload} now serves {view.serving_version}; nothing to roll back",
            mode=mode,
        )

    # A version we rolled back serves again (a redeploy, a GitOps revert): page people
    # whatever is decided below.
    redeployed = view.annotations.get(ANNOTATION_ROLLED_BACK_FROM) == bad_version

    def with_redeploy(d: Decision) -> Decision:
        if not redeployed:
            return d
        return replace(
            d,
            escalate=True,
            detail=d.detail + f" ({bad_version} was rolled back before and serves again)",
        )

    # Rule 6: causality (skipped for forced rollbacks).
    if not forced:
        refusal = _causality(job, view, settings.causality_window_seconds, facts.now, subject)
        if refusal is not None:
            action, reason, detail, escalate = refusal
            return with_redeploy(decision(action, reason, detail, escalate=escalate, mode=mode))

    # Rule 7: the target.
    target = select_target(view.candidates, bad_version)
    if target is None:
        return with_redeploy(
            decision(
                no_action,
                "no_target",
                f"{subject}: no earlier revision of {workload} with another version that is"
                " not marked bad; roll forward with a fixed version",
                mode=mode,
            )
        )

    # Rule 8: guards (skipped for forced rollbacks).
    if not forced:
        guard = _guards(
            view, facts, settings.cooldown_seconds, settings.max_rollbacks, settings.window_seconds
        )
        if guard is not None:
            reason, detail = guard
            return with_redeploy(
                decision(Action.REFUSE, reason, f"{subject}: {detail}", target=target, mode=mode)
            )

    # Rule 9: act.
    if forced:
        reason, detail = "forced", f"{subject}: rollback forced by {facts.actor}"
    else:
        reason, detail = "rollback", f"{subject}: rolling {workload} back"
    return with_redeploy(
        decision(
            Action.ROLLBACK,
            reason,
            f"{detail} to {target.version} (revision {target.number})",
            target=target,
            mode=mode,
        )
    )


def select_target(candidates: tuple[Revision, ...], bad_version: str) -> Revision | None:
    """Rule 7: the newest earlier revision by revision number (never by version string:
    "v10" sorts before "v9") whose version is known, differs from the bad one, and is not
    marked bad."""
    for revision in sorted(candidates, key=lambda r: r.number, reverse=True):
        if revision.bad or not revision.version or revision.version == bad_version:
            continue
        return revision
    return None


def is_paused_by_us(annotations: Mapping[str, str]) -> bool:
    """Our per-model pause annotation is present (any value but ``false``)."""
    value = annotations.get(ANNOTATION_PAUSED)
    return value is not None and value.strip().lower() != "false"


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it, or ``None`` if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def rollback_annotations(decision: Decision, *, at: datetime) -> dict[str, str]:
    """The annotations one rollback PATCH sets on the workload, with the change itself."""
    if decision.target is None:
        raise ValueError(f"decision {decision.reason!r} has no target: nothing to annotate")
    return {
        ANNOTATION_INCIDENT: decision.incident_id,
        ANNOTATION_CHANGED_AT: rfc3339(at) or "",
        ANNOTATION_ROLLED_BACK_FROM: decision.bad_version,
        ANNOTATION_ROLLED_BACK_FROM_REVISION: decision.bad_revision,
        ANNOTATION_ROLLED_BACK_TO: decision.target.version,
    }


# --- the rules' parts --------------------------------------------------------------------


def _bad_revision(bad_version: str, view: WorkloadView | None) -> str:
    """The revision that runs (or ran) the bad version: part of the incident's identity."""
    if view is None or not bad_version:
        return ""
    if view.serving_version == bad_version:
        return view.serving_revision
    if view.annotations.get(ANNOTATION_ROLLED_BACK_FROM) == bad_version:
        return view.annotations.get(ANNOTATION_ROLLED_BACK_FROM_REVISION, "")
    for revision in sorted(view.candidates, key=lambda r: r.number, reverse=True):
        if revision.version == bad_version:
            return str(revision.number)
    return ""


def _already_applied(job: Job, bad_version: str, view: WorkloadView) -> bool:
    """Rule 0: the workload carries our rollback for this job's incident, still in force
    (the bad version does not serve again)."""
    annotations = view.annotations
    revision = annotations.get(ANNOTATION_ROLLED_BACK_FROM_REVISION)
    if revision is None or annotations.get(ANNOTATION_ROLLED_BACK_FROM) != bad_version:
        return False
    expected = incident_id(job.cluster, job.namespace, job.model, bad_version, revision)
    return annotations.get(ANNOTATION_INCIDENT) == expected and view.serving_version != bad_version


def _causality(
    job: Job, view: WorkloadView, window_seconds: float, now: datetime, subject: str
) -> tuple[Action, str, str, bool] | None:
    """Rule 6: (action, reason, detail, escalate) when the alert cannot be blamed on the
    serving version becoming current; ``None`` when it can."""
    if view.made_current_by_us:
        return (
            Action.REFUSE,
            "made_current_by_us",
            f"{subject}: this version was made current by our own rollback and is never"
            " rolled back automatically; a person must choose what to run",
            True,
        )
    became = view.became_current_at
    if became is None or job.starts_at is None:
        missing = "the alert's startsAt" if became is not None else "when it became current"
        return (
            Action.NOTIFY,
            "causality_unknown",
            f"{subject}: cannot tell {missing}, so the alert cannot be tied to this version",
            False,
        )
    started = job.starts_at
    if started < became - timedelta(seconds=CAUSALITY_TOLERANCE_SECONDS):
        return (
            Action.REFUSE,
            "alert_predates_version",
            f"{subject}: the alert started {_span(became - started)} before this version"
            f" became current ({rfc3339(became)}); the version is not the cause",
            False,
        )
    if started > became + timedelta(seconds=window_seconds):
        return (
            Action.REFUSE,
            "outside_causality_window",
            f"{subject}: the version served {_span(started - became)} before the alert"
            f" started, beyond causality_window {format_duration(window_seconds)}; look for"
            " another cause (data, dependencies, traffic)",
            False,
        )
    return None


def _guards(
    view: WorkloadView, facts: Facts, cooldown: float, max_rollbacks: int, window: float
) -> tuple[str, str] | None:
    """Rule 8: (reason, detail) when a guard stops an automatic rollback."""
    now = facts.now
    changed_at = parse_time(view.annotations.get(ANNOTATION_CHANGED_AT))
    # The annotation survives Redis loss; the store's records survive annotation edits.
    moments = [t for t in (*facts.recent_rollbacks, changed_at) if t is not None and t <= now]
    last = max(moments, default=None)
    if last is not None and (now - last).total_seconds() < cooldown:
        return (
            "cooldown",
            f"last rollback {_span(now - last)} ago, cooldown {format_duration(cooldown)}",
        )
    since = now - timedelta(seconds=window)
    count = sum(1 for t in facts.recent_rollbacks if since < t <= now)
    if count == 0 and changed_at is not None and since < changed_at <= now:
        count = 1  # the store forgot (Redis loss) but the workload remembers one
    if count >= max_rollbacks:
        return (
            "max_rollbacks",
            f"{count} rollbacks in the last {format_duration(window)}, max_rollbacks"
            f" {max_rollbacks}; acknowledge the incidents and roll back by hand if needed",
        )
    return None


def _unknown_model_detail(job: Job, policy: Policy) -> str:
    where = f" in cluster {job.cluster!r}" if job.cluster else ""
    detail = (
        f"{job.namespace}/{job.model}{where} is not in the policy file (version"
        f" {policy.version}): no action; add it under models to enable rollbacks"
    )
    if job.cluster and policy.lookup("", job.namespace, job.model) is not None:
        detail += (
            f"; an entry without cluster exists and matches only alerts without a cluster"
            f" label: add cluster: {job.cluster} to it"
        )
    return detail


def _span(delta: timedelta) -> str:
    return format_duration(max(0, round(delta.total_seconds())))
