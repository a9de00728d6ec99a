"""Helpers shared by this package's tests."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from receiver.metrics import Metrics
from receiver.models import Job
from receiver.worker import Readiness, WorkerPool


def job(n: int, model: str = "fraud-scorer") -> Job:
    return Job(
        dedup_key=f"fp{n}|t|firing",
        received_at=datetime.now(UTC),
        labels={"namespace": "ml-prod", "model": model, "model_version": "v3"},
    )


def pool(
    store,
    handler,
    *,
    lease: float = 0.6,
    consumer: str,
    concurrency: int = 4,
    readiness: Readiness | None = None,
) -> WorkerPool:
    if readiness is None:
        readiness = Readiness()
        readiness.event.set()
    return WorkerPool(
        store,
        handler,
        metrics=Metrics(),
        readiness=readiness,
        lease_seconds=lease,
        concurrency=concurrency,
        consumer=consumer,
        read_block_seconds=0.1,
    )


@contextlib.asynccontextmanager
async def running(*pools: WorkerPool):
    tasks = [asyncio.create_task(p.run()) for p in pools]
    try:
        yield
    finally:
        for p in pools:
            p.stop()
        await asyncio.wait(tasks, timeout=5)
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
