"""Prometheus's HTTP API (``/api/v1/query``, ``/api/v1/rules``), over the app's aiohttp session.

A thin client of our own rather than a library: the async Prometheus clients on PyPI
(``aiopromql``, ``aio-prometheus-client``, ``aioprometheus-api-client``) are small,
young or unmaintained, open sessions of their own instead of taking the app's one, and
raise their own errors; what we need is two GET/POST calls, typed results and the error
translation below, which a library would not spare us.

Errors: every failure becomes one of ours (``receiver.errors``), chained with
``raise ... from``; nothing from aiohttp escapes. Timeouts, refused connections, 5xx and
429 are ``PrometheusUnavailable`` (temporary; 429's ``Retry-After`` is its ``delay``).
A query Prometheus rejects (400 ``bad_data``, 422 ``execution``) is
``PrometheusQueryError``; any other answer that is not the API's (401, 403, 404, a body
that is not its JSON) is ``PrometheusProtocolError``, both permanent: retrying the same
request cannot help. Error texts from the server are cut to ``TEXT_ERROR_MAX_SIZE``.

What this module must not do: decide anything. It returns samples and rules as values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from receiver.errors import PermanentError, ReceiverError, TemporaryError, truncate

_Rule = TypeVar("_Rule")


class PrometheusError(ReceiverError):
    """Base of the errors of the Prometheus API, carrying the HTTP status and error type."""

    def __init__(self, message: str, *, status: int = 0, error_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class PrometheusUnavailable(PrometheusError, TemporaryError):
    """Prometheus is unreachable, too slow, failing (5xx) or throttling (429).

    ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one; it is
    then also the ``delay``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        error_type: str = "",
        retry_after: float | None = None,
    ) -> None:
        PrometheusError.__init__(self, message, status=status, error_type=error_type)
        self.retry_after = retry_after
        self.delay = retry_after if retry_after is not None else 1.0


class PrometheusQueryError(PrometheusError, PermanentError):
    """Prometheus rejected the query itself (400 ``bad_data``, 422 ``execution``)."""


class PrometheusProtocolError(PrometheusError, PermanentError):
    """The answer is not the Prometheus API's: check ``RECEIVER_PROMETHEUS_URL`` and access."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector (or a scalar: no labels) at one time."""

    labels: Mapping[str, str]
    value: float
    at: datetime


@dataclass(frozen=True)
class AlertRule:
    """An alerting rule as Prometheus loaded it; ``for_seconds`` is its ``for:``."""

    name: str
    expr: str
    for_seconds: float
    labels: Mapping[str, str] = field(default_factory=dict)
    group: str = ""


@dataclass(frozen=True)
class RecordingRule:
    """A recording rule as Prometheus loaded it: the series ``name`` recorded from ``expr``."""

    name: str
    expr: str
    labels: Mapping[str, str] = field(default_factory=dict)
    group: str = ""


