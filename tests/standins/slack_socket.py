"""The Socket Mode side of the Slack stand-in: a WebSocket server speaking Slack's envelopes.

What Slack does, and so what this does:

- ``apps.connections.open`` (app-level token) hands out a one-time URL
  ``.../link/?ticket=<uuid>&app_id=<app>``; a ticket opens one connection only.
- On connect the server sends ``{"type": "hello", "num_connections": n, "debug_info":
  {...}, "connection_info": {"app_id": ...}}``.
- Payloads arrive as envelopes ``{"envelope_id", "type": "interactive", "payload",
  "accepts_response_payload"}`` on one of the open connections; the app acknowledges
  each with a frame ``{"envelope_id": ...}`` (plus ``"payload"`` where a response is
  accepted). Acknowledgements are recorded, never required.
- Connections refresh: Slack sends ``{"type": "disconnect", "reason": "refresh_requested"}``
  and the client opens a new one; or the connection just drops.

Not modelled: Slack's re-delivery of unacknowledged envelopes, Events API envelopes.
The server runs inside the stand-in's aiohttp app; see ``SlackStandIn`` for the API.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

LINK_PATH = "/link/"


@dataclass
class SocketConnection:
    """One accepted WebSocket connection and what came over it."""

    number: int  # 1 for the first connection ever accepted, 2 for the next, ...
    ticket: str
    ws: web.WebSocketResponse
    request: web.Request
    frames: list[Any] = field(default_factory=list)  # parsed JSON (or raw text) received
    closed: bool = False


class SocketModeServer:
    """Tickets, connections, envelopes and acknowledgements; ``notify`` runs on each change."""

    def __init__(self, app_id: str, notify: Callable[[], Awaitable[None]]) -> None:
        self.app_id = app_id
        self.connections: list[SocketConnection] = []  # every one ever accepted, in order
        self.envelopes: list[dict[str, Any]] = []  # as sent, in order
        self.acks: list[dict[str, Any]] = []  # frames carrying an envelope_id, in order
        self.refused_tickets: list[str] = []
        self._tickets: dict[str, bool] = {}  # ticket -> used
        self._notify = notify

    # ---------------------------------------------------------------- reading

    @property
    def open(self) -> list[SocketConnection]:
        return [c for c in self.connections if not c.closed]

    def ack(self, envelope_id: str) -> dict[str, Any] | None:
        """The acknowledgement frame for ``envelope_id``, or None while there is none."""
        return next((a for a in self.acks if a.get("envelope_id") == envelope_id), None)

    # ---------------------------------------------------------------- tickets

    def issue_url(self, origin: str) -> str:
        """A fresh one-time WebSocket URL on ``origin`` (``http://host:port``)."""
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = False
        ws_origin = "ws" + origin.removeprefix("http")
        return f"{ws_origin}{LINK_PATH}?ticket={ticket}&app_id={self.app_id}"

    # ---------------------------------------------------------------- server side

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets or self._tickets[ticket]:
            # A ticket is good for one connection; a client must call
            # apps.connections.open again for the next one.
            self.refused_tickets.append(ticket)
            await self._notify()
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets[ticket] = True
        ws = web.WebSocketResponse(autoping=True)  # answers the client's pings with pongs
        await ws.prepare(request)
        conn = SocketConnection(len(self.connections) + 1, ticket, ws, request)
        self.connections.append(conn)
        hello = {
            "type": "hello",
            "num_connections": len(self.open),
            "debug_info": {
                "host": "applink-standin",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    frame: Any = json.loads(msg.data)
                except ValueError:
                    frame = msg.data
                conn.frames.append(frame)
                if isinstance(frame, dict) and "envelope_id" in frame:
                    self.acks.append(frame)
                await self._notify()
        finally:
            conn.closed = True
            await self._notify()
        return ws

    async def send(self, conn: SocketConnection, envelope: dict[str, Any]) -> None:
        self.envelopes.append(envelope)
        await conn.ws.send_str(json.dumps(envelope))
        await self._notify()

    async def disconnect(self, conn: SocketConnection, reason: str) -> None:
        """Ask the client to move to a new connection, as Slack does before a refresh."""
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "applink-standin"},
        }
        await conn.ws.send_str(json.dumps(message))

    async def drop(self, conn: SocketConnection, *, abrupt: bool = False) -> None:
        """Close ``conn``: with a close frame, or (``abrupt``) by cutting the TCP connection."""
        if abrupt:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
        else:
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"link refreshed")

    async def close_all(self) -> None:
        for conn in self.open:
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
