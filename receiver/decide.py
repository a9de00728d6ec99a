"""The decision table of design.md ("Decision", rules 0-9): what to do about one job.

Pure: the inputs are the job, the policy resolved once for it, a fresh view of the
workload and the facts kept elsewhere (pauses, the incident's state, recent rollbacks, the
clock reading); the output is a ``Decision`` with a stable snake_case ``reason`` and a human
``detail``. No I/O, no clock reads, no logging. Every rule is a plain ``if`` in ``decide``
so the order of the table is the order of the code.

Longer than most modules on purpose: the whole table, and the two small tables of the manual
jobs (roll forward, drill), read top to bottom in one place; splitting it would scatter the
order of the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from receiver import annotations as ours
from receiver.durations import format_duration
from receiver.models import (
    CLOSED_STATES,
    IncidentState,
    Job,
    JobKind,
    Revision,
    WorkloadView,
    incident_id,
    rfc3339,
)
from receiver.policy import CATEGORY_DATA_QUALITY, Mode, Resolved

__all__ = [
    "CAUSALITY_TOLERANCE_SECONDS",
    "Action",
    "Decision",
    "Facts",
    "Identity",
    "became_current",
    "decide",
    "decide_drill",
    "decide_roll_forward",
    "identify",
    "newest_revision",
    "select_target",
]

CAUSALITY_TOLERANCE_SECONDS = 300.0
"""How far ``startsAt`` may precede the moment the serving version became current and still
be blamed on it. Covers clock skew between Prometheus and the API server, the rule
evaluation interval, and the controller's ``Progressing`` update trailing the start of a
rollout that re-adopts an old ReplicaSet."""


class Action(StrEnum):
    """What the worker does next."""

    VERIFY = "verify"  # rule 0: our action is already applied; finish and verify it
    ROLLBACK = "rollback"  # rule 9: act
    NOTIFY = "notify"  # recommend (with a button when a target is known), no action
    RECORD = "record"  # nothing to do: mode off, no longer serving, resolved, done
    REFUSE = "refuse"  # a safety rule stopped the action; people are told why


_STATE_OF_ACTION = {
    Action.VERIFY: IncidentState.ACTING,
    Action.ROLLBACK: IncidentState.ACTING,
    Action.NOTIFY: IncidentState.NOTIFIED,
    Action.REFUSE: IncidentState.REFUSED,
    # Recording changes nothing: a new incident stays open, an existing one keeps its state.
    Action.RECORD: IncidentState.OPEN,
}

# Job kinds that are a person's decision: mode, guards and causality do not apply.
_MANUAL = frozenset({JobKind.FORCE, JobKind.EXECUTE})


@dataclass(frozen=True)
class Facts:
    """What the worker knows besides the workload: the clock and the store's records."""

    now: datetime
    global_paused: bool = False
    recent_rollbacks: tuple[datetime, ...] = ()
    """This model's rollbacks from the store (any age; the window is applied here)."""
    incident_state: IncidentState | None = None
    """The state of this job's incident when it exists already."""
    workload_problem: str = ""
    """Why the workload could not be read (no view): the strategy, the cluster or the API."""


@dataclass(frozen=True)
class Identity:
    """Which incident a job belongs to (design.md, Incidents)."""

    bad_version: str
    bad_revision: str
    incident_id: str


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


class _Deciding(Protocol):
    def __call__(
        self,
        action: Action,
        reason: str,
        detail: str,
        *,
        target: Revision | None = None,
        escalate: bool = False,
        mode: Mode | None = None,
    ) -> Decision: ...


def _deciding(incident_id: str, bad_version: str, bad_revision: str) -> _Deciding:
    """The ``Decision`` maker of one job: its incident and bad version fixed, the state
    following the action."""

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
            incident_id=incident_id,
            detail=detail,
            bad_version=bad_version,
            bad_revision=bad_revision,
            mode=mode,
        )

    return decision


