"""Redis down: 503 so Alertmanager retries, /readyz 503; back empty: group and facts rebuilt."""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_for


async def status_of(client: Any, path: str) -> int:
    return (await client.get(path)).status


async def test_redis_down_gives_503_and_back_empty_recovers_and_runs_the_next_job(
    make_client, delivery, redis_process, recording_handler
):
    restored: list[int] = []

    async def restore() -> None:
        restored.append(1)

    client = await make_client(redis_url=redis_process.url, restore=restore)

    async def ready() -> bool:
        return await status_of(client, "/readyz") == 200

    await wait_for(ready, what="ready at start")
    assert restored == [1], "start-up facts are read before the first job"

    redis_process.stop()
    d = delivery("firing_single")
    resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
    assert resp.status == 503
    assert "retry" in (await resp.json())["error"]

    async def unready() -> bool:
        resp = await client.get("/readyz")
        body = await resp.json()
        return resp.status == 503 and "redis" in body["reasons"]

    await wait_for(unready, what="/readyz to report Redis down")

    redis_process.start()  # empty: no epoch, no consumer group, no dedup keys
    await wait_for(ready, timeout=10, what="ready again after Redis came back")
    assert len(restored) == 2, "losing Redis' data re-reads the start-up facts"

    resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
    assert resp.status == 200
    assert (await resp.json())["alerts"][0]["outcome"] == "accepted"
    await wait_for(lambda: recording_handler.jobs, timeout=10, what="the job after recovery")


async def test_jobs_accepted_while_facts_are_unread_wait_in_the_stream(
    make_client, delivery, redis_process, recording_handler
):
    import asyncio

    gate = asyncio.Event()

    async def slow_restore() -> None:
        await gate.wait()

    client = await make_client(redis_url=redis_process.url, restore=slow_restore)
    d = delivery("firing_single")
    resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
    assert resp.status == 200, "the webhook accepts while start-up facts are being read"
    assert (await client.get("/readyz")).status == 503
    assert recording_handler.jobs == []
    gate.set()
    await wait_for(lambda: recording_handler.jobs, what="the waiting job to run once ready")


async def test_a_redis_that_accepts_but_never_answers_gives_503_not_a_hang(make_client, delivery):
    import asyncio

    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing back, answer nothing: a hung server

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(redis_url=f"redis://127.0.0.1:{port}/0")
        d = delivery("firing_single")
        resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
        assert resp.status == 503
        assert "Redis" in (await resp.json())["error"]
        ready = await client.get("/readyz")
        assert ready.status == 503
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
