"""Rollback readiness: could each model of the policy be rolled back now?

A rollback that cannot run is otherwise discovered during the incident. Every
``RECEIVER_READINESS_INTERVAL`` one replica (the holder of the ``readiness`` lease) asks
each model: does the workload exist, does the decision find a target that is not marked
bad, does the API server accept the rollback's own write in a server-side dry run (its
authorization and validation, without a change), and do the health routes answer. A check
also runs on demand (``POST /api/models/{namespace}/{model}/check``).

Results are kept in the store with the time of the check, so every replica answers the
API the same, and **every replica exports them** as ``receiver_rollback_ready``: the
shipped ``ModelRollbackNotReady`` alert takes ``min by (namespace, model)`` over replicas,
so replicas must agree, and a replica that stops checking (lost the lease, or was never
the holder) must not keep a stale 0 of its own. A result nobody has renewed for
``RESULT_TTL_INTERVALS`` intervals expires from the store, and each replica stops
exporting it (by its age, even while the store cannot be read).

What it must not do: change anything (every write is ``dryRun=All``), send inferences to
a production model (only the health routes are probed), or count a pause as not ready (a
pause is a person's choice, shown beside readiness and exported as its own metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Literal

import aiohttp
from pydantic import BaseModel, ValidationError

from receiver import annotations as ours
from receiver.clients.k8s import Clusters
from receiver.errors import ConfigError, KubeError, KubeUnavailable, StoreUnavailable
from receiver.metrics import Metrics
from receiver.models import WorkloadView, rfc3339, utcnow
from receiver.policy import ModelPolicy, Policy
from receiver.rollback import StrategyUnavailable, executor_for
from receiver.rollback.base import Preflight
from receiver.store import Store, model_key
from receiver.verify.probe import probe_model

log = logging.getLogger(__name__)

__all__ = [
    "CHECK_CONCURRENCY",
    "LEASE_NAME",
    "RESULT_TTL_INTERVALS",
    "PauseMark",
    "ReadinessResult",
    "RollbackReadiness",
    "TargetMark",
    "result_key",
]

LEASE_NAME = "readiness"
"""The store lease whose holder runs the periodic checks."""

LEASE_INTERVALS = 2
"""The lease lasts two intervals and is renewed at every tick (and during a long cycle): a
holder that dies is replaced by another replica within about three intervals."""

RESULT_TTL_INTERVALS = 4
"""A result is kept (and exported) this many intervals after its check: longer than a
holder's replacement takes, short enough that a check nobody runs any more stops being
exported within minutes (the alert waits 15m)."""

CHECK_CONCURRENCY = 16
"""Models checked at once: each check is a few API requests and health probes, mostly
waiting on the network."""

ResultName = Literal["ready", "not_ready", "error"]
RESULTS: tuple[ResultName, ...] = ("ready", "not_ready", "error")


class TargetMark(BaseModel):
    """The revision a rollback would restore now (rule 7, or the strategy's fixed target)."""

    version: str
    revision: str
    name: str


class PauseMark(BaseModel):
    """The model's pause (``rollback-receiver.io/paused``) as the check read it."""

    actor: str
    reason: str
    at: datetime | None = None


class ReadinessResult(BaseModel):
    """One model's latest check, as stored and as the API shows it."""

    cluster: str = ""
    namespace: str
    model: str
    strategy: str
    result: ResultName
    """``ready``; ``not_ready`` (the reasons say why); ``error``: Kubernetes could not be
    reached to tell (exported as not ready too: a rollback could not run either)."""
    reasons: list[str]
    checked_at: datetime
    serving_version: str = ""
    serving_revision: str = ""
    target: TargetMark | None = None
    pause: PauseMark | None = None

    @property
    def ready(self) -> bool:
        return self.result == "ready"

    def readiness(self) -> dict[str, object]:
        """The ``readiness`` object of the API: verdict, reasons and time of the check."""
        return {
            "ready": self.ready,
            "result": self.result,
            "reasons": list(self.reasons),
            "checked_at": rfc3339(self.checked_at),
        }


def result_key(model: ModelPolicy) -> str:
    """Where a model's result is kept in the store."""
    return "readiness:" + model_key(model.namespace, model.name, model.cluster)


class RollbackReadiness:
    """Checks models, keeps their results in the store, exports them as metrics."""

    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        clusters: Clusters,
        metrics: Metrics,
        session: aiohttp.ClientSession,
        interval_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        concurrency: int = CHECK_CONCURRENCY,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clusters = clusters
        self.metrics = metrics
        self.session = session
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.owner = owner or f"readiness-{uuid.uuid4().hex[:12]}"
        self._gate = asyncio.Semaphore(concurrency)
        self._latest: dict[tuple[str, str, str], ReadinessResult] = {}
        self._exported: set[tuple[str, str]] = set()
        self._holding = False
        for result in RESULTS:
            metrics.readiness_checks.labels(result=result)

    @property
    def lease_seconds(self) -> float:
        return LEASE_INTERVALS * self.interval_seconds

    @property
    def result_ttl_seconds(self) -> float:
        return RESULT_TTL_INTERVALS * self.interval_seconds

    @property
    def holding(self) -> bool:
        """True while this replica holds the lease of the periodic checks."""
        return self._holding

    # -- checks -----------------------------------------------------------------------------

    async def check(self, model: ModelPolicy) -> ReadinessResult:
        """Check one model now, keep the result in the store and export it here.

        Never raises for what it finds (that is the result); a store that cannot keep the
        result is logged and the result still returned."""
        async with self._gate:
            result = await self._evaluate(model)
        self.metrics.readiness_checks.labels(result=result.result).inc()
        previous = self._latest.get(model.key)
        if previous is None or previous.ready != result.ready:
            level = logging.INFO if result.ready else logging.WARNING
            log.log(
                level,
                "rollback readiness of %s/%s: %s%s",
                model.namespace,
                model.name,
                result.result,
                "".join(f"; {r}" for r in result.reasons),
                extra={"namespace": model.namespace, "model": model.name},
            )
        try:
            await self.store.put_value(
                result_key(model), result.model_dump_json(), self.result_ttl_seconds
            )
        except StoreUnavailable as e:
            log.warning("readiness of %s/%s not stored: %s", model.namespace, model.name, e)
        self._remember([(model, result)])
        self._export(self.clock())
        return result

    async def check_all(self) -> list[ReadinessResult]:
        """Check every model of the policy (``CHECK_CONCURRENCY`` at once)."""
        return list(await asyncio.gather(*(self.check(m) for m in self.policy.models)))

    async def _evaluate(self, model: ModelPolicy) -> ReadinessResult:
        strategy = self.policy.effective(model).strategy.value
        reasons: list[str] = []
        unreachable = False
        preflight = Preflight(())
        try:
            executor = executor_for(strategy)
            kube = await self.clusters.get(model.cluster)
            preflight = await executor.readiness(kube, model, self.session)
            reasons += preflight.problems
        except StrategyUnavailable as e:
            reasons.append(str(e))
        except ConfigError as e:
            where = f"cluster {model.cluster!r}" if model.cluster else "Kubernetes"
            reasons.append(f"no access to {where}: {e}")
        except KubeUnavailable as e:
            unreachable = True
            reasons.append(f"Kubernetes could not be reached to tell: {e}")
        except KubeError as e:
            reasons.append(str(e))
        except Exception as e:
            log.exception("readiness check of %s/%s failed", model.namespace, model.name)
            unreachable = True
            reasons.append(f"the check itself failed ({type(e).__name__}); see the receiver's log")
        for probe in preflight.probes:
            verdict = await probe_model(
                self.session,
                base_url=probe.base_url,
                model=model.name,
                version=probe.version,
                paths=model.health.paths,
                sample_request=None,  # no inference on production traffic's behalf
                request_timeout=model.health.request_timeout,
            )
            if not verdict.healthy:
                reasons.append(f"health routes ({probe.name}): {verdict.reason}")
        view = preflight.view
        target = preflight.target
        outcome: ResultName = "error" if unreachable else "not_ready" if reasons else "ready"
        return ReadinessResult(
            cluster=model.cluster,
            namespace=model.namespace,
            model=model.name,
            strategy=strategy,
            result=outcome,
            reasons=reasons,
            checked_at=self.clock(),
            serving_version=view.serving_version if view else "",
            serving_revision=view.serving_revision if view else "",
            target=(
                TargetMark(version=target.version, revision=str(target.number), name=target.name)
                if target is not None
                else None
            ),
            pause=_pause(view),
        )

    # -- results ----------------------------------------------------------------------------

    async def latest(self) -> dict[tuple[str, str, str], ReadinessResult]:
        """Every model's latest result still in force (by ``ModelPolicy.key``): read from
        the store, so every replica answers the same; the last ones read when the store
        cannot be reached. Also refreshes this replica's exported metrics."""
        models = list(self.policy.models)
        try:
            raws = await self.store.get_values([result_key(m) for m in models])
        except StoreUnavailable as e:
            log.warning("readiness results not read from the store: %s", e)
        else:
            found = []
            for model, raw in zip(models, raws, strict=True):
                if raw is None:
                    continue
                try:
                    found.append((model, ReadinessResult.model_validate_json(raw)))
                except ValidationError:
                    log.warning("unreadable readiness result of %s/%s", model.namespace, model.name)
            self._remember(found)
        now = self.clock()
        self._export(now)
        return {key: r for key, r in self._latest.items() if self._fresh(r, now)}

    def _remember(self, results: Iterable[tuple[ModelPolicy, ReadinessResult]]) -> None:
        """Keep the newer of what is known and what was just read or checked."""
        for model, result in results:
            known = self._latest.get(model.key)
            if known is None or known.checked_at <= result.checked_at:
                self._latest[model.key] = result

    def _fresh(self, result: ReadinessResult, now: datetime) -> bool:
        return now - result.checked_at < timedelta(seconds=self.result_ttl_seconds)

    def _export(self, now: datetime) -> None:
        """``receiver_rollback_ready`` from the results in force; series of results that
        aged out are removed, never left at their last value. Models of one name and
        namespace in several clusters share a series: ready only if all are."""
        values: dict[tuple[str, str], int] = {}
        for result in self._latest.values():
            if not self._fresh(result, now):
                continue
            key = (result.namespace, result.model)
            values[key] = min(values.get(key, 1), 1 if result.ready else 0)
        for namespace, model in self._exported - values.keys():
            with contextlib.suppress(KeyError):
                self.metrics.rollback_ready.remove(namespace, model)
        for (namespace, model), value in values.items():
            self.metrics.rollback_ready.labels(namespace=namespace, model=model).set(value)
        self._exported = set(values)

    # -- the periodic checks ------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping``: every interval, check every model if this replica holds the
        lease, then export the stored results (on every replica).

        The first cycle comes one interval after start: results kept in the store by the
        replicas that ran before are exported at once, and a rolling restart does not
        check every model again at each new replica's start."""
        await self.latest()
        try:
            while not await _wait(stopping, self.interval_seconds):
                if await self._lease():
                    try:
                        await self._cycle()
                    except Exception:
                        log.exception("readiness cycle failed; the next one runs in an interval")
                await self.latest()
        finally:
            await self._release()

    async def _lease(self) -> bool:
        """Take or keep the lease; False when another replica holds it or the store fails."""
        try:
            if self._holding and await self.store.renew_lease(
                LEASE_NAME, self.owner, self.lease_seconds
            ):
                return True
            self._holding = await self.store.acquire_lease(
                LEASE_NAME, self.owner, self.lease_seconds
            )
        except StoreUnavailable as e:
            log.warning("readiness lease: %s", e)
            self._holding = False
        return self._holding

    async def _cycle(self) -> None:
        """One pass over every model, renewing the lease as it goes; a lease lost meanwhile
        ends the pass (another replica checks from then on)."""
        task = asyncio.create_task(self.check_all(), name="readiness-cycle")
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.lease_seconds / 3)
                if done:
                    task.result()
                    return
                if not await self._lease():
                    log.warning("readiness lease lost during a check; another replica goes on")
                    return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _release(self) -> None:
        """Hand the lease over at shutdown, so another replica checks at its next tick."""
        if not self._holding:
            return
        self._holding = False
        try:
            await self.store.release_lease(LEASE_NAME, self.owner)
        except StoreUnavailable as e:
            log.warning("readiness lease not released (it expires by itself): %s", e)


def _pause(view: WorkloadView | None) -> PauseMark | None:
    pause = ours.pause(view.annotations) if view is not None else None
    if pause is None:
        return None
    return PauseMark(actor=pause.actor, reason=pause.reason, at=pause.at)


async def _wait(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stopping``; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()
