"""The status page ``GET /``: what the receiver knows, for people with a browser.

Server-rendered HTML (Jinja2, autoescaped: alert labels are data, never markup), no
JavaScript and no external assets, readable on a phone: the global pause, each model
(serving version, target, readiness with its reasons, pause, last drill), recent incidents
with their timeline in absolute UTC times, and the statistics. It only shows: actions stay
on the API, the CLI and Slack.

A browser cannot send the admin bearer token, so a sign-in form (``POST /login``, the token
in the body, never in a URL) exchanges it for a session: an opaque random id in an
HttpOnly, SameSite=Strict cookie (Secure behind TLS), kept server-side in the store for
``SESSION_TTL_SECONDS``; only a hash of the id is the store's key. The session is bound to
the admin token it was opened with, so rotating the token ends every session. Forms carry a
CSRF token (the session's; before sign-in, a double-submit cookie), checked on every POST,
on top of SameSite=Strict. Without a session the page shows the sign-in form and no data;
with no admin token configured it is disabled (403).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from receiver import keys
from receiver.errors import StoreUnavailable
from receiver.models import Incident, rfc3339, utcnow
from receiver.store import Store
from receiver.web.models import global_pause, model_items, views

log = logging.getLogger(__name__)

__all__ = ["SESSION_COOKIE", "SESSION_TTL_SECONDS", "Sessions", "add_routes", "setup"]

SESSION_COOKIE = "rr_session"
LOGIN_COOKIE = "rr_login"
"""Double-submit token of the sign-in form: a cross-site POST cannot carry it."""
SESSION_TTL_SECONDS = 12 * 3600.0
"""A working day; signing in again after it costs a paste of the token."""
LOGIN_FORM_TTL_SECONDS = 3600
RECENT_INCIDENTS = 20
"""Incidents shown, newest first; the API pages through the rest."""

_ENV_KEY = aiohttp_jinja2.APP_KEY


def _utc(value: datetime | str | None) -> str:
    """An absolute UTC time as people read it: ``2026-11-25 08:00:03 UTC``."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def setup(app: web.Application) -> None:
    """The template environment: autoescaped whatever the template's name, strict about
    undefined names so a template error shows in tests, not as a blank on the page."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("receiver.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters={"utc": _utc},
    )


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its CSRF token and when it signed in."""

    csrf: str
    created_at: str


