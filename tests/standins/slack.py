"""A loopback stand-in for Slack's Web API: ``chat.postMessage`` and ``chat.update``.

It answers like Slack (HTTP 200 with ``ok: true/false``, 429 with ``Retry-After``),
records every call with its parsed body, headers and arrival time, and keeps each message
as it currently stands so tests read what on-call people would see. Faults are injected
with knobs (``rate_limit``, ``fail_with``, ``server_error``, ``delay``). Tests wait on
``wait_for`` (a condition notified on every call), never on fixed sleeps.

Use as a pytest plugin (``pytest_plugins = ["tests.standins.slack"]`` or
``-p tests.standins.slack``): the async ``slack`` fixture runs it on 127.0.0.1, port 0,
in the test's loop, and ``slack.base_url`` is what ``AsyncWebClient(base_url=...)`` takes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

TOKEN = "xoxb-standin-token"
_ID_RE = re.compile(r"^[CGD][A-Z0-9]{8,}$")
METHODS = ("chat.postMessage", "chat.update")


@dataclass(frozen=True)
class Call:
    """One request as received: method, parsed body, headers, answer and arrival time."""

    method: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    at: float  # time.monotonic(), the clock asyncio's loop.time() reads
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.answer.get("ok"))


@dataclass
class Message:
    """A message as it stands in a channel now."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    edits: int = 0


@dataclass
class _Fault:
    kind: str  # "429", "500" or "error"
    remaining: int
    method: str | None
    when: Callable[[str, dict[str, Any]], bool] | None
    retry_after: float = 1.0
    error: str = ""

    def matches(self, method: str, body: dict[str, Any]) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.when is None or self.when(method, body)


def channel_id(channel: str) -> str:
    """The conversation id Slack answers with for a channel name (ids are kept as they are)."""
    if _ID_RE.fullmatch(channel):
        return channel
    return "C" + hashlib.sha256(channel.lstrip("#").encode()).hexdigest()[:10].upper()


class SlackStandIn:
    """The Web API subset the notifier uses, plus knobs and a record of calls."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.counts: Counter[str] = Counter()
        # Requests received but maybe not answered yet (see ``delay``): in flight.
        self.arrivals: Counter[str] = Counter()
        self.messages: dict[tuple[str, str], Message] = {}
        self.unknown_channels: set[str] = set()
        self.delay = 0.0
        self.base_url = ""
        self._faults: list[_Fault] = []
        self._next_ts = 1_700_000_000_000_100
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- knobs

    def rate_limit(
        self,
        times: int = 1,
        *,
        retry_after: float = 1,
        method: str | None = None,
        when: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching calls with HTTP 429 and ``Retry-After``."""
        self._faults.append(_Fault("429", times, method, when, retry_after=retry_after))

    def fail_with(
        self,
        error: str,
        times: int = 1,
        *,
        method: str | None = None,
        when: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching calls with ``{"ok": false, "error": error}``."""
        self._faults.append(_Fault("error", times, method, when, error=error))

    def server_error(
        self,
        times: int = 1,
        *,
        method: str | None = None,
        when: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching calls with a bare HTTP 500."""
        self._faults.append(_Fault("500", times, method, when))

    def delete_message(self, channel: str, ts: str) -> None:
        """Remove a message, as a person deleting it in Slack would."""
        del self.messages[(channel, ts)]

    # ---------------------------------------------------------------- reading

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> Message:
        return self.messages[(channel, ts)]

    def only_message(self) -> Message:
        """The single message in the workspace; fails when there is not exactly one."""
        assert len(self.messages) == 1, f"expected one message, have {list(self.messages)}"
        return next(iter(self.messages.values()))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; checked on every arrival and every answer.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # ---------------------------------------------------------------- server

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/api/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        method = request.match_info["method"]
        body = await _parse_body(request)
        status, answer, headers = self._answer(method, body, request.headers)
        self.arrivals[method] += 1
        async with self._changed:
            self._changed.notify_all()
        if self.delay:
            await asyncio.sleep(self.delay)
        call = Call(method, body, dict(request.headers), at, status, answer)
        self.calls.append(call)
        self.counts[method] += 1
        async with self._changed:
            self._changed.notify_all()
        if status == 500:
            return web.Response(status=500, text="internal server error")
        return web.json_response(answer, status=status, headers=headers)

    def _answer(
        self, method: str, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else body.get("token")
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token != self.token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        for fault in self._faults:
            if fault.remaining > 0 and fault.matches(method, body):
                fault.remaining -= 1
                if fault.kind == "429":
                    retry = {"Retry-After": f"{fault.retry_after:g}"}
                    return 429, {"ok": False, "error": "ratelimited"}, retry
                if fault.kind == "500":
                    return 500, {}, {}
                return 200, {"ok": False, "error": fault.error}, {}
        if method not in METHODS:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        channel = str(body.get("channel") or "")
        text = body.get("text")
        blocks = body.get("blocks")
        if not channel:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if not text and not blocks:
            return 200, {"ok": False, "error": "no_text"}, {}
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if method == "chat.postMessage":
            if channel in self.unknown_channels:
                return 200, {"ok": False, "error": "channel_not_found"}, {}
            cid = channel_id(channel)
            ts = self._new_ts()
            self.messages[(cid, ts)] = Message(cid, ts, text or "", blocks or [])
            message = {"type": "message", "text": text, "blocks": blocks or [], "ts": ts}
            return 200, {"ok": True, "channel": cid, "ts": ts, "message": message}, {}
        # chat.update takes the conversation id, not a name.
        ts = str(body.get("ts") or "")
        current = self.messages.get((channel, ts))
        if current is None:
            error = "message_not_found" if _ID_RE.fullmatch(channel) else "channel_not_found"
            return 200, {"ok": False, "error": error}, {}
        current.text = text or ""
        if blocks is not None:
            current.blocks = blocks
        current.edits += 1
        message = {"type": "message", "text": text, "blocks": current.blocks}
        return 200, {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}, {}

    def _new_ts(self) -> str:
        self._next_ts += 100
        seconds, micros = divmod(self._next_ts, 1_000_000)
        return f"{seconds}.{micros:06d}"


async def _parse_body(request: web.Request) -> dict[str, Any]:
    """JSON bodies as the SDK sends them with ``json=``, form bodies otherwise."""
    raw = await request.read()
    if request.content_type == "application/json":
        data = json.loads(raw or b"{}")
        return data if isinstance(data, dict) else {}
    body: dict[str, Any] = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    if isinstance(body.get("blocks"), str):
        body["blocks"] = json.loads(body["blocks"])
    return body


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    """A running stand-in on 127.0.0.1 (free port); ``slack.token`` is the accepted token."""
    server = SlackStandIn()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
