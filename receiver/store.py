"""Dedup, the work queue, leases and the queryable incident history: Redis or embedded.

Redis is a queue, a cache and a lock service here, never the system of record: durable
facts live on the Kubernetes objects. Two implementations share one contract:

- ``RedisStore``: for any number of replicas. Dedup and enqueue happen in one Lua script, so
  no delivery is ever claimed without its job; jobs live in a Redis Stream read through a
  consumer group, and entries left pending by a dead worker are taken over (``XAUTOCLAIM``).
- ``MemoryStore``: the same semantics in-process, for a single replica without Redis.

This module is the only one that imports ``redis`` (besides ``app`` wiring); every
``redis.RedisError`` leaves it as ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError, WatchError

from receiver.errors import StoreUnavailable, truncate
from receiver.models import Incident, IncidentState, Job

T = TypeVar("T")

CONSUMER_GROUP = "workers"
_INCIDENT_UPDATE_ATTEMPTS = 20


@dataclass(frozen=True)
class QueuedJob:
    """A job taken from the queue; ``entry_id`` acknowledges it, ``deliveries`` counts takes."""

    entry_id: str
    job: Job
    deliveries: int = 1


@dataclass(frozen=True)
class QueueStats:
    """Jobs waiting or running, and the age of the oldest one (seconds)."""

    depth: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class IncidentPage:
    """One page of incidents, newest first; ``next`` is the opaque cursor of the next page."""

    items: list[Incident]
    next: str | None


def _index_member(incident: Incident) -> str:
    # Zero-padded milliseconds then the id: lexicographic order is time order, ties broken
    # by id, so a cursor is simply the last member seen.
    ms = int(incident.created_at.timestamp() * 1000)
    return f"{ms:015d}:{incident.id}"


def encode_cursor(member: str) -> str:
    return base64.urlsafe_b64encode(member.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The index member behind an API cursor; ``ValueError`` if it was not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        member = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("cursor is not valid: pass the 'next' value of a previous page") from e
    ms, sep, ident = member.partition(":")
    if not sep or not ms.isdigit() or not ident.startswith("inc-"):
        raise ValueError("cursor is not valid: pass the 'next' value of a previous page")
    return member


def model_key(namespace: str, model: str, cluster: str = "") -> str:
    """The identity of a model service, used for leases, cooldowns and the history index."""
    return f"{cluster}/{namespace}/{model}" if cluster else f"{namespace}/{model}"


class Store(Protocol):
    """What the webhook, the workers and the API need from shared state."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    async def ingest(self, items: Sequence[tuple[str, Job]], ttl_seconds: float) -> list[bool]:
        """Per item: claim its dedup key and enqueue its job atomically; True when new."""

    async def enqueue(self, job: Job) -> str:
        """Enqueue a job without dedup (manual actions); returns its entry id."""

    async def ensure_group(self) -> None:
        """Create the consumer group if missing; existing entries stay deliverable."""

    async def read(self, consumer: str, *, count: int, block_seconds: float) -> list[QueuedJob]:
        """Take new jobs for ``consumer``; waits up to ``block_seconds`` when none."""

    async def claim_stale(
        self, consumer: str, *, min_idle_seconds: float, count: int
    ) -> list[QueuedJob]:
        """Take over jobs whose holder has not renewed them for ``min_idle_seconds``."""

    async def renew_job(self, consumer: str, entry_id: str) -> bool:
        """Reset the job's idle time if ``consumer`` still holds it; False once taken over."""

    async def ack(self, entry_id: str) -> None:
        """The job is done: remove it from the queue."""

    async def queue_stats(self) -> QueueStats: ...

    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool: ...

    async def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool: ...

    async def release_lease(self, name: str, owner: str) -> None: ...

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        """True the first time ``key`` is claimed within ``ttl_seconds``."""

    async def get_epoch(self) -> str | None:
        """The start-up epoch marker; None means the data was lost (or first start)."""

    async def set_epoch(self, value: str) -> None: ...

    async def put_incident(self, incident: Incident) -> None: ...

    async def get_incident(self, incident_id: str) -> Incident | None: ...

    async def update_incident(
        self, incident_id: str, change: Callable[[Incident], None]
    ) -> Incident | None:
        """Apply ``change`` to the stored incident atomically; None if it does not exist."""

    async def list_incidents(
        self,
        *,
        model: str | None = None,
        state: IncidentState | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IncidentPage: ...

    async def record_rollback(self, key: str, at: datetime) -> None: ...

    async def recent_rollbacks(self, key: str, since: datetime) -> list[datetime]: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------------
# Redis

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


# Alerts per script call at most, so one call never blocks Redis for long.
_INGEST_BATCH_MAX = 512

# (dedup keys, job payloads, ttl in ms, the caller's future)
_IngestCall = tuple[list[str], list[str], int, "asyncio.Future[list[bool]]"]


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_entry(fields: dict[bytes, bytes] | None) -> Job | None:
    if not fields:
        return None
    raw = fields.get(b"job")
    if raw is None:
        return None
    return Job.model_validate_json(raw)


class RedisStore:
    """The shared store for any number of replicas."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, retention_seconds: float) -> None:
        self._r = client
        self._p = prefix
        self._retention = retention_seconds
        self._stream = f"{prefix}jobs"
        self._ingest = client.register_script(_INGEST_LUA)
        self._pending_ingest: deque[_IngestCall] = deque()
        self._ingest_task: asyncio.Task[None] | None = None
        self._renew_job = client.register_script(_RENEW_JOB_LUA)
        self._renew_lease = client.register_script(_RENEW_LEASE_LUA)
        self._release_lease = client.register_script(_RELEASE_LEASE_LUA)

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

    @asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except RedisError as e:
            raise StoreUnavailable(
                f"Redis {what} failed: {truncate(str(e) or type(e).__name__)}; "
                "check RECEIVER_REDIS_URL and that Redis is running"
            ) from e

    async def ping(self) -> None:
        async with self._errors("ping"):
            await self._r.ping()

    async def ingest(self, items: Sequence[tuple[str, Job]], ttl_seconds: float) -> list[bool]:
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
                [job.model_dump_json() for _, job in items],
                _ms(ttl_seconds),
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
                args: list[str | int] = [ttl] + [a for call in batch for a in call[1]]
                try:
                    async with self._errors("ingest"):
                        result = await self._ingest(keys=keys, args=args)
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
                        call[3].set_result([c == 49 for c in result[offset : offset + n]])  # "1"
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
                    block=_ms(block_seconds),
                )
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    await self.ensure_group()
                    return []
                raise
        if not result:
            return []
        _, entries = result[0]
        return self._queued(entries)

    async def claim_stale(
        self, consumer: str, *, min_idle_seconds: float, count: int
    ) -> list[QueuedJob]:
        async with self._errors("claim stale jobs"):
            try:
                result = await self._r.xautoclaim(
                    self._stream,
                    CONSUMER_GROUP,
                    consumer,
                    min_idle_time=_ms(min_idle_seconds),
                    start_id="0-0",
                    count=count,
                )
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    await self.ensure_group()
                    return []
                raise
            claimed = self._queued(result[1])
            if not claimed:
                return []
            # Delivery counts tell a poison job (always failing) from a crashed worker.
            pending = await self._r.xpending_range(
                self._stream,
                CONSUMER_GROUP,
                min=claimed[0].entry_id,
                max=claimed[-1].entry_id,
                count=len(claimed) + 16,
                consumername=consumer,
            )
        counts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [QueuedJob(q.entry_id, q.job, deliveries=counts.get(q.entry_id, 2)) for q in claimed]

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

    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        async with self._errors("acquire lease"):
            ok = await self._r.set(f"{self._p}lease:{name}", owner, nx=True, px=_ms(ttl_seconds))
        return bool(ok)

    async def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        async with self._errors("renew lease"):
            ok = await self._renew_lease(
                keys=[f"{self._p}lease:{name}"], args=[owner, _ms(ttl_seconds)]
            )
        return bool(ok)

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._errors("release lease"):
            await self._release_lease(keys=[f"{self._p}lease:{name}"], args=[owner])

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        async with self._errors("claim once"):
            ok = await self._r.set(f"{self._p}once:{key}", "1", nx=True, px=_ms(ttl_seconds))
        return bool(ok)

    async def get_epoch(self) -> str | None:
        async with self._errors("read epoch"):
            value = await self._r.get(f"{self._p}epoch")
        return value.decode() if value is not None else None

    async def set_epoch(self, value: str) -> None:
        async with self._errors("write epoch"):
            await self._r.set(f"{self._p}epoch", value)

    # -- incidents ------------------------------------------------------------------------

    def _incident_key(self, incident_id: str) -> str:
        return f"{self._p}inc:{incident_id}"

    def _index_keys(self, incident: Incident) -> list[str]:
        return [
            f"{self._p}idx:all",
            f"{self._p}idx:model:{model_key(incident.namespace, incident.model)}",
            f"{self._p}idx:model:{incident.model}",
            f"{self._p}idx:state:{incident.state.value}",
        ]

    def _write(self, pipe: Pipeline, incident: Incident, old_state: str | None) -> None:
        member = _index_member(incident)
        ttl = _ms(self._retention)
        pipe.set(self._incident_key(incident.id), incident.model_dump_json(), px=ttl)
        if old_state is not None and old_state != incident.state.value:
            pipe.zrem(f"{self._p}idx:state:{old_state}", member)
        horizon = f"[{int((time.time() - self._retention) * 1000):015d}"
        for key in self._index_keys(incident):
            pipe.zadd(key, {member: 0})
            # Keep every index bounded by the retention, on the write path where it is cheap.
            pipe.zremrangebylex(key, "-", horizon)

    async def put_incident(self, incident: Incident) -> None:
        async with self._errors("write incident"):
            old = await self._r.get(self._incident_key(incident.id))
            old_state = Incident.model_validate_json(old).state.value if old else None
            async with self._r.pipeline(transaction=True) as pipe:
                self._write(pipe, incident, old_state)
                await pipe.execute()

    async def get_incident(self, incident_id: str) -> Incident | None:
        async with self._errors("read incident"):
            raw = await self._r.get(self._incident_key(incident_id))
        return Incident.model_validate_json(raw) if raw else None

    async def update_incident(
        self, incident_id: str, change: Callable[[Incident], None]
    ) -> Incident | None:
        key = self._incident_key(incident_id)
        async with self._errors("update incident"):
            async with self._r.pipeline(transaction=True) as pipe:
                for _ in range(_INCIDENT_UPDATE_ATTEMPTS):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        if raw is None:
                            await pipe.reset()
                            return None
                        incident = Incident.model_validate_json(raw)
                        old_state = incident.state.value
                        change(incident)
                        pipe.multi()
                        self._write(pipe, incident, old_state)
                        await pipe.execute()
                        return incident
                    except WatchError:
                        continue
        raise StoreUnavailable(
            f"incident {incident_id} kept changing under {_INCIDENT_UPDATE_ATTEMPTS} attempts"
            " to update it; retry"
        )

    async def list_incidents(
        self,
        *,
        model: str | None = None,
        state: IncidentState | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IncidentPage:
        if model:
            index = f"{self._p}idx:model:{model}"
        elif state is not None:
            index = f"{self._p}idx:state:{state.value}"
        else:
            index = f"{self._p}idx:all"
        low = f"[{int(since.timestamp() * 1000):015d}" if since else "-"
        high = f"({decode_cursor(cursor)}" if cursor else "+"
        items: list[Incident] = []
        last_member: str | None = None
        exhausted = False
        async with self._errors("list incidents"):
            while len(items) < limit and not exhausted:
                batch = max(limit * 2, 20)
                members = await self._r.zrevrangebylex(index, high, low, start=0, num=batch)
                if len(members) < batch:
                    exhausted = True
                if not members:
                    break
                ids = [m.decode().split(":", 1)[1] for m in members]
                raws = await self._r.mget([self._incident_key(i) for i in ids])
                for member, raw in zip(members, raws, strict=True):
                    m = member.decode()
                    high = f"({m}"
                    if raw is None:
                        # Expired by retention: drop the stale index entry.
                        await self._r.zrem(index, member)
                        continue
                    incident = Incident.model_validate_json(raw)
                    if state is not None and incident.state != state:
                        continue
                    items.append(incident)
                    last_member = m
                    if len(items) == limit:
                        break
        more = False
        if last_member is not None and len(items) == limit:
            async with self._errors("list incidents"):
                more = bool(await self._r.zrevrangebylex(index, f"({last_member}", low, 0, 1))
        return IncidentPage(items, encode_cursor(last_member) if more and last_member else None)

    async def record_rollback(self, key: str, at: datetime) -> None:
        async with self._errors("record rollback"):
            zkey = f"{self._p}rollbacks:{key}"
            ts = at.timestamp()
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.zadd(zkey, {f"{ts:.6f}": ts})
                pipe.zremrangebyscore(zkey, "-inf", ts - self._retention)
                pipe.pexpire(zkey, _ms(self._retention))
                await pipe.execute()

    async def recent_rollbacks(self, key: str, since: datetime) -> list[datetime]:
        async with self._errors("read rollbacks"):
            values = await self._r.zrangebyscore(
                f"{self._p}rollbacks:{key}", since.timestamp(), "+inf", withscores=True
            )
        return [datetime.fromtimestamp(score, since.tzinfo) for _, score in values]

    async def close(self) -> None:
        if self._ingest_task is not None:
            await asyncio.wait({self._ingest_task}, timeout=5)
        await self._r.aclose()


# ---------------------------------------------------------------------------------------
# Embedded


@dataclass
class _Pending:
    consumer: str
    last: float
    deliveries: int


class MemoryStore:
    """The same contract in one process: for a single replica running without Redis.

    ``clock`` is monotonic seconds; tests inject one to expire keys and leases on demand.
    """

    def __init__(
        self, *, retention_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._retention = retention_seconds
        self._keys: dict[str, float] = {}  # key -> expiry
        self._leases: dict[str, tuple[str, float]] = {}
        self._entries: OrderedDict[str, tuple[Job, float]] = OrderedDict()  # id -> job, wall
        self._unread: list[str] = []
        self._pending: dict[str, _Pending] = {}
        self._seq = 0
        self._cond = asyncio.Condition()
        self._incidents: dict[str, tuple[Incident, float]] = {}
        self._rollbacks: dict[str, list[datetime]] = {}
        self._epoch: str | None = None
        self._lock = asyncio.Lock()

    def _alive(self, table: dict[str, float], key: str) -> bool:
        expiry = table.get(key)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del table[key]
            return False
        return True

    def _sweep_keys(self) -> None:
        # Bounded memory: expired dedup keys are dropped as new ones arrive.
        if len(self._keys) > 1024 and len(self._keys) % 256 == 0:
            now = self._clock()
            for key in [k for k, exp in self._keys.items() if exp <= now]:
                del self._keys[key]

    async def ping(self) -> None:
        return None

    def _add_entry(self, job: Job) -> str:
        self._seq += 1
        entry_id = f"{int(time.time() * 1000)}-{self._seq}"
        self._entries[entry_id] = (job, time.time())
        self._unread.append(entry_id)
        return entry_id

    async def ingest(self, items: Sequence[tuple[str, Job]], ttl_seconds: float) -> list[bool]:
        out = []
        async with self._cond:
            for key, job in items:
                dedup = f"dedup:{key}"
                if self._alive(self._keys, dedup):
                    out.append(False)
                    continue
                self._keys[dedup] = self._clock() + ttl_seconds
                self._add_entry(job)
                out.append(True)
            self._sweep_keys()
            self._cond.notify_all()
        return out

    async def enqueue(self, job: Job) -> str:
        async with self._cond:
            entry_id = self._add_entry(job)
            self._cond.notify_all()
        return entry_id

    async def ensure_group(self) -> None:
        return None

    async def read(self, consumer: str, *, count: int, block_seconds: float) -> list[QueuedJob]:
        async with self._cond:
            if not self._unread:
                try:
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: bool(self._unread)), block_seconds
                    )
                except TimeoutError:
                    return []
            taken, self._unread = self._unread[:count], self._unread[count:]
            now = self._clock()
            out = []
            for entry_id in taken:
                if entry_id not in self._entries:
                    continue
                self._pending[entry_id] = _Pending(consumer, now, 1)
                out.append(QueuedJob(entry_id, self._entries[entry_id][0], 1))
            return out

    async def claim_stale(
        self, consumer: str, *, min_idle_seconds: float, count: int
    ) -> list[QueuedJob]:
        now = self._clock()
        out = []
        for entry_id, p in list(self._pending.items()):
            if len(out) >= count:
                break
            if now - p.last >= min_idle_seconds and entry_id in self._entries:
                p.consumer, p.last, p.deliveries = consumer, now, p.deliveries + 1
                out.append(QueuedJob(entry_id, self._entries[entry_id][0], p.deliveries))
        return out

    async def renew_job(self, consumer: str, entry_id: str) -> bool:
        p = self._pending.get(entry_id)
        if p is None or p.consumer != consumer:
            return False
        p.last = self._clock()
        return True

    async def ack(self, entry_id: str) -> None:
        self._pending.pop(entry_id, None)
        self._entries.pop(entry_id, None)

    async def queue_stats(self) -> QueueStats:
        if not self._entries:
            return QueueStats(0, 0.0)
        _, wall = next(iter(self._entries.values()))
        return QueueStats(len(self._entries), max(0.0, time.time() - wall))

    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        held = self._leases.get(name)
        now = self._clock()
        if held is not None and held[1] > now:
            return False
        self._leases[name] = (owner, now + ttl_seconds)
        return True

    async def renew_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        held = self._leases.get(name)
        now = self._clock()
        if held is None or held[0] != owner or held[1] <= now:
            return False
        self._leases[name] = (owner, now + ttl_seconds)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        held = self._leases.get(name)
        if held is not None and held[0] == owner:
            del self._leases[name]

    async def claim_once(self, key: str, ttl_seconds: float) -> bool:
        once = f"once:{key}"
        if self._alive(self._keys, once):
            return False
        self._keys[once] = self._clock() + ttl_seconds
        return True

    async def get_epoch(self) -> str | None:
        return self._epoch

    async def set_epoch(self, value: str) -> None:
        self._epoch = value

    def _expire_incidents(self) -> None:
        now = self._clock()
        for key in [k for k, (_, exp) in self._incidents.items() if exp <= now]:
            del self._incidents[key]

    async def put_incident(self, incident: Incident) -> None:
        self._incidents[incident.id] = (
            incident.model_copy(deep=True),
            self._clock() + self._retention,
        )

    async def get_incident(self, incident_id: str) -> Incident | None:
        self._expire_incidents()
        held = self._incidents.get(incident_id)
        return held[0].model_copy(deep=True) if held else None

    async def update_incident(
        self, incident_id: str, change: Callable[[Incident], None]
    ) -> Incident | None:
        async with self._lock:
            current = await self.get_incident(incident_id)
            if current is None:
                return None
            change(current)
            await self.put_incident(current)
            return current.model_copy(deep=True)

    async def list_incidents(
        self,
        *,
        model: str | None = None,
        state: IncidentState | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> IncidentPage:
        self._expire_incidents()
        bound = decode_cursor(cursor) if cursor else None
        ordered = sorted(((_index_member(i), i) for i, _ in self._incidents.values()), reverse=True)
        items: list[Incident] = []
        last = None
        more = False
        for member, incident in ordered:
            if bound is not None and member >= bound:
                continue
            if since is not None and incident.created_at < since:
                break
            if model and model not in (
                incident.model,
                model_key(incident.namespace, incident.model),
            ):
                continue
            if state is not None and incident.state != state:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(incident.model_copy(deep=True))
            last = member
        return IncidentPage(items, encode_cursor(last) if more and last else None)

    async def record_rollback(self, key: str, at: datetime) -> None:
        self._rollbacks.setdefault(key, []).append(at)

    async def recent_rollbacks(self, key: str, since: datetime) -> list[datetime]:
        return [t for t in self._rollbacks.get(key, []) if t >= since]

    async def close(self) -> None:
        return None