def identify(job: Job, view: WorkloadView | None) -> Identity:
    """The incident of a job: (cluster, namespace, model, bad version, its revision).

    A manual action may name only the model: it is then about what serves now. A version we
    rolled back before keeps the revision recorded then, so its redeploy joins (and
    reopens) the same incident instead of opening a new one."""
    bad_version = job.model_version
    if not bad_version and job.kind in _MANUAL and view is not None:
        bad_version = view.serving_version
    bad_revision = _bad_revision(bad_version, view)
    if job.incident and job.kind is not JobKind.ALERT:
        # A person's (or a schedule's) action names its incident when it is queued, so the
        # answer's id is the one the job uses even if the workload changes meanwhile.
        return Identity(bad_version, bad_revision, job.incident)
    return Identity(
        bad_version,
        bad_revision,
        incident_id(job.cluster, job.namespace, job.model, bad_version, bad_revision),
    )


def decide(job: Job, resolved: Resolved, view: WorkloadView | None, facts: Facts) -> Decision:
    """Apply rules 0-9 in order; the first that matches decides.

    ``view`` is ``None`` when no workload could be read (an unknown model has none;
    ``facts.workload_problem`` says why otherwise).
    """
    manual = job.kind in _MANUAL
    who = identify(job, view)
    bad_version = who.bad_version

    decision = _deciding(who.incident_id, bad_version, who.bad_revision)

    # A person asked to act: "notify" would only repeat the question, so say no and why.
    no_action = Action.REFUSE if manual else Action.NOTIFY
    subject = f"{job.namespace}/{job.model} {bad_version}".strip()

    if job.status == "resolved":
        return decision(
            Action.RECORD,
            "resolved",
            f"{subject}: resolved notification recorded; it proves nothing by itself",
        )

    # Rule 0: our action for this very incident is on the workload (a re-driven job).
    if view is not None and _already_applied(who, view):
        if facts.incident_state in CLOSED_STATES:
            return decision(
                Action.RECORD,
                "already_done",
                f"{subject}: incident {who.incident_id} is {facts.incident_state}; this"
                " alert joins its record",
            )
        return decision(
            Action.VERIFY,
            "already_applied",
            f"{subject}: rolled back to {view.serving_version} already by incident"
            f" {who.incident_id}; finishing and verifying",
            target=view.serving,
        )

    # Rule 1: unknown model.
    model, settings = resolved.model, resolved.settings
    if model is None or settings is None:
        return decision(no_action, "unknown_model", resolved.unknown_detail)

    # Rule 2: mode (data-quality alerts use data_quality_mode).
    mode = settings.mode_for(job.category)
    mode_key = "data_quality_mode" if job.category == CATEGORY_DATA_QUALITY else "mode"
    if mode is Mode.OFF and not manual:
        return decision(
            Action.RECORD,
            "mode_off",
            f"{subject}: {mode_key} is off for this model: recorded only; set it to notify"
            " or auto in the policy to allow rollbacks",
            mode=mode,
        )

    if view is None:
        return decision(
            no_action,
            "workload_unavailable",
            f"{subject}: {facts.workload_problem or 'the workload could not be read'}",
            mode=mode,
        )
    workload = f"{view.namespace}/{view.name}"

    # Rule 3: paused by us (global or per model), a version a person accepted, or a
    # Deployment paused by a person (spec.paused, never overridden).
    if not manual:
        refusal = _paused_or_accepted(job, view, facts, subject, bad_version, workload)
        if refusal is not None:
            reason, detail = refusal
            return decision(Action.REFUSE, reason, detail, mode=mode)
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

    # Rule 5: the alert's version is no longer the one serving, or serves where this
    # strategy's action does not reach (a canary rollback leaves the stable as it is).
    unaffected = view.unaffected_versions.get(bad_version)
    if unaffected:
        return decision(no_action, "no_target", f"{subject}: {unaffected}", mode=mode)
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
            Action.REFUSE if manual else Action.RECORD,
            "no_longer_serving",
            f"{subject}: {workload} now serves {view.serving_version}; nothing to roll back",
            mode=mode,
        )

    # A version we rolled back serves again (a redeploy, a GitOps revert): page people
    # whatever is decided below.
    redeployed = view.annotations.get(ours.ROLLED_BACK_FROM) == bad_version

    def with_redeploy(d: Decision) -> Decision:
        if not redeployed:
            return d
        return replace(
            d,
            escalate=True,
            detail=d.detail + f" ({bad_version} was rolled back before and serves again)",
        )

    # Rule 6: causality (skipped for a person's action).
    if not manual:
        refusal6 = _causality(job, view, settings.causality_window_seconds, facts.now, subject)
        if refusal6 is not None:
            action, reason, detail, escalate = refusal6
            return with_redeploy(decision(action, reason, detail, escalate=escalate, mode=mode))

    # Rule 7: the target.
    if view.target_problem:
        return with_redeploy(
            decision(no_action, "no_target", f"{subject}: {view.target_problem}", mode=mode)
        )
    if manual and job.to_revision is not None:
        target = next((r for r in view.candidates if r.number == job.to_revision), None)
        if target is None:
            return decision(
                Action.REFUSE,
                "no_target",
                f"{subject}: revision {job.to_revision} of {workload} is not an earlier"
                " revision that still exists; `kubectl rollout history` lists them",
                mode=mode,
            )
    else:
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

    # Mode notify: recommend the target the rules above allow, with a button to execute.
    if mode is Mode.NOTIFY and not manual:
        return with_redeploy(
            decision(
                Action.NOTIFY,
                "mode_notify",
                f"{subject}: {mode_key} is notify: recommending a rollback to {target.version}"
                f" (revision {target.number})",
                target=target,
                mode=mode,
            )
        )

    # Rule 8: guards (skipped for a person's action).
    if not manual:
        guard = _guards(
            view, facts, settings.cooldown_seconds, settings.max_rollbacks, settings.window_seconds
        )
        if guard is not None:
            reason, detail = guard
            return with_redeploy(
                decision(Action.REFUSE, reason, f"{subject}: {detail}", target=target, mode=mode)
            )

    # Rule 9: act.
    if manual:
        what = "executed" if job.kind is JobKind.EXECUTE else "forced"
        reason, detail = what, f"{subject}: rollback {what} by {job.actor}"
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


