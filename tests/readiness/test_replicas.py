"""Readiness across replicas: one checks at a time under the lease, every one exports the
stored results, and a result nobody renews stops being exported instead of staying at 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest

from receiver.clients.k8s import Clusters
from receiver.metrics import Metrics
from receiver.policy import load_policy
from receiver.readiness import RESULT_TTL_INTERVALS, RollbackReadiness
from receiver.store import RedisStore
from tests.conftest import REDIS_URL, wait_for
from tests.worker.conftest import MODEL, NS, serving_version, write_policy

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def ready_value(metrics: Metrics) -> float | None:
    """The exported ``receiver_rollback_ready`` of the model, None when not exported."""
    return metrics.registry.get_sample_value(
        "receiver_rollback_ready", {"namespace": NS, "model": MODEL}
    )


def checks(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("receiver_readiness_checks_total", {"result": result})
    return value or 0.0


@pytest.fixture
async def make_replica(
    kube, make_model_server, key_prefix, tmp_path
) -> AsyncIterator[Callable[..., RollbackReadiness]]:
    """Replicas of the readiness checker sharing one Redis, each with its own metrics."""
    await kube.create_namespace(NS)
    await kube.create_deployment(NS, MODEL, "v1")
    await kube.set_version(NS, MODEL, "v2", wait=True)
    server = await make_model_server(MODEL, version_source=lambda: serving_version(kube))
    policy = load_policy(write_policy(tmp_path / "policy.yaml", server.url))
    session = aiohttp.ClientSession()
    clusters = Clusters(kube.kubeconfig)
    stores: list[RedisStore] = []

    def make(*, interval: float = 60.0, clock: Callable[[], datetime] | None = None) -> Any:
        store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=3600)
        stores.append(store)
        return RollbackReadiness(
            store=store,
            policy=policy,
            clusters=clusters,
            metrics=Metrics(),
            session=session,
            interval_seconds=interval,
            **({"clock": clock} if clock else {}),
        )

    yield make
    for store in stores:
        await store.close()
    await clusters.close()
    await session.close()


async def test_every_replica_exports_the_result_one_of_them_checked(make_replica, kube):
    checker, other = make_replica(), make_replica()
    assert ready_value(other.metrics) is None  # nothing known yet: nothing exported

    await checker.check(checker.policy.models[0])
    assert ready_value(checker.metrics) == 1.0
    await other.latest()
    assert ready_value(other.metrics) == 1.0
    assert checks(other.metrics, "ready") == 0  # it checked nothing itself

    kube.fail("PATCH", f"*/deployments/{MODEL}", 403, times=None)
    await checker.check(checker.policy.models[0])
    await other.latest()
    assert ready_value(checker.metrics) == ready_value(other.metrics) == 0.0
    text = generate_latest(other.metrics.registry).decode()
    assert f'receiver_rollback_ready{{model="{MODEL}",namespace="{NS}"}} 0.0' in text


async def test_a_result_nobody_renews_stops_being_exported_instead_of_staying_at_zero(
    make_replica, kube
):
    clock = Clock()
    checker, other = make_replica(clock=clock), make_replica(clock=clock)
    kube.fail("PATCH", f"*/deployments/{MODEL}", 403, times=None)
    await checker.check(checker.policy.models[0])
    await other.latest()
    assert ready_value(other.metrics) == 0.0

    clock.now = T0 + timedelta(seconds=RESULT_TTL_INTERVALS * 60 - 1)
    await other.latest()
    assert ready_value(other.metrics) == 0.0
    clock.now = T0 + timedelta(seconds=RESULT_TTL_INTERVALS * 60)
    results = await other.latest()
    assert results == {}
    assert ready_value(other.metrics) is None
    assert "receiver_rollback_ready{" not in generate_latest(other.metrics.registry).decode()


async def test_one_replica_checks_at_a_time_and_another_takes_over_when_it_stops(make_replica):
    first, second = make_replica(interval=1.0), make_replica(interval=1.0)
    stops = {first: asyncio.Event(), second: asyncio.Event()}
    tasks = {r: asyncio.create_task(r.run(stops[r])) for r in (first, second)}
    try:
        holder = await wait_for(
            lambda: next((r for r in (first, second) if checks(r.metrics, "ready")), None),
            timeout=10,
            what="a first periodic check",
        )
        follower = second if holder is first else first
        # A second cycle: the follower had every chance to check by now, and did not.
        await wait_for(lambda: checks(holder.metrics, "ready") >= 2, timeout=10, what="cycle 2")
        assert holder.holding and not follower.holding
        assert checks(follower.metrics, "ready") == 0
        # The follower exports what the holder checked.
        await wait_for(lambda: ready_value(follower.metrics) == 1.0, timeout=5, what="export")

        stops[holder].set()
        await tasks[holder]
        assert not holder.holding
        await wait_for(
            lambda: checks(follower.metrics, "ready") > 0, timeout=10, what="the take-over"
        )
        assert follower.holding
    finally:
        for replica, task in tasks.items():
            stops[replica].set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
