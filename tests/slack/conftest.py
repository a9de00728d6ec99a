"""Fixtures for the Slack tests: the Web API stand-in, a real client on a shared session,
and the embedded store, with what the notifier writes to it recorded for tests to wait on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from receiver.metrics import Metrics
from receiver.models import Incident, IncidentState, IncidentTimes
from receiver.notify import Notifier, RetryPolicy, build_client
from receiver.store import MemoryStore
from tests.standins.slack import SlackStandIn, slack  # noqa: F401 - the fixture

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
# How long a notice's cause is remembered across replicas in these tests.
NOTICE_TTL_SECONDS = 3600.0


def make_incident(**overrides: Any) -> Incident:
    """A fraud-scorer incident as the worker would open it; override any field."""
    fields: dict[str, Any] = {
        "id": "inc-0123456789ab",
        "namespace": "ml-prod",
        "model": "fraud-scorer",
        "bad_version": "2.4.0",
        "bad_revision": "7",
        "strategy": "rollout-undo",
        "triggers": ["error_rate"],
        "category": "operational",
        "times": IncidentTimes(alert_started=T0 - timedelta(minutes=10), received=T0),
        "created_at": T0,
        "updated_at": T0,
        "generator_url": "http://prometheus:9090/graph?g0.expr=errors%3E0.05&g0.tab=1",
        "runbook_url": "https://runbooks.example.internal/model-serving/modelservinghigherrorrate",
    }
    fields.update(overrides)
    return Incident(**fields)


async def stored(store: MemoryStore, **overrides: Any) -> Incident:
    """``make_incident``, written to the store first: lost notes are recorded on it there."""
    incident = make_incident(**overrides)
    await store.put_incident(incident)
    return incident


def advance(incident: Incident, state: IncidentState, seconds: float, **changes: Any) -> Incident:
    """The incident one step later: new state, ``updated_at`` moved on, other changes set."""
    at = T0 + timedelta(seconds=seconds)
    return incident.model_copy(update={"state": state, "updated_at": at, **changes}, deep=True)


class ObservedStore(MemoryStore):
    """The embedded store; what the notifier writes (message refs, claims, lost notes) is
    also recorded, and every write wakes ``wait_for``."""

    def __init__(self) -> None:
        super().__init__(retention_seconds=3600)
        self.refs: list[tuple[str, str, str]] = []
        self.claims: list[str] = []
        self.latest: dict[str, Incident] = {}
        self._changed = asyncio.Condition()

    async def set_message_ref(self, incident_id: str, channel: str, ts: str) -> None:
        await super().set_message_ref(incident_id, channel, ts)
        self.refs.append((incident_id, channel, ts))
        await self._notify()

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        self.claims.append(key)
        first = await super().claim_once(key, ttl_seconds)
        await self._notify()
        return first

    async def update_incident(
        self, incident_id: str, change: Callable[[Incident], None]
    ) -> Incident | None:
        updated = await super().update_incident(incident_id, change)
        if updated is not None:
            self.latest[incident_id] = updated
        await self._notify()
        return updated

    @property
    def lost(self) -> list[tuple[str, str]]:
        """The ``notification_lost`` notes on the stored incidents: (incident id, reason)."""
        return [
            (incident_id, event.message)
            for incident_id, incident in self.latest.items()
            for event in incident.events
            if event.kind == "notification_lost"
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def sent_count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("receiver_notifications_total", {"result": result})
    return value or 0.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def store() -> ObservedStore:
    return ObservedStore()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


# Fast backoff so retries of 5xx answers do not slow the suite; Retry-After is honoured
# as Slack sends it.
FAST_RETRY = RetryPolicy(base_backoff_seconds=0.01, max_backoff_seconds=0.05, jitter=False)


@pytest.fixture
async def make_notifier(
    slack: SlackStandIn,  # noqa: F811 - the fixture imported above
    session: aiohttp.ClientSession,
    metrics: Metrics,
    store: ObservedStore,
) -> AsyncIterator[Callable[..., Awaitable[Notifier]]]:
    """Build started notifiers on the shared session (each one a replica of its own); each
    is closed after the test. They share ``store`` unless given a ``backend`` of their own
    (a Redis store), and talk to the stand-in unless given another ``base_url``."""
    built: list[Notifier] = []

    async def build(
        *,
        token: str | None = "default",
        channel: str | None = "#ml-oncall",
        backend: Any = None,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> Notifier:
        client = build_client(
            session, slack.token if token == "default" else token, base_url or slack.base_url
        )
        shared = backend if backend is not None else store
        notifier = Notifier(
            client,
            default_channel=channel,
            metrics=kwargs.pop("metrics", metrics),
            messages=shared,
            leases=shared,
            claims=shared,
            incidents=shared,
            notice_ttl_seconds=NOTICE_TTL_SECONDS,
            retry=kwargs.pop("retry", FAST_RETRY),
            **kwargs,
        )
        built.append(notifier)
        await notifier.start()
        return notifier

    yield build
    for notifier in built:
        await notifier.close(timeout=0.1)
