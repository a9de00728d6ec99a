"""Dedup, queue, lease and message-ref semantics, the same for Redis and the embedded store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from receiver.models import Incident, Job
from receiver.store import MemoryStore, RedisStore, Store
from tests.conftest import REDIS_URL


def job(n: int = 0, **labels: str) -> Job:
    return Job(
        dedup_key=f"fp{n}|2026-11-25T08:00:00Z|firing",
        received_at=datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
        labels={"namespace": "ml-prod", "model": "fraud-scorer", "model_version": "v3", **labels},
    )


async def test_ingest_claims_each_key_once_and_enqueues_only_new_ones(store: Store):
    first = await store.ingest([("a", job(1).wire()), ("b", job(2).wire())], ttl_seconds=60)
    second = await store.ingest([("b", job(2).wire()), ("c", job(3).wire())], ttl_seconds=60)
    assert first == [True, True]
    assert second == [False, True]
    assert (await store.queue_stats()).depth == 3


async def test_concurrent_ingest_of_one_key_enqueues_one_job(store: Store):
    results = await asyncio.gather(*(store.ingest([("same", job().wire())], 60) for _ in range(50)))
    assert sum(r[0] for r in results) == 1
    assert (await store.queue_stats()).depth == 1


async def test_read_hands_each_job_to_one_consumer_and_ack_removes_it(store: Store):
    await store.ingest([("a", job(1).wire())], 60)
    got_a = await store.read("a", count=10, block_seconds=0.1)
    got_b = await store.read("b", count=10, block_seconds=0.1)
    assert [q.job.dedup_key for q in got_a] == [job(1).dedup_key]
    assert got_b == []
    await store.ack(got_a[0].entry_id)
    assert (await store.queue_stats()).depth == 0


async def test_a_job_left_idle_by_a_dead_consumer_is_taken_over(store: Store):
    await store.ingest([("a", job(1).wire())], 60)
    (taken,) = await store.read("dead", count=1, block_seconds=0.1)
    # Not idle long enough yet: nobody may take it.
    assert await store.claim_stale("alive", min_idle_seconds=30, count=10) == []

    async def claimed():
        return await store.claim_stale("alive", min_idle_seconds=0.2, count=10)

    deadline = asyncio.get_running_loop().time() + 5
    while not (got := await claimed()):
        assert asyncio.get_running_loop().time() < deadline, "stale job never claimable"
        await asyncio.sleep(0.05)
    assert [g.entry_id for g in got] == [taken.entry_id]
    assert got[0].deliveries == 2
    # The dead consumer, waking up, learns it lost the job.
    assert await store.renew_job("dead", taken.entry_id) is False
    assert await store.renew_job("alive", taken.entry_id) is True


async def test_a_renewed_job_is_not_taken_over(store: Store):
    await store.ingest([("a", job(1).wire())], 60)
    (taken,) = await store.read("worker", count=1, block_seconds=0.1)
    for _ in range(5):
        await asyncio.sleep(0.1)
        assert await store.renew_job("worker", taken.entry_id)
        assert await store.claim_stale("thief", min_idle_seconds=0.25, count=10) == []


async def test_lease_is_exclusive_renewable_and_released_only_by_its_owner(store: Store):
    assert await store.acquire_lease("ml-prod/fraud-scorer", "a", 5)
    assert not await store.acquire_lease("ml-prod/fraud-scorer", "b", 5)
    assert await store.renew_lease("ml-prod/fraud-scorer", "a", 5)
    assert not await store.renew_lease("ml-prod/fraud-scorer", "b", 5)
    await store.release_lease("ml-prod/fraud-scorer", "b")  # not b's: no effect
    assert not await store.acquire_lease("ml-prod/fraud-scorer", "b", 5)
    await store.release_lease("ml-prod/fraud-scorer", "a")
    assert await store.acquire_lease("ml-prod/fraud-scorer", "b", 5)


async def test_an_expired_lease_can_be_taken(store: Store):
    assert await store.acquire_lease("m", "a", 0.1)
    deadline = asyncio.get_running_loop().time() + 5
    while not await store.acquire_lease("m", "b", 5):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert not await store.renew_lease("m", "a", 5), "a lost its lease and must know it"


async def test_claim_once_is_true_only_the_first_time(store: Store):
    assert await store.claim_once("cause", 60)
    assert not await store.claim_once("cause", 60)
    assert await store.claim_once("other", 60)


async def test_epoch_marks_that_start_up_facts_were_read(store: Store):
    assert await store.get_epoch() is None
    await store.set_epoch("e1")
    assert await store.get_epoch() == "e1"


async def test_recent_rollbacks_are_bounded_by_since(store: Store):
    now = datetime.now(UTC)
    for minutes in (90, 30, 5):
        await store.record_rollback("ml-prod/fraud-scorer", now - timedelta(minutes=minutes))
    recent = await store.recent_rollbacks("ml-prod/fraud-scorer", now - timedelta(hours=1))
    assert len(recent) == 2
    assert all(r >= now - timedelta(hours=1) for r in recent)


async def test_message_refs_are_kept_per_incident_and_replaced_by_a_new_post(store: Store):
    assert await store.get_message_ref("inc-000000000001") is None
    await store.set_message_ref("inc-000000000001", "C0123456789", "1700000000.000100")
    await store.set_message_ref("inc-000000000002", "C0123456789", "1700000000.000200")
    assert await store.get_message_ref("inc-000000000001") == (
        "C0123456789",
        "1700000000.000100",
    )
    # Posted anew (the first message was deleted): the new place wins.
    await store.set_message_ref("inc-000000000001", "C9876543210", "1700000000.000300")
    assert await store.get_message_ref("inc-000000000001") == (
        "C9876543210",
        "1700000000.000300",
    )
    assert await store.get_message_ref("inc-000000000002") == (
        "C0123456789",
        "1700000000.000200",
    )


async def test_a_message_ref_is_not_part_of_the_incident_record(store: Store):
    incident = Incident(
        id="inc-000000000001",
        namespace="ml-prod",
        model="fraud-scorer",
        bad_version="v3",
        created_at=datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
        updated_at=datetime(2026, 11, 25, 8, 0, tzinfo=UTC),
    )
    await store.put_incident(incident)
    await store.set_message_ref(incident.id, "C0123456789", "1700000000.000100")
    # A job writing its copy of the incident back leaves the ref where it is.
    await store.put_incident(incident)
    await store.update_incident(incident.id, lambda i: setattr(i, "reason", "rollback"))
    assert await store.get_message_ref(incident.id) == ("C0123456789", "1700000000.000100")


async def test_an_embedded_message_ref_expires_with_the_retention():
    now = [1000.0]
    store = MemoryStore(retention_seconds=60, clock=lambda: now[0])
    await store.set_message_ref("inc-000000000001", "C0123456789", "1700000000.000100")
    now[0] += 59
    assert await store.get_message_ref("inc-000000000001") is not None
    now[0] += 2
    assert await store.get_message_ref("inc-000000000001") is None


async def test_a_redis_message_ref_expires_with_the_retention(key_prefix: str):
    store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=60)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await store.set_message_ref("inc-000000000001", "C0123456789", "1700000000.000100")
        ttl_ms = await client.pttl(f"{key_prefix}msg:inc-000000000001")
        assert 0 < ttl_ms <= 60_000
    finally:
        await client.aclose()
        await store.close()
