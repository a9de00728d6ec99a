"""What callers need from shared state: one small protocol per consumer, and the values.

The webhook needs ``Intake``, the workers ``JobQueue`` and ``Leases``, the job handler
``Incidents`` and ``History``, the notifier ``Messages``, ``Claims`` and ``Leases``. Each
caller is typed with what it uses, so the Redis store and the embedded one stay in step on
exactly those methods. ``Store`` joins them for the factory, the wiring and the tests.

Redis is a queue, a cache and a lock service here, never the system of record: durable
facts live on the Kubernetes objects.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from receiver.models import Incident, IncidentState, Job


@dataclass(frozen=True)
class QueuedJob:
    """A job taken from the queue; ``entry_id`` acknowledges it, ``deliveries`` counts takes."""

    entry_id: str
    job: Job
    deliveries: int = 1


@dataclass(frozen=True)
class QueueStats:
    """Jobs waiting or running, and the age of the oldest one (seconds)."""

    depth: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class IncidentPage:
    """One page of incidents, newest first; ``next`` is the opaque cursor of the next page."""

    items: list[Incident]
    next: str | None


def model_key(namespace: str, model: str, cluster: str = "") -> str:
    """The identity of a model service, used for leases, cooldowns and the history index."""
    return f"{cluster}/{namespace}/{model}" if cluster else f"{namespace}/{model}"


def model_names(incident: Incident) -> tuple[str, str]:
    """The names ``list_incidents(model=...)`` finds an incident by: ``ns/model``, ``model``."""
    return model_key(incident.namespace, incident.model), incident.model


def index_member(incident: Incident) -> str:
    """The incident's place in the history: newest-first order, and the cursor behind a page.

    Zero-padded milliseconds then the id: lexicographic order is time order, ties broken
    by id, so a cursor is simply the last member seen.
    """
    ms = int(incident.created_at.timestamp() * 1000)
    return f"{ms:015d}:{incident.id}"


def encode_cursor(member: str) -> str:
    """The API's opaque cursor for an index member."""
    return base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The index member behind an API cursor; ``ValueError`` if it was not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        member = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("cursor is not valid: pass the 'next' value of a previous page") from e
    ms, sep, ident = member.partition(":")
    if not sep or not ms.isdigit() or not ident.startswith("inc-"):
        raise ValueError("cursor is not valid: pass the 'next' value of a previous page")
    return member


class Intake(Protocol):
    """The webhook's door: claim each delivery once and queue its job, atomically."""

    async def ingest(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float) -> list[bool]:
        """Per (dedup key, job as JSON): claim the key and enqueue the job atomically; True
        when new. Jobs come as their JSON (``Job.wire``): the webhook builds it once,
        without a model, and that is what the queue keeps."""


class JobQueue(Protocol):
    """The work queue as the workers see it: take, keep, hand back, acknowledge."""

    async def enqueue(self, job: Job) -> str:
        """Enqueue a job without dedup (manual actions); returns its entry id."""

    async def ensure_group(self) -> None:
        """Create the consumer group if missing; existing entries stay deliverable."""

    async def read(self, consumer: str, *, count: int, block_seconds: float) -> list[QueuedJob]:
        """Take new jobs for ``consumer``; waits up to ``block_seconds`` when none."""

    async def claim_stale(
        self, consumer: str, *, min_idle_seconds: float, count: int
    ) -> list[QueuedJob]:
        """Take over jobs whose holder has not renewed them for ``min_idle_seconds``."""

    async def renew_job(self, consumer: str, entry_id: str) -> bool:
        """Reset the job's idle time if ``consumer`` still holds it; False once taken over."""

    async def ack(self, entry_id: str) -> None:
        """The job is done: remove it from the queue."""

    async def queue_stats(self) -> QueueStats:
        """Depth and age of the oldest job, for readiness and metrics."""


class Leases(Protocol):
    """Exclusive, expiring rights held by one owner (a worker on a model, a first post)."""

    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """True when ``owner`` now holds ``name`` for ``ttl_seconds``; False if another does."""

    async def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend the lease if ``owner`` still holds it; False once it lapsed or moved on."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up; a lease held by another owner is left alone."""


