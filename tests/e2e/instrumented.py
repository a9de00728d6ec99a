"""A model server stand-in that also exposes the metrics contract on ``/metrics``.

It is the OIP stand-in of ``tests/standins/model_server.py`` (health routes, inference,
the served version following a callable such as the Kubernetes stand-in's pod template)
plus the series of ``alert_rules/README.md`` ("Metrics contract for model servers") for
the version it serves right now, in the Prometheus text exposition format, from a
registry of its own.

Traffic is simulated: a background task counts ``traffic_rate`` predictions per second
into the counters of the serving version, shaped by that version's ``Behaviour`` (error
share, latency, missing features, drifted inputs). Counts are spread deterministically
(fractional carries, no randomness), so a test knows exactly what Prometheus will see.

Labels: the series carry ``model`` and ``model_version`` (the server exports both, one of
the two ways the contract allows); ``namespace`` is left to the scrape (the e2e
Prometheus sets it as a target label), as the contract asks. When the served version
changes (a rollback), the old version's series disappear from the exposition and the
new version's appear, exactly like a new pod replacing an old one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from tests.standins.model_server import ModelServer

# Every SLA of the rules is a bucket boundary (0.5s critical, 1s experimental).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("success", "error", "rejected")
TICK_SECONDS = 0.1

# Two features with ten reference bins each. The live distribution equals the reference
# unless the behaviour drifts, which moves all live mass into the first two bins
# (KL ~ ln 5 ~ 1.6 nats, far above the 0.1 threshold).
REFERENCE: dict[str, dict[str, float]] = {
    "amount": {f"b{i}": w for i, w in enumerate((4, 8, 12, 16, 20, 14, 10, 8, 5, 3))},
    "merchant_category": {f"b{i}": 1.0 for i in range(10)},
}
DRIFTED = {"b0": 0.5, "b1": 0.5}


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@dataclass(frozen=True)
class Behaviour:
    """How one version behaves under the simulated traffic."""

    error_ratio: float = 0.0
    latency_seconds: float = 0.03
    accuracy: float = 0.97
    missing_ratio: float = 0.0  # share of predictions missing feature "amount"
    drift: bool = False  # live inputs of feature "amount" leave the reference distribution


HEALTHY = Behaviour()


@dataclass
class VersionCounts:
    """Counter values of one version since this process started serving it."""

    predictions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    duration_count: int = 0
    duration_sum: float = 0.0
    labeled: int = 0
    labeled_correct: int = 0
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFERENCE, 0))
    observations: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(f, b): 0 for f, bins in REFERENCE.items() for b in bins}
    )
    carries: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def take(self, key: str, amount: float) -> int:
        """Add ``amount`` to a fractional carry and return its whole part."""
        self.carries[key] += amount
        whole = int(self.carries[key])
        self.carries[key] -= whole
        return whole


@dataclass
class InstrumentedModelServer(ModelServer):
    """``ModelServer`` plus ``/metrics`` and simulated traffic; knobs change at any time."""

    traffic_rate: float = 100.0  # predictions per second, while a version serves
    tier: str | None = "critical"  # model_info{tier}; None: not exported
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    counts: dict[str, VersionCounts] = field(default_factory=dict)
    scrapes: int = 0
    _traffic: asyncio.Task[None] | None = field(default=None, repr=False)

    # --- what the test switches ---------------------------------------------------------

    def behave(self, version: str, behaviour: Behaviour) -> None:
        """Make ``version`` behave like this from now on (other versions are healthy)."""
        self.behaviours[version] = behaviour

    def behaviour(self, version: str) -> Behaviour:
        return self.behaviours.get(version, HEALTHY)

    # --- lifecycle ----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> InstrumentedModelServer:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ContractCollector(self))
        await super().start()
        self._traffic = asyncio.create_task(self._simulate(), name="simulated-traffic")
        return self

    async def close(self) -> None:
        if self._traffic is not None:
            self._traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._traffic
            self._traffic = None
        await super().close()

    @property
    def metrics_address(self) -> str:
        """``host:port`` of ``/metrics``, as a Prometheus static target."""
        return self.url.removeprefix("http://")

    # --- traffic ------------------------------------------------------------------------

    async def _simulate(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = loop.time()
            self.count(self.traffic_rate * (now - last))
            last = now

    def count(self, predictions: float) -> None:
        """Count ``predictions`` (fractional: carried over) for the version serving now."""
        version = self.current_version()
        if version is None:
            return
        b = self.behaviour(version)
        c = self.counts.setdefault(version, VersionCounts())
        n = c.take("predictions", predictions)
        if n == 0:
            return
        errors = c.take("errors", n * b.error_ratio)
        ok = n - errors
        c.predictions["error"] += errors
        c.predictions["success"] += ok
        for i, le in enumerate(BUCKETS):
            if b.latency_seconds <= le:
                c.buckets[i] += n
        c.duration_count += n
        c.duration_sum += n * b.latency_seconds
        c.labeled += ok
        c.labeled_correct += c.take("correct", ok * b.accuracy)
        missing = c.take("missing", n * b.missing_ratio)
        c.missing["amount"] += missing
        for feature, bins in REFERENCE.items():
            seen = n - missing if feature == "amount" else n
            live = DRIFTED if (b.drift and feature == "amount") else bins
            for bin_, share in _normalised(live).items():
                c.observations[(feature, bin_)] += c.take(f"{feature}/{bin_}", seen * share)

    # --- /metrics -----------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


class _ContractCollector(Collector):
    """The contract's series of the version serving now (none while nothing serves)."""

    def __init__(self, server: InstrumentedModelServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        version = server.current_version()
        if version is None:
            return
        c = server.counts.setdefault(version, VersionCounts())
        base = ["model", "model_version"]
        ident = [server.model, version]

        if server.tier is not None:
            info = GaugeMetricFamily("model_info", "The model's tier.", labels=[*base, "tier"])
            info.add_metric([*ident, server.tier], 1)
            yield info

        predictions = CounterMetricFamily(
            "model_predictions_total", "Predictions requested.", labels=[*base, "outcome"]
        )
        for outcome, value in c.predictions.items():
            predictions.add_metric([*ident, outcome], value)
        yield predictions

        duration = HistogramMetricFamily(
            "model_prediction_duration_seconds", "Time to answer a prediction.", labels=base
        )
        buckets = [(repr(le), v) for le, v in zip(BUCKETS, c.buckets, strict=True)]
        buckets.append(("+Inf", c.duration_count))
        duration.add_metric(ident, buckets, c.duration_sum)
        yield duration

        labeled = CounterMetricFamily(
            "model_labeled_predictions_total", "Predictions with ground truth.", labels=base
        )
        labeled.add_metric(ident, c.labeled)
        yield labeled
        correct = CounterMetricFamily(
            "model_labeled_predictions_correct_total", "Of them, correct.", labels=base
        )
        correct.add_metric(ident, c.labeled_correct)
        yield correct

        missing = CounterMetricFamily(
            "model_feature_missing_total",
            "Predictions missing a feature.",
            labels=[*base, "feature"],
        )
        for feature, value in c.missing.items():
            missing.add_metric([*ident, feature], value)
        yield missing

        observations = CounterMetricFamily(
            "model_feature_observations_total",
            "Live feature values per reference bin.",
            labels=[*base, "feature", "bin"],
        )
        for (feature, bin_), value in c.observations.items():
            observations.add_metric([*ident, feature, bin_], value)
        yield observations

        reference = GaugeMetricFamily(
            "model_feature_reference_ratio",
            "Share of the reference data per bin.",
            labels=[*base, "feature", "bin"],
        )
        for feature, bins in REFERENCE.items():
            for bin_, share in _normalised(bins).items():
                reference.add_metric([*ident, feature, bin_], share)
        yield reference
