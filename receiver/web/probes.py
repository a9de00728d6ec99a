"""Probes and metrics: ``/healthz`` (process up), ``/readyz`` (able to work), ``/metrics``.

Unauthenticated by design (kubelet and Prometheus call them), so they say what is wrong
without naming addresses or secrets.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from receiver import keys
from receiver.web.middleware import json_body


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return json_body({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: Redis reachable, policy loaded, start-up facts read. 503 says which is not."""
    readiness = request.app[keys.READINESS]
    if readiness.ready:
        return json_body({"ready": True})
    return json_body({"ready": False, "reasons": dict(readiness.reasons)}, status=503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry."""
    registry = request.app[keys.METRICS].registry
    resp = web.Response(body=generate_latest(registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
