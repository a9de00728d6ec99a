"""The incident state machine: open, join, reopen, transition, conclude. Pure.

An incident is (cluster, namespace, model, bad version, revision); alerts of the same key
join it, each still decided on its own (design.md, Incidents). This module changes the
``Incident`` value it is handed and reports what changed; the service stores it and counts.
"""

from __future__ import annotations

from datetime import datetime

from receiver.decide import Action, Decision
from receiver.models import (
    CLOSED_STATES,
    LABEL_SEVERITY,
    LABEL_TIER,
    Incident,
    IncidentKind,
    IncidentState,
    Job,
    JobKind,
)
from receiver.policy import Resolved

__all__ = ["MAX_JOINED_EVENTS", "conclude", "describe_job", "record_job", "transition"]

MAX_JOINED_EVENTS = 50
"""Deliveries that join an incident beyond this are counted, not listed: a storm of
repeats must not grow one record without bound."""


def describe_job(job: Job) -> str:
    """How the timeline names a job: the alert, or who did what."""
    if job.kind is JobKind.ALERT:
        return f"{job.status} alert {job.labels.get('alertname', '?')} ({job.trigger or '-'})"
    return f"{job.kind.value} by {job.actor}" + (f": {job.reason}" if job.reason else "")


def record_job(
    existing: Incident | None,
    job: Job,
    decision: Decision,
    resolved: Resolved,
    *,
    now: datetime,
    kind: IncidentKind = IncidentKind.ALERT,
) -> tuple[Incident | None, list[IncidentState]]:
    """The incident this job belongs to, opened or joined, and the states entered.

    ``None`` for a resolved alert of no known incident (the log keeps it). A firing alert
    that would act on a closed incident's version, which serves again, reopens it."""
    entered: list[IncidentState] = []
    what = f"{describe_job(job)}: {decision.detail}"
    if existing is None:
        if decision.action is Action.RECORD and decision.reason == "resolved":
            return None, entered
        model = resolved.model
        incident = Incident(
            id=decision.incident_id,
            cluster=job.cluster,
            namespace=job.namespace,
            model=job.model,
            bad_version=decision.bad_version,
            bad_revision=decision.bad_revision,
            strategy=resolved.strategy,
            kind=kind,
            created_at=now,
            updated_at=now,
            category=job.category,
            tier=job.labels.get(LABEL_TIER, ""),
            severity=job.labels.get(LABEL_SEVERITY, ""),
            generator_url=job.generator_url,
            alert_labels=dict(job.labels) if job.generator_url else {},
            runbook_url=job.annotations.get("runbook_url", ""),
            slack_channel=model.slack_channel if model else None,
        )
        incident.times.received = job.received_at
        incident.times.alert_started = job.starts_at
        incident.add_event(
            "opened",
            what,
            at=now,
            actor=job.actor,
            trigger=job.trigger,
            alert_key=job.dedup_key,
        )
        entered.append(IncidentState.OPEN)
    else:
        incident = existing
        joined = sum(1 for e in incident.events if e.kind in ("joined", "resolved"))
        if job.kind is not JobKind.ALERT or joined < MAX_JOINED_EVENTS:
            incident.add_event(
                "joined" if job.status == "firing" else "resolved",
                what,
                at=now,
                actor=job.actor,
                trigger=job.trigger,
                alert_key=job.dedup_key,
            )
        else:
            incident.alerts_joined += 1
            incident.updated_at = now
        if job.generator_url and not incident.generator_url and job.status == "firing":
            # A manual action opened it; the first alert brings the expression to confirm.
            incident.generator_url = job.generator_url
            incident.alert_labels = dict(job.labels)
        if job.received_at and (
            incident.times.received is None or job.received_at < incident.times.received
        ):
            incident.times.received = job.received_at
        if (
            incident.state in CLOSED_STATES
            and decision.action in (Action.ROLLBACK, Action.REFUSE, Action.NOTIFY)
            and job.status == "firing"
        ):
            incident.add_event(
                "reopened", f"{decision.bad_version} serves again: escalating", at=now
            )
    if job.trigger and job.status == "firing" and job.trigger not in incident.triggers:
        incident.triggers.append(job.trigger)
    if job.actor not in incident.actors:
        incident.actors.append(job.actor)
    return incident, entered


def transition(incident: Incident, state: IncidentState, reason: str) -> bool:
    """Set the state and its reason; True when the state changed."""
    changed = incident.state is not state
    incident.state = state
    incident.reason = reason
    return changed


def conclude(
    incident: Incident, decision: Decision, *, new: bool, now: datetime
) -> list[IncidentState]:
    """NOTIFY, REFUSE and RECORD: set the state and reason; a closed incident is never
    downgraded unless the decision escalates. Returns the states entered."""
    entered: list[IncidentState] = []
    if decision.action is Action.RECORD:
        if new and transition(incident, IncidentState.NOTIFIED, decision.reason):
            entered.append(IncidentState.NOTIFIED)
    elif incident.state not in CLOSED_STATES or decision.escalate:
        if transition(incident, decision.state, decision.reason):
            entered.append(decision.state)
        if decision.target is not None and incident.target_version is None:
            incident.target_version = decision.target.version
            incident.target_revision = str(decision.target.number)
    if decision.escalate:
        incident.add_event("escalated", decision.detail, at=now)
    return entered
