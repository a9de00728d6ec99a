"""What every request goes through: JSON errors, request metrics, and the admin token.

Every error the app answers is a JSON body ``{"error": ...}``, aiohttp's own routing
answers included (404, 405 with its ``Allow`` header, 413), so people and Alertmanager's
log read the reason the same way everywhere. The admin token guards a sub-application
(:func:`admin_app`): a route added to it cannot forget the check.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core
from aiohttp import web

from receiver import keys
from receiver.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Headers of an aiohttp error that describe its plain-text body, not the error itself.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


def json_body(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer, serialised by pydantic-core (several times faster than ``json``)."""
    return web.Response(
        body=pydantic_core.to_json(data),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """A JSON error body with the reason, for people and for Alertmanager's logs."""
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = "Bearer"
    return json_body({"error": message, **extra}, status=status, headers=all_headers or None)


def bearer_ok(request: web.Request, secret: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <secret>``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), secret.encode())


def _http_error_message(request: web.Request, error: web.HTTPException) -> str:
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if isinstance(error, web.HTTPNotFound) and error.text in (None, "", "404: Not Found"):
        return f"no route {request.method} {request.path}; see the API in the README"
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return f"{error.text} (RECEIVER_MAX_BODY_BYTES)"
    text = error.text or ""
    return text if text and text != f"{error.status}: {error.reason}" else error.reason


def http_error(request: web.Request, error: web.HTTPException) -> web.Response:
    """aiohttp's plain-text error as our JSON body, keeping headers such as ``Allow``."""
    headers = {k: v for k, v in error.headers.items() if k.lower() not in _BODY_HEADERS}
    return error_response(error.status, _http_error_message(request, error), headers=headers)


class RequestCounts:
    """``receiver_http_requests_total`` children by (route, code), made once each.

    ``labels()`` validates and locks on every call; a dict hit does not, and this runs on
    every request.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._counter = metrics.http_requests
        self._children: dict[tuple[Any, int], Any] = {}

    def count(self, route: Any, code: int) -> None:
        # Keyed by resource: long-lived, and None for every unmatched request (aiohttp makes
        # a route per 404), so the cache stays as small as the route table.
        resource = route.resource
        child = self._children.get((resource, code))
        if child is None:
            name = resource.canonical if resource is not None else "unmatched"
            child = self._children[(resource, code)] = self._counter.labels(name, str(code))
        child.inc()


REQUEST_COUNTS = web.AppKey("request_counts", RequestCounts)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests by route template and status; every error leaves as a JSON body."""
    try:
        response = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            request.app[REQUEST_COUNTS].count(request.match_info.route, e.status)
            raise
        response = http_error(request, e)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal error; see the receiver's log")
    request.app[REQUEST_COUNTS].count(request.match_info.route, response.status)
    return response


@web.middleware
async def require_admin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The admin token on every route of the admin sub-application, unknown ones included."""
    token = request.config_dict[keys.SETTINGS].admin_token
    if token is None:
        return error_response(
            403, "admin routes are disabled: set RECEIVER_ADMIN_TOKEN on the receiver"
        )
    if not bearer_ok(request, token.get_secret_value()):
        return error_response(
            401, "missing or wrong admin token: send Authorization: Bearer <token>"
        )
    return await handler(request)


def admin_app() -> web.Application:
    """A sub-application whose every route needs the admin token (mount it at ``/api``)."""
    return web.Application(middlewares=[require_admin])
