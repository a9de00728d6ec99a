"""Where each incident's Slack message lives, and who may post it first.

An incident has one message, posted once and then updated in place. Its place (channel
and ts) is kept in the store's ``Messages``, apart from the incident record, so a job
saving its copy of the incident never undoes it. The first post is guarded across
replicas by a short lease, renewed while the post is in flight: a replica that dies
before posting holds the others up for ``claim_seconds`` at most, after which one of them
finds no ref, takes the lease and posts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from receiver.notify.slack.render import valid_channel
from receiver.store import Leases, Messages

_TS_RE = re.compile(r"^\d{1,12}\.\d{1,8}$")
_CLAIM_PREFIX = "slack-post\x1f"


@dataclass(frozen=True, slots=True)
class Ref:
    """A message's place; ``digest`` is what it reads now, when this process knows it."""

    channel: str
    ts: str
    digest: str = ""


@dataclass(slots=True)
class Bounded:
    """A small LRU: what the notifier remembers must not grow with the history."""

    size: int
    data: OrderedDict[str, Any] = field(default_factory=OrderedDict)

    def get(self, key: str) -> Any:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)

    def pop(self, key: str) -> None:
        self.data.pop(key, None)


class MessageRefs:
    """Message refs as this process learned them, backed by the store; first-post claims.

    ``find`` and ``claim_first_post`` raise what the store raises (the caller retries);
    saving, renewing and releasing are best effort and only logged.
    """

    def __init__(
        self,
        messages: Messages,
        leases: Leases,
        *,
        owner: str,
        claim_seconds: float,
        memory: int,
        logger: logging.Logger,
    ) -> None:
        self._messages = messages
        self._leases = leases
        self._owner = owner
        self._claim_seconds = claim_seconds
        self._log = logger
        # Learned here: later snapshots must update, never post again, without a lookup.
        self._known = Bounded(memory)
        # Incidents whose first post this process holds the lease for.
        self._claimed: set[str] = set()

    async def find(self, incident_id: str) -> Ref | None:
        """Where the incident's message is, or None when no replica has posted it."""
        known = self._known.get(incident_id)
        if known is not None:
            return known
        stored = await self._messages.get_message_ref(incident_id)
        if stored is None:
            return None
        channel, ts = stored
        if not valid_channel(channel) or not _TS_RE.fullmatch(ts):
            self._log.warning("stored Slack message ref of %s is not valid, ignored", incident_id)
            return None
        ref = Ref(channel, ts)
        self._known.put(incident_id, ref)
        return ref

    def learn(self, incident_id: str, ref: Ref) -> None:
        """The message is at ``ref`` and reads ``ref.digest`` (just updated or posted)."""
        self._known.put(incident_id, ref)

    def forget(self, incident_id: str) -> None:
        """The message is gone (deleted in Slack): the next post makes a new one."""
        self._known.pop(incident_id)

    async def claim_first_post(self, incident_id: str) -> bool:
        """True when this process may post the incident's first message now.

        Renews a claim this process already holds (a retry); else takes it unless another
        replica holds it, which then either saves a ref or lets the claim lapse.
        """
        name = _CLAIM_PREFIX + incident_id
        if incident_id in self._claimed:
            if await self._leases.renew_lease(name, self._owner, self._claim_seconds):
                return True
            self._claimed.discard(incident_id)
        if await self._leases.acquire_lease(name, self._owner, self._claim_seconds):
            self._claimed.add(incident_id)
            return True
        return False

    @asynccontextmanager
    async def posting(self, incident_id: str) -> AsyncIterator[None]:
        """Keep the first-post claim alive while the post is in flight."""
        if incident_id not in self._claimed:
            yield
            return
        renewer = asyncio.create_task(self._renew(incident_id), name="slack-post-claim")
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.wait({renewer})

    async def save(self, incident_id: str, ref: Ref) -> None:
        """Store where the message was posted, then let the first-post claim go.

        The claim is let go only once the ref is stored: a replica that takes it next
        looks for the ref first, so it updates this message instead of posting another.
        """
        self._known.put(incident_id, ref)
        try:
            await self._messages.set_message_ref(incident_id, ref.channel, ref.ts)
        except Exception:
            self._log.exception("could not save the Slack message ref of %s", incident_id)
            return
        await self.release(incident_id)

    async def release(self, incident_id: str) -> None:
        """Let the first-post claim go (posted, or given up), if this process holds it."""
        if incident_id not in self._claimed:
            return
        self._claimed.discard(incident_id)
        try:
            await self._leases.release_lease(_CLAIM_PREFIX + incident_id, self._owner)
        except Exception as exc:
            # It lapses on its own within claim_seconds.
            self._log.warning("could not release the first-post claim of %s: %s", incident_id, exc)

    async def _renew(self, incident_id: str) -> None:
        name = _CLAIM_PREFIX + incident_id
        while True:
            await asyncio.sleep(self._claim_seconds / 3)
            try:
                held = await self._leases.renew_lease(name, self._owner, self._claim_seconds)
            except Exception as exc:
                self._log.warning(
                    "renewing the first-post claim of %s failed: %s", incident_id, exc
                )
                continue
            if not held:
                self._claimed.discard(incident_id)
                self._log.warning(
                    "the first-post claim of %s lapsed while posting; another replica may"
                    " post a second message",
                    incident_id,
                )
                return
