"""The shared store for any number of replicas, on Redis.

``RedisStore`` joins the queue (``redis_queue``), the incident history
(``redis_incidents``) and, here, what replicas coordinate on: leases, once-per-cause
claims, the start-up epoch, message refs and the rollback history. Only this package
imports ``redis``; every ``redis.RedisError`` leaves it as ``StoreUnavailable``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

import redis.asyncio as aioredis

from receiver.store.redis_base import ms, text
from receiver.store.redis_incidents import RedisIncidents
from receiver.store.redis_queue import RedisQueue

# KEYS[1] = the once key, KEYS[2] = the bucket's hash; ARGV[1] = ttl in ms, ARGV[2] = JSON
# {"counts": {field: n}, "maxima": {field: x}}. Counted once per once key, atomically.
_ADD_STATS_LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local data = cjson.decode(ARGV[2])
for f, n in pairs(data['counts']) do redis.call('HINCRBYFLOAT', KEYS[2], f, n) end
for f, x in pairs(data['maxima']) do
  local cur = tonumber(redis.call('HGET', KEYS[2], f))
  if cur == nil or x > cur then redis.call('HSET', KEYS[2], f, tostring(x)) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

_RENEW_LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore(RedisQueue, RedisIncidents):
    """Every store protocol on one Redis, under one key prefix."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, retention_seconds: float) -> None:
        super().__init__(client, prefix=prefix, retention_seconds=retention_seconds)
        self._renew_lease = client.register_script(_RENEW_LEASE_LUA)
        self._release_lease = client.register_script(_RELEASE_LEASE_LUA)
        self._add_stats = client.register_script(_ADD_STATS_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, retention_seconds: float) -> RedisStore:
        # Short timeouts: the webhook must answer Alertmanager quickly, 503 included.
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=10,
        )
        return cls(client, prefix=prefix, retention_seconds=retention_seconds)

    async def ping(self) -> None:
        async with self._errors("ping"):
            await self._r.ping()

    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        async with self._errors("acquire lease"):
            ok = await self._r.set(f"{self._p}lease:{name}", owner, nx=True, px=ms(ttl_seconds))
        return bool(ok)

    async def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        async with self._errors("renew lease"):
            ok = await self._renew_lease(
                keys=[f"{self._p}lease:{name}"], args=[owner, ms(ttl_seconds)]
            )
        return bool(ok)

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._errors("release lease"):
            await self._release_lease(keys=[f"{self._p}lease:{name}"], args=[owner])

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        async with self._errors("claim once"):
            ok = await self._r.set(f"{self._p}once:{key}", "1", nx=True, px=ms(ttl_seconds))
        return bool(ok)

    async def get_epoch(self) -> str | None:
        async with self._errors("read epoch"):
            value = await self._r.get(f"{self._p}epoch")
        return value.decode() if value is not None else None

    async def set_epoch(self, value: str) -> None:
        async with self._errors("write epoch"):
            await self._r.set(f"{self._p}epoch", value)

    async def get_message_ref(self, incident_id: str) -> tuple[str, str] | None:
        async with self._errors("read message ref"):
            channel, ts = await self._r.hmget(f"{self._p}msg:{incident_id}", ["channel", "ts"])
        if not channel or not ts:
            return None
        return text(channel), text(ts)

    async def set_message_ref(self, incident_id: str, channel: str, ts: str) -> None:
        key = f"{self._p}msg:{incident_id}"
        async with self._errors("write message ref"), self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"channel": channel, "ts": ts})
            pipe.pexpire(key, ms(self._retention))
            await pipe.execute()

    async def record_rollback(self, key: str, at: datetime) -> None:
        async with self._errors("record rollback"):
            zkey = f"{self._p}rollbacks:{key}"
            ts = at.timestamp()
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.zadd(zkey, {f"{ts:.6f}": ts})
                pipe.zremrangebyscore(zkey, "-inf", ts - self._retention)
                pipe.pexpire(zkey, ms(self._retention))
                await pipe.execute()

    async def recent_rollbacks(self, key: str, since: datetime) -> list[datetime]:
        async with self._errors("read rollbacks"):
            values = await self._r.zrangebyscore(
                f"{self._p}rollbacks:{key}", since.timestamp(), "+inf", withscores=True
            )
        return [datetime.fromtimestamp(score, since.tzinfo) for _, score in values]

    async def add_stats(
        self, once: str, bucket: int, counts: Mapping[str, float], maxima: Mapping[str, float]
    ) -> bool:
        # Kept an hour past the retention, so a bucket outlives the incidents it counts.
        ttl = ms(self._retention + 3600)
        payload = json.dumps({"counts": dict(counts) or {}, "maxima": dict(maxima) or {}})
        async with self._errors("add statistics"):
            done = await self._add_stats(
                keys=[f"{self._p}stats:once:{once}", f"{self._p}stats:{bucket}"],
                args=[ttl, payload],
            )
        return bool(done)

    async def read_stats(self, first: int, last: int) -> list[dict[str, float]]:
        async with self._errors("read statistics"), self._r.pipeline(transaction=False) as pipe:
            for bucket in range(first, last + 1):
                pipe.hgetall(f"{self._p}stats:{bucket}")
            raw = await pipe.execute()
        return [{text(k): float(v) for k, v in h.items()} for h in raw if h]

    async def put_value(self, key: str, value: str, ttl_seconds: float) -> None:
        async with self._errors("write value"):
            await self._r.set(f"{self._p}value:{key}", value, px=ms(ttl_seconds))

    async def get_values(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        async with self._errors("read values"):
            raws = await self._r.mget([f"{self._p}value:{key}" for key in keys])
        return [text(raw) if raw is not None else None for raw in raws]

    async def delete_value(self, key: str) -> None:
        async with self._errors("delete value"):
            await self._r.delete(f"{self._p}value:{key}")

    async def schedule_confirmation(self, incident_id: str, due: datetime) -> None:
        async with self._errors("schedule confirmation"):
            await self._r.zadd(f"{self._p}confirm:pending", {incident_id: due.timestamp()})

    async def due_confirmations(self, now: datetime, limit: int) -> list[str]:
        async with self._errors("read due confirmations"):
            ids = await self._r.zrangebyscore(
                f"{self._p}confirm:pending", "-inf", now.timestamp(), start=0, num=limit
            )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def finish_confirmation(self, incident_id: str) -> None:
        async with self._errors("finish confirmation"):
            await self._r.zrem(f"{self._p}confirm:pending", incident_id)

    async def close(self) -> None:
        await self._finish_ingest()
        await self._r.aclose()
