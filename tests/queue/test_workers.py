"""Workers: a killed consumer's job is finished by another; one workload, one job at a time."""

from __future__ import annotations

import asyncio
import contextlib

from receiver.store import RedisStore
from tests.conftest import REDIS_URL, wait_for
from tests.queue.helpers import job, pool, running
from tests.webhook.conftest import RecordingHandler


async def test_a_consumer_killed_after_taking_a_job_is_replaced_by_another(key_prefix):
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=60)
    await store.ensure_group()
    await store.ingest([("k", job(1).wire())], 60)
    # The first consumer takes the job and dies: no handler runs, nothing renews it.
    (taken,) = await store.read("killed", count=1, block_seconds=0.1)
    handler = RecordingHandler()
    survivor = pool(store, handler, consumer="survivor")
    async with running(survivor):
        await wait_for(lambda: handler.jobs, timeout=10, what="the survivor to take the job over")
    (ran, ctx) = handler.jobs[0]
    assert ran.dedup_key == job(1).dedup_key
    assert ctx.entry_id == taken.entry_id and ctx.deliveries >= 2
    assert (await store.queue_stats()).depth == 0, "the job was acknowledged once done"
    await store.close()


async def test_a_worker_cancelled_mid_job_leaves_it_for_another_to_finish(key_prefix):
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=60)
    await store.ensure_group()
    stuck = RecordingHandler()
    stuck.gate = asyncio.Event()  # never set: this worker hangs inside the job
    first = pool(store, stuck, consumer="first")
    task = asyncio.create_task(first.run())
    await store.ingest([("k", job(1).wire())], 60)
    await wait_for(lambda: stuck.running.get("ml-prod/fraud-scorer"), what="the job to start")
    first.stop()
    task.cancel()  # killed mid-job
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert stuck.jobs == []

    handler = RecordingHandler()
    async with running(pool(store, handler, consumer="second")):
        await wait_for(lambda: handler.jobs, timeout=10, what="the second worker to finish it")
    assert (await store.queue_stats()).depth == 0
    await store.close()


async def test_two_pools_never_run_two_jobs_of_one_workload_at_once(key_prefix):
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=60)
    await store.ensure_group()
    handler = RecordingHandler()
    original = handler.handle

    async def handle(job, ctx):
        # Yield a few times inside the job so overlapping jobs would be seen.
        for _ in range(5):
            await asyncio.sleep(0.005)
        await original(job, ctx)

    handler.handle = handle  # type: ignore[method-assign]
    items = [
        (f"k{i}", job(i, model="fraud-scorer" if i % 2 else "ranker").wire()) for i in range(20)
    ]
    await store.ingest(items, 60)
    async with running(
        pool(store, handler, consumer="a", lease=3), pool(store, handler, consumer="b", lease=3)
    ):
        await wait_for(lambda: len(handler.jobs) == 20, timeout=20, what="all 20 jobs")
    assert handler.max_running == {"ml-prod/fraud-scorer": 1, "ml-prod/ranker": 1}
    await store.close()
