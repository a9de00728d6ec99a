"""HTTP handlers and routes: the only place where errors become HTTP statuses.

The webhook reads no cluster state and calls nothing but the store: it authenticates,
validates, dedups and enqueues each alert, and answers. Status codes follow Alertmanager's
retry rules (any non-2xx is resent at every group interval, 5xx also within it): 4xx only
for requests that can never succeed, 503 only when alerts could not be recorded.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from receiver import keys
from receiver.durations import parse_duration
from receiver.errors import StoreUnavailable
from receiver.models import (
    LABEL_REMEDIATION,
    Alert,
    AlertOutcome,
    IncidentState,
    Job,
    WebhookPayload,
    missing_labels,
    utcnow,
)

log = logging.getLogger(__name__)

_MAX_PAGE = 500
_DEFAULT_PAGE = 50


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error body with the reason, for people and for Alertmanager's logs."""
    body = {"error": message, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def _bearer_ok(request: web.Request, secret: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), secret.encode())


def _check_admin(request: web.Request) -> web.Response | None:
    settings = request.app[keys.SETTINGS]
    if settings.admin_token is None:
        return error_response(
            403, "admin routes are disabled: set RECEIVER_ADMIN_TOKEN on the receiver"
        )
    if not _bearer_ok(request, settings.admin_token.get_secret_value()):
        return error_response(
            401, "missing or wrong admin token: send Authorization: Bearer <token>"
        )
    return None


