"""Replicas sharing one store make one Slack message per incident, even when one dies.

The first post of an incident is claimed for a short while, renewed while the post is in
flight: a replica that dies after claiming holds the others up only until its claim
lapses. These run on the embedded store and on real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from receiver.metrics import Metrics
from receiver.models import IncidentState
from receiver.notify import Notifier
from receiver.store import RedisStore
from tests.conftest import REDIS_URL, wait_for
from tests.slack.conftest import ObservedStore, advance, make_incident, sent_count, stored
from tests.standins.slack import SlackStandIn

MakeNotifier = Callable[..., Awaitable[Notifier]]
POST = "chat.postMessage"
UPDATE = "chat.update"


@pytest.fixture
async def redis_stores(key_prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two replicas' own connections to one Redis, under this test's prefix."""
    a, b = (
        RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=3600) for _ in range(2)
    )
    yield a, b
    await a.close()
    await b.close()


class Blackhole:
    """A Web API address that takes requests and never answers: a post stuck in flight."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.connections = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api/"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.append(writer)
        self.connections += 1
        self.arrived.set()
        await reader.read()  # until the client goes away

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


@pytest.fixture
async def blackhole() -> AsyncIterator[Blackhole]:
    server = Blackhole()
    await server.start()
    yield server
    await server.close()


async def test_two_replicas_changing_a_new_incident_post_one_message(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore
) -> None:
    incident = await stored(store)
    a, b = await make_notifier(), await make_notifier()
    slack.delay = 0.2  # A's post is still in flight when B's change arrives

    a.incident_changed(incident)
    await slack.wait_for(lambda: slack.arrivals[POST] == 1)
    b.incident_changed(advance(incident, IncidentState.ACTING, 1))
    assert await a.flush(10) and await b.flush(10)

    assert slack.counts == {POST: 1, UPDATE: 1}
    assert slack.only_message().text.startswith("Rolling back")
    assert store.refs == [(incident.id, slack.only_message().channel, slack.only_message().ts)]


async def test_a_first_post_slower_than_the_claim_keeps_it_by_renewal(
    make_notifier: MakeNotifier,
    slack: SlackStandIn,
    redis_stores: tuple[RedisStore, RedisStore],
) -> None:
    incident = make_incident()
    # A claim long enough that its renewal (every third of it) survives a loaded machine.
    a, b = [await make_notifier(backend=s, post_claim_seconds=1.0) for s in redis_stores]
    # A's post takes several claim periods: without renewal B would post a second message.
    slack.delay = 3.2
    try:
        a.incident_changed(incident)
        await slack.wait_for(lambda: slack.arrivals[POST] == 1)
        b.incident_changed(advance(incident, IncidentState.ACTING, 1))
        assert await a.flush(10) and await b.flush(10)
    finally:
        await a.close(5)
        await b.close(5)

    assert slack.counts == {POST: 1, UPDATE: 1}
    message = slack.only_message()
    assert message.text.startswith("Rolling back")
    assert await redis_stores[1].get_message_ref(incident.id) == (message.channel, message.ts)


async def test_a_replica_that_dies_after_claiming_holds_the_post_up_until_the_claim_lapses(
    make_notifier: MakeNotifier,
    slack: SlackStandIn,
    redis_stores: tuple[RedisStore, RedisStore],
    blackhole: Blackhole,
) -> None:
    incident = make_incident()
    b_metrics = Metrics(CollectorRegistry())
    before = asyncio.all_tasks()
    # A talks to an address that never answers: its first post hangs after the claim.
    a = await make_notifier(backend=redis_stores[0], base_url=blackhole.url, post_claim_seconds=2)
    a_tasks = asyncio.all_tasks() - before
    b = await make_notifier(backend=redis_stores[1], post_claim_seconds=2, metrics=b_metrics)
    try:
        a.incident_changed(incident)
        await asyncio.wait_for(blackhole.arrived.wait(), 5)
        # A dies: its tasks end where they are, nothing let go, no ref saved.
        for task in a_tasks:
            task.cancel()
        await asyncio.gather(*a_tasks, return_exceptions=True)

        b.incident_changed(advance(incident, IncidentState.ACTING, 1))
        # B finds A's claim alive and waits instead of posting beside it...
        await wait_for(lambda: sent_count(b_metrics, "retried") >= 1, what="B to wait on A")
        assert slack.arrivals[POST] == 0
        # ...until it lapses; then B posts the message and saves where it is.
        await slack.wait_for(lambda: slack.counts[POST] == 1, timeout=10)
        assert await b.flush(10)
    finally:
        await b.close(5)
        await a.close(0)

    message = slack.only_message()
    assert message.text.startswith("Rolling back")
    assert slack.counts == {POST: 1}
    assert blackhole.connections == 1
    assert await redis_stores[0].get_message_ref(incident.id) == (message.channel, message.ts)
    assert sent_count(b_metrics, "lost") == 0