class Claims(Protocol):
    """Once-per-cause answers shared by every replica (a notice posted once)."""

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        """True the first time ``key`` is claimed within ``ttl_seconds``."""


class Epoch(Protocol):
    """The marker that tells a fresh (or wiped) store from one that holds start-up facts."""

    async def get_epoch(self) -> str | None:
        """The start-up epoch marker; None means the data was lost (or first start)."""

    async def set_epoch(self, value: str) -> None:
        """Mark the start-up facts as read into the store."""


class Incidents(Protocol):
    """The queryable incident history, kept for the retention."""

    async def put_incident(self, incident: Incident) -> None:
        """Write the incident whole (create or replace)."""

    async def get_incident(self, incident_id: str) -> Incident | None:
        """The stored incident, or None (unknown or past retention)."""

    async def update_incident(
        self, incident_id: str, change: Callable[[Incident], None]
    ) -> Incident | None:
        """Apply ``change`` to the stored incident atomically; None if it does not exist."""

    async def list_incidents(
        self,
        *,
        model: str | None = None,
        state: IncidentState | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IncidentPage:
        """One page, newest first; ``model`` is ``name`` or ``namespace/name``."""


class History(Protocol):
    """When each model was last rolled back, for the rate guards."""

    async def record_rollback(self, key: str, at: datetime) -> None:
        """Note a rollback of the model ``key`` (``model_key``) at ``at``."""

    async def recent_rollbacks(self, key: str, since: datetime) -> list[datetime]:
        """The rollbacks of ``key`` at or after ``since``."""


class Messages(Protocol):
    """Where each incident's chat message lives, kept apart from the incident record.

    Only the notifier writes it, so a job saving its copy of the incident can never undo it.
    Kept for the retention, like incidents.
    """

    async def get_message_ref(self, incident_id: str) -> tuple[str, str] | None:
        """``(channel, ts)`` of the incident's message, or None if none was posted."""

    async def set_message_ref(self, incident_id: str, channel: str, ts: str) -> None:
        """Remember where the incident's message is (posted, or posted anew)."""


class Confirmations(Protocol):
    """Pending confirmations: durable work due at a time, taken by any replica."""

    async def schedule_confirmation(self, incident_id: str, due: datetime) -> None:
        """Confirm ``incident_id`` at ``due`` (scheduling again moves the time)."""

    async def due_confirmations(self, now: datetime, limit: int) -> list[str]:
        """Incidents whose confirmation is due at ``now``, earliest first."""

    async def finish_confirmation(self, incident_id: str) -> None:
        """The confirmation is recorded: it is no longer pending."""


class Stats(Protocol):
    """Aggregates kept as incidents change, so statistics never scan the history."""

    async def add_stats(
        self, once: str, bucket: int, counts: Mapping[str, float], maxima: Mapping[str, float]
    ) -> bool:
        """Add ``counts`` to the aggregate ``bucket`` and raise its ``maxima``, atomically and
        only the first time ``once`` is seen (within the retention); True when applied."""

    async def read_stats(self, first: int, last: int) -> list[dict[str, float]]:
        """The aggregates of buckets ``first`` to ``last`` (inclusive) that exist."""


class Values(Protocol):
    """Small records with a time to live (a readiness result, a sign-in session)."""

    async def put_value(self, key: str, value: str, ttl_seconds: float) -> None:
        """Keep a small record (a readiness result, a sign-in session) for ``ttl_seconds``."""

    async def get_values(self, keys: Sequence[str]) -> list[str | None]:
        """The records under ``keys``, in order; None for a missing or expired one."""

    async def delete_value(self, key: str) -> None:
        """Forget the record under ``key`` (sign-out)."""


class Store(
    Intake,
    JobQueue,
    Leases,
    Claims,
    Epoch,
    Incidents,
    History,
    Messages,
    Confirmations,
    Stats,
    Values,
    Protocol,
):
    """Every part together, as one backend provides them; plus its lifecycle."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    async def close(self) -> None:
        """Release connections and finish what is in flight."""
