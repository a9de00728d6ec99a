"""Slack's doors to the buttons: ``POST /slack/actions`` and Socket Mode.

Both only translate: the signature (HTTP) or the app token (Socket Mode) proves the sender
is Slack, then the payload goes to ``SlackActions.receive``, whose answer goes back at
once; the action itself runs in the background there, through the control layer.

HTTP: the signature and its timestamp are checked (slack-sdk's ``SignatureVerifier``,
5-minute window, constant-time compare) over the raw body before anything is parsed; a
bad, missing or stale one is 401 and nothing is read further. Without
``SLACK_SIGNING_SECRET`` the route answers 403 (interactivity over HTTP is off; it is never
open unsigned), like the admin routes without their token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from receiver import keys
from receiver.notify.slack.actions import SlackActions, loads_form_payload
from receiver.web.middleware import error_response, json_body

log = logging.getLogger(__name__)

PATH = "/slack/actions"

# Socket Mode's ping interval: a dead connection is noticed (and replaced) within a few of
# these. slack-sdk's default.
SOCKET_PING_SECONDS = 5.0


async def receive(request: web.Request) -> web.StreamResponse:
    """One interaction delivered by Slack over HTTP; answered at once."""
    settings = request.config_dict[keys.SETTINGS]
    secret = settings.slack_signing_secret
    actions = request.config_dict.get(keys.SLACK_ACTIONS)
    if secret is None or actions is None:
        return error_response(
            403, "Slack interactivity over HTTP is off: set SLACK_SIGNING_SECRET on the receiver"
        )
    body = await request.read()
    if not verified(secret.get_secret_value(), request, body):
        return error_response(
            401,
            "missing, wrong or stale Slack signature (X-Slack-Signature,"
            " X-Slack-Request-Timestamp): check SLACK_SIGNING_SECRET and the clock",
        )
    try:
        fields = parse_qs(body.decode(), strict_parsing=False)
        raw = fields.get("payload")
        if not raw:
            raise ValueError("no payload field in the form body")
        answer = actions.receive(loads_form_payload(raw[0]), retry=_retry_num(request))
    except (ValueError, UnicodeDecodeError) as e:
        return error_response(400, f"not a Slack interaction payload: {e}")
    if answer is None:
        return web.Response(status=200)
    return json_body(answer)


def verified(secret: str, request: web.Request, body: bytes, clock: Clock | None = None) -> bool:
    """Slack's signature over ``v0:{timestamp}:{body}``, with a timestamp within 5 minutes."""
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not timestamp.isdigit() or not signature:
        return False
    verifier = SignatureVerifier(secret, clock) if clock is not None else SignatureVerifier(secret)
    return verifier.is_valid(body=body, timestamp=timestamp, signature=signature)


def _retry_num(request: web.Request) -> int:
    value = request.headers.get("X-Slack-Retry-Num", "0")
    return int(value) if value.isdigit() else 0


# ---------------------------------------------------------------------------------------
# Socket Mode


class SocketMode:
    """The same handlers over Socket Mode: envelopes acknowledged with ``receive``'s answer.

    slack-sdk's aiohttp client opens the connection with ``apps.connections.open`` (on
    ``RECEIVER_SLACK_API_URL``) and reconnects on its own when Slack refreshes or drops it.
    """

    def __init__(
        self, app_token: str, api_url: str, actions: SlackActions, session: aiohttp.ClientSession
    ) -> None:
        self.actions = actions
        self._connecting: asyncio.Task[None] | None = None
        self.client = SocketModeClient(
            app_token=app_token,
            web_client=AsyncWebClient(base_url=api_url, session=session),
            ping_interval=SOCKET_PING_SECONDS,
            logger=logging.getLogger("receiver.slack.socket_mode"),
        )
        self.client.socket_mode_request_listeners.append(self._on_request)

    async def _on_request(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        if request.type != "interactive":
            await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))
            return
        try:
            answer = self.actions.receive(request.payload, retry=request.retry_attempt or 0)
        except ValueError as e:
            log.warning("Socket Mode envelope %s is not an interaction: %s", request.envelope_id, e)
            answer = None
        response = SocketModeResponse(
            request.envelope_id,
            payload=answer if answer is not None and request.accepts_response_payload else None,
        )
        await client.send_socket_mode_response(response)

    def start(self) -> None:
        """Connect in the background: the receiver starts (and serves its other doors) while
        Slack is unreachable; the SDK keeps trying every ``SOCKET_PING_SECONDS``."""
        self._connecting = asyncio.create_task(self.client.connect(), name="slack-socket-mode")

    async def close(self) -> None:
        client = self.client
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        tasks = [
            t
            for t in (
                client.message_processor,
                client.current_session_monitor,
                client.message_receiver,
            )
            if t is not None
        ]
        await client.close()
        # The SDK cancels its tasks without waiting for them: wait, so none outlives us.
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.asynccontextmanager
async def socket_mode(
    app_token: str | None, api_url: str, actions: SlackActions, session: aiohttp.ClientSession
) -> AsyncIterator[None]:
    """Socket Mode for as long as the context lasts, when an app token is set."""
    if not app_token:
        yield
        return
    socket = SocketMode(app_token, api_url, actions, session)
    socket.start()
    try:
        yield
    finally:
        await socket.close()