def _binding(admin_token: str, session_id: str) -> str:
    return hmac.new(admin_token.encode(), session_id.encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Sign-in sessions in the store, under a hash of their id, for ``ttl_seconds``."""

    def __init__(self, store: Store, ttl_seconds: float = SESSION_TTL_SECONDS) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def _key(session_id: str) -> str:
        return "session:" + hashlib.sha256(session_id.encode()).hexdigest()

    async def open(self, admin_token: str) -> tuple[str, Session]:
        """A new session (id for the cookie, and its record)."""
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created_at=rfc3339(utcnow()) or "")
        record = {
            "csrf": session.csrf,
            "created_at": session.created_at,
            "binding": _binding(admin_token, session_id),
        }
        await self.store.put_value(self._key(session_id), json.dumps(record), self.ttl_seconds)
        return session_id, session

    async def get(self, session_id: str, admin_token: str) -> Session | None:
        """The session, if it exists, has not expired and was opened with this token."""
        if not session_id or len(session_id) > 128:
            return None
        (raw,) = await self.store.get_values([self._key(session_id)])
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            binding = str(record["binding"])
            session = Session(csrf=str(record["csrf"]), created_at=str(record["created_at"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(binding, _binding(admin_token, session_id)):
            return None  # opened with another admin token: rotated since
        return session

    async def close(self, session_id: str) -> None:
        await self.store.delete_value(self._key(session_id))


def _sessions(request: web.Request) -> Sessions:
    return Sessions(request.config_dict[keys.STORE])


# -- responses ---------------------------------------------------------------------------------


def _secure(request: web.Request) -> bool:
    """Came over TLS, here or at the proxy in front (``X-Forwarded-Proto: https``)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _page(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """A rendered page with headers that keep it private, unframed and script-free."""
    nonce = secrets.token_urlsafe(16)
    response = aiohttp_jinja2.render_template(
        template, request, {**context, "style_nonce": nonce}, status=status
    )
    response.headers.update(
        {
            # No script may run at all; the one inline stylesheet is allowed by its nonce.
            "Content-Security-Policy": (
                f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self';"
                " frame-ancestors 'none'; base-uri 'none'"
            ),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
    )
    return response


def _set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


def _sign_in_page(request: web.Request, message: str = "", status: int = 200) -> web.Response:
    """The sign-in form, with a fresh double-submit token in its cookie and its field."""
    token = secrets.token_urlsafe(32)
    response = _page(request, "sign_in.html", {"csrf": token, "message": message}, status)
    _set_cookie(request, response, LOGIN_COOKIE, token, LOGIN_FORM_TTL_SECONDS)
    return response


def _notice(request: web.Request, title: str, message: str, status: int) -> web.Response:
    return _page(request, "notice.html", {"title": title, "message": message}, status)


def _disabled(request: web.Request) -> web.Response:
    return _notice(
        request,
        "Status page disabled",
        "The status page and the admin API are disabled: set RECEIVER_ADMIN_TOKEN on the"
        " receiver to enable them.",
        403,
    )


def _unavailable(request: web.Request, error: StoreUnavailable) -> web.Response:
    """503 that names the problem, not the store's address (the page may not be signed in)."""
    log.warning("status page: %s", error)
    return _notice(
        request,
        "Store unavailable",
        "The receiver cannot reach its store (Redis) right now; its log says why. Reload"
        " in a moment.",
        503,
    )


def _see_other(location: str = "/") -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _admin_token(request: web.Request) -> str | None:
    secret = request.config_dict[keys.SETTINGS].admin_token
    return secret.get_secret_value() if secret is not None else None


async def _session(request: web.Request, admin_token: str) -> Session | None:
    return await _sessions(request).get(request.cookies.get(SESSION_COOKIE, ""), admin_token)


# -- handlers ----------------------------------------------------------------------------------


async def status_page(request: web.Request) -> web.Response:
    """``GET /``: the status, to a signed-in browser; else the sign-in form and no data."""
    admin_token = _admin_token(request)
    if admin_token is None:
        return _disabled(request)
    try:
        session = await _session(request, admin_token)
    except StoreUnavailable as e:
        return _unavailable(request, e)
    if session is None:
        return _sign_in_page(request)
    try:
        context = await _status(request)
    except StoreUnavailable as e:
        return _unavailable(request, e)
    return _page(request, "status.html", {**context, "csrf": session.csrf})


async def _status(request: web.Request) -> dict[str, Any]:
    store = request.config_dict[keys.STORE]
    readiness = request.config_dict[keys.ROLLBACK_READINESS]
    models = await model_items(readiness, store)
    page = await store.list_incidents(limit=RECENT_INCIDENTS)
    stats_view = views(request).stats
    stats = None
    if stats_view is not None:
        try:
            stats = await stats_view(None)
        except Exception:  # the statistics are a section of the page, not the page
            log.exception("statistics could not be read for the status page")
    return {
        "now": utcnow(),
        "global_pause": global_pause(request),
        "models": models,
        "incidents": [_timeline(i) for i in page.items],
        "stats": stats,
        "stats_wired": stats_view is not None,
        "interval_seconds": readiness.interval_seconds,
    }


def _timeline(incident: Incident) -> dict[str, Any]:
    """An incident as the page shows it: a heading and its steps in time order."""
    times = incident.times
    steps: list[dict[str, Any]] = [
        {"step": "Alert started", "at": times.alert_started, "note": ""},
        {"step": "Received", "at": times.received, "note": ""},
        {"step": "Switched", "at": times.switched, "note": ""},
        {"step": "Healthy", "at": times.healthy, "note": ""},
        {"step": "Confirmed", "at": times.confirmed, "note": ""},
    ]
    ack = incident.acknowledgement
    if ack is not None:
        note = f"by {ack.actor}: {ack.root_cause}" + (f" ({ack.note})" if ack.note else "")
        steps.append({"step": "Acknowledged", "at": ack.at, "note": note})
    else:
        steps.append({"step": "Acknowledged", "at": None, "note": "not yet"})
    return {
        "id": incident.id,
        "cluster": incident.cluster,
        "namespace": incident.namespace,
        "model": incident.model,
        "kind": incident.kind.value,
        "bad_version": incident.bad_version,
        "target_version": incident.target_version,
        "state": incident.state.value,
        "reason": incident.reason,
        "triggers": list(incident.triggers),
        "steps": steps,
    }


async def sign_in(request: web.Request) -> web.Response:
    """``POST /login`` with ``token`` (the admin token) and ``csrf`` in the form body."""
    admin_token = _admin_token(request)
    if admin_token is None:
        return _disabled(request)
    form = await request.post()
    csrf = str(form.get("csrf", ""))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not csrf or not expected or not hmac.compare_digest(csrf, expected):
        return _sign_in_page(
            request, "The sign-in form expired or came from another site: sign in again.", 403
        )
    token = str(form.get("token", "")).strip()
    if not token or not hmac.compare_digest(token.encode(), admin_token.encode()):
        log.warning("status page: sign-in refused (wrong admin token) from %s", request.remote)
        return _sign_in_page(request, "Wrong admin token.", 401)
    try:
        session_id, _ = await _sessions(request).open(admin_token)
    except StoreUnavailable as e:
        return _unavailable(request, e)
    log.info("status page: signed in from %s", request.remote)
    response = _see_other("/")
    _set_cookie(request, response, SESSION_COOKIE, session_id, int(SESSION_TTL_SECONDS))
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


async def sign_out(request: web.Request) -> web.Response:
    """``POST /logout`` with the session's ``csrf``: the session is deleted server-side."""
    admin_token = _admin_token(request)
    if admin_token is None:
        return _disabled(request)
    form = await request.post()
    session_id = request.cookies.get(SESSION_COOKIE, "")
    try:
        session = await _sessions(request).get(session_id, admin_token)
        if session is not None:
            if not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
                return _notice(
                    request,
                    "Not signed out",
                    "The sign-out form did not come from this page: reload the page and"
                    " sign out again.",
                    403,
                )
            await _sessions(request).close(session_id)
    except StoreUnavailable as e:
        return _unavailable(request, e)
    response = _see_other("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def add_routes(app: web.Application) -> None:
    """``GET /``, ``POST /login``, ``POST /logout`` and the templates they render."""
    setup(app)
    app.router.add_get("/", status_page)
    app.router.add_post("/login", sign_in)
    app.router.add_post("/logout", sign_out)