async def _read_body(request: web.Request, limit: int) -> bytes | web.Response:
    if request.content_length is not None and request.content_length > limit:
        return error_response(
            413,
            f"body of {request.content_length} bytes exceeds the limit of {limit} bytes "
            "(RECEIVER_MAX_BODY_BYTES); lower max_alerts in the Alertmanager webhook config",
        )
    if request.content_length is not None:
        return await request.read()  # exact length, already checked against the limit
    # Chunked: read to the end in pieces (one read returns only what has arrived so far).
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > limit:
            return error_response(
                413,
                f"body exceeds the limit of {limit} bytes (RECEIVER_MAX_BODY_BYTES); "
                "lower max_alerts in the Alertmanager webhook config",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _classify(alert: Alert) -> AlertOutcome | None:
    """The outcome decided without the store; None means: dedup and enqueue."""
    if alert.labels.get(LABEL_REMEDIATION) != "rollback":
        return AlertOutcome.IGNORED
    return None


async def webhook(request: web.Request) -> web.Response:
    """``POST /webhook/alertmanager``: per-alert dedup and enqueue, then 2xx at once."""
    started = time.perf_counter()
    settings = request.app[keys.SETTINGS]
    metrics = request.app[keys.METRICS]
    store = request.app[keys.STORE]
    if not _bearer_ok(request, settings.webhook_token.get_secret_value()):
        return error_response(
            401,
            "missing or wrong bearer token: set http_config.authorization in the "
            "Alertmanager webhook config to RECEIVER_WEBHOOK_TOKEN",
        )
    if request.content_type != "application/json":
        return error_response(415, f"content type {request.content_type!r} is not application/json")
    body = await _read_body(request, settings.max_body_bytes)
    if isinstance(body, web.Response):
        return body
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        return error_response(400, f"body is not valid JSON: {e}")
    if not isinstance(raw, dict):
        return error_response(400, "body must be a JSON object (Alertmanager webhook v4)")
    if raw.get("version") != "4":
        return error_response(
            400,
            f"unsupported payload version {raw.get('version')!r}: "
            "this receiver speaks Alertmanager webhook version 4",
        )
    try:
        payload = WebhookPayload.model_validate(raw)
    except ValidationError as e:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        return error_response(400, "not an Alertmanager v4 payload", problems=problems)

    received = utcnow()
    results: list[dict[str, Any]] = []
    to_enqueue: list[tuple[int, str, Job]] = []
    for index, item in enumerate(payload.alerts):
        try:
            alert = Alert.model_validate(item)
        except ValidationError as e:
            # One bad alert never fails the delivery: record it, count it, act on the rest.
            reason = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            log.warning(
                "alert %d of group %s is malformed: %s",
                index,
                payload.group_key,
                reason,
                extra={"group_key": payload.group_key},
            )
            results.append({"index": index, "outcome": AlertOutcome.INVALID, "reason": reason})
            continue
        entry: dict[str, Any] = {
            "index": index,
            "fingerprint": alert.fingerprint,
            "alertname": alert.alertname,
            "status": alert.status,
        }
        results.append(entry)
        outcome = _classify(alert)
        if outcome is not None:
            entry["outcome"] = outcome
            entry["reason"] = 'no remediation="rollback" label'
            continue
        job = Job.from_alert(alert, group_key=payload.group_key, received_at=received)
        to_enqueue.append((len(results) - 1, alert.dedup_key(), job))

    try:
        fresh = await store.ingest([(k, j) for _, k, j in to_enqueue], settings.dedup_ttl_seconds)
    except StoreUnavailable as e:
        log.error("could not record delivery of group %s: %s", payload.group_key, e)
        return error_response(
            503, f"alerts could not be recorded, retry later: {e}", group_key=payload.group_key
        )

    for (pos, _key, job), new in zip(to_enqueue, fresh, strict=True):
        entry = results[pos]
        missing = missing_labels(job.labels)
        if missing:
            entry["outcome"] = AlertOutcome.NOT_ATTRIBUTABLE
            entry["reason"] = f"missing labels: {', '.join(missing)}; no action"
        elif not new:
            entry["outcome"] = AlertOutcome.DUPLICATE
        elif job.status == "resolved":
            entry["outcome"] = AlertOutcome.RECORDED
            entry["reason"] = "resolved alerts are recorded, never acted on"
        else:
            entry["outcome"] = AlertOutcome.ACCEPTED

    for entry in results:
        metrics.alerts.labels(outcome=entry["outcome"].value).inc()
    if payload.truncated_alerts:
        metrics.truncated_alerts.inc(payload.truncated_alerts)
        log.warning(
            "Alertmanager cut %d alerts from group %s (max_alerts); they were never seen",
            payload.truncated_alerts,
            payload.group_key,
        )
    metrics.webhook_duration.observe(time.perf_counter() - started)
    return web.json_response(
        {
            "status": "ok",
            "group_key": payload.group_key,
            "truncated_alerts": payload.truncated_alerts,
            "alerts": [{**e, "outcome": e["outcome"].value} for e in results],
        }
    )


def _parse_since(value: str) -> datetime:
    """RFC 3339 time, or a Prometheus duration meaning that long ago."""
    try:
        return utcnow() - timedelta(seconds=parse_duration(value))
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
    if (denied := _check_admin(request)) is not None:
        return denied
    q = request.query
    try:
        limit = int(q.get("limit", _DEFAULT_PAGE))
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError
    except ValueError:
        return error_response(400, f"limit must be an integer from 1 to {_MAX_PAGE}")
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
            since = _parse_since(q["since"])
        except ValueError as e:
            return error_response(400, str(e))
    try:
        page = await request.app[keys.STORE].list_incidents(
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
    return web.json_response({"items": [i.summary() for i in page.items], "next": page.next})


async def get_incident(request: web.Request) -> web.Response:
    """``GET /api/incidents/{id}``: one incident with its full event list."""
    if (denied := _check_admin(request)) is not None:
        return denied
    incident_id = request.match_info["id"]
    try:
        incident = await request.app[keys.STORE].get_incident(incident_id)
    except StoreUnavailable as e:
        return error_response(503, str(e))
    if incident is None:
        return error_response(404, f"no incident {incident_id!r} (expired or never existed)")
    return web.json_response(incident.detail())


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving HTTP."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: Redis reachable, policy loaded, start-up facts read. 503 says which is not."""
    readiness = request.app[keys.READINESS]
    if readiness.ready:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reasons": dict(readiness.reasons)}, status=503)


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text exposition of this app's registry."""
    registry = request.app[keys.METRICS].registry
    resp = web.Response(body=generate_latest(registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


@web.middleware
async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count requests by route template and status; unexpected errors become JSON 500s."""
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as e:
        code = e.status
        request.app[keys.METRICS].http_requests.labels(route=name, code=str(code)).inc()
        if e.status >= 400 and e.status != 405:
            return error_response(code, e.reason)
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        request.app[keys.METRICS].http_requests.labels(route=name, code="500").inc()
        return error_response(500, "internal error; see the receiver's log")
    request.app[keys.METRICS].http_requests.labels(route=name, code=str(response.status)).inc()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/webhook/alertmanager", webhook)
    app.router.add_get("/api/incidents", list_incidents)
    app.router.add_get("/api/incidents/{id}", get_incident)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
