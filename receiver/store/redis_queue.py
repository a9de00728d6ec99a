"""The Redis work queue: dedup and enqueue in one script, jobs in a Stream, takeovers.

Dedup and enqueue happen in one Lua script, so no delivery is ever claimed without its
job; jobs live in a Redis Stream read through a consumer group, and entries left pending
by a dead worker are taken over (``XAUTOCLAIM``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from receiver.errors import QueueGroupMissing, StoreUnavailable
from receiver.models import Job
from receiver.store.base import QueuedJob, QueueStats
from receiver.store.redis_base import RedisBase, ms, text

CONSUMER_GROUP = "workers"
# XAUTOCLAIM pages followed per scan at most (each looks at up to ten times ``count``
# pending entries); the next scan goes on from the cursor where this one stopped.
_CLAIM_PAGES_PER_SCAN = 8
_NO_GROUP = (
    "Redis has no consumer group for the job stream (its data was lost): jobs wait until "
    "the start-up facts are re-read and the group is created again"
)

# KEYS[1] = stream, KEYS[2..] = dedup keys; ARGV[1] = ttl in ms, ARGV[2..] = job payloads.
# Returns one "1"/"0" character per dedup key: a single reply to read, however many alerts.
_INGEST_LUA = """
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'job', ARGV[i])
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
return table.concat(out)
"""

# Renew a job only while this consumer still owns it, so a worker that stalled past its
# lease cannot steal the job back from the one that took it over.
_RENEW_JOB_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


# Alerts per script call at most, so one call never blocks Redis for long.
_INGEST_BATCH_MAX = 512


class _IngestLink:
    """The ingest script's own connection: one EVALSHA and its reply, nothing else.

    The shared client costs ~140 us of CPU per command (a pooled connection behind a lock,
    a task per write for its socket timeout, retries, health checks); on the webhook's path
    that was more than the rest of a delivery. Only one group commit is in flight at a time,
    so one connection, set up by the client's own connection class (URL, TLS, AUTH, database
    and protocol as configured), under one deadline for the whole exchange, is enough.
    """

    def __init__(self, client: aioredis.Redis, script: str) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self._timeout = float(kwargs.get("socket_timeout") or 5.0)
        # The deadline below covers the exchange; no second timer (and task) per command.
        kwargs.update(socket_timeout=None, health_check_interval=0)
        self._conn = pool.connection_class(**kwargs)
        self._script = script
        self._sha = client.register_script(script).sha  # the SHA1 EVALSHA names it by

    async def call(self, keys: Sequence[str], args: Sequence[bytes | int]) -> bytes:
        conn = self._conn
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    return await self._exchange("EVALSHA", self._sha, keys, args)
                except NoScriptError:
                    # Redis restarted or flushed its script cache: EVAL caches it again.
                    return await self._exchange("EVAL", self._script, keys, args)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeout(f"no answer within {self._timeout:g}s") from None
        except ResponseError:
            raise  # an answer, in order: the connection is fine
        except BaseException:
            # Whatever broke the exchange, the next reply on this socket is not ours.
            await conn.disconnect(nowait=True)
            raise

    async def _exchange(
        self, command: str, script: str, keys: Sequence[str], args: Sequence[bytes | int]
    ) -> bytes:
        conn = self._conn
        packed = conn.pack_command(command, script, len(keys), *keys, *args)
        await conn.send_packed_command(packed, check_health=False)
        reply = await conn.read_response()
        assert isinstance(reply, bytes), f"ingest script answered {reply!r}"
        return reply

    async def close(self) -> None:
        await self._conn.disconnect()


# (dedup keys, job payloads, ttl in ms, the caller's future)
_IngestCall = tuple[list[str], list[bytes], int, "asyncio.Future[list[bool]]"]


def _decode_entry(fields: dict[bytes, bytes] | None) -> Job | None:
    if not fields:
        return None
    raw = fields.get(b"job")
    if raw is None:
        return None
    return Job.model_validate_json(raw)


class RedisQueue(RedisBase):
    """``Intake`` and ``JobQueue`` on a Redis Stream with one consumer group."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, retention_seconds: float) -> None:
        super().__init__(client, prefix=prefix, retention_seconds=retention_seconds)
        self._stream = f"{prefix}jobs"
        self._ingest = _IngestLink(client, _INGEST_LUA)
        self._pending_ingest: deque[_IngestCall] = deque()
        self._ingest_task: asyncio.Task[None] | None = None
        self._renew_job = client.register_script(_RENEW_JOB_LUA)
        self._claim_cursor = "0-0"

    async def ingest(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float) -> list[bool]:
        """Group commit: deliveries arriving while a script call is in flight share the next.

        Under load, many webhook requests then cost one round trip; when idle, a delivery
        goes out at once. The script stays atomic per item (SET NX, then XADD).
        """
        if not items:
            return []
        waiter: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._pending_ingest.append(
            (
                [f"{self._p}dedup:{key}" for key, _ in items],
                [wire for _, wire in items],
                ms(ttl_seconds),
                waiter,
            )
        )
        if self._ingest_task is None:
            self._ingest_task = asyncio.create_task(self._flush_ingest(), name="ingest-flush")
        return await waiter

    async def _flush_ingest(self) -> None:
        try:
            while self._pending_ingest:
                batch: list[_IngestCall] = []
                size = 0
                ttl = self._pending_ingest[0][2]
                while (
                    self._pending_ingest
                    and self._pending_ingest[0][2] == ttl
                    and size < _INGEST_BATCH_MAX
                ):
                    call = self._pending_ingest.popleft()
                    batch.append(call)
                    size += len(call[0])
                keys = [self._stream] + [k for call in batch for k in call[0]]
                args: list[bytes | int] = [ttl] + [a for call in batch for a in call[1]]
                try:
                    async with self._errors("ingest"):
                        result = await self._ingest.call(keys, args)
                except BaseException as e:
                    # Every waiter gets an answer, whatever happened to the call: a
                    # webhook request must never hang on a lost future.
                    failure = (
                        e
                        if isinstance(e, StoreUnavailable)
                        else StoreUnavailable(f"Redis ingest interrupted: {e!r}; retry")
                    )
                    for call in batch:
                        if not call[3].done():
                            call[3].set_exception(failure)
                    if not isinstance(e, Exception):
                        raise
                    continue
                offset = 0
                for call in batch:
                    n = len(call[0])
                    if not call[3].done():
                        # One "1"/"0" character per dedup key (49 is "1").
                        call[3].set_result([c == 49 for c in result[offset : offset + n]])
                    offset += n
        finally:
            self._ingest_task = None

    async def enqueue(self, job: Job) -> str:
        async with self._errors("enqueue"):
            entry = await self._r.xadd(self._stream, {"job": job.model_dump_json()})
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def ensure_group(self) -> None:
        async with self._errors("create consumer group"):
            try:
                # Id 0: entries added while the group was missing (Redis restarted empty,
                # webhook already accepting) are delivered too.
                await self._r.xgroup_create(self._stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def _queued(self, raw: Iterable[tuple[bytes, dict[bytes, bytes] | None]]) -> list[QueuedJob]:
        out = []
        for entry_id, fields in raw:
            job = _decode_entry(fields)
            if job is not None:
                out.append(QueuedJob(entry_id=entry_id.decode(), job=job))
        return out

    async def read(self, consumer: str, *, count: int, block_seconds: float) -> list[QueuedJob]:
        async with self._errors("read jobs"):
            try:
                result = await self._r.xreadgroup(
                    CONSUMER_GROUP,
                    consumer,
                    {self._stream: ">"},
                    count=count,
                    block=ms(block_seconds),
                )
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    raise QueueGroupMissing(_NO_GROUP) from e
                raise
        if not result:
            return []
        _, entries = result[0]
        return self._queued(entries)

    async def claim_stale(
        self, consumer: str, *, min_idle_seconds: float, count: int
    ) -> list[QueuedJob]:
        """Follow XAUTOCLAIM's cursor, so stale jobs behind many live ones are reached too."""
        claimed: list[QueuedJob] = []
        async with self._errors("claim stale jobs"):
            for _ in range(_CLAIM_PAGES_PER_SCAN):
                try:
                    result = await self._r.xautoclaim(
                        self._stream,
                        CONSUMER_GROUP,
                        consumer,
                        min_idle_time=ms(min_idle_seconds),
                        start_id=self._claim_cursor,
                        count=count - len(claimed),
                    )
                except ResponseError as e:
                    if "NOGROUP" in str(e):
                        raise QueueGroupMissing(_NO_GROUP) from e
                    raise
                self._claim_cursor = text(result[0])
                claimed += await self._with_deliveries(consumer, self._queued(result[1]))
                if self._claim_cursor == "0-0" or len(claimed) >= count:
                    break
        return claimed

    async def _with_deliveries(self, consumer: str, page: list[QueuedJob]) -> list[QueuedJob]:
        if not page:
            return []
        # Delivery counts tell a poison job (always failing) from a crashed worker.
        pending = await self._r.xpending_range(
            self._stream,
            CONSUMER_GROUP,
            min=page[0].entry_id,
            max=page[-1].entry_id,
            count=len(page) + 16,
            consumername=consumer,
        )
        counts = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [QueuedJob(q.entry_id, q.job, deliveries=counts.get(q.entry_id, 2)) for q in page]

    async def renew_job(self, consumer: str, entry_id: str) -> bool:
        async with self._errors("renew job"):
            ok = await self._renew_job(
                keys=[self._stream], args=[CONSUMER_GROUP, consumer, entry_id]
            )
        return bool(ok)

    async def ack(self, entry_id: str) -> None:
        async with self._errors("acknowledge job"):
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, CONSUMER_GROUP, entry_id)
                pipe.xdel(self._stream, entry_id)
                await pipe.execute()

    async def queue_stats(self) -> QueueStats:
        async with self._errors("queue stats"), self._r.pipeline(transaction=False) as pipe:
            pipe.xlen(self._stream)
            pipe.xrange(self._stream, count=1)
            depth, first = await pipe.execute()
        if not depth or not first:
            return QueueStats(0, 0.0)
        ms = int(first[0][0].decode().split("-")[0])
        return QueueStats(int(depth), max(0.0, time.time() - ms / 1000))

    async def _finish_ingest(self) -> None:
        """Let a group commit in flight answer its waiters (on close)."""
        if self._ingest_task is not None:
            await asyncio.wait({self._ingest_task}, timeout=5)
        await self._ingest.close()
