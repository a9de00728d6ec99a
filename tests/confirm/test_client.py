"""PrometheusClient: typed answers from a real Prometheus; every failure is one of our errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from receiver.clients.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusProtocolError,
    PrometheusQueryError,
    PrometheusUnavailable,
    Sample,
)
from receiver.errors import TEXT_ERROR_MAX_SIZE, PermanentError, TemporaryError
from tests.confirm.prometheus import BASE, PrometheusServer, gauge, shipped_rules
from tests.conftest import free_port

TIMEOUT = 5.0
LABELS = {"namespace": "ml-prod", "model": "client-test", "model_version": "v1"}


@pytest.fixture(scope="module")
def loaded(prometheus: PrometheusServer) -> PrometheusServer:
    prometheus.backfill(
        [
            gauge(
                "client_test_ratio",
                LABELS,
                start=BASE,
                end=BASE + timedelta(minutes=10),
                value=0.25,
            )
        ]
    )
    return prometheus


@pytest.fixture
def client(loaded: PrometheusServer, session: aiohttp.ClientSession) -> PrometheusClient:
    return PrometheusClient(session, loaded.url + "/", request_timeout=TIMEOUT)


# --- a real Prometheus -------------------------------------------------------------------


async def test_an_instant_vector_at_a_given_time_is_a_list_of_samples(
    client: PrometheusClient,
) -> None:
    at = BASE + timedelta(minutes=5)

    samples = await client.query('client_test_ratio{model="client-test"}', at=at)

    assert samples == [Sample({"__name__": "client_test_ratio", **LABELS}, 0.25, at)]


async def test_no_series_is_an_empty_list(client: PrometheusClient) -> None:
    at = BASE + timedelta(hours=2)

    assert await client.query('client_test_ratio{model="client-test"}', at=at) == []


async def test_a_scalar_is_one_sample_without_labels(client: PrometheusClient) -> None:
    at = BASE + timedelta(minutes=5)

    samples = await client.query("scalar(client_test_ratio) * 4", at=at)

    assert samples == [Sample({}, 1.0, at)]


async def test_without_a_time_prometheus_evaluates_at_its_now(client: PrometheusClient) -> None:
    samples = await client.query("vector(7)")

    assert [(s.labels, s.value) for s in samples] == [({}, 7.0)]


@pytest.mark.parametrize(
    ("expr", "answer"),
    [("client_test_ratio[5m]", "returns a matrix"), ('"text"', "returns a string")],
)
async def test_a_range_vector_or_a_string_is_no_alert_expression(
    client: PrometheusClient, expr: str, answer: str
) -> None:
    with pytest.raises(PrometheusQueryError, match=answer):
        await client.query(expr, at=BASE + timedelta(minutes=5))


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("sum(", "parse error"),
        # Parsed by the Rust parser (Prometheus 2.45's grammar), unknown to Prometheus 2.42.
        ('sort_by_label(client_test_ratio, "model")', 'unknown function with name "sort_by_label"'),
    ],
)
async def test_a_query_prometheus_rejects_is_a_permanent_query_error(
    client: PrometheusClient, expr: str, text: str
) -> None:
    with pytest.raises(PrometheusQueryError) as caught:
        await client.query(expr)

    assert (caught.value.status, caught.value.error_type) == (400, "bad_data")
    assert text in str(caught.value)
    assert isinstance(caught.value, PermanentError)


async def test_a_naive_evaluation_time_is_refused(client: PrometheusClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await client.query("vector(1)", at=BASE.replace(tzinfo=None))


async def test_alert_rules_lists_every_shipped_alert(client: PrometheusClient) -> None:
    rules = await client.alert_rules()

    assert sorted(r.name for r in rules) == sorted(
        r["alert"] for r in shipped_rules() if "alert" in r
    )


@pytest.mark.parametrize(("tier", "for_seconds"), [("critical", 300.0), ("experimental", 900.0)])
async def test_alert_rule_reads_for_of_the_rule_matching_the_alert_labels(
    client: PrometheusClient, tier: str, for_seconds: float
) -> None:
    alert_labels = {
        "alertname": "ModelServingHighErrorRate",
        "tier": tier,
        "category": "operational",
        "trigger": "error_rate",
        "remediation": "rollback",
        "severity": "critical" if tier == "critical" else "warning",
        **LABELS,
    }

    rule = await client.alert_rule("ModelServingHighErrorRate", labels=alert_labels)

    assert rule is not None
    assert rule.for_seconds == for_seconds
    assert rule.labels["tier"] == tier
    assert f'namespace_model:model_tier:info{{tier="{tier}"}}' in rule.expr
    assert rule.group == "model-rollback.operational"


async def test_alert_rule_narrowed_by_expression_and_else_the_longest_for(
    client: PrometheusClient,
) -> None:
    rules = [r for r in await client.alert_rules() if r.name == "ModelServingLatencyHigh"]
    critical = next(r for r in rules if r.labels["tier"] == "critical")

    by_expr = await client.alert_rule("ModelServingLatencyHigh", expr=critical.expr)
    tied = await client.alert_rule("ModelServingLatencyHigh")

    assert by_expr == critical
    assert tied is not None and tied.for_seconds == max(r.for_seconds for r in rules) == 900.0


async def test_an_unknown_alert_has_no_rule(client: PrometheusClient) -> None:
    assert await client.alert_rule("NoSuchAlert") is None


async def test_recording_rules_lists_every_shipped_recording_rule(
    client: PrometheusClient,
) -> None:
    rules = await client.recording_rules()

    shipped = [r for r in shipped_rules() if "record" in r]
    assert [(r.name, r.group) for r in rules] == [(r["record"], r["group"]) for r in shipped]
    # A name recorded several times keeps each expression (the tier defaults: one per tier).
    slo = [r for r in rules if r.name == "tier:model_slo_accuracy:ratio"]
    assert [(r.expr, r.labels["tier"]) for r in slo] == [
        ("vector(0.9)", "critical"),
        ("vector(0.8)", "experimental"),
    ]


# --- failures ----------------------------------------------------------------------------

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]


@pytest.fixture
def serve(
    aiohttp_server: Any, session: aiohttp.ClientSession
) -> Callable[..., Coroutine[Any, Any, PrometheusClient]]:
    """A client of a loopback server whose API answers with ``handler``."""

    async def make(handler: Handler, *, timeout: float = TIMEOUT) -> PrometheusClient:
        app = web.Application()
        app.router.add_route("*", "/api/v1/{path}", handler)
        server = await aiohttp_server(app)
        return PrometheusClient(session, str(server.make_url("")), request_timeout=timeout)

    return make


def answer(
    status: int, body: str | dict[str, Any], headers: dict[str, str] | None = None
) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if isinstance(body, dict):
            return web.json_response(body, status=status, headers=headers)
        return web.Response(text=body, status=status, headers=headers, content_type="text/html")

    return handler


def api_error(error_type: str, error: str) -> dict[str, Any]:
    return {"status": "error", "errorType": error_type, "error": error}


@pytest.mark.parametrize(
    ("handler", "kind", "status", "error_type", "text"),
    [
        (answer(400, api_error("bad_data", "1:5: parse error")), PrometheusQueryError, 400,
         "bad_data", "answered 400 bad_data: 1:5: parse error"),
        (answer(422, api_error("execution", "many-to-many matching not allowed")),
         PrometheusQueryError, 422, "execution", "many-to-many matching not allowed"),
        (answer(503, api_error("unavailable", "too many queries")), PrometheusUnavailable, 503,
         "unavailable", "answered 503 unavailable: too many queries"),
        (answer(500, api_error("internal", "boom")), PrometheusUnavailable, 500, "internal",
         "boom"),
        (answer(502, "<html>Bad Gateway</html>"), PrometheusUnavailable, 502, "", "Bad Gateway"),
        (answer(429, "slow down", {"Retry-After": "7"}), PrometheusUnavailable, 429, "",
         "slow down"),
        (answer(401, "unauthorized"), PrometheusProtocolError, 401, "", "access to Prometheus"),
        (answer(403, "forbidden"), PrometheusProtocolError, 403, "", "access to Prometheus"),
        (answer(404, "404 page not found"), PrometheusProtocolError, 404, "",
         "check RECEIVER_PROMETHEUS_URL"),
        (answer(200, "<html>Grafana</html>"), PrometheusProtocolError, 200, "",
         "not the Prometheus API's JSON"),
        (answer(200, {"status": "success", "data": {"resultType": "vector", "result": [{}]}}),
         PrometheusProtocolError, 0, "", "malformed vector result"),
    ],
)  # fmt: skip
async def test_statuses_map_to_permanent_and_temporary_errors(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
    handler: Handler,
    kind: type[PrometheusError],
    status: int,
    error_type: str,
    text: str,
) -> None:
    client = await serve(handler)

    with pytest.raises(PrometheusError) as caught:
        await client.query("up")

    error = caught.value
    assert type(error) is kind
    assert (error.status, error.error_type) == (status, error_type)
    assert text in str(error)
    assert isinstance(error, TemporaryError) == (kind is PrometheusUnavailable)
    assert isinstance(error, PermanentError) == (kind is not PrometheusUnavailable)
    assert not isinstance(error, aiohttp.ClientError)


async def test_recording_rules_of_every_group_are_listed_and_alerts_skipped(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    asked: list[dict[str, str]] = []
    groups = [
        {"name": "a", "rules": [
            {"type": "recording", "name": "ns:errors:ratio", "query": "rate(e[10m])"},
            {"type": "alerting", "name": "Errors", "query": "ns:errors:ratio > 1"},
        ]},
        {"name": "b", "rules": [
            {"type": "recording", "name": "ns:errors:ratio", "query": "rate(e[30m])",
             "labels": {"source": "b"}},
        ]},
    ]  # fmt: skip

    async def handler(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.json_response({"status": "success", "data": {"groups": groups}})

    client = await serve(handler)
    rules = await client.recording_rules()

    assert asked == [{"type": "record"}]
    assert [(r.name, r.expr, dict(r.labels), r.group) for r in rules] == [
        ("ns:errors:ratio", "rate(e[10m])", {}, "a"),
        ("ns:errors:ratio", "rate(e[30m])", {"source": "b"}, "b"),
    ]


async def test_a_malformed_rules_answer_is_a_protocol_error(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    groups = [{"name": "a", "rules": [{"type": "recording", "name": "ns:errors:ratio"}]}]
    client = await serve(answer(200, {"status": "success", "data": {"groups": groups}}))

    with pytest.raises(PrometheusProtocolError, match="recording rules: malformed answer"):
        await client.recording_rules()


async def test_retry_after_of_a_throttling_prometheus_is_the_delay(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await serve(answer(429, "slow down", {"Retry-After": "7"}))

    with pytest.raises(PrometheusUnavailable) as caught:
        await client.query("up")

    assert caught.value.retry_after == caught.value.delay == 7.0


async def test_without_retry_after_the_delay_is_a_second(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await serve(answer(503, "down", {"Retry-After": "soon"}))

    with pytest.raises(PrometheusUnavailable) as caught:
        await client.query("up")

    assert (caught.value.retry_after, caught.value.delay) == (None, 1.0)


async def test_a_long_error_text_is_cut(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    client = await serve(answer(503, api_error("unavailable", "x" * 100_000)))

    with pytest.raises(PrometheusUnavailable) as caught:
        await client.query("up")

    message = str(caught.value)
    assert "x" * TEXT_ERROR_MAX_SIZE not in message
    assert "x" * (TEXT_ERROR_MAX_SIZE - 3) + "..." in message
    assert len(message) < TEXT_ERROR_MAX_SIZE + 100


async def test_a_prometheus_that_does_not_answer_in_time_is_unavailable(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    client = await serve(hang, timeout=0.2)

    with pytest.raises(PrometheusUnavailable, match=r"did not answer within 0\.2s"):
        await client.query("up")


async def test_a_port_nothing_listens_on_is_unavailable(session: aiohttp.ClientSession) -> None:
    port = free_port()
    client = PrometheusClient(session, f"http://127.0.0.1:{port}", request_timeout=TIMEOUT)

    with pytest.raises(PrometheusUnavailable, match=f"127.0.0.1:{port} is unreachable") as caught:
        await client.alert_rules()

    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


async def test_a_query_is_posted_as_a_form_with_its_time_and_timeout(
    serve: Callable[..., Coroutine[Any, Any, PrometheusClient]],
) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, dict(await request.post())))  # type: ignore[arg-type]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": []}}
        )

    client = await serve(record, timeout=3)
    at = BASE + timedelta(seconds=1.5)

    assert await client.query('up{job="a b"}', at=at) == []

    assert seen == [
        (
            "POST",
            "/api/v1/query",
            {"query": 'up{job="a b"}', "time": f"{at.timestamp():.3f}", "timeout": "3s"},
        )
    ]


def test_a_request_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="request_timeout"):
        PrometheusClient(None, "http://x", request_timeout=0)  # type: ignore[arg-type]