def decide_roll_forward(
    job: Job, resolved: Resolved, view: WorkloadView | None, forward: Revision | None
) -> Decision:
    """A roll forward (``JobKind.ROLL_FORWARD``): undo our last rollback of the model, back
    to the version it replaced. ``forward`` is that version's revision as the strategy
    finds it (``Executor.forward_target``), None when it no longer exists.

    ``job.incident`` names the rollback being undone; the workload must still carry it as
    our last action. A person vouches for the version, so mode, pauses, causality and
    guards do not apply; a Deployment paused by a person and GitOps still do.
    """
    annotations = view.annotations if view is not None else {}
    version = annotations.get(ours.ROLLED_BACK_FROM, "") or job.model_version
    subject = f"{job.namespace}/{job.model} {version}".strip()

    decision = _deciding(job.incident, version, annotations.get(ours.ROLLED_BACK_FROM_REVISION, ""))

    if resolved.model is None:
        return decision(Action.REFUSE, "unknown_model", resolved.unknown_detail)
    if view is None:
        return decision(Action.REFUSE, "workload_unavailable", "the workload could not be read")
    workload = f"{view.namespace}/{view.name}"
    accepted = ours.accepted(annotations)
    if (
        annotations.get(ours.INCIDENT) == job.incident
        and ours.ROLLED_BACK_FROM not in annotations
        and accepted is not None
        and accepted.version == view.serving_version
    ):
        return Decision(
            action=Action.VERIFY,
            reason="already_rolled_forward",
            state=IncidentState.ACTING,
            target=view.serving,
            escalate=False,
            incident_id=job.incident,
            detail=f"{job.namespace}/{job.model}: rolled forward to {accepted.version} already;"
            " verifying",
            bad_version=accepted.version,
        )
    if ours.ROLLED_BACK_FROM not in annotations:
        return decision(
            Action.REFUSE,
            "nothing_to_roll_forward",
            f"{job.namespace}/{job.model}: {workload} carries no rollback of ours to undo",
        )
    last = annotations.get(ours.INCIDENT, "")
    if last != job.incident:
        return decision(
            Action.REFUSE,
            "not_last_rollback",
            f"{subject}: incident {job.incident} is not the last rollback of {workload}"
            f" (the last is {last or 'unknown'}); roll that one forward instead",
        )
    if view.spec_paused:
        return decision(
            Action.REFUSE,
            "deployment_paused",
            f"{subject}: {workload} is paused (spec.paused) by a person and is never unpaused"
            " by the receiver; run `kubectl rollout resume` first",
        )
    if view.gitops:
        return decision(
            Action.REFUSE,
            "gitops",
            f"{subject}: {workload} is managed by {view.gitops}; change the version in Git",
        )
    if view.serving_version == version:
        return decision(
            Action.REFUSE,
            "already_serving",
            f"{subject}: {workload} serves {version} again already (redeployed); nothing to"
            " roll forward",
        )
    if forward is None:
        return decision(
            Action.REFUSE,
            "no_forward_target",
            f"{subject}: the revision that ran {version} no longer exists on {workload}; deploy"
            " it again instead",
        )
    return decision(
        Action.ROLLBACK,
        "roll_forward",
        f"{subject}: rolling {workload} forward from {view.serving_version} to {version}"
        f" (revision {forward.number}) by {job.actor}",
        target=forward,
    )


