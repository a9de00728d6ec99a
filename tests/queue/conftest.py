"""The store under test: the real Redis one and the embedded one share one contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from receiver.store import MemoryStore, RedisStore, Store
from tests.conftest import REDIS_URL


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[Store]:
    if request.param == "redis":
        s: Store = RedisStore.from_url(REDIS_URL, prefix=key_prefix, retention_seconds=3600)
    else:
        s = MemoryStore(retention_seconds=3600)
    await s.ensure_group()
    yield s
    await s.close()
