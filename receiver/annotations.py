"""The ``rollback-receiver.io/*`` vocabulary: the durable facts we keep on Kubernetes objects.

Redis may lose everything; these annotations are the system of record (design.md, State):
our last action and its incident, pauses, bad and accepted versions. This module is their
one owner: names, values and parsing. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from receiver.models import parse_time, rfc3339

__all__ = [
    "ACCEPTED",
    "BAD",
    "BAD_VERSIONS",
    "CHANGED_AT",
    "CURRENT_SINCE",
    "GENERATION",
    "INCIDENT",
    "PAUSED",
    "PREFIX",
    "PREVIOUS_REPLICAS",
    "PREVIOUS_SLOT",
    "ROLLED_BACK_FROM",
    "ROLLED_BACK_FROM_REVISION",
    "ROLLED_BACK_TO",
    "ROLLED_BACK_TO_REVISION",
    "Accepted",
    "Pause",
    "accepted",
    "accepted_value",
    "bad_versions",
    "bad_versions_value",
    "changed_at",
    "current_since",
    "current_since_value",
    "is_paused_by_us",
    "pause",
    "pause_value",
    "rollback_annotations",
]

PREFIX = "rollback-receiver.io/"
INCIDENT = PREFIX + "incident"
"""On the workload: the incident of our last action (rule 0 finds a re-driven job by it)."""
CHANGED_AT = PREFIX + "changed-at"
"""On the workload: RFC 3339 time of our last change; the cooldown survives Redis loss."""
ROLLED_BACK_FROM = PREFIX + "rolled-back-from"
"""On the workload: the bad version our last rollback removed (roll forward returns to it)."""
ROLLED_BACK_FROM_REVISION = PREFIX + "rolled-back-from-revision"
"""On the workload: the revision that ran the bad version (part of the incident id)."""
ROLLED_BACK_TO = PREFIX + "rolled-back-to"
"""On the workload: the version our last rollback restored."""
ROLLED_BACK_TO_REVISION = PREFIX + "rolled-back-to-revision"
"""On the workload: the revision (or slot) our last rollback restored."""
GENERATION = PREFIX + "generation"
"""On the workload: the ``metadata.generation`` our change produced. Anyone's later spec
change makes it differ, so a person's later restore of the same version is not ours."""
PAUSED = PREFIX + "paused"
"""On the workload: automation paused for this model; JSON {actor, reason, at}."""
BAD = PREFIX + "bad"
"""On a ReplicaSet: its version was rolled back; never chosen as a target again."""
BAD_VERSIONS = PREFIX + "bad-versions"
"""On the workload: JSON list of versions rolled back, so a re-created ReplicaSet (or a
slot) of a known-bad version is still refused as a target (rule 7)."""
ACCEPTED = PREFIX + "accepted"
"""On the workload: a person vouched for a version (roll forward); JSON {version, actor, at}.
Alerts about it are notified, not acted on, until another version replaces it."""
CURRENT_SINCE = PREFIX + "current-since"
"""On the workload: JSON {version, at}: the serving version has been current since ``at``.
Written by a drill's return, whose write re-adopts the version's old revision and would
otherwise re-date it (rule 6). Valid only while ``version`` serves and our ``generation``
mark is the workload's generation (anyone's later change ends it)."""
PREVIOUS_REPLICAS = PREFIX + "previous-replicas"
"""On a canary Deployment scaled to zero: its replica count, for roll forward."""
PREVIOUS_SLOT = PREFIX + "previous-slot"
"""On a blue-green Service: the slot selected before our switch, for roll forward."""

# Annotation values are limited in practice by the object size; keep reasons short.
_REASON_MAX = 250


@dataclass(frozen=True)
class Pause:
    """Who paused automation for a model, why and when (values may be absent in old marks)."""

    actor: str
    reason: str
    at: datetime | None


