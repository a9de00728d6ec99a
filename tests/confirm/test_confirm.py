"""confirm: the alert's own expression, restricted to the target, against a real Prometheus.

The history, backfilled once for the module (``T`` = ``BASE``, all in ``ml-prod``):

- ``fraud-scorer``: v3 serves from T to T+30m failing 20% of predictions (10/s); the
  rollback puts v2 back, serving from T+30m to T+60m failing 1%;
- ``ranker``: v3 (30% errors) then v2, which fails 25% too: the target is bad as well;
- ``tiny``: v1 at 0.2 predictions/s failing half of them, under the shipped critical
  guard of 0.5/s.

The recording rules of ``common`` and ``operational`` are computed over it by promtool,
so the shipped ``ModelServingHighErrorRate`` expression runs as Prometheus would run it.
Time is the injected clock: each attempt evaluates at ``clock()``, and ``sleep`` moves it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from receiver.clients.prometheus import AlertRule, PrometheusClient
from receiver.durations import parse_duration
from receiver.verify.confirm import Confirmation, confirm, confirm_delay_seconds
from tests.confirm.prometheus import (
    BASE,
    RULE_FILES,
    PrometheusServer,
    Series,
    counter,
    shipped_rules,
)
from tests.conftest import free_port

T = BASE
NS = "ml-prod"
RETRY = 10.0
ERROR_RATE = (
    "sum by (namespace, model, model_version) "
    '(rate(model_predictions_total{{model=~"{model}", outcome="error"}}[5m])) / '
    "sum by (namespace, model, model_version) "
    '(rate(model_predictions_total{{model=~"{model}"}}[5m])) > 0.05'
)


def serving(
    model: str, version: str, start: datetime, end: datetime, *, per_second: float, errors: float
) -> list[Series]:
    labels = {"namespace": NS, "model": model, "model_version": version}
    return [
        counter(
            "model_predictions_total",
            {**labels, "outcome": "success"},
            start=start,
            end=end,
            per_second=per_second * (1 - errors),
        ),
        counter(
            "model_predictions_total",
            {**labels, "outcome": "error"},
            start=start,
            end=end,
            per_second=per_second * errors,
        ),
    ]


@pytest.fixture(scope="module")
def history(prometheus: PrometheusServer) -> PrometheusServer:
    half, end = T + timedelta(minutes=30), T + timedelta(minutes=60)
    prometheus.backfill(
        [
            *serving("fraud-scorer", "v3", T, half, per_second=10, errors=0.20),
            *serving("fraud-scorer", "v2", half, end, per_second=10, errors=0.01),
            *serving("ranker", "v3", T, half, per_second=10, errors=0.30),
            *serving("ranker", "v2", half, end, per_second=10, errors=0.25),
            *serving("tiny", "v1", T, end, per_second=0.2, errors=0.5),
        ]
    )
    prometheus.backfill_rules(
        T,
        end,
        rule_files=[f for f in RULE_FILES if f.stem.split(".")[0] in ("common", "operational")],
    )
    return prometheus


class Clock:
    """The injected time: each attempt's evaluation time, moved only by ``sleep``."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def client(history: PrometheusServer, session: aiohttp.ClientSession) -> PrometheusClient:
    return PrometheusClient(session, history.url, request_timeout=10)


async def run(
    client: PrometheusClient,
    expr: str,
    *,
    model: str,
    target: str,
    at: datetime,
    within: timedelta = timedelta(minutes=1),
    retry: float = RETRY,
) -> tuple[Confirmation, Clock]:
    clock = Clock(at)
    result = await confirm(
        client,
        expr=expr,
        target_version=target,
        model_labels={"namespace": NS, "model": model},
        deadline=at + within,
        clock=clock,
        retry_interval=retry,
        sleep=clock.sleep,
    )
    return result, clock


async def shipped_error_rate_rule(client: PrometheusClient, tier: str = "critical") -> AlertRule:
    """The rule as the receiver finds it: by the name and labels of one of its alerts."""
    shipped = next(
        r
        for r in shipped_rules()
        if r.get("alert") == "ModelServingHighErrorRate" and r["labels"]["tier"] == tier
    )
    alert_labels = {
        "alertname": "ModelServingHighErrorRate",
        **shipped["labels"],
        "namespace": NS,
        "model": "fraud-scorer",
        "model_version": "v3",
    }
    rule = await client.alert_rule("ModelServingHighErrorRate", labels=alert_labels)
    assert rule is not None
    assert rule.labels == shipped["labels"]
    return rule


