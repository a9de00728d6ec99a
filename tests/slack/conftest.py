"""Fixtures for the Slack tests: the Web API stand-in, a real client on a shared session,
and callbacks that stand for the store (refs, lost notes, once-per-cause claims)."""

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
from receiver.notifier import Notifier, RetryPolicy, build_client
from tests.standins.slack import SlackStandIn, slack  # noqa: F401 - the fixture

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


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


def advance(incident: Incident, state: IncidentState, seconds: float, **changes: Any) -> Incident:
    """The incident one step later: new state, ``updated_at`` moved on, other changes set."""
    at = T0 + timedelta(seconds=seconds)
    return incident.model_copy(update={"state": state, "updated_at": at, **changes}, deep=True)


class StoreCallbacks:
    """What the store does for the notifier, recorded so tests can wait on it."""

    def __init__(self) -> None:
        self.refs: list[tuple[str, str, str]] = []
        self.lost: list[tuple[str, str]] = []
        self.claims: list[str] = []
        self.claimed: set[str] = set()
        self._changed = asyncio.Condition()

    async def save_ref(self, incident_id: str, channel: str, ts: str) -> None:
        self.refs.append((incident_id, channel, ts))
        await self._notify()

    async def record_lost(self, incident_id: str, error: str) -> None:
        self.lost.append((incident_id, error))
        await self._notify()

    async def claim_once(self, cause_key: str) -> bool:
        self.claims.append(cause_key)
        first = cause_key not in self.claimed
        self.claimed.add(cause_key)
        await self._notify()
        return first

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
def store() -> StoreCallbacks:
    return StoreCallbacks()


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
    store: StoreCallbacks,
) -> AsyncIterator[Callable[..., Awaitable[Notifier]]]:
    """Build started notifiers on the shared session; each is closed after the test."""
    built: list[Notifier] = []

    async def build(
        *, token: str | None = "default", channel: str | None = "#ml-oncall", **kwargs: Any
    ) -> Notifier:
        client = build_client(session, slack.token if token == "default" else token, slack.base_url)
        notifier = Notifier(
            client,
            default_channel=channel,
            metrics=metrics,
            save_ref=store.save_ref,
            record_lost=store.record_lost,
            claim_once=store.claim_once,
            retry=kwargs.pop("retry", FAST_RETRY),
            **kwargs,
        )
        built.append(notifier)
        await notifier.start()
        return notifier

    yield build
    for notifier in built:
        await notifier.close(timeout=0.1)
