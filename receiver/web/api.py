"""The admin API, mounted under ``/api`` behind the admin token: incidents, models, control.

Handlers read shared objects through ``request.config_dict``: they run in the admin
sub-application, which inherits the main application's keys. Control routes translate the
request for ``receiver.control`` and its errors into statuses (not found 404, refused 409,
invalid 400, unavailable 503); POST bodies are optional JSON objects, unknown fields ignored.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from receiver import keys
from receiver.control import Control, ControlError, Invalid, NotFound, Refused, Unavailable
from receiver.durations import parse_duration
from receiver.errors import StoreUnavailable
from receiver.models import ROOT_CAUSES, IncidentState, utcnow
from receiver.web.middleware import admin_app, error_response, json_body

# An actor name is a label for people, not an identity check: bounded and printable.
ACTOR_MAX = 64
REASON_MAX = 500

MAX_PAGE = 500
DEFAULT_PAGE = 50


def parse_since(value: str, now: datetime) -> datetime:
    """RFC 3339 time, or a duration (``24h``, or seconds) meaning that long before ``now``."""
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(
            f"since={value!r} is neither an RFC 3339 time nor a duration such as 24h"
        ) from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def list_incidents(request: web.Request) -> web.Response:
    """``GET /api/incidents?model=&state=&since=&limit=&cursor=``, newest first."""
    q = request.query
    try:
        limit = int(q.get("limit", DEFAULT_PAGE))
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError
    except ValueError:
        return error_response(400, f"limit must be an integer from 1 to {MAX_PAGE}")
    state = None
    if q.get("state"):
        try:
            state = IncidentState(q["state"])
        except ValueError:
            allowed = ", ".join(s.value for s in IncidentState)
            return error_response(400, f"unknown state {q['state']!r}; one of: {allowed}")
    since = None
    if q.get("since"):
        try:
            since = parse_since(q["since"], utcnow())
        except ValueError as e:
            return error_response(400, str(e))
    try:
        page = await request.config_dict[keys.STORE].list_incidents(
            model=q.get("model") or None,
            state=state,
            since=since,
            limit=limit,
            cursor=q.get("cursor") or None,
        )
    except ValueError as e:
        return error_response(400, str(e))
    except StoreUnavailable as e:
        return error_response(503, str(e))
    return json_body({"items": [i.summary() for i in page.items], "next": page.next})


async def get_incident(request: web.Request) -> web.Response:
    """``GET /api/incidents/{id}``: one incident with its full event list."""
    incident_id = request.match_info["id"]
    try:
        incident = await request.config_dict[keys.STORE].get_incident(incident_id)
    except StoreUnavailable as e:
        return error_response(503, str(e))
    if incident is None:
        return error_response(404, f"no incident {incident_id!r} (expired or never existed)")
    return json_body(incident.detail())


# -- control --------------------------------------------------------------------------------


class BadRequest(Exception):
    """The request body cannot be used; answered 400 with the message."""


async def _body(request: web.Request) -> dict[str, Any]:
    """The optional JSON object body; unknown fields are left for the caller to ignore."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"the body is not JSON ({e}); send a JSON object or nothing") from e
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object, e.g. {"reason": "..."}')
    return data


def _text(body: dict[str, Any], key: str, limit: int = REASON_MAX) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return "".join(ch for ch in value if ch.isprintable()).strip()[:limit]


def admin_actor(body: dict[str, Any]) -> str:
    """``admin:<name>`` from the body's ``actor`` field, else ``admin:api``."""
    name = _text(body, "actor", ACTOR_MAX).removeprefix("admin:")
    return f"admin:{name or 'api'}"


def _status(error: ControlError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Invalid):
        return 400
    if isinstance(error, Refused):
        return 409
    if isinstance(error, Unavailable):
        return 503
    return 409


Call = Callable[[Control, dict[str, Any]], Awaitable[Any]]


async def _control(request: web.Request, call: Call, status: int = 200) -> web.Response:
    """Run a control call; its errors become statuses here and only here."""
    try:
        body = await _body(request)
        result = await call(request.config_dict[keys.CONTROL], body)
    except BadRequest as e:
        return error_response(400, str(e))
    except ControlError as e:
        return error_response(_status(e), str(e))
    except StoreUnavailable as e:
        return error_response(503, str(e))
    return json_body(result, status=status)


def _model_args(request: web.Request) -> tuple[str, str, str]:
    """Namespace, model and ``?cluster=`` (the kubeconfig context of a multi-cluster entry)."""
    return (
        request.match_info["namespace"],
        request.match_info["model"],
        request.query.get("cluster", ""),
    )


async def pause_model(request: web.Request) -> web.Response:
    """``POST /api/models/{namespace}/{model}/pause``: in force when answered (200)."""
    ns, model, cluster = _model_args(request)
    return await _control(
        request,
        lambda c, b: c.pause_model(
            ns, model, actor=admin_actor(b), reason=_text(b, "reason"), cluster=cluster
        ),
    )


async def resume_model(request: web.Request) -> web.Response:
    """``POST /api/models/{namespace}/{model}/resume`` (200)."""
    ns, model, cluster = _model_args(request)
    return await _control(
        request,
        lambda c, b: c.resume_model(
            ns, model, actor=admin_actor(b), reason=_text(b, "reason"), cluster=cluster
        ),
    )


