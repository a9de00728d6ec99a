"""Fixtures for confirmation: a real Prometheus per test module, loaded by backfilling.

``prometheus`` is a started ``PrometheusServer`` (tests/confirm/prometheus.py) with the
shipped rule files, one per test module: a module loads its samples once in a
module-scoped fixture of its own (``prometheus.backfill(...)``, then optionally
``prometheus.backfill_rules(...)``), and its tests query them at explicit evaluation
times, each test reading series (models, versions) no other test writes. ``session`` is
a client session for the Prometheus client, ``store`` the Redis store under the test's
own key prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from receiver.store.redis import RedisStore
from tests.confirm.prometheus import PrometheusServer
from tests.conftest import REDIS_URL


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def store(key_prefix: str) -> AsyncIterator[RedisStore]:
    the_store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=86400)
    yield the_store
    await the_store.close()
