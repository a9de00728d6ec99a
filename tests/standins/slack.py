"""A loopback stand-in for Slack: the Web API the receiver calls, and Slack's side of
interactivity (signed HTTP deliveries, response URLs, Socket Mode).

Web API (``POST`` or ``GET /api/{method}``, token in ``Authorization: Bearer`` or the
body): ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``views.open``,
``views.update``, ``usergroups.users.list`` (bot token ``xoxb-``, needs the scopes in
``slack.scopes``) and ``apps.connections.open`` (app-level token ``xapp-`` only). It
answers like Slack (HTTP 200 with ``ok: true/false`` and Slack's error names, 429 with
``Retry-After``), records every call with its parsed body, headers and arrival time, and
keeps each message and modal as it currently stands so tests read what people would see.
Faults are injected with knobs (``rate_limit``, ``fail_with``, ``server_error``,
``delay``). Tests wait on ``wait_for`` (a condition notified on every change), never on
fixed sleeps.

Interactivity, Slack's side:

- ``send_action(url, payload, signing_secret=...)`` POSTs ``payload=<json>`` form-encoded
  and signed (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``) to the app.
- ``button_payload(message, action_id, user_id=...)`` presses a button of a posted
  message; ``submission_payload(view_id, values)`` submits an opened modal. Both issue
  the trigger id and response URL Slack would; builders for odd payloads are in
  ``tests.standins.slack_payloads`` (re-exported here).
- ``response_url(...)`` gives a URL served here; what the app posts to it lands in
  ``slack.responses`` (and changes the message, or adds an ephemeral, as Slack would).
- Socket Mode: ``apps.connections.open`` returns a one-time ``ws://`` URL of this server;
  ``push_interactive(payload)`` sends an envelope, ``socket_acks`` records the app's
  acknowledgements, ``disconnect_socket()``/``drop_socket()`` force reconnects.

Use as a pytest plugin (``pytest_plugins = ["tests.standins.slack"]`` or
``-p tests.standins.slack``): the async ``slack`` fixture runs it on 127.0.0.1, port 0,
in the test's loop; ``slack.base_url`` is what ``AsyncWebClient(base_url=...)`` takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from tests.standins.slack_payloads import (
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    SIGNING_SECRET,
    SLACK_USER_AGENT,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
    action_ts,
    block_actions_payload,
    form_body,
    new_trigger_id,
    selected_option,
    signature,
    view_submission_payload,
)
from tests.standins.slack_socket import LINK_PATH, SocketModeServer

__all__ = [
    "APP_ID",
    "APP_TOKEN",
    "BOT_ID",
    "BOT_SCOPES",
    "BOT_USER_ID",
    "METHODS",
    "SCOPE_NEEDED",
    "SIGNING_SECRET",
    "TEAM_DOMAIN",
    "TEAM_ID",
    "TOKEN",
    "VERIFICATION_TOKEN",
    "ActionDelivery",
    "Call",
    "Ephemeral",
    "Message",
    "ResponsePost",
    "SlackStandIn",
    "StoredView",
    "action_ts",
    "block_actions_payload",
    "channel_id",
    "form_body",
    "new_trigger_id",
    "selected_option",
    "signature",
    "slack",
    "view_submission_payload",
]

TOKEN = "xoxb-standin-token"
APP_TOKEN = "xapp-1-A0STANDIN01-1-standin-app-token"
_ID_RE = re.compile(r"^[CGD][A-Z0-9]{8,}$")
METHODS = (
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "views.open",
    "views.update",
    "usergroups.users.list",
    "apps.connections.open",
)
# The bot scope each method needs (docs.slack.dev method pages); views.* need none.
SCOPE_NEEDED = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "usergroups.users.list": "usergroups:read",
}
# What deploy/slack-app-manifest.yaml grants the bot, and so what the stand-in grants.
BOT_SCOPES = frozenset({"chat:write", "usergroups:read"})
# Slack takes up to five posts to one response_url (within 30 minutes).
RESPONSE_URL_USES = 5
# Block Kit limits checked on views (docs.slack.dev "View object").
VIEW_TITLE_MAX = 24
VIEW_BLOCKS_MAX = 100
PRIVATE_METADATA_MAX = 3000
CALLBACK_ID_MAX = 255


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


@dataclass(frozen=True)
class Ephemeral:
    """A message only ``user`` sees: from ``chat.postEphemeral`` or a ``response_url``."""

    channel: str | None
    user: str | None
    text: str
    blocks: list[dict[str, Any]]
    ts: str
    via: str  # "chat.postEphemeral" or "response_url"


@dataclass
class StoredView:
    """A modal as it stands now: the view as last sent, Slack's id and hash, its user."""

    id: str
    view: dict[str, Any]
    hash: str
    user: str | None
    trigger_id: str
    updates: int = 0

    @property
    def callback_id(self) -> str:
        return str(self.view.get("callback_id", ""))

    @property
    def private_metadata(self) -> str:
        return str(self.view.get("private_metadata", ""))

    @property
    def external_id(self) -> str:
        return str(self.view.get("external_id", ""))