def _revision(body: dict[str, Any]) -> int | None:
    value = body.get("to_revision")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest("to_revision must be a revision number")
    try:
        number = int(value)
    except ValueError as e:
        raise BadRequest(f"to_revision {value!r} is not a revision number") from e
    if number < 1:
        raise BadRequest("to_revision must be 1 or more")
    return number


async def force_rollback(request: web.Request) -> web.Response:
    """``POST /api/models/{namespace}/{model}/rollback``: queued (202 incident, job)."""
    ns, model, cluster = _model_args(request)
    return await _control(
        request,
        lambda c, b: c.force(
            ns,
            model,
            actor=admin_actor(b),
            reason=_text(b, "reason"),
            to_revision=_revision(b),
            cluster=cluster,
        ),
        202,
    )


async def roll_forward_model(request: web.Request) -> web.Response:
    """``POST /api/models/{namespace}/{model}/roll-forward``: queued (202)."""
    ns, model, cluster = _model_args(request)
    return await _control(
        request,
        lambda c, b: c.roll_forward(
            ns, model, actor=admin_actor(b), reason=_text(b, "reason"), cluster=cluster
        ),
        202,
    )


def drill_actor(body: dict[str, Any]) -> str:
    """``drill:<schedule>`` when the body names the schedule that runs it, else the admin."""
    schedule = _text(body, "schedule", ACTOR_MAX)
    return f"drill:{schedule}" if schedule else admin_actor(body)


async def drill(request: web.Request) -> web.Response:
    """``POST /api/models/{namespace}/{model}/drill``: queued (202); 409 when refused."""
    ns, model, cluster = _model_args(request)
    return await _control(
        request, lambda c, b: c.drill(ns, model, actor=drill_actor(b), cluster=cluster), 202
    )


async def pause_all(request: web.Request) -> web.Response:
    """``POST /api/pause``: every model; in force when answered (200)."""
    return await _control(
        request, lambda c, b: c.pause_all(actor=admin_actor(b), reason=_text(b, "reason"))
    )


async def resume_all(request: web.Request) -> web.Response:
    """``POST /api/resume`` (200)."""
    return await _control(
        request, lambda c, b: c.resume_all(actor=admin_actor(b), reason=_text(b, "reason"))
    )


async def acknowledge(request: web.Request) -> web.Response:
    """``POST /api/incidents/{id}/acknowledge`` with ``root_cause`` (and ``note``)."""
    incident_id = request.match_info["id"]

    async def call(c: Control, b: dict[str, Any]) -> Any:
        cause = _text(b, "root_cause", 64)
        if not cause:
            raise BadRequest(f"root_cause is required: one of {', '.join(ROOT_CAUSES)}")
        incident = await c.acknowledge(
            incident_id, actor=admin_actor(b), root_cause=cause, note=_text(b, "note")
        )
        return incident.detail()

    return await _control(request, call)


async def execute(request: web.Request) -> web.Response:
    """``POST /api/incidents/{id}/execute``: the recommendation, queued (202)."""
    incident_id = request.match_info["id"]
    return await _control(
        request,
        lambda c, b: c.execute(incident_id, actor=admin_actor(b), reason=_text(b, "reason")),
        202,
    )


async def roll_forward_incident(request: web.Request) -> web.Response:
    """``POST /api/incidents/{id}/roll-forward``: queued (202)."""
    incident_id = request.match_info["id"]
    return await _control(
        request,
        lambda c, b: c.roll_forward_incident(
            incident_id, actor=admin_actor(b), reason=_text(b, "reason")
        ),
        202,
    )


async def stats(request: web.Request) -> web.Response:
    """``GET /api/stats?since=``: frequency, durations, root causes, drills."""
    since = None
    if request.query.get("since"):
        try:
            since = parse_since(request.query["since"], utcnow())
        except ValueError as e:
            return error_response(400, str(e))
    return await _control(request, lambda c, b: c.stats(since))


def add_routes(api: web.Application) -> None:
    """Every route of the admin sub-application (paths relative to ``/api``)."""
    api.router.add_get("/incidents", list_incidents)
    api.router.add_get("/incidents/{id}", get_incident)
    api.router.add_post("/incidents/{id}/acknowledge", acknowledge)
    api.router.add_post("/incidents/{id}/execute", execute)
    api.router.add_post("/incidents/{id}/roll-forward", roll_forward_incident)
    model = "/models/{namespace}/{model}"
    api.router.add_post(f"{model}/pause", pause_model)
    api.router.add_post(f"{model}/resume", resume_model)
    api.router.add_post(f"{model}/rollback", force_rollback)
    api.router.add_post(f"{model}/roll-forward", roll_forward_model)
    api.router.add_post(f"{model}/drill", drill)
    api.router.add_post("/pause", pause_all)
    api.router.add_post("/resume", resume_all)
    api.router.add_get("/stats", stats)


def build() -> web.Application:
    """The admin sub-application with every ``/api`` route this module serves."""
    api = admin_app()
    add_routes(api)
    return api