# --- against the data ------------------------------------------------------------------


async def test_a_target_with_a_low_error_rate_is_confirmed_while_the_bad_version_breaches(
    client: PrometheusClient, history: PrometheusServer
) -> None:
    at = T + timedelta(minutes=33)
    expr = ERROR_RATE.format(model="fraud-scorer")
    # Unrestricted, the alert still sees v3 in its 5m window.
    assert [s["metric"]["model_version"] for s in history.instant(expr, at)] == ["v3"]

    result, clock = await run(client, expr, model="fraud-scorer", target="v2", at=at)

    assert (result.result, result.reason) == ("confirmed", "no_breach")
    assert result.confirmed
    assert result.value == () and result.missing == ()
    assert result.evaluated_at == at and result.attempts == 1 and clock.sleeps == []
    assert result.query.count('model_version="v2"') == 2
    assert 'namespace="ml-prod", model="fraud-scorer", model_version="v2"' in result.query


async def test_a_target_failing_too_is_an_unconfirmed_breach_with_its_value(
    client: PrometheusClient,
) -> None:
    at = T + timedelta(minutes=60)

    result, _ = await run(
        client, ERROR_RATE.format(model="ranker"), model="ranker", target="v2", at=at
    )

    assert (result.result, result.reason) == ("unconfirmed", "breach")
    assert [(s.labels, round(s.value, 3)) for s in result.value] == [
        ({"namespace": NS, "model": "ranker", "model_version": "v2"}, 0.25)
    ]
    assert "still fires for v2" in result.detail and "model='ranker'" in result.detail
    assert result.evaluated_at == at


@pytest.mark.parametrize(
    ("target", "at"),
    [
        pytest.param("v9", T + timedelta(minutes=60), id="a version that never served"),
        pytest.param("v2", T + timedelta(minutes=20), id="before the target served"),
    ],
)
async def test_a_target_without_samples_is_no_data_never_success(
    client: PrometheusClient, target: str, at: datetime
) -> None:
    result, _ = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target=target, at=at
    )

    assert (result.result, result.reason) == ("unconfirmed", "no_data")
    assert len(result.missing) == 2
    assert all(f'model_version="{target}"' in m for m in result.missing)
    assert all(m.startswith("count_over_time(model_predictions_total{") for m in result.missing)
    assert f"no data for {target}: 2 of 2 checks" in result.detail


async def test_the_shipped_recording_rule_alert_confirms_the_good_target(
    client: PrometheusClient, history: PrometheusServer
) -> None:
    rule = await shipped_error_rate_rule(client)
    at = T + timedelta(minutes=60)
    # Unrestricted, ranker's v2 fires: a version string shared by two models.
    fired = history.instant(rule.expr, at)
    assert [(s["metric"]["model"], s["metric"]["model_version"]) for s in fired] == [
        ("ranker", "v2")
    ]

    result, _ = await run(client, rule.expr, model="fraud-scorer", target="v2", at=at)

    assert (result.result, result.reason) == ("confirmed", "no_breach")
    assert (
        "namespace_model_version:model_prediction_errors_per_predictions:ratio_rate5m"
        '{namespace="ml-prod", model="fraud-scorer", model_version="v2"} > 0.05'
    ) in result.query
    assert "3 data checks found series" in result.detail


@pytest.mark.parametrize(
    ("model", "target", "at"),
    [
        pytest.param("ranker", "v2", T + timedelta(minutes=60), id="ranker's target fails too"),
        pytest.param("fraud-scorer", "v3", T + timedelta(minutes=29), id="the bad version"),
    ],
)
async def test_the_shipped_recording_rule_alert_finds_a_breach(
    client: PrometheusClient, model: str, target: str, at: datetime
) -> None:
    rule = await shipped_error_rate_rule(client)

    result, _ = await run(client, rule.expr, model=model, target=target, at=at)

    assert (result.result, result.reason) == ("unconfirmed", "breach")
    assert [(s.labels["model"], s.labels["model_version"]) for s in result.value] == [
        (model, target)
    ]


