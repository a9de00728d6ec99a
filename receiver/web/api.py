"""The admin API's incident routes, mounted under ``/api`` behind the admin token.

Handlers read shared objects through ``request.config_dict``: they run in the admin
sub-application, which inherits the main application's keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from receiver import keys
from receiver.durations import parse_duration
from receiver.errors import StoreUnavailable
from receiver.models import IncidentState, utcnow
from receiver.web.middleware import admin_app, error_response, json_body

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


def add_routes(api: web.Application) -> None:
    """The incident routes, on the admin sub-application (paths relative to ``/api``)."""
    api.router.add_get("/incidents", list_incidents)
    api.router.add_get("/incidents/{id}", get_incident)


def build() -> web.Application:
    """The admin sub-application with every ``/api`` route this module serves."""
    api = admin_app()
    add_routes(api)
    return api
