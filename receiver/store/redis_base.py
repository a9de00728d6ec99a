"""The connection every part of the Redis store shares, and how its errors leave it.

Every ``redis.RedisError`` leaves the store as ``StoreUnavailable``, naming what failed
and what to check, so callers deal with one exception whatever the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from receiver.errors import StoreUnavailable, truncate


def ms(seconds: float) -> int:
    """Seconds as Redis milliseconds, at least 1 (0 would mean "no expiry" or "forever")."""
    return max(1, int(seconds * 1000))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBase:
    """One client, one key prefix, one retention: what the queue, incident and coordination
    parts of ``RedisStore`` each build on."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, retention_seconds: float) -> None:
        self._r = client
        self._p = prefix
        self._retention = retention_seconds

    @asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except RedisError as e:
            raise StoreUnavailable(
                f"Redis {what} failed: {truncate(str(e) or type(e).__name__)}; "
                "check RECEIVER_REDIS_URL and that Redis is running"
            ) from e
