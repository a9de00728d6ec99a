"""Confirmation as durable work: scheduled when verified, run once when due, recorded.

A real Prometheus (backfilled, ``T`` = ``BASE``) and a real Redis store. ``fraud-scorer``
v3 failed 20% of predictions until T+30m, then v2 served failing 1%; ``ranker``'s v2
fails 25% too; ``ghost`` never served v2. The clock is injected: nothing sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from urllib.parse import quote

import aiohttp
import pytest

from receiver.clients.prometheus import PrometheusClient
from receiver.confirmation import Confirmer
from receiver.metrics import Metrics
from receiver.models import Incident, IncidentState, IncidentTimes
from receiver.policy import parse_policy
from receiver.store import RedisStore
from tests.confirm.prometheus import BASE, PrometheusServer, Series, counter
from tests.conftest import free_port

T = BASE
NS = "ml-prod"
SWITCHED = T + timedelta(minutes=30)
EXPR = (
    "sum by (namespace, model, model_version) "
    '(rate(model_predictions_total{{model="{model}", outcome="error"}}[5m])) / '
    "sum by (namespace, model, model_version) "
    '(rate(model_predictions_total{{model="{model}"}}[5m])) > 0.05'
)
POLICY = parse_policy(
    """\
defaults: {confirm_after: {operational: 20m}}
models:
  - {name: fraud-scorer, namespace: ml-prod}
  - {name: ranker, namespace: ml-prod}
  - {name: ghost, namespace: ml-prod}
