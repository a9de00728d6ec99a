"""Slack notifications: one Block Kit message per incident, posted once and updated in place.

The rollback never waits on Slack. Callers hand over snapshots with the synchronous
:meth:`Notifier.incident_changed` / :meth:`Notifier.notice_once`; a few sender tasks deliver
them in the background. Per incident only the newest snapshot is kept (coalescing), one
request at a time, so an older state can never overwrite a newer one. A rate-limited
incident waits on a timer, not on a sender, so other incidents' messages keep flowing.
Rate limits and transient failures are retried; a message finally given up is recorded on
the incident and counted (``receiver_notifications_total{result="lost"}``).

This module renders and delivers; it must not decide anything about rollbacks, and it
never logs the token (it never sees it: the client holds it). Without a client (no
``SLACK_BOT_TOKEN``) every message is written to the log in the same words instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.errors import truncate
from receiver.metrics import Metrics
from receiver.models import Incident, IncidentState, IncidentTimes

log = logging.getLogger(__name__)

# Block Kit limits (Slack's block reference): header text 150, section text 3000,
# each section field 2000, at most 10 fields per section. Fallback text is kept short
# as well: it is what notifications and screen readers show.
HEADER_MAX_CHARS = 150
SECTION_TEXT_MAX_CHARS = 3000
FIELD_MAX_CHARS = 2000
MAX_FIELDS = 10
FALLBACK_TEXT_MAX_CHARS = 3000
# A link longer than this is left out rather than cut: a cut URL is a wrong URL.
LINK_URL_MAX_CHARS = 1400

ACTIONS_BLOCK_ID = "incident_actions"

# Channel names/ids as users type them in the policy, and Slack's conversation ids.
_CHANNEL_RE = re.compile(r"^[#@]?[A-Za-z0-9._-]{1,80}$")
_CHANNEL_ID_RE = re.compile(r"^[CGDU][A-Z0-9]{8,}$")
_TS_RE = re.compile(r"^\d{1,12}\.\d{1,8}$")

# ok:false errors worth another try; every other error code is permanent (auth, channel,
# payload problems do not fix themselves). From Slack's method docs, "Errors" tables.
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def valid_channel(channel: str | None) -> bool:
    """True for a channel name (``#x``), user (``@x``) or Slack id safe to send to."""
    if not channel:
        return False
    return bool(_CHANNEL_ID_RE.fullmatch(channel) or _CHANNEL_RE.fullmatch(channel))


# ---------------------------------------------------------------------------- rendering


def escape(text: str) -> str:
    """Escape Slack's control characters; labels and versions come from alerts."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _same(text: str) -> str:
    return text


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with an ellipsis, never inside an ``&...;``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def format_offset(seconds: float) -> str:
    """Signed, compact duration: ``+0.18s``, ``+1m02s``, ``+1h02m03s``, ``-2m10s``."""
    sign = "-" if seconds < 0 else "+"
    value = abs(seconds)
    if round(value, 2) < 60:
        return f"{sign}{value:.2f}s"
    total = round(value)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    return f"{sign}{minutes}m{secs:02d}s"


# State -> (emoji, title). The title is the first words of the fallback text and the log.
_STATE_VIEW: dict[IncidentState, tuple[str, str]] = {
    IncidentState.OPEN: (":rotating_light:", "Degraded model"),
    IncidentState.ACTING: (":hourglass_flowing_sand:", "Rolling back"),
    IncidentState.VERIFIED: (":white_check_mark:", "Rolled back, healthy"),
    IncidentState.VERIFICATION_FAILED: (":x:", "Rolled back, verification failed"),
    IncidentState.REFUSED: (":no_entry:", "Rollback refused"),
    IncidentState.NOTIFIED: (":bell:", "Not rolled back (notify only)"),
    IncidentState.CONFIRMED: (":white_check_mark:", "Rollback confirmed"),
    IncidentState.UNCONFIRMED: (":grey_question:", "Rollback unconfirmed"),
    IncidentState.FAILED: (":x:", "Rollback refused by the API server"),
}
_SWITCHED_VIEW = (":arrows_counterclockwise:", "Switched, verifying")

_TIMELINE: tuple[tuple[str, str], ...] = (
    ("alert_started", "Alert started"),
    ("received", "Received"),
    ("acting", "Acting"),
    ("switched", "Switched"),
    ("healthy", "Healthy"),
    ("confirmed", "Confirmed"),
)


def state_view(incident: Incident) -> tuple[str, str]:
    """Emoji and title for the incident's state; ``acting`` once switched reads as such."""
    if incident.state is IncidentState.ACTING and incident.times.switched is not None:
        return _SWITCHED_VIEW
    return _STATE_VIEW.get(incident.state, (":grey_question:", incident.state.value))


def _versions(incident: Incident, esc: Callable[[str], str]) -> str:
    target = esc(incident.target_version) if incident.target_version else "no target"
    return f"{esc(incident.bad_version) or '?'} → {target}"


def _where(incident: Incident, esc: Callable[[str], str]) -> str:
    where = esc(incident.namespace)
    if incident.cluster:
        where += f" (cluster {esc(incident.cluster)})"
    return where


def _incident_text(incident: Incident, esc: Callable[[str], str]) -> str:
    """The one-paragraph summary: Slack's fallback text and, unescaped, the log line."""
    _, title = state_view(incident)
    parts = [
        f"{title}: {esc(incident.model)} in {_where(incident, esc)}, "
        f"version {_versions(incident, esc)}"
        + (f", strategy {esc(incident.strategy)}" if incident.strategy else "")
    ]
    if incident.triggers:
        trig = ", ".join(esc(t) for t in incident.triggers)
        parts.append(
            f"Trigger: {trig}" + (f" ({esc(incident.category)})" if incident.category else "")
        )
    if incident.reason:
        parts.append(f"Reason: {esc(incident.reason)}")
    parts.append(f"Incident {esc(incident.id)}")
    return clip(". ".join(parts) + ".", FALLBACK_TEXT_MAX_CHARS)


def _field(label: str, value: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(f"*{label}*\n{value or '—'}", FIELD_MAX_CHARS)}


def _clock(at: datetime, with_date: bool) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S UTC")


def timeline_lines(times: IncidentTimes) -> list[str]:
    """One mrkdwn line per known step, with the offset from when the alert was received."""
    lines: list[str] = []
    last_date = None
    received = times.received
    for attr, label in _TIMELINE:
        at: datetime | None = getattr(times, attr)
        if at is None:
            continue
        at = at.astimezone(UTC)
        line = f"• *{label}*  {_clock(at, at.date() != last_date)}"
        last_date = at.date()
        if received is not None and attr != "received":
            line += f"  ({format_offset((at - received).total_seconds())})"
        lines.append(line)
    return lines


def _link(url: str, label: str) -> str | None:
    """``<url|label>`` for an http(s) URL, with the characters that would break it encoded."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    safe = (
        url.replace("&", "&amp;")
        .replace("<", "%3C")
        .replace(">", "%3E")
        .replace("|", "%7C")
        .replace(" ", "%20")
    )
    if len(safe) > LINK_URL_MAX_CHARS:
        return None
    return f"<{safe}|{label}>"


def actions_block(incident: Incident) -> dict[str, Any] | None:
    """The buttons (acknowledge, roll forward, force) arrive with Slack interactivity.

    Return an ``actions`` block with ``block_id=ACTIONS_BLOCK_ID`` here; ``render_incident``
    places it after the links. ``None`` until then.
    """
    return None


def render_incident(incident: Incident) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text and Block Kit blocks for the incident's single message."""
    emoji, title = state_view(incident)
    text = _incident_text(incident, escape)
    triggers = ", ".join(escape(t) for t in incident.triggers)
    state = incident.state.value.replace("_", " ")
    if incident.reason:
        state += f": {escape(incident.reason)}"
    fields = [
        _field("Model", escape(incident.model)),
        _field("Namespace", _where(incident, escape)),
        _field("Triggers" if len(incident.triggers) > 1 else "Trigger", triggers),
        _field("Category", escape(incident.category)),
        _field("Version", _versions(incident, escape)),
        _field("Strategy", escape(incident.strategy)),
        _field("State", state),
    ][:MAX_FIELDS]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "block_id": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f"{emoji} {title}: {escape(incident.model)}", HEADER_MAX_CHARS),
                "emoji": True,
            },
        },
        {"type": "section", "block_id": "facts", "fields": fields},
    ]
    lines = timeline_lines(incident.times)
    if lines:
        blocks.append(
            {
                "type": "section",
                "block_id": "timeline",
                "text": {
                    "type": "mrkdwn",
                    "text": clip("*Timeline*\n" + "\n".join(lines), SECTION_TEXT_MAX_CHARS),
                },
            }
        )
    links = [
        link
        for link in (
            _link(incident.generator_url, "Alert expression"),
            _link(incident.runbook_url, "Runbook"),
        )
        if link
    ]
    if links:
        blocks.append(
            {
                "type": "section",
                "block_id": "links",
                "text": {"type": "mrkdwn", "text": "  ·  ".join(links)},
            }
        )
    actions = actions_block(incident)
    if actions is not None:
        blocks.append(actions)
    blocks.append(
        {
            "type": "context",
            "block_id": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip(
                        f"Incident `{escape(incident.id)}`  ·  updated "
                        f"{_clock(incident.updated_at.astimezone(UTC), True)}",
                        SECTION_TEXT_MAX_CHARS,
                    ),
                }
            ],
        }
    )
    return text, blocks


