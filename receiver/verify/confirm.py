"""Confirmation: does the alert's own expression, seeing only the target version, stay quiet?

design.md ("Verification and confirmation", **Confirmed**): a rollback is confirmed when
the expression of the alert that caused it, restricted to the version rolled back to
(``promql.restrict``), returns no series, **and** there is data for that version. Each
attempt evaluates, at one evaluation time (``clock()``):

1. the restricted expression: any series is a ``breach`` (unconfirmed; the target may be
   bad too, and a person decides). A breach wins over missing data: an alert on
   ``absent(...)`` breaches precisely when data is missing;
2. the data checks (``Restriction.data_checks``), combined into one query by
   ``promql.presence_query``: every restricted selector must find series of the target
   (a range selector: at least one sample within its range, offset and ``@`` as
   written), and every right-hand operand of ``and`` reading them (the alert's
   minimum-traffic guard) must return series. Any check without series is ``no_data``
   (unconfirmed, never success), naming the checks. Series existing is the decision,
   not their value.

Otherwise ``confirmed`` with reason ``no_breach``.

An unreachable, failing or throttling Prometheus (``TemporaryError``) is tried again
every ``retry_interval`` (or after its ``Retry-After``, if longer) until ``deadline``, then
``prometheus_unavailable`` naming the last error; one that answers but is not the
Prometheus API (401, 403, 404, not its JSON) is ``prometheus_unavailable`` at once. An
expression that cannot be restricted, or that Prometheus rejects, is ``bad_expression``.

``confirm_delay_seconds`` says when to ask: once the target has served for the
expression's range window (of the selectors it restricts, through the recording rules
Prometheus runs) plus the rule's ``for:``.

What this module must not do: schedule, persist or change incidents; the caller does.
It reads Prometheus only through the client it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol

from receiver.clients.prometheus import (
    AlertRule,
    PrometheusProtocolError,
    PrometheusQueryError,
    Sample,
)
from receiver.errors import TemporaryError, truncate
from receiver.models import utcnow
from receiver.verify.promql import (
    ConfirmationError,
    Restriction,
    presence_query,
    range_window_seconds,
    restrict,
)

logger = logging.getLogger(__name__)

Result = Literal["confirmed", "unconfirmed"]
Reason = Literal["no_breach", "breach", "no_data", "prometheus_unavailable", "bad_expression"]

# The label presence_query puts on each data check's count.
_CHECK_LABEL = "check"


class Querier(Protocol):
    """What ``confirm`` needs of a Prometheus client (``PrometheusClient`` has it)."""

    async def query(self, expr: str, *, at: datetime | None = None) -> list[Sample]: ...


@dataclass(frozen=True)
class Confirmation:
    """The outcome of a confirmation; ``reason`` is a stable code, ``detail`` for people.

    ``query`` is the restricted expression (empty when it could not be built), ``value``
    the series it returned (the breach; empty otherwise), ``missing`` the data checks
    that found no series, ``evaluated_at`` the evaluation time of the deciding attempt
    (None when no attempt was answered), ``attempts`` how many were made.
    """

    result: Result
    reason: Reason
    detail: str
    query: str
    value: tuple[Sample, ...] = ()
    missing: tuple[str, ...] = ()
    evaluated_at: datetime | None = None
    attempts: int = 0

    @property
    def confirmed(self) -> bool:
        return self.result == "confirmed"


async def confirm(
    client: Querier,
    *,
    expr: str,
    target_version: str,
    model_labels: Mapping[str, str],
    deadline: datetime,
    clock: Callable[[], datetime] = utcnow,
    retry_interval: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Confirmation:
    """Evaluate ``expr`` restricted to ``target_version`` of the model; see the module doc.

    ``clock`` gives each attempt's evaluation time and measures ``deadline``; ``sleep``
    waits between attempts (tests pass one that moves their clock). The first attempt is
    made even past the deadline.
    """
    try:
        restriction = restrict(expr, target_version, model_labels)
    except ConfirmationError as e:
        return Confirmation("unconfirmed", "bad_expression", str(e), query="")
    attempts = 0
    while True:
        attempts += 1
        at = clock()
        try:
            outcome = await _evaluate(client, restriction, target_version, at)
        except PrometheusQueryError as e:
            return Confirmation(
                "unconfirmed",
                "bad_expression",
                f"Prometheus rejected the restricted expression: {e}",
                restriction.query,
                evaluated_at=at,
                attempts=attempts,
            )
        except PrometheusProtocolError as e:
            return _unavailable(restriction, attempts, e)
        except TemporaryError as e:
            # A throttling Prometheus's Retry-After is honoured when longer than ours.
            wait = max(retry_interval, getattr(e, "retry_after", None) or 0.0)
            now = clock()
            remaining = (deadline - now).total_seconds()
            if remaining < wait:
                return _unavailable(restriction, attempts, e)
            logger.info(
                "confirmation of %s: Prometheus unavailable (%s), retrying in %gs",
                target_version,
                e,
                wait,
            )
            await sleep(wait)
            continue
        return replace(outcome, attempts=attempts)


def confirm_delay_seconds(
    rule: AlertRule | None,
    expr: str,
    fallback_seconds: float,
    recording_rules: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Seconds the target must serve before confirming: range window plus ``for:``.

    The window is ``promql.range_window_seconds`` of ``expr`` with ``recording_rules``
    (name -> expressions, as Prometheus runs them; None: each recording rule counts the
    window its name states). Without the rule (Prometheus did not list it) or with an
    expression that does not parse, ``fallback_seconds`` (the policy's ``confirm_after``
    for the category).
    """
    if rule is None:
        return fallback_seconds
    try:
        window = range_window_seconds(expr, recording_rules)
    except ConfirmationError:
        return fallback_seconds
    return window + rule.for_seconds


async def _evaluate(
    client: Querier, restriction: Restriction, version: str, at: datetime
) -> Confirmation:
    breach = await client.query(restriction.query, at=at)
    if breach:
        return Confirmation(
            "unconfirmed",
            "breach",
            f"the alert's expression still fires for {version}: "
            + truncate("; ".join(_describe(s) for s in breach[:5]), 400),
            restriction.query,
            value=tuple(breach),
            evaluated_at=at,
        )
    checks = restriction.data_checks
    found = await client.query(presence_query(checks, _CHECK_LABEL), at=at)
    seen = {s.labels.get(_CHECK_LABEL) for s in found if s.value > 0}
    missing = tuple(c for i, c in enumerate(checks) if str(i) not in seen)
    if missing:
        return Confirmation(
            "unconfirmed",
            "no_data",
            f"no data for {version}: {len(missing)} of {len(checks)} checks found no series: "
            + truncate("; ".join(missing), 400),
            restriction.query,
            missing=missing,
            evaluated_at=at,
        )
    return Confirmation(
        "confirmed",
        "no_breach",
        f"no breach for {version}: the alert's expression returns nothing, and "
        f"{len(checks)} data checks found series",
        restriction.query,
        evaluated_at=at,
    )


def _unavailable(restriction: Restriction, attempts: int, error: Exception) -> Confirmation:
    return Confirmation(
        "unconfirmed",
        "prometheus_unavailable",
        f"Prometheus unavailable after {attempts} attempt(s); last error: {error}",
        restriction.query,
        attempts=attempts,
    )


def _describe(sample: Sample) -> str:
    labels = ", ".join(f"{k}={v!r}" for k, v in sorted(sample.labels.items()))
    return f"{{{labels}}} = {sample.value:g}"
