"""Incidents: one bad version on one workload revision, and what was done about it.

Pure data, no I/O; the state machine that moves them is ``receiver.incidents``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from receiver.models.times import rfc3339


class IncidentState(StrEnum):
    """Lifecycle of an incident (design.md, Incidents)."""

    OPEN = "open"
    ACTING = "acting"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    REFUSED = "refused"
    NOTIFIED = "notified"
    CONFIRMED = "confirmed"
    UNCONFIRMED = "unconfirmed"
    FAILED = "failed"
    """The API server refused our change; the reason names its status and message."""


CLOSED_STATES = frozenset(
    {
        IncidentState.VERIFIED,
        IncidentState.VERIFICATION_FAILED,
        IncidentState.CONFIRMED,
        IncidentState.UNCONFIRMED,
        IncidentState.FAILED,
    }
)
"""States after which a later job of the incident changes nothing by itself (a redeploy of
the bad version reopens it)."""

ROOT_CAUSES = (
    "model_quality",
    "data_pipeline",
    "infrastructure",
    "dependency",
    "false_alarm",
    "drill",
    "other",
)
"""The fixed list an acknowledgement chooses from (design.md, Manual control)."""


class IncidentKind(StrEnum):
    """An incident opened by alerts (or a person acting on a model), or a rollback drill."""

    ALERT = "alert"
    DRILL = "drill"


class Acknowledgement(BaseModel):
    """Who acknowledged the incident, when, and why: beside the outcome, not a state."""

    actor: str
    at: datetime
    root_cause: str
    note: str = ""


class Confirmation(BaseModel):
    """The evidence of confirmation: the query run, its result and when (design.md)."""

    result: str
    reason: str
    query: str = ""
    value: list[Any] = Field(default_factory=list)
    evaluated_at: datetime | None = None
    due_at: datetime | None = None


def incident_id(cluster: str, namespace: str, model: str, bad_version: str, revision: str) -> str:
    """``inc-`` + 12 hex digits of sha256 over the identity; stable before and after acting."""
    raw = "\x1f".join((cluster, namespace, model, bad_version, revision)).encode()
    return "inc-" + hashlib.sha256(raw).hexdigest()[:12]


class IncidentTimes(BaseModel):
    """When each step happened; ``None`` until it does."""

    alert_started: datetime | None = None
    received: datetime | None = None
    acting: datetime | None = None
    switched: datetime | None = None
    healthy: datetime | None = None
    confirmed: datetime | None = None


class IncidentEvent(BaseModel):
    """One entry of an incident's timeline."""

    at: datetime
    kind: str
    message: str
    actor: str = "receiver"
    data: dict[str, Any] = Field(default_factory=dict)


class Incident(BaseModel):
    """The record of one bad version on one workload revision, and what was done about it."""

    id: str
    cluster: str = ""
    namespace: str
    model: str
    bad_version: str
    bad_revision: str = ""
    target_version: str | None = None
    strategy: str = ""
    kind: IncidentKind = IncidentKind.ALERT
    state: IncidentState = IncidentState.OPEN
    reason: str = ""
    triggers: list[str] = Field(default_factory=list)
    times: IncidentTimes = Field(default_factory=IncidentTimes)
    actors: list[str] = Field(default_factory=list)
    events: list[IncidentEvent] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    category: str = ""
    tier: str = ""
    severity: str = ""
    generator_url: str = ""
    alert_labels: dict[str, str] = Field(default_factory=dict)
    """The labels of the alert that opened the incident: its rule is found by them."""
    runbook_url: str = ""
    target_revision: str = ""
    """The revision restored, or recommended by a notify decision (execute uses it)."""
    acknowledgement: Acknowledgement | None = None
    alerts_joined: int = 0
    """Deliveries that joined after the timeline stopped listing them one by one."""
    confirmation: Confirmation | None = None
    # The channel the policy names for this model (the message reference lives apart).
    slack_channel: str | None = None

    def add_event(
        self, kind: str, message: str, *, at: datetime, actor: str = "receiver", **data: Any
    ) -> None:
        self.events.append(IncidentEvent(at=at, kind=kind, message=message, actor=actor, data=data))
        if actor not in self.actors:
            self.actors.append(actor)
        self.updated_at = at

    def summary(self) -> dict[str, Any]:
        """The list item of ``GET /api/incidents`` (design.md), times in RFC 3339 UTC."""
        return {
            "id": self.id,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "model": self.model,
            "bad_version": self.bad_version,
            "target_version": self.target_version,
            "strategy": self.strategy,
            "kind": self.kind.value,
            "state": self.state.value,
            "reason": self.reason,
            "triggers": list(self.triggers),
            "times": {k: rfc3339(v) for k, v in self.times.model_dump().items()},
            "actors": list(self.actors),
            "acknowledgement": (
                {
                    "actor": self.acknowledgement.actor,
                    "at": rfc3339(self.acknowledgement.at),
                    "root_cause": self.acknowledgement.root_cause,
                    "note": self.acknowledgement.note,
                }
                if self.acknowledgement
                else None
            ),
        }

    def detail(self) -> dict[str, Any]:
        """``GET /api/incidents/{id}``: the summary plus the full event list."""
        out = self.summary()
        out["revision"] = self.bad_revision
        out["target_revision"] = self.target_revision
        out["confirmation"] = (
            self.confirmation.model_dump(mode="json") if self.confirmation else None
        )
        out["events"] = [
            {
                "at": rfc3339(e.at),
                "kind": e.kind,
                "message": e.message,
                "actor": e.actor,
                "data": e.data,
            }
            for e in self.events
        ]
        return out