async def test_a_target_under_the_alerts_traffic_guard_has_no_data(
    client: PrometheusClient,
) -> None:
    rule = await shipped_error_rate_rule(client)

    result, _ = await run(
        client, rule.expr, model="tiny", target="v1", at=T + timedelta(minutes=60)
    )

    assert (result.result, result.reason) == ("unconfirmed", "no_data")
    assert result.missing == (
        '(namespace_model_version:model_predictions:rate5m{namespace="ml-prod", model="tiny", '
        'model_version="v1"} >= 0.5)',
    )


async def test_an_expression_that_cannot_be_restricted_is_a_bad_expression(
    client: PrometheusClient,
) -> None:
    result, _ = await run(
        client, "rate(model_predictions_total[5m]", model="tiny", target="v1", at=T
    )

    assert (result.result, result.reason) == ("unconfirmed", "bad_expression")
    assert result.query == "" and result.attempts == 0
    assert "does not parse as PromQL" in result.detail


async def test_an_expression_prometheus_rejects_is_a_bad_expression(
    client: PrometheusClient,
) -> None:
    result, _ = await run(
        client,
        'sort_by_label(model_predictions_total{model="tiny"}, "outcome") > 0',
        model="tiny",
        target="v1",
        at=T,
    )

    assert (result.result, result.reason) == ("unconfirmed", "bad_expression")
    assert result.attempts == 1
    assert "Prometheus rejected the restricted expression" in result.detail
    assert "sort_by_label" in result.detail


# --- Prometheus unavailable --------------------------------------------------------------

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


@pytest.fixture
def front(
    aiohttp_server: Any, session: aiohttp.ClientSession, history: PrometheusServer
) -> Callable[..., Coroutine[Any, Any, PrometheusClient]]:
    """A client of a loopback server that fails the first ``failures`` queries, then
    passes them to the real Prometheus (``failures=None``: fails forever)."""

    async def make(
        status: int, failures: int | None = None, headers: dict[str, str] | None = None
    ) -> PrometheusClient:
        calls = 0

        async def handler(request: web.Request) -> web.Response:
            nonlocal calls
            calls += 1
            if failures is None or calls <= failures:
                body = {"status": "error", "errorType": "unavailable", "error": "overloaded"}
                return web.json_response(body, status=status, headers=headers)
            async with session.post(
                f"{history.url}/api/v1/query", data=await request.post()
            ) as resp:
                return web.Response(
                    body=await resp.read(), status=resp.status, content_type="application/json"
                )

        app = web.Application()
        app.router.add_post("/api/v1/query", handler)
        server = await aiohttp_server(app)
        return PrometheusClient(session, str(server.make_url("")), request_timeout=5)

    return make


async def test_a_port_nothing_listens_on_is_retried_until_the_deadline(
    session: aiohttp.ClientSession,
) -> None:
    port = free_port()
    client = PrometheusClient(session, f"http://127.0.0.1:{port}", request_timeout=5)

    result, clock = await run(client, ERROR_RATE.format(model="m"), model="m", target="v2", at=T)

    assert (result.result, result.reason) == ("unconfirmed", "prometheus_unavailable")
    # Attempts at 0, 10, ..., 60 seconds; the next would fall past the deadline.
    assert result.attempts == 7 and clock.sleeps == [RETRY] * 6
    assert f"127.0.0.1:{port} is unreachable" in result.detail
    assert "after 7 attempt(s)" in result.detail
    assert result.evaluated_at is None
    assert 'model_version="v2"' in result.query


async def test_the_retry_interval_is_kept_when_prometheus_asks_for_no_delay(
    front: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await front(503)

    result, clock = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target="v2",
        at=T, within=timedelta(seconds=2), retry=0.5,
    )  # fmt: skip

    assert result.reason == "prometheus_unavailable"
    assert result.attempts == 5 and clock.sleeps == [0.5] * 4


async def test_a_prometheus_answering_503_is_retried_until_the_deadline(
    front: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await front(503)

    result, clock = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target="v2",
        at=T + timedelta(minutes=60), within=timedelta(seconds=25),
    )  # fmt: skip

    assert (result.result, result.reason) == ("unconfirmed", "prometheus_unavailable")
    assert result.attempts == 3 and clock.sleeps == [RETRY, RETRY]
    assert "answered 503 unavailable: overloaded" in result.detail


