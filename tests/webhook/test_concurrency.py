"""Duplicate deliveries racing across app instances that share Redis enqueue one job."""

from __future__ import annotations

import asyncio
from collections import Counter

from receiver import keys


async def test_fifty_concurrent_deliveries_to_two_instances_enqueue_exactly_one_job(
    make_client, delivery
):
    # Workers off: the queue itself must hold exactly one job, however the race went.
    a = await make_client(run_workers=False)
    b = await make_client(run_workers=False)
    d = delivery("ha_replica_a")

    async def send(i: int) -> str:
        client = a if i % 2 else b
        resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
        assert resp.status == 200
        return (await resp.json())["alerts"][0]["outcome"]

    outcomes = Counter(await asyncio.gather(*(send(i) for i in range(50))))
    assert outcomes == Counter({"accepted": 1, "duplicate": 49})
    stats = await a.app[keys.STORE].queue_stats()
    assert stats.depth == 1


async def test_dedup_expires_after_the_ttl_so_a_resend_drives_the_alert_again(
    make_client, delivery, recording_handler
):
    from tests.conftest import wait_for

    client = await make_client(dedup_ttl_seconds=0.3)
    d = delivery("firing_single")
    first = await (
        await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
    ).json()
    assert first["alerts"][0]["outcome"] == "accepted"

    async def resend_accepted() -> bool:
        resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
        return (await resp.json())["alerts"][0]["outcome"] == "accepted"

    await wait_for(resend_accepted, timeout=5, interval=0.05, what="the dedup key to expire")
    await wait_for(lambda: len(recording_handler.jobs) == 2, what="both jobs to run")
