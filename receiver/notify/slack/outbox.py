"""Delivery to Slack: one message per incident, posted once and updated in place.

The rollback never waits on Slack. Callers hand over snapshots with the synchronous
:meth:`Notifier.incident_changed` / :meth:`Notifier.notice_once`; a few sender tasks deliver
them in the background. Per incident only the newest snapshot is kept (coalescing), one
request at a time, so an older state can never overwrite a newer one. A rate-limited
incident waits on a timer, not on a sender, so other incidents' messages keep flowing.
Rate limits and transient failures are retried; a message finally given up is recorded on
the incident and counted (``receiver_notifications_total{result="lost"}``).

Where each message lives and who may post it first is ``refs``. This module delivers; it
must not decide anything about rollbacks, and it never logs the token (it never sees it:
the client holds it). Without a client (no ``SLACK_BOT_TOKEN``) every message is written
to the log in the same words instead.

Long because ordering, retries, Retry-After, the first-post claim across replicas and
shutdown draining are one state machine per message slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.errors import truncate
from receiver.metrics import Metrics
from receiver.models import Incident, IncidentEvent, utcnow
from receiver.notify.slack.refs import Bounded, MessageRefs, Ref
from receiver.notify.slack.render import (
    incident_text,
    notice_text,
    render_incident,
    render_notice,
    valid_channel,
    verbatim,
)
from receiver.store import Claims, Incidents, Leases, Messages

# The logger operators filter notifications (and log-mode messages) by.
log = logging.getLogger("receiver.notifier")

# ok:false errors worth another try; every other error code is permanent (auth, channel,
# payload problems do not fix themselves). From Slack's method docs, "Errors" tables.
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

# How long the right to post an incident's first message lasts unless renewed; it is
# renewed while the post is in flight. Short: a replica that dies before posting holds
# the others up this long at most.
POST_CLAIM_SECONDS = 30.0


def build_client(
    session: aiohttp.ClientSession, token: str | None, base_url: str, *, timeout: int = 10
) -> AsyncWebClient | None:
    """The Web API client on the app's session, or ``None`` (log mode) without a token.

    The SDK's own retry handlers are turned off: retries are scheduled here, off the
    sender, so a Retry-After never holds a sender or the rollback.
    """
    if not token:
        return None
    return AsyncWebClient(
        token=token, session=session, base_url=base_url, timeout=timeout, retry_handlers=[]
    )


@dataclass(frozen=True, slots=True)
class _Outgoing:
    text: str
    blocks: list[dict[str, Any]]
    plain: str  # the same words unescaped, for log lines
    channel: str | None
    incident_id: str | None = None
    cause_key: str | None = None


@dataclass(slots=True)
class _Slot:
    """Everything about one incident (or notice) in flight; dropped when idle."""

    key: str
    pending: _Outgoing | None = None
    in_flight: _Outgoing | None = None
    queued: bool = False
    timer: asyncio.TimerHandle | None = None
    attempts: int = 0
    first_try: float | None = None
    claimed: bool = False
    newest: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Sent:
    channel: str = ""  # where chat.postMessage put the message
    ts: str = ""


@dataclass(frozen=True, slots=True)
class _Retry:
    reason: str
    delay: float | None = None  # None: exponential backoff by attempt number
    # False while waiting on another replica: bounded by the total time, not the attempts.
    counts: bool = True


@dataclass(frozen=True, slots=True)
class _Lost:
    reason: str
    error: str = ""  # Slack's error code, when Slack gave one


_Result = _Sent | _Retry | _Lost


@dataclass(slots=True)
class RetryPolicy:
    """How long a message is worth trying: attempts, total time, backoff, Retry-After cap."""

    max_attempts: int = 6
    max_total_seconds: float = 300.0
    base_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    # Slack asks for seconds to a minute; anything longer is treated as a minute.
    retry_after_cap_seconds: float = 60.0
    request_timeout_seconds: float = 10.0
    # Jitter spreads retries of many incidents hit by the same outage.
    jitter: bool = True

    def backoff(self, attempt: int) -> float:
        delay = min(self.max_backoff_seconds, self.base_backoff_seconds * 2 ** max(0, attempt - 1))
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay


class Notifier:
    """Delivers incident messages and one-off notices to Slack in the background.

    It keeps its own state in the store: ``messages`` (where each incident's message is),
    ``leases`` (the right to post an incident's first message, across replicas),
    ``claims`` (a notice's cause is posted once across replicas, for
    ``notice_ttl_seconds``) and ``incidents`` (a message given up is noted on its
    incident). None of it is awaited on the caller's path.
    """

    def __init__(
        self,
        client: AsyncWebClient | None,
        *,
        default_channel: str | None,
        metrics: Metrics,
        messages: Messages,
        leases: Leases,
        claims: Claims,
        incidents: Incidents,
        notice_ttl_seconds: float,
        post_claim_seconds: float = POST_CLAIM_SECONDS,
        owner: str | None = None,
        logger: logging.Logger | None = None,
        retry: RetryPolicy | None = None,
        senders: int = 4,
        memory: int = 4096,
        interactive: bool = False,
    ) -> None:
        self._client = client
        # Slack interactivity is configured: messages carry the buttons.
        self.interactive = interactive
        self._default_channel = default_channel
        self._metrics = metrics
        self._claims = claims
        self._incidents = incidents
        self._notice_ttl = notice_ttl_seconds
        # While another replica holds an incident's first post: how often to look for its ref.
        self._foreign_post_retry = min(1.0, post_claim_seconds / 3)
        self._log = logger or log
        self._retry = retry or RetryPolicy()
        self._sender_count = max(1, senders)
        self._slots: dict[str, _Slot] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._senders: list[asyncio.Task[None]] = []
        self._refs = MessageRefs(
            messages,
            leases,
            owner=owner or uuid.uuid4().hex,
            claim_seconds=post_claim_seconds,
            memory=memory,
            logger=self._log,
        )
        self._seen_causes = Bounded(memory)
        self._closed = False

    @property
    def log_mode(self) -> bool:
        """True when there is no Slack client and messages go to the log."""
        return self._client is None

    # ------------------------------------------------------------------ public entry points

    def incident_changed(self, incident: Incident, channel: str | None = None) -> None:
        """Queue the incident's newest state for its message; returns at once.

        ``channel`` is the model's policy channel, else the incident's; once the message
        is posted, updates go where it is (the message ref). Never raises: a notification
        problem must not fail the rollback that reports it.
        """
        try:
            self._incident_changed(incident, channel)
        except Exception:
            self._log.exception("Slack notification of %s dropped", incident.id)
            self._count("lost")

    def _incident_changed(self, incident: Incident, channel: str | None) -> None:
        plain = incident_text(incident, verbatim)
        if self._client is None:
            extra = {
                "incident": incident.id,
                "namespace": incident.namespace,
                "model": incident.model,
                "notification": "log",
            }
            self._log.info(plain, extra=extra)
            self._count("logged")
            return
        text, blocks = render_incident(incident, interactive=self.interactive)
        out = _Outgoing(
            text=text,
            blocks=blocks,
            plain=plain,
            channel=channel or incident.slack_channel or self._default_channel,
            incident_id=incident.id,
        )
        self._submit("incident\x1f" + incident.id, out, newest=incident.updated_at)

    def notice_once(
        self, cause_key: str, title: str, lines: Sequence[str], channel: str | None = None
    ) -> None:
        """Post a one-off notice once per ``cause_key`` across replicas; returns at once."""
        try:
            if self._seen_causes.get(cause_key) is not None:
                return
            self._seen_causes.put(cause_key, True)
            text, blocks = render_notice(title, lines)
            out = _Outgoing(
                text=text,
                blocks=blocks,
                plain=notice_text(title, lines, verbatim),
                channel=channel or self._default_channel,
                cause_key=cause_key,
            )
            self._submit("notice\x1f" + cause_key, out, newest=None)
        except Exception:
            self._log.exception("Slack notice %r dropped", cause_key)
            self._count("lost")

    async def start(self) -> None:
        """Start the sender tasks."""
        if self._senders:
            return
        self._senders = [
            asyncio.create_task(self._sender(), name=f"slack-sender-{i}")
            for i in range(self._sender_count)
        ]

    # ``timeout`` is the caller's budget for the whole drain (shutdown, tests), not a
    # per-call knob that asyncio.timeout could replace.
    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until nothing is pending or being retried; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109
        """Drain what is pending within ``timeout``, then stop; what is left counts as lost."""
        drained = await self.flush(timeout) if self._senders else not self._slots
        self._closed = True
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []
        if drained:
            return
        left: list[_Outgoing] = []
        for slot in self._slots.values():
            if slot.timer is not None:
                slot.timer.cancel()
            left.extend(out for out in (slot.in_flight, slot.pending) if out is not None)
        self._slots.clear()
        self._idle.set()
        reason = f"not delivered before shutdown (waited {timeout:g}s)"
        # record_lost is best effort here: shutdown must not hang on the store.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                for out in left:
                    await self._lose(out, reason)

    # ------------------------------------------------------------------ scheduling

    def _submit(self, key: str, out: _Outgoing, *, newest: datetime | None) -> None:
        if self._closed:
            self._log.warning("Slack notification after shutdown, not sent: %s", out.plain)
            self._count("lost")
            return
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(key)
            self._idle.clear()
        elif newest is not None and slot.newest is not None and newest < slot.newest:
            # An older snapshot than one already handed over: never send it after a newer one.
            return
        if newest is not None:
            slot.newest = newest
        slot.pending = out
        self._wake_slot(slot)

    def _wake_slot(self, slot: _Slot) -> None:
        if slot.pending is None or slot.in_flight or slot.queued or slot.timer is not None:
            return
        slot.queued = True
        self._queue.put_nowait(slot.key)

    def _on_timer(self, key: str) -> None:
        slot = self._slots.get(key)
        if slot is not None:
            slot.timer = None
            self._wake_slot(slot)

    def _release(self, slot: _Slot) -> None:
        """After an attempt: go on with a newer snapshot, or forget the idle slot."""
        if slot.pending is not None:
            self._wake_slot(slot)
            return
        if slot.timer is None and not slot.queued and self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
            if not self._slots:
                self._idle.set()

    async def _sender(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._queue.get()
            slot = self._slots.get(key)
            if slot is None:
                continue
            slot.queued = False
            out = slot.pending
            if out is None or slot.in_flight is not None or slot.timer is not None:
                continue
            slot.pending = None
            slot.in_flight = out
            if slot.first_try is None:
                slot.first_try = loop.time()
            try:
                result = await self._attempt(slot, out)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log.exception("Slack notification failed unexpectedly")
                result = _Lost(f"unexpected error: {type(exc).__name__}")
            slot.in_flight = None
            if isinstance(result, _Retry):
                if result.counts:
                    slot.attempts += 1
                elapsed = loop.time() - slot.first_try
                delay = result.delay
                if delay is None:
                    delay = self._retry.backoff(slot.attempts)
                if (
                    slot.attempts < self._retry.max_attempts
                    and elapsed + delay <= self._retry.max_total_seconds
                ):
                    self._count("retried")
                    self._log.log(
                        logging.INFO if result.counts else logging.DEBUG,
                        "Slack notification retried in %.2fs: %s",
                        delay,
                        result.reason,
                    )
                    # A newer snapshot that arrived meanwhile replaces this one in the retry.
                    if slot.pending is None:
                        slot.pending = out
                    slot.timer = loop.call_later(delay, self._on_timer, slot.key)
                    continue
                result = _Lost(
                    f"{result.reason}; gave up after {slot.attempts} attempts"
                    if result.counts
                    else f"{result.reason}; gave up after {elapsed:.0f}s"
                )
            if isinstance(result, _Lost):
                await self._lose(out, result.reason)
            slot.attempts = 0
            slot.first_try = None
            self._release(slot)

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, slot: _Slot, out: _Outgoing) -> _Result:
        if out.cause_key is not None and not slot.claimed:
            try:
                first = await self._claims.claim_once(out.cause_key, self._notice_ttl)
            except Exception as exc:  # the store is down: try again later
                return _Retry(f"claim of {out.cause_key!r} failed: {type(exc).__name__}")
            slot.claimed = True
            if not first:
                return _Sent()
        if self._client is None:
            self._log.info(out.plain, extra={"notification": "log"})
            self._count("logged")
            return _Sent()
        if out.incident_id is None:
            return await self._post(out, out.channel)
        return await self._deliver(out, out.incident_id)

    async def _deliver(self, out: _Outgoing, incident_id: str) -> _Result:
        """Update the incident's message where it is, or post it first (once, across replicas)."""
        try:
            ref = await self._refs.find(incident_id)
            if ref is None:
                if not await self._refs.claim_first_post(incident_id):
                    return _Retry(
                        "another replica is posting this incident's message",
                        self._foreign_post_retry,
                        counts=False,
                    )
                # Whoever held the claim before saved its ref before letting go: look again.
                ref = await self._refs.find(incident_id)
                if ref is not None:
                    await self._refs.release(incident_id)
        except Exception as exc:  # the store is down: try again later
            return _Retry(f"finding the message of {incident_id} failed: {type(exc).__name__}")
        digest = _digest(out)
        if ref is not None:
            if ref.digest == digest:
                return _Sent()  # the message already reads exactly this
            result = await self._call("chat.update", out, channel=ref.channel, ts=ref.ts)
            if not (isinstance(result, _Lost) and result.error == "message_not_found"):
                if isinstance(result, _Sent):
                    self._refs.learn(incident_id, Ref(ref.channel, ref.ts, digest))
                return result
            # Deleted by someone: post a fresh message and remember where it is now.
            self._log.info("Slack message %s gone (message_not_found), posting anew", ref.ts)
            self._refs.forget(incident_id)
            channel: str | None = ref.channel
        else:
            channel = out.channel
        async with self._refs.posting(incident_id):
            result = await self._post(out, channel)
        if isinstance(result, _Sent):
            await self._refs.save(incident_id, Ref(result.channel, result.ts, digest))
        return result

    async def _post(self, out: _Outgoing, channel: str | None) -> _Result:
        if not channel:
            return _Lost(
                "no Slack channel: set the model's slack_channel or RECEIVER_SLACK_CHANNEL"
            )
        if not valid_channel(channel):
            return _Lost(f"invalid Slack channel {truncate(channel, 100)!r}")
        return await self._call("chat.postMessage", out, channel=channel)

    async def _call(self, method: str, out: _Outgoing, *, channel: str, ts: str = "") -> _Result:
        assert self._client is not None
        policy = self._retry
        try:
            async with asyncio.timeout(policy.request_timeout_seconds):
                if method == "chat.update":
                    resp = await self._client.chat_update(
                        channel=channel, ts=ts, text=out.text, blocks=out.blocks
                    )
                else:
                    resp = await self._client.chat_postMessage(
                        channel=channel,
                        text=out.text,
                        blocks=out.blocks,
                        unfurl_links=False,
                        unfurl_media=False,
                    )
        except SlackApiError as exc:
            return self._classify(method, exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _Retry(f"{method}: {type(exc).__name__}")
        except SlackClientError as exc:
            return _Lost(f"{method}: {truncate(str(exc), 200)}")
        self._count("sent")
        return _Sent(str(resp.get("channel") or channel), str(resp.get("ts") or ts))

    def _classify(self, method: str, exc: SlackApiError) -> _Result:
        response = exc.response
        status = getattr(response, "status_code", 0) or 0
        data = getattr(response, "data", None)
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        policy = self._retry
        if status == 429 or error == "ratelimited":
            delay = _retry_after(getattr(response, "headers", None) or {})
            if delay is not None:
                delay = min(delay, policy.retry_after_cap_seconds)
            return _Retry(f"{method}: rate limited", delay)
        if status >= 500 or error in RETRYABLE_ERRORS:
            return _Retry(f"{method}: HTTP {status} {error}".rstrip())
        return _Lost(
            f"Slack {method} failed: {truncate(error or f'HTTP {status}', 200)}", error=error
        )

    async def _lose(self, out: _Outgoing, reason: str) -> None:
        self._count("lost")
        self._log.warning(
            "Slack notification lost (%s): %s",
            reason,
            out.plain,
            extra={"incident": out.incident_id, "cause": out.cause_key},
        )
        if out.incident_id is None:
            return
        await self._refs.release(out.incident_id)
        error = truncate(reason)

        def note(incident: Incident) -> None:
            incident.events.append(
                IncidentEvent(at=utcnow(), kind="notification_lost", message=error)
            )

        try:
            await self._incidents.update_incident(out.incident_id, note)
        except Exception:
            self._log.exception("could not record the lost notification on %s", out.incident_id)

    def _count(self, result: str) -> None:
        self._metrics.notifications.labels(result=result).inc()


def _retry_after(headers: Any) -> float | None:
    value = None
    with contextlib.suppress(Exception):
        value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _digest(out: _Outgoing) -> str:
    raw = json.dumps([out.text, out.blocks], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()
