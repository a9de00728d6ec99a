"""The object store: one global resourceVersion counter and an append-only change history.

The history is what watches replay from (fixture 087: an old resourceVersion replays every
change since it) and what `wait_for` and the controller wake up on.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .objects import ordered_metadata, timestamp

ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass
class Change:
    """One write, as a watch reports it: ADDED, MODIFIED or DELETED with the object after it."""

    rv: int
    kind: str
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


@dataclass
class Store:
    """Objects by store key (`deployments`, `events`, ...) then (namespace, name)."""

    rv: int = 100
    objects: dict[str, dict[ObjectKey, dict[str, Any]]] = field(default_factory=dict)
    history: list[Change] = field(default_factory=list)
    floor: int = 0
    _waiters: set[asyncio.Future[None]] = field(default_factory=set)

    # ------------------------------------------------------------ reads

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get(kind, {}).get((namespace, name))

    def items(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects of a kind sorted by (namespace, name), as the API server lists them."""
        bucket = self.objects.get(kind, {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [bucket[k] for k in keys]

    def owned_by(self, kind: str, namespace: str, uid: str) -> list[dict[str, Any]]:
        return [
            obj
            for obj in self.items(kind, namespace)
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def changes_since(self, rv: int) -> Iterator[Change]:
        start = bisect.bisect_right([c.rv for c in self.history], rv)
        yield from self.history[start:]

    # ------------------------------------------------------------ writes

    def _commit(
        self, kind: str, obj: dict[str, Any], change_type: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store a private copy with the next resourceVersion; return another copy.

        Stored objects are never mutated in place, so history entries can share them.
        """
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        stored["metadata"] = ordered_metadata(stored["metadata"])
        key = (stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
        if change_type == "DELETED":
            self.objects.get(kind, {}).pop(key, None)
        else:
            self.objects.setdefault(kind, {})[key] = stored
        self.history.append(Change(self.rv, kind, change_type, stored, old))
        self.notify()
        return copy.deepcopy(stored)

    def create(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object, giving it uid, creationTimestamp and the next resourceVersion."""
        metadata = obj["metadata"]
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = timestamp()
        return self._commit(kind, obj, "ADDED", None)

    def update(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj["metadata"]
        old = self.objects[kind][(metadata.get("namespace", ""), metadata["name"])]
        return self._commit(kind, obj, "MODIFIED", old)

    def delete(
        self, kind: str, namespace: str, name: str, final: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Remove an object; `final` is the state the DELETED event carries (deletionTimestamp)."""
        old = self.objects[kind][(namespace, name)]
        return self._commit(kind, final if final is not None else old, "DELETED", old)

    def compact(self) -> None:
        """Forget the history so far: watches from an older resourceVersion get 410 Expired."""
        self.history.clear()
        self.floor = self.rv

    # ------------------------------------------------------------ waiting

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def changed(self, timeout: float | None = None) -> None:
        """Return on the next write or notify(), or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.add(waiter)
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, lambda: waiter.done() or waiter.set_result(None))
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)
            if timer is not None:
                timer.cancel()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until predicate() is truthy (re-checked after each write); TimeoutError names it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await self.changed(min(remaining, 0.25))
