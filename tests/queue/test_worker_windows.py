"""Failure windows of the workers: a lost model lease, a storm of leases held elsewhere,
Redis losing its data, and more stale jobs than one page of XAUTOCLAIM.

Each fault is injected at the moment it matters: a store whose lease renewal answers False
or fails at a chosen call, the lease key overwritten or deleted in the real Redis, a second
pool acting as another replica, the stream's keys deleted under running workers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from receiver.errors import StoreUnavailable
from receiver.metrics import Metrics
from receiver.models import Job
from receiver.store import CONSUMER_GROUP, RedisStore, model_key
from receiver.worker import JobContext, Readiness, supervise
from tests.conftest import REDIS_URL, wait_for
from tests.queue.helpers import job, pool, running

FRAUD = "ml-prod/fraud-scorer"


@dataclass(frozen=True)
class Start:
    """What a job saw when it started: who held its model's lease, and what ``observe`` said."""

    key: str
    ctx: JobContext
    holder: str | None
    observed: Any


class Workload:
    """A handler acting on models: a job with a gate waits for the test's go; every start
    records the lease holder found in Redis, so a job run without the lease is seen."""

    def __init__(
        self, redis: aioredis.Redis, prefix: str, observe: Callable[[], Any] | None = None
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.observe = observe
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[Start] = []
        self.cancelled: list[str] = []
        self.holders_at_cancel: list[str | None] = []
        self.finished: dict[str, JobContext] = {}
        self.running: set[str] = set()
        self.max_running = 0

    def lease_key(self, job: Job) -> str:
        return model_key(job.namespace, job.model, job.cluster)

    def gate(self, job: Job) -> asyncio.Event:
        return self.gates.setdefault(job.dedup_key, asyncio.Event())

    async def handle(self, job: Job, ctx: JobContext) -> None:
        raw = await self.redis.get(f"{self.prefix}lease:{self.lease_key(job)}")
        observed = self.observe() if self.observe else None
        self.started.append(Start(job.dedup_key, ctx, raw.decode() if raw else None, observed))
        self.running.add(job.dedup_key)
        self.max_running = max(self.max_running, len(self.running))
        try:
            gate = self.gates.get(job.dedup_key)
            if gate is not None:
                await gate.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(job.dedup_key)
            raw = await self.redis.get(f"{self.prefix}lease:{self.lease_key(job)}")
            self.holders_at_cancel.append(raw.decode() if raw else None)
            raise
        finally:
            self.running.discard(job.dedup_key)
        self.finished[job.dedup_key] = ctx

    def assert_every_start_held_the_lease(self) -> None:
        for s in self.started:
            assert s.holder is not None and s.holder.startswith(s.ctx.consumer + ":"), (
                f"job {s.key} ran on {s.ctx.consumer} while the lease was held by {s.holder}"
            )


class LeaseFaults(RedisStore):
    """The real Redis store; ``renew_lease`` answers as the test decides at chosen calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renewals = 0
        self.answers: dict[int, bool | StoreUnavailable] = {}  # call number -> fault
        self.failing: StoreUnavailable | None = None  # raised by every call while set
        self.results: list[bool | str] = []  # what each call answered ("error" if it raised)

    async def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        self.renewals += 1
        fault = self.failing or self.answers.get(self.renewals)
        if isinstance(fault, StoreUnavailable):
            self.results.append("error")
            raise fault
        if fault is False:
            self.results.append(False)
            return False
        held = await super().renew_lease(name, owner, ttl_seconds)
        self.results.append(held)
        return held


@pytest.fixture
async def redis(key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def store(key_prefix: str) -> AsyncIterator[LeaseFaults]:
    s = LeaseFaults.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=60)
    await s.ensure_group()
    yield s  # type: ignore[misc]
    await s.close()


async def pending_ids(redis: aioredis.Redis, prefix: str) -> set[str]:
    rows = await redis.xpending_range(f"{prefix}jobs", CONSUMER_GROUP, "-", "+", 1000)
    return {r["message_id"].decode() for r in rows}


async def held_by(redis: aioredis.Redis, prefix: str, consumer: str, count: int) -> bool:
    summary = await redis.xpending(f"{prefix}jobs", CONSUMER_GROUP)
    held = {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}
    return held.get(consumer) == count


async def depth(redis: aioredis.Redis, prefix: str) -> int:
    return int(await redis.xlen(f"{prefix}jobs"))


# -- a lost model lease --------------------------------------------------------------------


async def test_a_lease_taken_by_another_holder_cancels_the_job_and_leaves_it_pending(
    store, redis, key_prefix
):
    work = Workload(redis, key_prefix)
    first, second = job(1), job(2)
    work.gate(first)
    await store.ingest([("k1", first.wire()), ("k2", second.wire())], 60)
    async with running(pool(store, work, consumer="a", lease=1.5)):
        await wait_for(lambda: work.running == {first.dedup_key}, what="the first job to start")
        (started,) = work.started
        # Another replica holds the model's lease now (it found it expired, say).
        await redis.set(f"{key_prefix}lease:{FRAUD}", "other-replica", px=60_000)
        await wait_for(
            lambda: first.dedup_key in work.cancelled,
            timeout=10,
            what="the job in flight to be cancelled",
        )
        assert started.ctx.entry_id in await pending_ids(redis, key_prefix), (
            "a job cancelled for its lease stays pending"
        )
        work.gate(first).set()
        await redis.delete(f"{key_prefix}lease:{FRAUD}")  # the other holder is done
        await wait_for(lambda: len(work.finished) == 2, timeout=10, what="both jobs to finish")
    work.assert_every_start_held_the_lease()
    assert work.finished[first.dedup_key].deliveries >= 2, "re-driven, not finished in place"
    assert await depth(redis, key_prefix) == 0


async def test_a_renewal_answered_false_cancels_the_job_in_flight(store, redis, key_prefix):
    work = Workload(redis, key_prefix)
    only = job(1)
    work.gate(only)
    await store.ingest([("k1", only.wire())], 60)
    async with running(pool(store, work, consumer="a", lease=1.5)):
        await wait_for(lambda: work.running, what="the job to start")
        store.answers[store.renewals + 1] = False
        await wait_for(lambda: work.cancelled, timeout=10, what="the job to be cancelled")
        assert await depth(redis, key_prefix) == 1, "not acknowledged"
        work.gate(only).set()
        await wait_for(lambda: work.finished, timeout=10, what="the job to be re-driven")
    assert work.finished[only.dedup_key].deliveries >= 2
    assert await depth(redis, key_prefix) == 0


async def test_a_second_replica_taking_an_expired_lease_stops_the_first(store, redis, key_prefix):
    work = Workload(redis, key_prefix)
    ours = [job(n) for n in range(8)]
    work.gate(ours[0])
    await store.ingest([(f"k{n}", j.wire()) for n, j in enumerate(ours)], 60)
    # One slot: this replica holds 8 jobs at most, so the next job goes to the other one.
    first = pool(store, work, consumer="a", concurrency=1, lease=1.5)
    async with running(first):
        await wait_for(lambda: work.running == {ours[0].dedup_key}, what="the first job")
        await wait_for(lambda: held_by(redis, key_prefix, "a", 8), what="the first to be full")
        theirs = job(100)
        async with running(pool(store, work, consumer="b", concurrency=1, lease=1.5)):
            await store.ingest([("k100", theirs.wire())], 60)
            # The first replica's lease expires (a long pause, say); the second takes it.
            await redis.delete(f"{key_prefix}lease:{FRAUD}")
            await wait_for(lambda: work.cancelled, timeout=10, what="the first to stop its job")
            assert ours[0].dedup_key in work.cancelled
            work.gate(ours[0]).set()
            await wait_for(lambda: len(work.finished) == 9, timeout=15, what="every job to finish")
    work.assert_every_start_held_the_lease()
    assert work.finished[theirs.dedup_key].consumer == "b"
    assert work.finished[ours[0].dedup_key].deliveries >= 2
    assert await depth(redis, key_prefix) == 0


async def test_a_short_redis_failure_during_renewal_does_not_cancel_the_job(
    store, redis, key_prefix
):
    work = Workload(redis, key_prefix)
    only = job(1)
    work.gate(only)
    await store.ingest([("k1", only.wire())], 60)
    async with running(pool(store, work, consumer="a", lease=1.5)):
        await wait_for(lambda: work.running, what="the job to start")
        failed_at = store.renewals + 1
        store.answers[failed_at] = StoreUnavailable("Redis renew lease failed: timeout")
        await wait_for(
            lambda: True in store.results[failed_at:],
            timeout=10,
            what="a renewal to succeed after the failed one",
        )
        assert store.results[failed_at - 1] == "error"
        assert work.cancelled == []
        work.gate(only).set()
        await wait_for(lambda: work.finished, what="the job to finish")
    assert work.cancelled == []
    assert work.finished[only.dedup_key].deliveries == 1
    assert await depth(redis, key_prefix) == 0


async def test_a_lasting_redis_failure_cancels_the_job_before_its_lease_can_expire(
    store, redis, key_prefix
):
    work = Workload(redis, key_prefix)
    only = job(1)
    work.gate(only)
    await store.ingest([("k1", only.wire())], 60)
    async with running(pool(store, work, consumer="a", lease=1.5)):
        await wait_for(lambda: work.running, what="the job to start")
        store.failing = StoreUnavailable("Redis renew lease failed: connection refused")
        await wait_for(lambda: work.cancelled, timeout=10, what="the job to be cancelled")
        assert False not in store.results, "cancelled for the outage, not for an answer"
        assert await depth(redis, key_prefix) == 1, "not acknowledged"
        store.failing = None
        work.gate(only).set()
        await wait_for(lambda: work.finished, timeout=10, what="the job to be re-driven")
    # Cancelled before its lease could expire, so before another replica could take it.
    assert work.holders_at_cancel[0] is not None
    assert work.holders_at_cancel[0].startswith("a:")
    assert work.finished[only.dedup_key].deliveries >= 2
    assert await depth(redis, key_prefix) == 0


# -- a storm of models whose leases are held elsewhere ---------------------------------------


async def test_a_model_leased_elsewhere_does_not_take_the_slot_of_another(store, redis, key_prefix):
    work = Workload(redis, key_prefix)
    held, free = job(1, model="fraud-scorer"), job(2, model="ranker")
    await redis.set(f"{key_prefix}lease:{FRAUD}", "other-replica", px=60_000)
    await store.ingest([("k1", held.wire()), ("k2", free.wire())], 60)
    async with running(pool(store, work, consumer="a", concurrency=1)):
        await wait_for(
            lambda: free.dedup_key in work.finished,
            timeout=10,
            what="the free model's job to run while the other model waits for its lease",
        )
        assert held.dedup_key not in work.finished
        await redis.delete(f"{key_prefix}lease:{FRAUD}")
        await wait_for(lambda: held.dedup_key in work.finished, what="the waiting model's job")
    work.assert_every_start_held_the_lease()


async def test_jobs_running_at_once_stay_within_the_slots(store, redis, key_prefix):
    work = Workload(redis, key_prefix)
    jobs = [job(n, model=f"model-{n}") for n in range(5)]
    for j in jobs:
        work.gate(j)
    await store.ingest([(f"k{n}", j.wire()) for n, j in enumerate(jobs)], 60)

    async def every_lease_held() -> bool:
        held = [await redis.exists(f"{key_prefix}lease:ml-prod/{j.model}") for j in jobs]
        return all(held)

    async with running(pool(store, work, consumer="a", concurrency=2)):
        # Every model's lease is taken; two jobs run, three wait for a slot.
        await wait_for(lambda: len(work.running) == 2, what="two jobs to run")
        await wait_for(every_lease_held, what="every lease to be taken")
        for _ in range(len(jobs)):
            await wait_for(lambda: work.running, what="the next job to take the free slot")
            assert len(work.running) <= 2
            first = sorted(work.running)[0]
            work.gates[first].set()
            await wait_for(lambda k=first: k in work.finished, what="a job to finish")
    assert work.max_running == 2


# -- Redis data loss and readiness ------------------------------------------------------------


async def test_jobs_waiting_for_their_model_do_not_start_while_the_replica_is_unready(
    store, redis, key_prefix
):
    readiness = Readiness()
    readiness.event.set()
    work = Workload(redis, key_prefix, observe=lambda: readiness.event.is_set())
    first, second = job(1), job(2)
    work.gate(first)
    await store.ingest([("k1", first.wire()), ("k2", second.wire())], 60)
    async with running(pool(store, work, consumer="a", readiness=readiness)):
        await wait_for(lambda: work.running == {first.dedup_key}, what="the first job")
        readiness.block("startup", "Redis holds no epoch: re-reading start-up facts")
        work.gate(first).set()
        await wait_for(lambda: first.dedup_key in work.finished, what="the first job to end")
        readiness.unblock("startup")
        await wait_for(lambda: second.dedup_key in work.finished, what="the second job")
    assert [s.observed for s in work.started] == [True, True], "a job started while unready"


@contextlib.asynccontextmanager
async def supervised(store: RedisStore, readiness: Readiness, restore: Callable[[], Any]):
    stopping = asyncio.Event()
    # A long interval: only a worker's report (or the first check) makes it look again.
    task = asyncio.create_task(
        supervise(store, readiness, Metrics(), restore=restore, interval=60, stopping=stopping)
    )
    try:
        yield
    finally:
        stopping.set()
        await asyncio.wait({task}, timeout=10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def delete_keys(redis: aioredis.Redis, pattern: str) -> None:
    keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
    if keys:
        await redis.delete(*keys)


@pytest.mark.parametrize("lost", ["everything", "the stream"])
async def test_after_redis_lost_its_data_no_job_runs_before_start_up_facts_are_reread(
    redis, key_prefix, lost
):
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=60)
    readiness = Readiness()
    restored: list[int] = []
    groups_at_restore: list[int] = []

    async def restore() -> None:
        groups = await redis.xinfo_groups(f"{key_prefix}jobs")
        groups_at_restore.append(len(groups))
        restored.append(len(restored) + 1)

    work = Workload(redis, key_prefix, observe=lambda: len(restored))
    before, after = job(1), job(2)
    async with (
        supervised(store, readiness, restore),
        running(pool(store, work, consumer="a", readiness=readiness)),
    ):
        await store.ingest([("k1", before.wire())], 60)
        await wait_for(lambda: before.dedup_key in work.finished, what="a job before the loss")
        if lost == "everything":  # a restart without persistence, or a flush
            await delete_keys(redis, f"{key_prefix}*")
        else:  # the stream alone (evicted): the epoch is still there
            await redis.delete(f"{key_prefix}jobs")
        # The webhook still accepts alerts: XADD creates the stream without its group.
        await store.ingest([("k2", after.wire())], 60)
        await wait_for(lambda: after.dedup_key in work.finished, timeout=10, what="the job")
    await store.close()
    assert [s.observed for s in work.started] == [1, 2], (
        "the job after the loss ran before the start-up facts were read again"
    )
    assert groups_at_restore == [1, 1], "the supervisor creates the group, then re-reads"


# -- more stale jobs than one page ----------------------------------------------------------


async def test_claim_stale_follows_the_cursor_past_jobs_still_held(store, redis, key_prefix):
    await store.ingest([(f"k{n}", job(n).wire()) for n in range(40)], 60)
    live = await store.read("live", count=30, block_seconds=0.1)
    dead = await store.read("dead", count=10, block_seconds=0.1)
    assert (len(live), len(dead)) == (30, 10)

    async def dead_idle_ms() -> int:
        rows = await redis.xpending_range(
            f"{key_prefix}jobs", CONSUMER_GROUP, "-", "+", 10, consumername="dead"
        )
        return min(int(r["time_since_delivered"]) for r in rows)

    await wait_for(lambda: _at_least(dead_idle_ms(), 1000), what="the dead jobs to go stale")
    claimed: list[str] = []
    for _ in range(5):
        for q in live:  # the live consumer keeps its 30 jobs, ahead in the pending list
            assert await store.renew_job("live", q.entry_id)
        # Two at a time: one XAUTOCLAIM page scans 20 pending entries, all of them live.
        got = await store.claim_stale("thief", min_idle_seconds=1.0, count=2)
        assert len(got) == 2
        claimed += [g.entry_id for g in got]
    assert claimed == [d.entry_id for d in dead]
    assert all(g.deliveries == 2 for g in got)


async def _at_least(value: Any, bound: int) -> bool:
    return await value >= bound