def _notice_text(title: str, lines: Sequence[str], esc: Callable[[str], str]) -> str:
    body = "; ".join(esc(line) for line in lines)
    return clip(f"{esc(title)}: {body}." if body else f"{esc(title)}.", FALLBACK_TEXT_MAX_CHARS)


def render_notice(title: str, lines: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """A one-off notice (alert not attributable, refusal): fallback text and blocks."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "block_id": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f":warning: {escape(title)}", HEADER_MAX_CHARS),
                "emoji": True,
            },
        }
    ]
    if lines:
        blocks.append(
            {
                "type": "section",
                "block_id": "details",
                "text": {
                    "type": "mrkdwn",
                    "text": clip("\n".join(escape(line) for line in lines), SECTION_TEXT_MAX_CHARS),
                },
            }
        )
    return _notice_text(title, lines, escape), blocks


# ------------------------------------------------------------------------------ delivery

SaveRef = Callable[[str, str, str], Awaitable[None]]
RecordLost = Callable[[str, str], Awaitable[None]]
ClaimOnce = Callable[[str], Awaitable[bool]]
LoadRef = Callable[[str], Awaitable[tuple[str, str] | None]]

# When another replica holds the right to post an incident's first message, how long to
# wait before looking for the ref it saves.
_FOREIGN_POST_RETRY_SECONDS = 1.0


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
class _Ref:
    channel: str
    ts: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class _Outgoing:
    text: str
    blocks: list[dict[str, Any]]
    plain: str  # the same words unescaped, for log lines
    channel: str | None
    ref: _Ref | None = None
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
    first_try: float = 0.0
    claimed: bool = False
    newest: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Sent:
    pass


@dataclass(frozen=True, slots=True)
class _Retry:
    reason: str
    delay: float | None = None  # None: exponential backoff by attempt number


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


@dataclass(slots=True)
class _Bounded:
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


class Notifier:
    """Delivers incident messages and one-off notices to Slack in the background.

    ``save_ref`` persists where an incident's message lives, ``record_lost`` notes on the
    incident that a message was given up, ``claim_once`` answers True only the first time
    a cause key is seen by any replica. None of them is awaited on the caller's path.
    """

    def __init__(
        self,
        client: AsyncWebClient | None,
        *,
        default_channel: str | None,
        metrics: Metrics,
        save_ref: SaveRef,
        record_lost: RecordLost,
        claim_once: ClaimOnce,
        load_ref: LoadRef | None = None,
        logger: logging.Logger | None = None,
        retry: RetryPolicy | None = None,
        senders: int = 4,
        memory: int = 4096,
    ) -> None:
        self._client = client
        self._default_channel = default_channel
        self._metrics = metrics
        self._save_ref = save_ref
        self._record_lost = record_lost
        self._claim_once = claim_once
        self._load_ref = load_ref
        self._log = logger or log
        self._retry = retry or RetryPolicy()
        self._sender_count = max(1, senders)
        self._slots: dict[str, _Slot] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._senders: list[asyncio.Task[None]] = []
        # Where each incident's message lives, as learned by this process: later
        # snapshots that do not carry the ts yet must update, never post again.
        self._refs = _Bounded(memory)
        self._seen_causes = _Bounded(memory)
        # Incidents whose first message this process has the right to post (claimed once
        # across replicas, so two replicas never post two messages for one incident).
        self._post_rights = _Bounded(memory)
        self._closed = False

    @property
    def log_mode(self) -> bool:
        """True when there is no Slack client and messages go to the log."""
        return self._client is None

    # ------------------------------------------------------------------ public entry points

    def incident_changed(self, incident: Incident, channel: str | None = None) -> None:
        """Queue the incident's newest state for its message; returns at once.

        ``channel`` is the model's policy channel; the incident's own message location
        (``slack_channel``/``slack_ts``) wins for updates. Never raises: a notification
        problem must not fail the rollback that reports it.
        """
        try:
            self._incident_changed(incident, channel)
        except Exception:
            self._log.exception("Slack notification of %s dropped", incident.id)
            self._count("lost")

    def _incident_changed(self, incident: Incident, channel: str | None) -> None:
        plain = _incident_text(incident, _same)
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
        text, blocks = render_incident(incident)
        ref = None
        if incident.slack_channel and incident.slack_ts:
            ref = _Ref(incident.slack_channel, incident.slack_ts)
        out = _Outgoing(
            text=text,
            blocks=blocks,
            plain=plain,
            channel=channel or incident.slack_channel or self._default_channel,
            ref=ref,
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
                plain=_notice_text(title, lines, _same),
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
            if slot.attempts == 0:
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
                    self._log.info("Slack notification retried in %.2fs: %s", delay, result.reason)
                    # A newer snapshot that arrived meanwhile replaces this one in the retry.
                    if slot.pending is None:
                        slot.pending = out
                    slot.timer = loop.call_later(delay, self._on_timer, slot.key)
                    continue
                result = _Lost(f"{result.reason}; gave up after {slot.attempts} attempts")
            if isinstance(result, _Lost):
                await self._lose(out, result.reason)
            slot.attempts = 0
            self._release(slot)

    # ------------------------------------------------------------------ one attempt

    async def _attempt(self, slot: _Slot, out: _Outgoing) -> _Result:
        if out.cause_key is not None and not slot.claimed:
            try:
                first = await self._claim_once(out.cause_key)
            except Exception as exc:  # the store is down: try again later
                return _Retry(f"claim of {out.cause_key!r} failed: {type(exc).__name__}")
            slot.claimed = True
            if not first:
                return _Sent()
        if self._client is None:
            self._log.info(out.plain, extra={"notification": "log"})
            self._count("logged")
            return _Sent()
        ref = self._current_ref(out)
        if ref is None and out.incident_id is not None:
            foreign = await self._first_post_elsewhere(out.incident_id)
            if isinstance(foreign, _Retry):
                return foreign
            ref = foreign
        digest = _digest(out)
        if ref is not None:
            if ref.digest == digest:
                return _Sent()  # the message already reads exactly this
            result = await self._call("chat.update", out, channel=ref.channel, ts=ref.ts)
            if not (isinstance(result, _Lost) and result.error == "message_not_found"):
                if isinstance(result, _Sent) and out.incident_id is not None:
                    self._refs.put(out.incident_id, _Ref(ref.channel, ref.ts, digest))
                return result
            # Deleted by someone: post a fresh message and remember where it is now.
            self._log.info("Slack message %s gone (message_not_found), posting anew", ref.ts)
            if out.incident_id is not None:
                self._refs.pop(out.incident_id)
            channel: str | None = ref.channel
        else:
            channel = out.channel
        if not channel:
            return _Lost(
                "no Slack channel: set the model's slack_channel or RECEIVER_SLACK_CHANNEL"
            )
        if not valid_channel(channel):
            return _Lost(f"invalid Slack channel {truncate(channel, 100)!r}")
        return await self._call("chat.postMessage", out, channel=channel)

    async def _first_post_elsewhere(self, incident_id: str) -> _Ref | _Retry | None:
        """None when this process may post the incident's first message; else the ref the
        replica that may saved, or a retry while it has not saved one yet."""
        if self._post_rights.get(incident_id) is not None:
            return None
        try:
            first = await self._claim_once("slack-post\x1f" + incident_id)
        except Exception as exc:  # the store is down: try again later
            return _Retry(f"claim of the first post failed: {type(exc).__name__}")
        if first:
            self._post_rights.put(incident_id, True)
            return None
        loaded = None
        if self._load_ref is not None:
            try:
                loaded = await self._load_ref(incident_id)
            except Exception as exc:
                return _Retry(f"reading the message ref failed: {type(exc).__name__}")
        if loaded is None:
            return _Retry(
                "another replica is posting this incident's message", _FOREIGN_POST_RETRY_SECONDS
            )
        ref = _Ref(loaded[0], loaded[1])
        self._refs.put(incident_id, ref)
        return ref

    def _current_ref(self, out: _Outgoing) -> _Ref | None:
        if out.incident_id is None:
            return None
        learned = self._refs.get(out.incident_id)
        if learned is not None:
            return learned
        ref = out.ref
        if ref is None or not valid_channel(ref.channel) or not _TS_RE.fullmatch(ref.ts):
            return None
        return ref

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
        if method == "chat.postMessage" and out.incident_id is not None:
            new_channel = str(resp.get("channel") or channel)
            new_ts = str(resp.get("ts") or "")
            self._refs.put(out.incident_id, _Ref(new_channel, new_ts, _digest(out)))
            try:
                await self._save_ref(out.incident_id, new_channel, new_ts)
            except Exception:
                self._log.exception("could not save the Slack message ref of %s", out.incident_id)
        return _Sent()

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
        try:
            await self._record_lost(out.incident_id, truncate(reason))
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