def decide_drill(job: Job, resolved: Resolved, view: WorkloadView | None, facts: Facts) -> Decision:
    """The first leg of a drill (``JobKind.DRILL``): back to rule 7's target, as an alert
    would go, from a model at rest. A drill is never run on a model that automation may not
    touch now (paused, a Deployment paused by a person, GitOps) or that is recovering from
    our own rollback; it is refused with the reason instead."""
    bad_version = view.serving_version if view is not None else job.model_version
    subject = f"{job.namespace}/{job.model} {bad_version}".strip()

    decision = _deciding(
        job.incident, bad_version, view.serving_revision if view is not None else ""
    )

    model = resolved.model
    if model is None:
        return decision(Action.REFUSE, "unknown_model", resolved.unknown_detail)
    if not model.drills:
        return decision(
            Action.REFUSE,
            "drills_disabled",
            f"{job.namespace}/{job.model}: drills are not enabled for this model; set"
            " `drills: true` on its entry in the policy file",
        )
    if view is None:
        return decision(
            Action.REFUSE,
            "workload_unavailable",
            f"{subject}: {facts.workload_problem or 'the workload could not be read'}",
        )
    workload = f"{view.namespace}/{view.name}"
    if view.spec_paused:
        return decision(
            Action.REFUSE,
            "deployment_paused",
            f"{subject}: {workload} is paused (spec.paused) by a person",
        )
    refusal = _paused_or_accepted(job, view, facts, subject, "", workload)
    if refusal is not None:
        return decision(Action.REFUSE, refusal[0], refusal[1])
    if view.gitops:
        return decision(
            Action.REFUSE,
            "gitops",
            f"{subject}: {workload} is managed by {view.gitops}; the next sync would undo the"
            " drill",
        )
    if not view.serving_version:
        return decision(
            Action.REFUSE,
            "version_unknown",
            f"{subject}: {workload}'s pod template has no app.kubernetes.io/version label",
        )
    if view.made_current_by_us:
        last = view.annotations.get(ours.INCIDENT, "")
        return decision(
            Action.REFUSE,
            "recovering",
            f"{subject}: this version was made current by our rollback (incident {last});"
            " drills run on a model at rest: roll forward or deploy first",
        )
    if view.target_problem:
        return decision(Action.REFUSE, "no_target", f"{subject}: {view.target_problem}")
    target = select_target(view.candidates, view.serving_version)
    if target is None:
        return decision(
            Action.REFUSE,
            "no_target",
            f"{subject}: no earlier revision of {workload} with another version that is not"
            " marked bad: there is nothing to drill against",
        )
    return decision(
        Action.ROLLBACK,
        "drill",
        f"{subject}: drill by {job.actor}: rolling {workload} back to {target.version}"
        f" (revision {target.number}), then forward again",
        target=target,
    )