@dataclass(frozen=True)
class ResponsePost:
    """One POST to a response URL: the JSON body, headers, and what the stand-in answered."""

    url: str
    body: dict[str, Any]
    headers: Mapping[str, str]
    status: int
    answer: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def text(self) -> str:
        return str(self.body.get("text") or "")

    @property
    def replace_original(self) -> bool:
        return _truthy(self.body.get("replace_original"))

    @property
    def delete_original(self) -> bool:
        return _truthy(self.body.get("delete_original"))

    @property
    def ephemeral(self) -> bool:
        """A new message only the presser sees (Slack's default for response URLs)."""
        if self.replace_original or self.delete_original:
            return False
        return self.body.get("response_type", "ephemeral") != "in_channel"


@dataclass(frozen=True)
class ActionDelivery:
    """One interactivity request sent to the app: what went out and what came back."""

    url: str
    body: str
    headers: Mapping[str, str]
    status: int
    text: str
    response_headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.text)


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


@dataclass
class _Trigger:
    user: str | None
    issued_at: float
    used: bool = False
    expired: bool = False


@dataclass
class _ResponseUrl:
    channel: str | None
    message_ts: str | None
    user: str | None
    uses: int = 0
    expired: bool = False


def channel_id(channel: str) -> str:
    """The conversation id Slack answers with for a channel name (ids are kept as they are)."""
    if _ID_RE.fullmatch(channel):
        return channel
    return "C" + hashlib.sha256(channel.lstrip("#").encode()).hexdigest()[:10].upper()


def _truthy(value: object) -> bool:
    # Form bodies carry "true"/"1"; JSON bodies carry booleans.
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


