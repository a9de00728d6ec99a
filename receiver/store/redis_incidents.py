"""Incidents in Redis: one JSON value each, and sorted-set indexes for the history API.

Every index member is ``index_member`` (time then id), so the API pages newest first by
lexicographic range; entries past the retention are trimmed on the write path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from receiver.errors import StoreUnavailable
from receiver.models import Incident, IncidentState
from receiver.store.base import (
    IncidentPage,
    decode_cursor,
    encode_cursor,
    index_member,
    model_names,
)
from receiver.store.redis_base import RedisBase, ms

# Optimistic (WATCH) attempts before a concurrently changing incident is reported.
_INCIDENT_UPDATE_ATTEMPTS = 20


class RedisIncidents(RedisBase):
    """``Incidents`` on Redis: the history the API lists and the handler updates."""

    def _incident_key(self, incident_id: str) -> str:
        return f"{self._p}inc:{incident_id}"

    def _index_keys(self, incident: Incident) -> list[str]:
        return [
            f"{self._p}idx:all",
            *(f"{self._p}idx:model:{name}" for name in model_names(incident)),
            f"{self._p}idx:state:{incident.state.value}",
        ]

    def _write(self, pipe: Pipeline, incident: Incident, old_state: str | None) -> None:
        member = index_member(incident)
        ttl = ms(self._retention)
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