class PrometheusClient:
    """Queries one Prometheus (``base_url``, a path prefix allowed) through ``session``.

    ``request_timeout`` bounds each call, connection included; it is also sent as the
    query's ``timeout`` so Prometheus stops evaluating what nobody waits for.
    """

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, *, request_timeout: float
    ) -> None:
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, got {request_timeout}")
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._timeout = request_timeout

    async def query(self, expr: str, *, at: datetime | None = None) -> list[Sample]:
        """Evaluate ``expr`` as an instant query at ``at`` (Prometheus's now when None).

        An instant vector gives one ``Sample`` per series, a scalar one ``Sample`` without
        labels. A range vector or a string is no alert expression:
        ``PrometheusQueryError``.
        """
        form = {"query": expr, "timeout": f"{self._timeout:g}s"}
        if at is not None:
            if at.tzinfo is None:
                raise ValueError("the evaluation time must be timezone-aware")
            form["time"] = f"{at.timestamp():.3f}"
        data = await self._call("POST", "query", f"query {truncate(expr, 200)!r}", data=form)
        result_type = data.get("resultType")
        result = data.get("result")
        try:
            if result_type == "vector":
                return [Sample(dict(item["metric"]), *_point(item["value"])) for item in result]
            if result_type == "scalar":
                return [Sample({}, *_point(result))]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise PrometheusProtocolError(
                f"query {truncate(expr, 200)!r}: malformed {result_type} result: "
                f"{truncate(json.dumps(result), 200)}"
            ) from e
        raise PrometheusQueryError(
            f"query {truncate(expr, 200)!r} returns a {result_type}, not an instant vector",
            error_type="bad_data",
        )

    async def alert_rules(self) -> list[AlertRule]:
        """Every alerting rule Prometheus has loaded, in its order."""
        return await self._rules(
            "rules",
            "alert",
            lambda group, rule: AlertRule(
                name=rule["name"],
                expr=rule["query"],
                for_seconds=float(rule.get("duration") or 0.0),
                labels=dict(rule.get("labels") or {}),
                group=group,
            ),
        )

    async def recording_rules(self) -> list[RecordingRule]:
        """Every recording rule Prometheus has loaded, in its order.

        A name recorded in several groups (or several times in one) is listed once per
        rule: each has its own expression.
        """
        return await self._rules(
            "recording rules",
            "record",
            lambda group, rule: RecordingRule(
                name=rule["name"],
                expr=rule["query"],
                labels=dict(rule.get("labels") or {}),
                group=group,
            ),
        )

    async def _rules(
        self, what: str, kind: str, make: Callable[[str, dict[str, Any]], _Rule]
    ) -> list[_Rule]:
        """``/api/v1/rules?type=<kind>``, each rule of that kind made by ``make``."""
        data = await self._call("GET", "rules", what, params={"type": kind})
        wanted = {"alert": "alerting", "record": "recording"}[kind]
        try:
            return [
                make(group.get("name", ""), rule)
                for group in data["groups"]
                for rule in group["rules"]
                if rule.get("type") == wanted
            ]
        except (KeyError, TypeError, ValueError) as e:
            raise PrometheusProtocolError(f"{what}: malformed answer ({e!r})") from e

    async def alert_rule(
        self,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        expr: str | None = None,
    ) -> AlertRule | None:
        """The alerting rule ``name``, or None when Prometheus has none by that name.

        Several rules may share a name (one per tier in the shipped rules): ``labels``
        (an alert's labels, which include its rule's) and ``expr`` (the alert's
        ``g0.expr``, which Prometheus writes as it lists the rule's ``query``) narrow the
        choice. Rules left tied give the one with the longest ``for:``, so a delay
        computed from it never confirms too early.
        """
        candidates = [r for r in await self.alert_rules() if r.name == name]
        if labels is not None:
            candidates = [r for r in candidates if r.labels.items() <= labels.items()]
        if expr is not None:
            exact = [r for r in candidates if r.expr.strip() == expr.strip()]
            candidates = exact or candidates
        if not candidates:
            return None
        return max(candidates, key=lambda r: r.for_seconds)

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/api/v1/{path}"
        try:
            async with self._session.request(
                method, url, timeout=aiohttp.ClientTimeout(total=self._timeout), **kwargs
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After", "")
                body = await resp.read()
        except TimeoutError as e:
            raise PrometheusUnavailable(
                f"{what}: Prometheus at {self.base_url} did not answer within {self._timeout:g}s"
            ) from e
        except (aiohttp.ClientError, OSError) as e:
            raise PrometheusUnavailable(
                f"{what}: Prometheus at {self.base_url} is unreachable: "
                f"{truncate(str(e) or type(e).__name__)}"
            ) from e
        return _decode(status, body, retry_after, what)


def _decode(status: int, body: bytes, retry_after: str, what: str) -> Any:
    """The ``data`` of a success; otherwise raises the error for ``status`` and the body."""
    text = body.decode(errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("status") not in ("success", "error"):
        parsed = None
    if parsed is not None and parsed["status"] == "success" and status < 300:
        return parsed.get("data") or {}
    raise _error(status, parsed, text, retry_after, what)


def _error(
    status: int, parsed: dict[str, Any] | None, text: str, retry_after: str, what: str
) -> PrometheusError:
    error_type = str(parsed.get("errorType", "")) if parsed else ""
    message = str(parsed.get("error", "")) if parsed else text.strip()
    detail = f"{what}: Prometheus answered {status}"
    detail += f" {error_type}" if error_type else ""
    detail += f": {truncate(message)}" if message else ""
    if status == 429 or status >= 500:
        return PrometheusUnavailable(
            detail, status=status, error_type=error_type, retry_after=_retry_after(retry_after)
        )
    if status in (400, 422) and error_type:
        return PrometheusQueryError(detail, status=status, error_type=error_type)
    if parsed is None and status < 300:
        detail = (
            f"{what}: the {status} answer is not the Prometheus API's JSON "
            f"({truncate(text, 120)!r}): check RECEIVER_PROMETHEUS_URL"
        )
    elif status in (401, 403):
        detail += " (the receiver's access to Prometheus was refused)"
    elif status == 404:
        detail += " (no Prometheus API there: check RECEIVER_PROMETHEUS_URL)"
    return PrometheusProtocolError(detail, status=status, error_type=error_type)


def _retry_after(value: str) -> float | None:
    """Seconds of a ``Retry-After`` header; None when absent or not a number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _point(pair: Any) -> tuple[float, datetime]:
    """``(value, at)`` from the API's ``[<unix seconds>, "<value>"]``."""
    timestamp, value = pair
    return float(value), datetime.fromtimestamp(float(timestamp), UTC)