"""
)


def serving(
    model: str, version: str, start: datetime, end: datetime, errors: float
) -> list[Series]:
    labels = {"namespace": NS, "model": model, "model_version": version}
    return [
        counter(
            "model_predictions_total",
            {**labels, "outcome": outcome},
            start=start,
            end=end,
            per_second=10 * share,
        )
        for outcome, share in (("success", 1 - errors), ("error", errors))
    ]


@pytest.fixture(scope="module")
def history(prometheus: PrometheusServer) -> PrometheusServer:
    end = T + timedelta(minutes=60)
    prometheus.backfill(
        [
            *serving("fraud-scorer", "v3", T, SWITCHED, 0.20),
            *serving("fraud-scorer", "v2", SWITCHED, end, 0.01),
            *serving("ranker", "v3", T, SWITCHED, 0.30),
            *serving("ranker", "v2", SWITCHED, end, 0.25),
            *serving("ghost", "v3", T, SWITCHED, 0.30),
        ]
    )
    return prometheus


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def verified(model: str) -> Incident:
    expr = EXPR.format(model=model)
    return Incident(
        id=f"inc-{model}",
        namespace=NS,
        model=model,
        bad_version="v3",
        target_version="v2",
        strategy="rollout-undo",
        state=IncidentState.VERIFIED,
        category="operational",
        generator_url=f"http://prometheus:9090/graph?g0.expr={quote(expr)}&g0.tab=1",
        alert_labels={"alertname": "CustomErrorRate", "namespace": NS, "model": model},
        times=IncidentTimes(received=SWITCHED, switched=SWITCHED, healthy=SWITCHED),
        created_at=SWITCHED,
        updated_at=SWITCHED,
    )


def confirmer(
    store: RedisStore, url: str | None, session: aiohttp.ClientSession, clock: Clock
) -> tuple[Confirmer, Metrics]:
    metrics = Metrics()
    client = PrometheusClient(session, url, request_timeout=5) if url else None
    return (
        Confirmer(
            store=store,
            incidents=store,
            leases=store,
            policy=POLICY,
            prometheus=client,
            metrics=metrics,
            clock=clock,
            retry_interval_seconds=30.0,
            sleep=clock.sleep,
        ),
        metrics,
    )


async def scheduled(store: RedisStore, incident: Incident, c: Confirmer) -> Incident:
    await c.schedule(incident)
    await store.put_incident(incident)
    return incident


async def test_a_good_target_is_confirmed_once_due_with_the_evidence(
    history: PrometheusServer, store: RedisStore, session: aiohttp.ClientSession
) -> None:
    clock = Clock(SWITCHED + timedelta(minutes=1))
    c, metrics = confirmer(store, history.url, session, clock)
    incident = await scheduled(store, verified("fraud-scorer"), c)
    # No rule by that name in Prometheus: the policy's confirm_after (20m) from the switch.
    assert incident.confirmation is not None
    assert incident.confirmation.due_at == SWITCHED + timedelta(minutes=20)

    assert await c.run_due() == 0, "nothing is due before its time"
    clock.now = SWITCHED + timedelta(minutes=20)
    assert await c.run_due() == 1

    stored = await store.get_incident(incident.id)
    assert stored is not None and stored.state is IncidentState.CONFIRMED
    assert stored.confirmation is not None
    assert (stored.confirmation.result, stored.confirmation.reason) == ("confirmed", "no_breach")
    assert 'model_version="v2"' in stored.confirmation.query
    assert stored.confirmation.evaluated_at == clock.now
    assert stored.times.confirmed == clock.now
    assert (
        metrics.registry.get_sample_value("receiver_confirmations_total", {"result": "confirmed"})
        == 1
    )
    assert await store.due_confirmations(clock.now + timedelta(days=1), 10) == []


async def test_a_target_that_breaches_too_is_unconfirmed_and_escalated(
    history: PrometheusServer, store: RedisStore, session: aiohttp.ClientSession
) -> None:
    clock = Clock(SWITCHED)
    c, metrics = confirmer(store, history.url, session, clock)
    incident = await scheduled(store, verified("ranker"), c)
    clock.now = SWITCHED + timedelta(minutes=20)
    await c.run_due()

    stored = await store.get_incident(incident.id)
    assert stored is not None and stored.state is IncidentState.UNCONFIRMED
    assert stored.confirmation is not None and stored.confirmation.reason == "breach"
    assert stored.confirmation.value, "the breaching series is the evidence"
    assert [e.kind for e in stored.events][-2:] == ["unconfirmed", "escalated"]
    assert stored.times.confirmed is None
    assert (
        metrics.registry.get_sample_value("receiver_confirmations_total", {"result": "unconfirmed"})
        == 1
    )


async def test_a_target_without_samples_is_unconfirmed_no_data(
    history: PrometheusServer, store: RedisStore, session: aiohttp.ClientSession
) -> None:
    clock = Clock(SWITCHED)
    c, _ = confirmer(store, history.url, session, clock)
    incident = await scheduled(store, verified("ghost"), c)
    clock.now = SWITCHED + timedelta(minutes=20)
    await c.run_due()

    stored = await store.get_incident(incident.id)
    assert stored is not None and stored.state is IncidentState.UNCONFIRMED
    assert stored.confirmation is not None and stored.confirmation.reason == "no_data"


async def test_prometheus_down_is_retried_then_unconfirmed_with_the_reason(
    store: RedisStore, session: aiohttp.ClientSession
) -> None:
    clock = Clock(SWITCHED)
    c, _ = confirmer(store, f"http://127.0.0.1:{free_port()}", session, clock)
    incident = verified("fraud-scorer")
    await c.schedule(incident)  # the rule lookup fails too: the policy's delay is used
    await store.put_incident(incident)
    clock.now = SWITCHED + timedelta(minutes=20)
    await c.run_due()

    stored = await store.get_incident(incident.id)
    assert stored is not None and stored.state is IncidentState.UNCONFIRMED
    assert stored.confirmation is not None
    assert stored.confirmation.reason == "prometheus_unavailable"
    # Retried every 30s within the 5-minute budget before giving up.
    assert clock.now >= SWITCHED + timedelta(minutes=24)


async def test_a_confirmation_pending_at_a_crash_happens_exactly_once(
    history: PrometheusServer, store: RedisStore, session: aiohttp.ClientSession
) -> None:
    clock = Clock(SWITCHED)
    first, _ = confirmer(store, history.url, session, clock)
    incident = await scheduled(store, verified("fraud-scorer"), first)
    del first  # the replica that scheduled it is gone before it was due

    clock.now = SWITCHED + timedelta(minutes=21)
    a, _ = confirmer(store, history.url, session, clock)
    b, _ = confirmer(store, history.url, session, clock)
    ran = await asyncio.gather(a.run_due(), b.run_due())
    assert sum(ran) == 1, "one replica confirms, the other finds it taken or done"
    stored = await store.get_incident(incident.id)
    assert stored is not None and stored.state is IncidentState.CONFIRMED
    assert sum(1 for e in stored.events if e.kind == "confirmed") == 1
    assert await a.run_due() == 0 and await b.run_due() == 0


async def test_without_a_prometheus_url_confirmation_is_off_and_says_so(
    store: RedisStore, session: aiohttp.ClientSession
) -> None:
    clock = Clock(SWITCHED)
    c, _ = confirmer(store, None, session, clock)
    incident = verified("fraud-scorer")
    await c.schedule(incident)

    assert incident.state is IncidentState.VERIFIED
    assert incident.events[-1].kind == "confirmation_off"
    assert "RECEIVER_PROMETHEUS_URL" in incident.events[-1].message
    assert await store.due_confirmations(SWITCHED + timedelta(days=1), 10) == []
