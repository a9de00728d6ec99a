"""When a confirmation is due: the window of the recording rules Prometheus runs, plus for:.

A real Prometheus loads the shipped rule files and one of a team's own
(``checkout.rules.yaml``) whose recording rules hide their windows in their names, as
users' rules often do: ``namespace_model_version:checkout_errors:ratio`` is recorded over
10m, and ``...:smoothed`` is its maximum over 5m. The alert reads the smoothed one and
joins the shipped ``namespace_model:model_tier:info`` (recorded over 1h, model-wide). No
data is needed: the schedule is decided from the rules alone. The clock is injected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml
from aiohttp import web

from receiver.clients.prometheus import PrometheusClient
from receiver.confirmation import Confirmer
from receiver.metrics import Metrics
from receiver.models import Incident, IncidentState, IncidentTimes, utcnow
from receiver.policy import parse_policy
from receiver.store import RedisStore
from tests.confirm.prometheus import RULE_FILES, PrometheusServer

NS = "shop"
MODEL = "checkout-ranker"
SWITCHED = utcnow().replace(microsecond=0) - timedelta(hours=1)
RATIO = "namespace_model_version:checkout_errors:ratio"
SMOOTHED = "namespace_model_version:checkout_errors:smoothed"
ALERT_EXPR = (
    f"{SMOOTHED} > 0.05\n"
    'and on (namespace, model) namespace_model:model_tier:info{tier="critical"}'
)
ALERT_LABELS = {"severity": "critical", "remediation": "rollback", "category": "operational"}
CHECKOUT_RULES = {
    "groups": [
        {
            "name": "checkout-errors",
            "rules": [
                {
                    "record": RATIO,
                    "expr": "sum by (namespace, model, model_version) "
                    "(rate(checkout_errors_total[10m]))\n/ "
                    "sum by (namespace, model, model_version) "
                    "(rate(checkout_requests_total[10m]))",
                },
                {"record": SMOOTHED, "expr": f"max_over_time({RATIO}[5m])"},
                {
                    "alert": "CheckoutErrorsHigh",
                    "expr": ALERT_EXPR,
                    "for": "2m",
                    "labels": ALERT_LABELS,
                },
            ],
        }
    ]
}
POLICY = parse_policy(
    f"""\
defaults: {{confirm_after: {{operational: 20m}}}}
models:
  - {{name: {MODEL}, namespace: {NS}}}
"""
)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """The shipped rules and the checkout team's, as one Prometheus would load them."""
    workdir = tmp_path_factory.mktemp("prometheus")
    checkout = workdir / "checkout.rules.yaml"
    checkout.write_text(yaml.safe_dump(CHECKOUT_RULES, sort_keys=False))
    server = PrometheusServer(workdir, rule_files=[*RULE_FILES, checkout])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def verified(expr: str) -> Incident:
    return Incident(
        id="inc-checkout",
        namespace=NS,
        model=MODEL,
        bad_version="v3",
        target_version="v2",
        strategy="rollout-undo",
        state=IncidentState.VERIFIED,
        category="operational",
        generator_url=f"http://prometheus:9090/graph?g0.expr={quote(expr)}&g0.tab=1",
        alert_labels={
            "alertname": "CheckoutErrorsHigh",
            "namespace": NS,
            "model": MODEL,
            "model_version": "v3",
            **ALERT_LABELS,
        },
        times=IncidentTimes(received=SWITCHED, switched=SWITCHED, healthy=SWITCHED),
        created_at=SWITCHED,
        updated_at=SWITCHED,
    )


def confirmer(store: RedisStore, client: PrometheusClient) -> Confirmer:
    return Confirmer(
        store=store,
        incidents=store,
        leases=store,
        policy=POLICY,
        prometheus=client,
        metrics=Metrics(),
        clock=lambda: SWITCHED + timedelta(minutes=1),
    )


async def test_a_hidden_window_is_read_from_the_recording_rules_prometheus_runs(
    prometheus: PrometheusServer, store: RedisStore, session: aiohttp.ClientSession
) -> None:
    client = PrometheusClient(session, prometheus.url, request_timeout=10)
    [listed] = [r for r in await client.alert_rules() if r.name == "CheckoutErrorsHigh"]
    incident = verified(listed.expr)

    await confirmer(store, client).schedule(incident)

    # 5m of max_over_time + the 10m its input is recorded over + for: 2m. The tier join's
    # 1h does not count; by the rules' names alone it would be 2m.
    due = SWITCHED + timedelta(minutes=17)
    assert incident.confirmation is not None
    assert incident.confirmation.due_at == due
    assert incident.events[-1].kind == "confirmation_scheduled"
    assert "serves for 1020s first" in incident.events[-1].message
    assert await store.due_confirmations(due - timedelta(seconds=1), 10) == []
    assert await store.due_confirmations(due, 10) == [incident.id]


async def test_recording_rules_prometheus_cannot_list_are_read_by_their_names(
    aiohttp_server: Any,
    store: RedisStore,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    named = "namespace_model_version:checkout_errors:ratio_rate5m"
    expr = f"{named} > 0.05"
    alert = {"type": "alerting", "name": "CheckoutErrorsHigh", "query": expr, "duration": 120,
             "labels": ALERT_LABELS}  # fmt: skip
    asked: list[str] = []

    async def rules(request: web.Request) -> web.Response:
        asked.append(request.query.get("type", ""))
        if request.query.get("type") == "record":
            return web.json_response({"status": "error", "errorType": "internal"}, status=503)
        groups = [{"name": "checkout-errors", "rules": [alert]}]
        return web.json_response({"status": "success", "data": {"groups": groups}})

    app = web.Application()
    app.router.add_get("/api/v1/rules", rules)
    server = await aiohttp_server(app)
    client = PrometheusClient(session, str(server.make_url("")), request_timeout=5)
    incident = verified(expr)

    with caplog.at_level(logging.WARNING, logger="receiver.confirmation"):
        await confirmer(store, client).schedule(incident)

    # The window its name states (5m) plus for: 2m, not the policy's 20m.
    assert incident.confirmation is not None
    assert incident.confirmation.due_at == SWITCHED + timedelta(minutes=7)
    assert asked == ["alert", "record"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "recording rules not read from Prometheus" in warnings[0]
    assert "503" in warnings[0]
