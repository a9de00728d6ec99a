"""The embedded store: every store protocol in one process, for a single replica.

The same semantics as ``RedisStore`` without Redis: nothing survives a restart, which is
what a single replica without Redis accepts (durable facts live on the Kubernetes objects).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from receiver.models import Incident, IncidentState, Job
from receiver.store.base import (
    IncidentPage,
    QueuedJob,
    QueueStats,
    decode_cursor,
    encode_cursor,
    index_member,
    model_names,
)


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
        self._incidents: dict[str, tuple[Incident, float]] = {}  # id -> incident, expiry
        self._messages: dict[str, tuple[tuple[str, str], float]] = {}  # id -> ref, expiry
        self._rollbacks: dict[str, list[datetime]] = {}
        self._confirmations: dict[str, datetime] = {}
        self._stats: dict[int, dict[str, float]] = {}
        self._values: dict[str, tuple[str, float]] = {}  # key -> value, expiry
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

    async def ingest(self, items: Sequence[tuple[str, bytes]], ttl_seconds: float) -> list[bool]:
        out = []
        async with self._cond:
            for key, wire in items:
                dedup = f"dedup:{key}"
                if self._alive(self._keys, dedup):
                    out.append(False)
                    continue
                self._keys[dedup] = self._clock() + ttl_seconds
                self._add_entry(Job.model_validate_json(wire))
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
        for table in (self._incidents, self._messages):
            for key in [k for k, (_, exp) in table.items() if exp <= now]:
                del table[key]

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
        ordered = sorted(((index_member(i), i) for i, _ in self._incidents.values()), reverse=True)
        items: list[Incident] = []
        last = None
        more = False
        for member, incident in ordered:
            if bound is not None and member >= bound:
                continue
            if since is not None and incident.created_at < since:
                break
            if model and model not in model_names(incident):
                continue
            if state is not None and incident.state != state:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(incident.model_copy(deep=True))
            last = member
        return IncidentPage(items, encode_cursor(last) if more and last else None)

    async def get_message_ref(self, incident_id: str) -> tuple[str, str] | None:
        self._expire_incidents()
        held = self._messages.get(incident_id)
        return held[0] if held else None

    async def set_message_ref(self, incident_id: str, channel: str, ts: str) -> None:
        self._messages[incident_id] = ((channel, ts), self._clock() + self._retention)

    async def record_rollback(self, key: str, at: datetime) -> None:
        # A set per key, as Redis's sorted set: recording the same moment twice is one.
        held = self._rollbacks.setdefault(key, [])
        if at not in held:
            held.append(at)

    async def add_stats(
        self, once: str, bucket: int, counts: Mapping[str, float], maxima: Mapping[str, float]
    ) -> bool:
        key = f"stats-once:{once}"
        if self._alive(self._keys, key):
            return False
        self._keys[key] = self._clock() + self._retention + 3600
        aggregate = self._stats.setdefault(bucket, {})
        for name, n in counts.items():
            aggregate[name] = aggregate.get(name, 0.0) + n
        for name, x in maxima.items():
            aggregate[name] = max(aggregate.get(name, x), x)
        # Bounded: buckets older than the retention are dropped as new ones arrive.
        horizon = bucket - int(self._retention // 3600) - 2
        for old in [b for b in self._stats if b < horizon]:
            del self._stats[old]
        return True

    async def read_stats(self, first: int, last: int) -> list[dict[str, float]]:
        return [dict(agg) for b, agg in sorted(self._stats.items()) if first <= b <= last]

    async def put_value(self, key: str, value: str, ttl_seconds: float) -> None:
        now = self._clock()
        # Bounded: expired records are dropped as new ones arrive.
        for old in [k for k, (_, exp) in self._values.items() if exp <= now]:
            del self._values[old]
        self._values[key] = (value, now + ttl_seconds)

    async def get_values(self, keys: Sequence[str]) -> list[str | None]:
        now = self._clock()
        out: list[str | None] = []
        for key in keys:
            held = self._values.get(key)
            out.append(held[0] if held is not None and held[1] > now else None)
        return out

    async def delete_value(self, key: str) -> None:
        self._values.pop(key, None)

    async def schedule_confirmation(self, incident_id: str, due: datetime) -> None:
        self._confirmations[incident_id] = due

    async def due_confirmations(self, now: datetime, limit: int) -> list[str]:
        due = sorted((t, i) for i, t in self._confirmations.items() if t <= now)
        return [i for _, i in due[:limit]]

    async def finish_confirmation(self, incident_id: str) -> None:
        self._confirmations.pop(incident_id, None)

    async def recent_rollbacks(self, key: str, since: datetime) -> list[datetime]:
        return [t for t in self._rollbacks.get(key, []) if t >= since]

    async def close(self) -> None:
        return None
