"""The models of the policy as people see them: ``GET /api/models`` and the on-demand check.

Each model with its strategy, mode, pause, serving version, target, rollback readiness
(reasons and time of the check), last incident and last drill. Readiness, the pause, the
serving version and the target come from the latest readiness check kept in the store
(``receiver.readiness``), so every replica answers the same and a listing costs no
Kubernetes request; ``POST /api/models/{namespace}/{model}/check`` checks one model now.
The status page (``receiver.web.status``) shows the same items.

What other parts own and this page only shows (the global pause, the statistics) comes
through :class:`Views`, wired by ``receiver.app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from receiver import keys
from receiver.errors import StoreUnavailable
from receiver.models import Incident, IncidentKind, rfc3339
from receiver.policy import ModelPolicy
from receiver.readiness import ReadinessResult, RollbackReadiness
from receiver.store import Store, model_key
from receiver.web.middleware import error_response, json_body

__all__ = ["VIEWS", "Views", "add_routes", "global_pause", "model_items"]

DRILL_SCAN = 20
"""A model's latest incidents searched for its last drill: drills are monthly, alerts rarer
than daily on a healthy model, so the last drill is among them or long ago."""

LISTING_CONCURRENCY = 16
"""Models whose incidents are read from the store at once."""


@dataclass(frozen=True)
class Views:
    """What the listing and the status page show but other parts own. A view left ``None``
    is shown as not reported."""

    global_pause: Callable[[], Mapping[str, Any]] | None = None
    """The global pause: ``{"paused", "actor", "reason", "at"}`` (the control layer)."""
    stats: Callable[[datetime | None], Awaitable[Mapping[str, Any]]] | None = None
    """The ``GET /api/stats`` answer since a time, or over the retention for ``None``."""


VIEWS = web.AppKey("views", Views)


def views(request: web.Request) -> Views:
    """The views wired on the application, or none."""
    return request.config_dict.get(VIEWS) or Views()


def global_pause(request: web.Request) -> Mapping[str, Any] | None:
    """The global pause, or None when nothing reports it."""
    view = views(request).global_pause
    return dict(view()) if view is not None else None


def _incident(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "kind": incident.kind.value,
        "state": incident.state.value,
        "reason": incident.reason,
        "bad_version": incident.bad_version,
        "target_version": incident.target_version,
        "created_at": rfc3339(incident.created_at),
        "updated_at": rfc3339(incident.updated_at),
    }


async def _history(store: Store, model: ModelPolicy) -> tuple[Incident | None, Incident | None]:
    """The model's last incident and its last drill, from the incident history."""
    page = await store.list_incidents(
        model=model_key(model.namespace, model.name), limit=DRILL_SCAN
    )
    mine = [i for i in page.items if i.cluster == model.cluster]
    last = mine[0] if mine else None
    drill = next((i for i in mine if i.kind is IncidentKind.DRILL), None)
    return last, drill


def model_item(
    readiness: RollbackReadiness,
    model: ModelPolicy,
    result: ReadinessResult | None,
    last: Incident | None = None,
    drill: Incident | None = None,
) -> dict[str, Any]:
    """One model as ``GET /api/models`` lists it. Fields read by the readiness check are
    ``None`` until a check has run (``readiness.result`` is then ``unknown``)."""
    settings = readiness.policy.effective(model)
    pause = result.pause if result is not None else None
    return {
        "name": model.name,
        "namespace": model.namespace,
        "cluster": model.cluster,
        "strategy": settings.strategy.value,
        "mode": settings.mode.value,
        "data_quality_mode": settings.data_quality_mode.value,
        "drills": model.drills,
        "paused": (pause is not None) if result is not None else None,
        "pause": (
            {"actor": pause.actor, "reason": pause.reason, "at": rfc3339(pause.at)}
            if pause is not None
            else None
        ),
        "serving_version": (result.serving_version or None) if result is not None else None,
        "target": result.target.model_dump() if result is not None and result.target else None,
        "readiness": (
            result.readiness()
            if result is not None
            else {"ready": None, "result": "unknown", "reasons": [], "checked_at": None}
        ),
        "last_incident": _incident(last) if last is not None else None,
        "last_drill": (
            {
                "id": drill.id,
                "state": drill.state.value,
                "at": rfc3339(drill.created_at),
            }
            if drill is not None
            else None
        ),
    }


async def model_items(readiness: RollbackReadiness, store: Store) -> list[dict[str, Any]]:
    """Every model of the policy, in the policy's order. ``StoreUnavailable`` when the
    incident history cannot be read."""
    results = await readiness.latest()
    gate = asyncio.Semaphore(LISTING_CONCURRENCY)

    async def one(model: ModelPolicy) -> dict[str, Any]:
        async with gate:
            last, drill = await _history(store, model)
        return model_item(readiness, model, results.get(model.key), last, drill)

    return list(await asyncio.gather(*(one(m) for m in readiness.policy.models)))


async def list_models(request: web.Request) -> web.Response:
    """``GET /api/models``: ``{"global": the global pause, "items": [each model]}``."""
    try:
        items = await model_items(
            request.config_dict[keys.ROLLBACK_READINESS], request.config_dict[keys.STORE]
        )
    except StoreUnavailable as e:
        return error_response(503, str(e))
    return json_body({"global": global_pause(request), "items": items})


def _find(readiness: RollbackReadiness, request: web.Request) -> ModelPolicy | web.Response:
    """The policy entry the path names (``?cluster=`` picks among clusters), or the error."""
    namespace, name = request.match_info["namespace"], request.match_info["model"]
    matches = [m for m in readiness.policy.models if (m.namespace, m.name) == (namespace, name)]
    if "cluster" in request.query:
        matches = [m for m in matches if m.cluster == request.query["cluster"]]
    if not matches:
        return error_response(
            404,
            f"no model {namespace}/{name} in the policy (version {readiness.policy.version});"
            " GET /api/models lists them",
        )
    if len(matches) > 1:
        clusters = ", ".join(repr(m.cluster) for m in matches)
        return error_response(
            400, f"{namespace}/{name} is in several clusters ({clusters}): add ?cluster="
        )
    return matches[0]


async def check_model(request: web.Request) -> web.Response:
    """``POST /api/models/{namespace}/{model}/check``: check readiness now; 200 with the
    model's item (its ``readiness`` fresh). The result is stored for every replica."""
    readiness = request.config_dict[keys.ROLLBACK_READINESS]
    found = _find(readiness, request)
    if isinstance(found, web.Response):
        return found
    result = await readiness.check(found)
    try:
        last, drill = await _history(request.config_dict[keys.STORE], found)
    except StoreUnavailable:
        last = drill = None  # the check itself is the answer asked for
    return json_body(model_item(readiness, found, result, last, drill))


def add_routes(api: web.Application) -> None:
    """The models routes, on the admin sub-application (paths relative to ``/api``)."""
    api.router.add_get("/models", list_models)
    api.router.add_post("/models/{namespace}/{model}/check", check_model)
