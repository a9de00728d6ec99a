"""Redis down: 503 so Alertmanager retries, /readyz 503; back empty: group and facts rebuilt."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from receiver import keys
from tests.conftest import REDIS_URL, wait_for


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


class ReplyCutter:
    """A TCP proxy to the real Redis that can lose one ingest reply: the script runs in
    Redis (the alert is claimed and its job queued) but the receiver never hears back."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_next_ingest = False
        self.cuts = 0
        self._tasks: set[Any] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: Any, writer: Any) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        cutting = asyncio.Event()

        async def to_redis() -> None:
            while data := await reader.read(65536):
                if self.cut_next_ingest and b"dedup:" in data:
                    self.cut_next_ingest = False
                    cutting.set()
                up_writer.write(data)
                await up_writer.drain()

        async def to_client() -> None:
            while data := await up_reader.read(65536):
                if cutting.is_set():
                    self.cuts += 1
                    writer.transport.abort()  # the reply is lost with the connection
                    return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(to_redis()), asyncio.ensure_future(to_client())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            up_writer.close()
            writer.close()

    async def close(self) -> None:
        self.server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_lost_ingest_reply_gives_503_and_the_retry_finds_the_one_queued_job(
    make_client, delivery
):
    """The window between Redis running the script and the receiver reading its answer."""
    proxy = ReplyCutter(urlsplit(REDIS_URL).port or 6379)
    url = await proxy.start()
    direct = aioredis.Redis.from_url(REDIS_URL)
    try:
        client = await make_client(redis_url=url, run_workers=False)
        stream = f"{client.app[keys.SETTINGS].key_prefix}jobs"
        d = delivery("firing_single")

        proxy.cut_next_ingest = True
        resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
        assert resp.status == 503, "no answer from Redis: Alertmanager must retry"
        assert proxy.cuts == 1
        assert await direct.xlen(stream) == 1, "the script ran: the job is queued"

        resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
        assert resp.status == 200, "the next delivery reconnects"
        assert (await resp.json())["alerts"][0]["outcome"] == "duplicate"
        assert await direct.xlen(stream) == 1, "the retry queued no second job"

        other = json.loads(d.body)
        other["alerts"][0]["fingerprint"] = "0123456789abcdef"
        resp = await client.post(
            "/webhook/alertmanager", data=json.dumps(other).encode(), headers=d.headers
        )
        assert (await resp.json())["alerts"][0]["outcome"] == "accepted"
        assert await direct.xlen(stream) == 2
    finally:
        await direct.aclose()
        await proxy.close()