@dataclass(frozen=True)
class Accepted:
    """A version a person vouched for by rolling forward to it."""

    version: str
    actor: str
    at: datetime | None
    revision: int | None = None
    """The newest revision number when it was accepted: a newer revision of another version
    means another version replaced it, and the acceptance ends (None: by version only)."""


def is_paused_by_us(annotations: Mapping[str, str]) -> bool:
    """Our per-model pause annotation is present (any value but ``false``)."""
    return pause(annotations) is not None


def pause(annotations: Mapping[str, str]) -> Pause | None:
    """The pause on the workload, or None. Accepts the JSON value and a plain reason."""
    value = annotations.get(PAUSED)
    if value is None or value.strip().lower() == "false":
        return None
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Pause(actor="", reason=value, at=None)
    return Pause(
        actor=str(data.get("actor", "")),
        reason=str(data.get("reason", "")),
        at=parse_time(data.get("at")),
    )


def pause_value(actor: str, reason: str, at: datetime) -> str:
    """The ``paused`` annotation's value."""
    return json.dumps(
        {"actor": actor, "reason": reason[:_REASON_MAX], "at": rfc3339(at)}, sort_keys=True
    )


def bad_versions(annotations: Mapping[str, str]) -> frozenset[str]:
    """Versions recorded bad on the workload (an unreadable value counts as none)."""
    try:
        data = json.loads(annotations.get(BAD_VERSIONS) or "[]")
    except ValueError:
        return frozenset()
    if not isinstance(data, list):
        return frozenset()
    return frozenset(str(v) for v in data if v)


def bad_versions_value(current: Iterable[str], *, add: str = "", remove: str = "") -> str:
    """The ``bad-versions`` value with one version added or removed, sorted, deduplicated."""
    versions = set(current)
    if add:
        versions.add(add)
    versions.discard(remove)
    return json.dumps(sorted(versions))


def accepted(annotations: Mapping[str, str]) -> Accepted | None:
    """The version a person accepted on this workload, or None."""
    value = annotations.get(ACCEPTED)
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("version"):
        return None
    revision = data.get("revision")
    return Accepted(
        version=str(data["version"]),
        actor=str(data.get("actor", "")),
        at=parse_time(data.get("at")),
        revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
    )


def accepted_value(version: str, actor: str, at: datetime, *, revision: int | None = None) -> str:
    """The ``accepted`` annotation's value; ``revision`` as in ``Accepted.revision``."""
    data: dict[str, object] = {"version": version, "actor": actor, "at": rfc3339(at)}
    if revision is not None:
        data["revision"] = revision
    return json.dumps(data, sort_keys=True)


def current_since(annotations: Mapping[str, str], version: str, generation: int) -> datetime | None:
    """When ``version`` became current, as a drill's return recorded it, if that still
    holds (the version serves and nobody changed the spec since our write)."""
    value = annotations.get(CURRENT_SINCE)
    if not value or annotations.get(GENERATION) != str(generation):
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != version:
        return None
    return parse_time(data.get("at"))


def current_since_value(version: str, at: datetime) -> str:
    """The ``current-since`` annotation's value."""
    return json.dumps({"version": version, "at": rfc3339(at)}, sort_keys=True)


def changed_at(annotations: Mapping[str, str]) -> datetime | None:
    """When we last changed the workload, from our annotation."""
    return parse_time(annotations.get(CHANGED_AT))


def rollback_annotations(
    *,
    incident_id: str,
    bad_version: str,
    bad_revision: str,
    target_version: str,
    target_revision: str,
    at: datetime,
) -> dict[str, str]:
    """The annotations one rollback PATCH sets on the workload, with the change itself."""
    return {
        INCIDENT: incident_id,
        CHANGED_AT: rfc3339(at) or "",
        ROLLED_BACK_FROM: bad_version,
        ROLLED_BACK_FROM_REVISION: bad_revision,
        ROLLED_BACK_TO: target_version,
        ROLLED_BACK_TO_REVISION: target_revision,
    }