def _error(error: str, *messages: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error": error}
    if messages:
        answer["response_metadata"] = {"messages": list(messages)}
    return answer


class SlackStandIn:
    """The Web API subset the receiver uses, Slack's interactivity side, knobs and records."""

    def __init__(
        self,
        token: str = TOKEN,
        *,
        app_token: str = APP_TOKEN,
        signing_secret: str = SIGNING_SECRET,
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.scopes: set[str] = set(BOT_SCOPES)
        self.app_token_scopes: set[str] = {"connections:write"}
        self.calls: list[Call] = []
        self.counts: Counter[str] = Counter()
        # Requests received but maybe not answered yet (see ``delay``): in flight.
        self.arrivals: Counter[str] = Counter()
        self.messages: dict[tuple[str, str], Message] = {}
        self.unknown_channels: set[str] = set()
        # Members per conversation id; a channel not listed here has everyone in it.
        self.channel_members: dict[str, set[str]] = {}
        # User group id ("S...") -> member user ids, for usergroups.users.list.
        self.usergroups: dict[str, list[str]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, StoredView] = {}
        self.responses: list[ResponsePost] = []
        self.deliveries: list[ActionDelivery] = []
        # Slack lets a trigger id be exchanged within 3 s. Off unless a test sets it, with
        # its own ``clock``: the stand-in never judges by the wall clock on its own.
        self.trigger_ttl: float | None = None
        self.clock: Callable[[], float] = time.monotonic
        self.delay = 0.0
        self.base_url = ""
        self.origin = ""
        self.socket = SocketModeServer(APP_ID, self._notify)
        self._faults: list[_Fault] = []
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._next_ts = 1_700_000_000_000_100
        self._next_hook = 1_000_000_000_000
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

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

    def new_trigger_id(self, user_id: str | None = None) -> str:
        """A trigger id this workspace issued (to ``user_id``), good for one ``views.open``."""
        trigger = new_trigger_id()
        self._triggers[trigger] = _Trigger(user_id, self.clock())
        return trigger

    def expire_trigger_id(self, trigger_id: str) -> None:
        """Make ``trigger_id`` too old to exchange (``expired_trigger_id``)."""
        self._triggers[trigger_id].expired = True

    def response_url(
        self,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        user_id: str | None = None,
    ) -> str:
        """A fresh response URL served here, tied to the message it answers (if any)."""
        self._next_hook += 1
        path = f"/actions/{TEAM_ID}/{self._next_hook}/{secrets.token_urlsafe(18)}"
        self._response_urls[path] = _ResponseUrl(channel, message_ts, user_id)
        return self.origin + path

    def expire_response_url(self, url: str) -> None:
        """Make ``url`` answer ``expired_url``, as Slack does after 30 minutes."""
        self._response_urls[_path_of(url)].expired = True

    # ---------------------------------------------------------------- reading

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> Message:
        return self.messages[(channel, ts)]

    def only_message(self) -> Message:
        """The single message in the workspace; fails when there is not exactly one."""
        assert len(self.messages) == 1, f"expected one message, have {list(self.messages)}"
        return next(iter(self.messages.values()))

    def view(self, view_id: str) -> StoredView:
        return self.views[view_id]

    def only_view(self) -> StoredView:
        """The single modal opened; fails when there is not exactly one."""
        assert len(self.views) == 1, f"expected one view, have {list(self.views)}"
        return next(iter(self.views.values()))

    @property
    def socket_acks(self) -> list[dict[str, Any]]:
        """Acknowledgement frames (``{"envelope_id": ...}``) the app sent, in order."""
        return self.socket.acks

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        """Envelopes sent over Socket Mode, in order."""
        return self.socket.envelopes

    @property
    def socket_connections(self) -> int:
        """Socket Mode connections accepted so far (reconnects count)."""
        return len(self.socket.connections)

    @property
    def open_sockets(self) -> int:
        """Socket Mode connections open now."""
        return len(self.socket.open)

    def socket_ack(self, envelope_id: str) -> dict[str, Any] | None:
        return self.socket.ack(envelope_id)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; checked on every arrival, answer and frame.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The app's acknowledgement of ``envelope_id``, once it has arrived."""
        await self.wait_for(lambda: self.socket.ack(envelope_id) is not None, timeout)
        ack = self.socket.ack(envelope_id)
        assert ack is not None
        return ack

    # ---------------------------------------------------------------- Slack's side

    def button_payload(
        self, message: Message, action_id: str, *, user_id: str, username: str | None = None
    ) -> dict[str, Any]:
        """The ``block_actions`` payload of ``user_id`` pressing ``action_id`` on ``message``.

        The button must be on the message as it stands (a test of what people can press);
        the payload carries a trigger id and a response URL issued here.
        """
        block, element = _find_button(message.blocks, action_id)
        text = element.get("text") or {}
        return block_actions_payload(
            user_id,
            action_id,
            element.get("value"),
            message_ts=message.ts,
            channel=message.channel,
            response_url=self.response_url(
                channel=message.channel, message_ts=message.ts, user_id=user_id
            ),
            trigger_id=self.new_trigger_id(user_id),
            block_id=str(block.get("block_id") or _generated_block_id(message.blocks, block)),
            button_text=str(text.get("text", "")),
            style=element.get("style"),
            username=username,
            message_text=message.text,
            message_blocks=message.blocks,
        )

    def submission_payload(
        self,
        view_id: str,
        values: Mapping[str, Mapping[str, str | Mapping[str, Any] | None]],
        *,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """The ``view_submission`` payload of the opened modal ``view_id`` filled with ``values``.

        ``values`` maps block_id -> action_id -> value (see ``view_submission_payload``).
        Inputs left out are reported empty, as Slack does; a required input left empty, or
        a block/action the modal does not have, fails here: Slack would not submit it.
        """
        stored = self.views[view_id]
        state: dict[str, dict[str, Any]] = {}
        inputs = {
            (b.get("block_id"), b["element"].get("action_id")): b
            for b in stored.view.get("blocks", [])
            if b.get("type") == "input"
        }
        for block_id, actions in values.items():
            for action_id in actions:
                assert (block_id, action_id) in inputs, (
                    f"modal {view_id} has no input {block_id}/{action_id}; it has {sorted(inputs)}"
                )
        for (block_id, action_id), block in inputs.items():
            given = values.get(block_id, {}).get(action_id)
            if given in (None, "") and not block.get("optional", False):
                raise AssertionError(
                    f"Slack would not submit modal {view_id}: required input "
                    f"{block_id}/{action_id} is empty"
                )
            kind = block["element"].get("type")
            assert not (isinstance(given, str) and kind != "plain_text_input"), (
                f"input {block_id}/{action_id} is a {kind}: pass its state, e.g. "
                "selected_option(value)"
            )
            if given is None and kind == "static_select":
                given = {"type": "static_select", "selected_option": None}
            state.setdefault(block_id, {})[action_id] = given
        user = user_id or stored.user
        assert user, "no user: pass user_id (the modal was opened without a known user)"
        view = stored.view

        def text_of(key: str) -> str | None:
            part = view.get(key)
            return None if part is None else str(part.get("text", ""))

        return view_submission_payload(
            user,
            stored.callback_id,
            stored.private_metadata,
            state,
            view_id=stored.id,
            trigger_id=self.new_trigger_id(user),
            view_hash=stored.hash,
            blocks=view.get("blocks", []),
            title=text_of("title") or "",
            submit=text_of("submit"),
            close=text_of("close"),
            external_id=stored.external_id,
        )

    async def send_action(
        self,
        url: str,
        payload: Mapping[str, Any] | str,
        *,
        signing_secret: str,
        timestamp: int | float | str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        signature: str | None = None,
        signed: bool = True,
        timeout: float | None = None,
    ) -> ActionDelivery:
        """POST ``payload`` to the app at ``url`` as Slack's interactivity does.

        Body ``payload=<json>`` (form-encoded; a str payload is sent as is, to send
        malformed JSON), signed with ``signing_secret`` over ``v0:{timestamp}:{body}``.
        ``timestamp`` defaults to now (Unix seconds); pass an old one for a stale request.
        ``signature`` replaces the computed one (a bad signature); ``signed=False`` sends
        neither header. ``retry_num`` adds ``X-Slack-Retry-Num``/``-Reason`` as Slack does
        when it delivers again. ``timeout`` (seconds): Slack gives up after 3.
        """
        body = form_body(payload)
        ts = str(int(time.time())) if timestamp is None else str(timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": SLACK_USER_AGENT,
            "Accept": "application/json,*/*",
        }
        if signed:
            headers["X-Slack-Request-Timestamp"] = ts
            headers["X-Slack-Signature"] = (
                signature if signature is not None else _sign(signing_secret, ts, body)
            )
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(
            url,
            data=body.encode(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            delivery = ActionDelivery(url, body, headers, resp.status, text, dict(resp.headers))
        self.deliveries.append(delivery)
        await self._notify()
        return delivery

    async def push_interactive(
        self,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        timeout: float = 5.0,
    ) -> str:
        """Send ``payload`` over Socket Mode in an ``interactive`` envelope; its envelope_id.

        Waits (up to ``timeout``) for an open connection and uses the newest one.
        ``accepts_response_payload`` defaults to what Slack sets: true for a
        ``view_submission`` (the ack may carry ``response_action``), false otherwise.
        """
        await self.wait_for(lambda: bool(self.socket.open), timeout)
        conn = self.socket.open[-1]
        if accepts_response_payload is None:
            accepts_response_payload = payload.get("type") == "view_submission"
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": dict(payload),
            "type": "interactive",
            "accepts_response_payload": accepts_response_payload,
        }
        await self.socket.send(conn, envelope)
        return envelope_id

    async def disconnect_socket(self, reason: str = "refresh_requested") -> None:
        """Send Slack's ``disconnect`` message on every open connection."""
        for conn in self.socket.open:
            await self.socket.disconnect(conn, reason)

    async def drop_socket(self, *, abrupt: bool = False) -> None:
        """Close every open Socket Mode connection (``abrupt``: cut TCP, no close frame)."""
        for conn in self.socket.open:
            await self.socket.drop(conn, abrupt=abrupt)

    # ---------------------------------------------------------------- server

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/api/{method}", self._handle)
        app.router.add_route("POST", "/api/{method}", self._handle)
        app.router.add_post("/actions/{team}/{hook}/{secret}", self._handle_response_url)
        app.router.add_get(LINK_PATH, self.socket.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.origin = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.origin}/api/"

    async def stop(self) -> None:
        await self.socket.close_all()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        method = request.match_info["method"]
        body = await _parse_body(request)
        status, answer, headers = self._answer(method, body, request.headers)
        self.arrivals[method] += 1
        await self._notify()
        if self.delay:
            await asyncio.sleep(self.delay)
        call = Call(method, body, dict(request.headers), at, status, answer)
        self.calls.append(call)
        self.counts[method] += 1
        await self._notify()
        if status == 500:
            return web.Response(status=500, text="internal server error")
        return web.json_response(answer, status=status, headers=headers)

    def _answer(
        self, method: str, body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else body.get("token")
        refusal = self._refuse_token(method, token)
        if refusal is not None:
            return 200, refusal, {}
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
        needed = SCOPE_NEEDED.get(method)
        if needed is not None and needed not in self.scopes:
            provided = ",".join(sorted(self.scopes))
            answer = {"ok": False, "error": "missing_scope", "needed": needed, "provided": provided}
            return 200, answer, {}
        handler = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
            "chat.postEphemeral": self._post_ephemeral,
            "views.open": self._open_view,
            "views.update": self._update_view,
            "usergroups.users.list": self._usergroup_members,
            "apps.connections.open": self._open_connection,
        }[method]
        return 200, handler(body), {}

    def _refuse_token(self, method: str, token: object) -> dict[str, Any] | None:
        """Slack's answer to a missing, wrong or wrong-kind token; None when it is accepted."""
        if not token:
            return _error("not_authed")
        token = str(token)
        app_level = token.startswith("xapp-")
        if method == "apps.connections.open":
            # Only an app-level token opens Socket Mode connections, and only with
            # the connections:write scope.
            if not app_level:
                return _error("not_allowed_token_type")
            if token != self.app_token:
                return _error("invalid_auth")
            if "connections:write" not in self.app_token_scopes:
                return {
                    "ok": False,
                    "error": "missing_scope",
                    "needed": "connections:write",
                    "provided": ",".join(sorted(self.app_token_scopes)),
                }
            return None
        if app_level:
            return _error("not_allowed_token_type" if token == self.app_token else "invalid_auth")
        if token != self.token:
            return _error("invalid_auth")
        return None

    # ---------------------------------------------------------------- methods

    def _post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = str(body.get("channel") or "")
        text, blocks = body.get("text"), body.get("blocks")
        if not channel or channel in self.unknown_channels:
            return _error("channel_not_found")
        if not text and not blocks:
            return _error("no_text")
        cid = channel_id(channel)
        ts = self._new_ts()
        self.messages[(cid, ts)] = Message(cid, ts, text or "", blocks or [])
        message = {"type": "message", "text": text, "blocks": blocks or [], "ts": ts}
        return {"ok": True, "channel": cid, "ts": ts, "message": message}

    def _update_message(self, body: dict[str, Any]) -> dict[str, Any]:
        # chat.update takes the conversation id, not a name.
        channel = str(body.get("channel") or "")
        text, blocks = body.get("text"), body.get("blocks")
        if not channel:
            return _error("channel_not_found")
        if not text and not blocks:
            return _error("no_text")
        ts = str(body.get("ts") or "")
        current = self.messages.get((channel, ts))
        if current is None:
            error = "message_not_found" if _ID_RE.fullmatch(channel) else "channel_not_found"
            return _error(error)
        current.text = text or ""
        if blocks is not None:
            current.blocks = blocks
        current.edits += 1
        message = {"type": "message", "text": text, "blocks": current.blocks}
        return {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}

    def _post_ephemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = str(body.get("channel") or "")
        user = str(body.get("user") or "")
        text, blocks = body.get("text"), body.get("blocks")
        if not channel or channel in self.unknown_channels:
            return _error("channel_not_found")
        if not user:
            return _error("invalid_arguments", "[ERROR] missing required field: user")
        if not text and not blocks:
            return _error("no_text")
        cid = channel_id(channel)
        members = self.channel_members.get(cid)
        if members is not None and user not in members:
            return _error("user_not_in_channel")
        ts = self._new_ts()
        self.ephemerals.append(
            Ephemeral(cid, user, text or "", blocks or [], ts, "chat.postEphemeral")
        )
        return {"ok": True, "message_ts": ts}

    def _open_view(self, body: dict[str, Any]) -> dict[str, Any]:
        trigger_id = str(body.get("trigger_id") or body.get("interactivity_pointer") or "")
        view = body.get("view")
        if not trigger_id:
            return _error("invalid_arguments", "[ERROR] missing required field: trigger_id")
        if not isinstance(view, dict):
            return _error("invalid_arguments", "[ERROR] missing required field: view")
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            return _error("invalid_trigger_id")
        if trigger.used:
            return _error("exchanged_trigger_id")
        if trigger.expired or (
            self.trigger_ttl is not None and self.clock() - trigger.issued_at > self.trigger_ttl
        ):
            return _error("expired_trigger_id")
        problems = _view_problems(view)
        if problems:
            return _error("invalid_arguments", *problems)
        external = str(view.get("external_id") or "")
        if external and any(v.external_id == external for v in self.views.values()):
            return _error("duplicate_external_id")
        trigger.used = True
        view_id = "V" + secrets.token_hex(5).upper()
        stored = StoredView(view_id, view, self._new_view_hash(), trigger.user, trigger_id)
        self.views[view_id] = stored
        return {"ok": True, "view": _render_view(stored)}

    def _update_view(self, body: dict[str, Any]) -> dict[str, Any]:
        view = body.get("view")
        if not isinstance(view, dict):
            return _error("invalid_arguments", "[ERROR] missing required field: view")
        view_id, external = body.get("view_id"), body.get("external_id")
        if not view_id and not external:
            return _error("invalid_arguments", "[ERROR] either view_id or external_id required")
        if view_id:
            stored = self.views.get(str(view_id))
        else:
            stored = next((v for v in self.views.values() if v.external_id == external), None)
        if stored is None:
            return _error("not_found")
        expected = body.get("hash")
        if expected and expected != stored.hash:
            return _error("hash_conflict")
        problems = _view_problems(view)
        if problems:
            return _error("invalid_arguments", *problems)
        stored.view = view
        stored.hash = self._new_view_hash()
        stored.updates += 1
        return {"ok": True, "view": _render_view(stored)}

    def _usergroup_members(self, body: dict[str, Any]) -> dict[str, Any]:
        group = str(body.get("usergroup") or "")
        if not group:
            return _error("invalid_arguments", "[ERROR] missing required field: usergroup")
        if group not in self.usergroups:
            return _error("no_such_subteam")
        return {"ok": True, "users": list(self.usergroups[group])}

    def _open_connection(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.socket.issue_url(self.origin)}

    # ---------------------------------------------------------------- response URLs

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        hook = self._response_urls.get(request.path)
        body: dict[str, Any] = {}
        status, answer = 200, {"ok": True}
        if hook is None:
            status, answer = 404, _error("no_service")
        elif hook.expired:
            status, answer = 404, _error("expired_url")
        elif hook.uses >= RESPONSE_URL_USES:
            status, answer = 404, _error("used_url")
        else:
            try:
                parsed = json.loads(raw) if request.content_type == "application/json" else None
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                status, answer = 400, _error("invalid_payload")
            else:
                body = parsed
                status, answer = self._respond(hook, body)
        url = self.origin + request.path
        self.responses.append(ResponsePost(url, body, dict(request.headers), status, answer))
        await self._notify()
        return web.json_response(answer, status=status)

    def _respond(self, hook: _ResponseUrl, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        original = (hook.channel or "", hook.message_ts or "")
        if _truthy(body.get("delete_original")):
            hook.uses += 1
            self.messages.pop(original, None)
            return 200, {"ok": True}
        text, blocks = body.get("text"), body.get("blocks")
        if not text and not blocks:
            return 400, _error("no_text")
        hook.uses += 1
        if _truthy(body.get("replace_original")):
            current = self.messages.get(original)
            if current is None:
                return 404, _error("message_not_found")
            current.text = text or ""
            if blocks is not None:
                current.blocks = blocks
            current.edits += 1
        elif body.get("response_type") == "in_channel" and hook.channel:
            ts = self._new_ts()
            self.messages[(hook.channel, ts)] = Message(hook.channel, ts, text or "", blocks or [])
        else:
            self.ephemerals.append(
                Ephemeral(
                    hook.channel,
                    hook.user,
                    text or "",
                    blocks or [],
                    self._new_ts(),
                    "response_url",
                )
            )
        return 200, {"ok": True}

    # ---------------------------------------------------------------- ids

    def _new_ts(self) -> str:
        self._next_ts += 100
        seconds, micros = divmod(self._next_ts, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _new_view_hash(self) -> str:
        return f"{self._new_ts().split('.')[0]}.{secrets.token_hex(4)}"


def _sign(signing_secret: str, timestamp: str, body: str) -> str:
    return signature(signing_secret, timestamp, body)


def _path_of(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1]


def _iter_buttons(
    blocks: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for block in blocks:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                yield block, element
        accessory = block.get("accessory")
        if isinstance(accessory, dict):
            yield block, accessory


def _find_button(
    blocks: list[dict[str, Any]], action_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    found = [(b, e) for b, e in _iter_buttons(blocks) if e.get("action_id") == action_id]
    names = [e.get("action_id") for _, e in _iter_buttons(blocks)]
    assert found, f"no element {action_id!r} on the message; it has {names}"
    assert len(found) == 1, f"{len(found)} elements with action_id {action_id!r} on the message"
    block, element = found[0]
    assert element.get("type") == "button", (
        f"{action_id!r} is a {element.get('type')}, not a button"
    )
    return block, element


def _generated_block_id(blocks: list[dict[str, Any]], block: dict[str, Any]) -> str:
    # Slack makes up a short id for blocks sent without one; stable per position here.
    return hashlib.sha256(str(blocks.index(block)).encode()).hexdigest()[:5]


def _plain_text_problems(value: object, pointer: str, limit: int) -> list[str]:
    if not isinstance(value, dict) or value.get("type") != "plain_text":
        return [f"[ERROR] must be a plain_text text object [json-pointer:{pointer}]"]
    text = str(value.get("text") or "")
    if not text:
        return [f"[ERROR] must be at least 1 character [json-pointer:{pointer}/text]"]
    if len(text) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}/text]"]
    return []


def _view_problems(view: dict[str, Any]) -> list[str]:
    """What Slack would refuse in a modal view, in its ``response_metadata`` wording."""
    problems: list[str] = []
    if view.get("type") != "modal":
        problems.append("[ERROR] must be one of: modal, home [json-pointer:/view/type]")
    problems += _plain_text_problems(view.get("title"), "/view/title", VIEW_TITLE_MAX)
    for key in ("submit", "close"):
        if view.get(key) is not None:
            problems += _plain_text_problems(view[key], f"/view/{key}", VIEW_TITLE_MAX)
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return [*problems, "[ERROR] missing required field: blocks [json-pointer:/view]"]
    if len(blocks) > VIEW_BLOCKS_MAX:
        problems.append(
            f"[ERROR] no more than {VIEW_BLOCKS_MAX} items allowed [json-pointer:/view/blocks]"
        )
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        block_id = block.get("block_id")
        if block_id is not None:
            if block_id in seen:
                problems.append(f"[ERROR] duplicate block_id [json-pointer:/view/blocks/{i}]")
            seen.add(block_id)
        if block.get("type") == "input":
            problems += _plain_text_problems(block.get("label"), f"/view/blocks/{i}/label", 2000)
            element = block.get("element")
            if not isinstance(element, dict) or not element.get("type"):
                problems.append(
                    f"[ERROR] missing required field: element [json-pointer:/view/blocks/{i}]"
                )
    if any(b.get("type") == "input" for b in blocks) and view.get("submit") is None:
        problems.append(
            "[ERROR] must provide submit when the view has input blocks [json-pointer:/view/submit]"
        )
    if len(str(view.get("private_metadata") or "")) > PRIVATE_METADATA_MAX:
        problems.append(
            f"[ERROR] must be less than {PRIVATE_METADATA_MAX + 1} characters "
            "[json-pointer:/view/private_metadata]"
        )
    if len(str(view.get("callback_id") or "")) > CALLBACK_ID_MAX:
        problems.append(
            f"[ERROR] must be less than {CALLBACK_ID_MAX + 1} characters "
            "[json-pointer:/view/callback_id]"
        )
    return problems


def _render_view(stored: StoredView) -> dict[str, Any]:
    """A view as Slack returns it from views.open/views.update."""
    view = stored.view
    return {
        "id": stored.id,
        "team_id": TEAM_ID,
        "type": "modal",
        "title": view.get("title"),
        "submit": view.get("submit"),
        "close": view.get("close"),
        "blocks": view.get("blocks", []),
        "private_metadata": stored.private_metadata,
        "callback_id": stored.callback_id,
        "external_id": stored.external_id,
        "state": {"values": {}},
        "hash": stored.hash,
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "root_view_id": stored.id,
        "previous_view_id": None,
        "app_id": APP_ID,
        "app_installed_team_id": TEAM_ID,
        "bot_id": BOT_ID,
    }


async def _parse_body(request: web.Request) -> dict[str, Any]:
    """Query parameters plus the body: JSON as the SDK sends it with ``json=``, form otherwise.

    ``blocks`` and ``view`` arrive JSON-encoded inside form bodies and are decoded.
    """
    body: dict[str, Any] = dict(request.query)
    raw = await request.read()
    if request.content_type == "application/json":
        data = json.loads(raw or b"{}")
        if isinstance(data, dict):
            body.update(data)
    elif raw:
        body.update(parse_qsl(raw.decode(), keep_blank_values=True))
    for key in ("blocks", "view"):
        if isinstance(body.get(key), str):
            with contextlib.suppress(ValueError):
                body[key] = json.loads(body[key])
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