def became_current(view: WorkloadView) -> datetime | None:
    """When the serving version became current (rule 6): as a drill's return recorded it
    (``current-since``), else as the strategy dates it."""
    since = ours.current_since(view.annotations, view.serving_version, view.generation)
    return since or view.became_current_at


def newest_revision(view: WorkloadView) -> int | None:
    """The highest revision number the view knows (serving or earlier)."""
    numbers = [r.number for r in view.candidates]
    if view.serving is not None:
        numbers.append(view.serving.number)
    return max(numbers, default=None)


def select_target(candidates: tuple[Revision, ...], bad_version: str) -> Revision | None:
    """Rule 7: the newest earlier revision by revision number (never by version string:
    "v10" sorts before "v9") whose version is known, differs from the bad one, and is not
    marked bad."""
    for revision in sorted(candidates, key=lambda r: r.number, reverse=True):
        if revision.bad or not revision.version or revision.version == bad_version:
            continue
        return revision
    return None


# --- the rules' parts --------------------------------------------------------------------


def _bad_revision(bad_version: str, view: WorkloadView | None) -> str:
    """The revision that runs (or ran) the bad version: part of the incident's identity."""
    if view is None or not bad_version:
        return ""
    if view.annotations.get(ours.ROLLED_BACK_FROM) == bad_version:
        recorded = view.annotations.get(ours.ROLLED_BACK_FROM_REVISION, "")
        if recorded:
            return recorded
    if view.serving_version == bad_version:
        return view.serving_revision
    for revision in sorted(view.candidates, key=lambda r: r.number, reverse=True):
        if revision.version == bad_version:
            return str(revision.number)
    return ""


def _already_applied(who: Identity, view: WorkloadView) -> bool:
    """Rule 0: the workload carries our rollback for this incident, still in force (the
    bad version does not serve again)."""
    annotations = view.annotations
    return (
        annotations.get(ours.INCIDENT) == who.incident_id
        and annotations.get(ours.ROLLED_BACK_FROM) == who.bad_version
        and view.serving_version != who.bad_version
    )


def _paused_or_accepted(
    job: Job, view: WorkloadView, facts: Facts, subject: str, bad_version: str, workload: str
) -> tuple[str, str] | None:
    if facts.global_paused:
        return (
            "paused",
            f"{subject}: automation is paused globally; resume it (POST /api/resume) to act",
        )
    pause = ours.pause(view.annotations)
    if pause is not None:
        by = f" by {pause.actor}" if pause.actor else ""
        why = f": {pause.reason}" if pause.reason else ""
        return (
            "paused",
            f"{subject}: automation is paused for this model{by}{why} ({ours.PAUSED} on"
            f" {workload}); resume it (POST /api/models/{job.namespace}/{job.model}/resume)",
        )
    accepted = ours.accepted(view.annotations)
    if accepted is not None and accepted.version == bad_version and not _replaced(accepted, view):
        by = f" by {accepted.actor}" if accepted.actor else ""
        return (
            "accepted",
            f"{subject}: {bad_version} was accepted{by} (rolled forward); its alerts are"
            " notified, not acted on, until another version replaces it",
        )
    return None


def _replaced(accepted: ours.Accepted, view: WorkloadView) -> bool:
    """Another version was rolled out after the acceptance (a revision newer than the one
    recorded with it, of another version): the acceptance has ended."""
    if accepted.revision is None:
        return False
    return any(
        r.number > accepted.revision and r.version != accepted.version for r in view.candidates
    )


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
    became = became_current(view)
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
    changed_at = ours.changed_at(view.annotations)
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


def _span(delta: timedelta) -> str:
    return format_duration(max(0, round(delta.total_seconds())))