async def test_a_prometheus_that_recovers_before_the_deadline_confirms(
    front: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await front(503, failures=2)
    at = T + timedelta(minutes=60)

    result, clock = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target="v2", at=at
    )

    assert (result.result, result.reason) == ("confirmed", "no_breach")
    assert result.attempts == 3 and clock.sleeps == [RETRY, RETRY]
    assert result.evaluated_at == at + timedelta(seconds=2 * RETRY)


async def test_a_throttling_prometheus_is_retried_after_its_retry_after(
    front: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await front(429, failures=1, headers={"Retry-After": "30"})

    result, clock = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target="v2",
        at=T + timedelta(minutes=60),
    )  # fmt: skip

    assert result.reason == "no_breach"
    assert clock.sleeps == [30.0]


async def test_an_answer_that_is_not_the_prometheus_api_is_not_retried(
    front: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await front(404)

    result, clock = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target="v2", at=T
    )

    assert (result.result, result.reason) == ("unconfirmed", "prometheus_unavailable")
    assert result.attempts == 1 and clock.sleeps == []
    assert "check RECEIVER_PROMETHEUS_URL" in result.detail


async def test_one_attempt_is_made_even_past_the_deadline(
    client: PrometheusClient,
) -> None:
    result, clock = await run(
        client, ERROR_RATE.format(model="fraud-scorer"), model="fraud-scorer", target="v2",
        at=T + timedelta(minutes=60), within=timedelta(seconds=-1),
    )  # fmt: skip

    assert (result.reason, result.attempts, clock.sleeps) == ("no_breach", 1, [])


# --- when to confirm ---------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "seconds"), [("critical", 600.0), ("experimental", 1200.0)])
async def test_the_delay_is_the_range_window_plus_the_rules_for(
    client: PrometheusClient, tier: str, seconds: float
) -> None:
    rule = await shipped_error_rate_rule(client, tier)

    assert confirm_delay_seconds(rule, rule.expr, fallback_seconds=900) == seconds


# The window of every shipped alert as the names of the recording rules it reads state it
# (model alerts), or as its own ranges and offsets do (the receiver's alerts, which read no
# per-version series): what the confirmation waited for before it read recording rules.
SHIPPED_WINDOWS = {
    "ModelServingHighErrorRate": 300,
    "ModelServingLatencyHigh": 300,
    "ModelServingMissingFeatures": 300,
    "ModelServingOOMKilled": 900,
    "ModelServingFeatureDrift": 1800,
    "ModelServingAccuracyBelowSLO": 1800,
    "RollbackReceiverDown": 0,
    "RollbackReceiverNotReady": 0,
    "RollbackReceiverRollbacksFailing": 900,
    "RollbackReceiverQueueLagHigh": 0,
    "RollbackReceiverNotificationsLost": 1800,
    "RollbackReceiverConfirmationsFailing": 3600,
    "ModelRollbackNotReady": 0,
    "ModelRollbackDrillOverdue": 0,
    "RollbackReceiverWatchdog": 0,
}


def test_shipped_alerts_wait_the_same_with_or_without_their_recording_rules() -> None:
    shipped = shipped_rules()
    recorded: dict[str, list[str]] = {}
    for r in shipped:
        if "record" in r:
            recorded.setdefault(r["record"], []).append(r["expr"])
    alerts = [r for r in shipped if "alert" in r]
    assert {r["alert"] for r in alerts} == SHIPPED_WINDOWS.keys()

    for r in alerts:
        rule = AlertRule(r["alert"], r["expr"], for_seconds=parse_duration(r.get("for", "0s")))
        want = SHIPPED_WINDOWS[r["alert"]] + rule.for_seconds
        by_names = confirm_delay_seconds(rule, rule.expr, fallback_seconds=-1)
        by_rules = confirm_delay_seconds(
            rule, rule.expr, fallback_seconds=-1, recording_rules=recorded
        )
        assert (by_names, by_rules) == (want, want), f"{r['alert']} ({r['file']})"


def test_without_the_rule_or_a_readable_expression_the_delay_is_the_fallback() -> None:
    rule = AlertRule("ModelServingHighErrorRate", "x > 1", for_seconds=300)

    assert confirm_delay_seconds(None, "rate(x[5m]) > 1", fallback_seconds=900) == 900
    assert confirm_delay_seconds(rule, "rate(x[5m] > 1", fallback_seconds=900) == 900
    assert confirm_delay_seconds(rule, "rate(x[5m]) > 1", fallback_seconds=900) == 600
