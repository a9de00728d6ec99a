"""Statistics of rollbacks and drills, kept as hourly aggregates instead of scanned history.

``GET /api/stats`` must not grow with the length of the history, so nothing here reads
incidents back. Each fact is counted once, when an incident first shows it (a rollback
switched, healthy, confirmed; a drill finished; an acknowledgement), into the aggregate of
the hour the incident opened: counters by model, strategy, trigger and root cause, and
duration histograms with their maximum. A request merges at most one aggregate per hour of
the retention (720 for 30 days), whatever the number of incidents.

Percentiles are estimated from the histogram buckets as Prometheus' ``histogram_quantile``
does (linear within a bucket), bounded by the exact maximum. ``since`` is rounded down to
the hour. Pure: the store keeps the aggregates (``add_stats``/``read_stats``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from receiver.models import Incident, IncidentEvent, IncidentKind, IncidentState, rfc3339

__all__ = [
    "BUCKET_SECONDS",
    "DURATION_BUCKETS",
    "Contribution",
    "acknowledgement_contribution",
    "bucket_of",
    "contributions",
    "drill_legs",
    "summarize",
]

BUCKET_SECONDS = 3600
"""One aggregate per hour the incidents opened in."""

DURATION_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)
"""Upper bounds (seconds): from a blue-green switch to an accuracy confirmation (6h)."""

_DRILL_OK = "drill_passed"
_DRILL_DONE = frozenset(
    {IncidentState.VERIFIED, IncidentState.VERIFICATION_FAILED, IncidentState.FAILED}
)


@dataclass(frozen=True)
class Contribution:
    """Counters to add to one hour's aggregate, once per ``once`` key (a fact of an
    incident), and maxima to raise there."""

    once: str
    bucket: int
    counts: Mapping[str, float] = field(default_factory=dict)
    maxima: Mapping[str, float] = field(default_factory=dict)


def bucket_of(at: datetime) -> int:
    """The hour an instant belongs to (hours since the epoch)."""
    return int(at.timestamp() // BUCKET_SECONDS)


def _duration(name: str, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    """Histogram counters and the maximum of one duration sample."""
    seconds = max(0.0, seconds)
    le = next((b for b in DURATION_BUCKETS if seconds <= b), math.inf)
    return {f"h|{name}|{le}": 1.0}, {f"max|{name}": seconds}


def _one(
    incident: Incident, fact: str, counts: dict[str, float], maxima: dict[str, float] | None = None
) -> Contribution:
    return Contribution(
        once=f"{incident.id}|{fact}",
        bucket=bucket_of(incident.created_at),
        counts=counts,
        maxima=maxima or {},
    )


def _model(incident: Incident) -> str:
    name = f"{incident.namespace}/{incident.model}"
    return f"{incident.cluster}/{name}" if incident.cluster else name


def _events(incident: Incident, kind: str) -> list[IncidentEvent]:
    return [e for e in incident.events if e.kind == kind]


def drill_legs(incident: Incident) -> tuple[float | None, float | None]:
    """Seconds of a drill's two legs: back (acting to healthy) and forward (the forward
    switch to healthy again); None for a leg that did not complete."""
    back = None
    if incident.times.acting and incident.times.healthy:
        back = (incident.times.healthy - incident.times.acting).total_seconds()
    forward = None
    started = _events(incident, "forward_started")
    healthy = _events(incident, "forward_healthy")
    if started and healthy:
        forward = (healthy[-1].at - started[0].at).total_seconds()
    return back, forward


def contributions(incident: Incident) -> list[Contribution]:
    """What the incident adds to the aggregates as it stands (each counted once)."""
    out: list[Contribution] = []
    times = incident.times
    model = _model(incident)
    if incident.kind is IncidentKind.DRILL:
        if incident.state in _DRILL_DONE:
            passed = incident.state is IncidentState.VERIFIED and incident.reason == _DRILL_OK
            counts = {"drills": 1.0, f"drills|{'passed' if passed else 'failed'}": 1.0}
            maxima: dict[str, float] = {}
            back, forward = drill_legs(incident)
            for name, value in (("drill_back", back), ("drill_forward", forward)):
                if value is not None:
                    c, m = _duration(name, value)
                    counts.update(c)
                    maxima.update(m)
            if passed:
                maxima[f"drill_last|{model}"] = incident.updated_at.timestamp()
            out.append(_one(incident, "drill", counts, maxima))
        return out
    if times.switched is None:
        return out
    counts = {
        "rollbacks": 1.0,
        f"rollbacks|model|{model}": 1.0,
        f"rollbacks|strategy|{incident.strategy or 'unknown'}": 1.0,
    }
    for trigger in incident.triggers or ["manual"]:
        counts[f"rollbacks|trigger|{trigger}"] = 1.0
    if incident.acknowledgement is not None:
        counts[f"rollbacks|root_cause|{incident.acknowledgement.root_cause}"] = 1.0
    out.append(_one(incident, "rollback", counts))
    start = times.received or times.acting
    for name, at in (
        ("switched", times.switched),
        ("healthy", times.healthy),
        ("confirmed", times.confirmed if incident.state is IncidentState.CONFIRMED else None),
    ):
        if at is not None and start is not None:
            c, m = _duration(name, (at - start).total_seconds())
            out.append(_one(incident, name, c, m))
    return out


def acknowledgement_contribution(
    incident: Incident, previous_root_cause: str | None
) -> Contribution:
    """An acknowledgement: its root cause counted, the one it replaces uncounted."""
    ack = incident.acknowledgement
    assert ack is not None
    counts: dict[str, float] = {f"acknowledged|root_cause|{ack.root_cause}": 1.0}
    if previous_root_cause is not None:
        counts[f"acknowledged|root_cause|{previous_root_cause}"] = (
            counts.get(f"acknowledged|root_cause|{previous_root_cause}", 0.0) - 1.0
        )
    if incident.times.switched is not None and incident.kind is IncidentKind.ALERT:
        counts[f"rollbacks|root_cause|{ack.root_cause}"] = 1.0
        if previous_root_cause is not None:
            key = f"rollbacks|root_cause|{previous_root_cause}"
            counts[key] = counts.get(key, 0.0) - 1.0
    return Contribution(
        once=f"{incident.id}|ack|{rfc3339(ack.at)}|{ack.root_cause}",
        bucket=bucket_of(incident.created_at),
        counts={k: v for k, v in counts.items() if v},
    )


# -- reading ------------------------------------------------------------------------------


def _merge(aggregates: Iterable[Mapping[str, float]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for aggregate in aggregates:
        for key, value in aggregate.items():
            if key.startswith(("max|", "drill_last|")):
                merged[key] = max(merged.get(key, value), value)
            else:
                merged[key] = merged.get(key, 0.0) + value
    return merged


def _by(merged: Mapping[str, float], prefix: str) -> dict[str, int]:
    out = {
        key[len(prefix) :]: round(value) for key, value in merged.items() if key.startswith(prefix)
    }
    return {k: v for k, v in sorted(out.items()) if v}


def _quantile(q: float, counts: list[tuple[float, float]], maximum: float) -> float:
    """``histogram_quantile`` over (upper bound, count) pairs, capped by the maximum."""
    total = sum(c for _, c in counts)
    rank = q * total
    seen = 0.0
    lower = 0.0
    for upper, count in counts:
        if count and seen + count >= rank:
            if math.isinf(upper):
                return maximum
            estimate = lower + (upper - lower) * ((rank - seen) / count)
            return min(estimate, maximum)
        seen += count
        lower = upper if not math.isinf(upper) else lower
    return maximum


def _durations(merged: Mapping[str, float], name: str) -> dict[str, Any]:
    prefix = f"h|{name}|"
    counts = sorted(
        (
            (float(key[len(prefix) :]), value)
            for key, value in merged.items()
            if key.startswith(prefix)
        ),
        key=lambda pair: pair[0],
    )
    total = round(sum(c for _, c in counts))
    if not total:
        return {"count": 0, "p50": None, "p90": None, "max": None}
    maximum = merged.get(f"max|{name}", 0.0)
    return {
        "count": total,
        "p50": round(_quantile(0.5, counts, maximum), 3),
        "p90": round(_quantile(0.9, counts, maximum), 3),
        "max": round(maximum, 3),
    }


def summarize(
    aggregates: Iterable[Mapping[str, float]], *, since: datetime | None, until: datetime
) -> dict[str, Any]:
    """The ``GET /api/stats`` answer from the aggregates of the hours in range."""
    merged = _merge(aggregates)
    rollbacks = round(merged.get("rollbacks", 0.0))
    by_cause = _by(merged, "rollbacks|root_cause|")
    unacknowledged = rollbacks - sum(by_cause.values())
    if unacknowledged > 0:
        by_cause["unacknowledged"] = unacknowledged
    last = {
        key[len("drill_last|") :]: rfc3339(datetime.fromtimestamp(value, UTC))
        for key, value in sorted(merged.items())
        if key.startswith("drill_last|")
    }
    return {
        "since": rfc3339(since),
        "until": rfc3339(until),
        "granularity_seconds": BUCKET_SECONDS,
        "rollbacks": {
            "total": rollbacks,
            "by_model": _by(merged, "rollbacks|model|"),
            "by_strategy": _by(merged, "rollbacks|strategy|"),
            "by_trigger": _by(merged, "rollbacks|trigger|"),
            "by_root_cause": by_cause,
        },
        "acknowledged": {"by_root_cause": _by(merged, "acknowledged|root_cause|")},
        "durations_seconds": {
            "received_to_switched": _durations(merged, "switched"),
            "received_to_healthy": _durations(merged, "healthy"),
            "received_to_confirmed": _durations(merged, "confirmed"),
        },
        "drills": {
            "total": round(merged.get("drills", 0.0)),
            "passed": round(merged.get("drills|passed", 0.0)),
            "failed": round(merged.get("drills|failed", 0.0)),
            "durations_seconds": {
                "rollback_leg": _durations(merged, "drill_back"),
                "forward_leg": _durations(merged, "drill_forward"),
            },
            "last_success": last,
        },
    }
