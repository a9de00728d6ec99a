"""``POST /webhook/alertmanager``: authenticate, read, judge each alert, dedup and queue.

The webhook reads no cluster state and calls nothing but the store (and, for an alert no
one can act on, the notifier's non-blocking ``notice_once``). Status codes follow
Alertmanager's retry rules (any non-2xx is resent at every group interval, 5xx also within
it): 4xx only for requests that can never succeed, 503 only when the alerts could not be
recorded. What each alert means is decided in :mod:`receiver.intake`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from receiver import intake, keys
from receiver.errors import StoreUnavailable
from receiver.models import utcnow
from receiver.web.middleware import bearer_ok, error_response, json_body, labelled

log = logging.getLogger(__name__)

PATH = "/webhook/alertmanager"


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


async def receive(request: web.Request) -> web.Response:
    """Per-alert dedup and enqueue, then 2xx at once."""
    load = request.app[keys.INGEST_LOAD]
    load.enter()
    try:
        return await _receive(request)
    finally:
        load.leave()


async def _receive(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    settings = app[keys.SETTINGS]
    if not bearer_ok(request, settings.webhook_token.get_secret_value()):
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
        payload = intake.parse_delivery(body)
    except intake.BadDelivery as e:
        extra = {"problems": e.problems} if e.problems else {}
        return error_response(400, e.message, **extra)

    received = utcnow()
    group_key = payload.group_key
    admissions = [
        intake.admit(item, index=i, group_key=group_key, received_at=received)
        for i, item in enumerate(payload.alerts)
    ]
    queued = [a for a in admissions if a.job is not None]
    try:
        fresh = await app[keys.STORE].ingest(
            [(a.job.dedup_key, a.job) for a in queued if a.job is not None],
            settings.dedup_ttl_seconds,
        )
    except StoreUnavailable as e:
        log.error("could not record delivery of group %s: %s", group_key, e)
        return error_response(
            503, f"alerts could not be recorded, retry later: {e}", group_key=group_key
        )
    new_by_index = {a.index: new for a, new in zip(queued, fresh, strict=True)}

    metrics = app[keys.METRICS]
    results: list[dict[str, Any]] = []
    unattributed = []
    for a in admissions:
        outcome, reason = intake.settle(a, new_by_index.get(a.index, False))
        entry: dict[str, Any] = {"index": a.index}
        if a.alert is not None:
            entry["fingerprint"] = a.alert.fingerprint
            entry["alertname"] = a.alert.alertname
            entry["status"] = a.alert.status
        entry["outcome"] = outcome.value
        if reason:
            entry["reason"] = reason
        results.append(entry)
        labelled(metrics.alerts, outcome.value).inc()
        if a.outcome is intake.AlertOutcome.NOT_ATTRIBUTABLE:
            unattributed.append(a)
    if unattributed:
        _not_attributable(app, group_key, unattributed)
    if payload.truncated_alerts:
        metrics.truncated_alerts.inc(payload.truncated_alerts)
        log.warning(
            "Alertmanager cut %d alerts from group %s (max_alerts); they were never seen",
            payload.truncated_alerts,
            group_key,
        )
    metrics.webhook_duration.observe(time.perf_counter() - started)
    return json_body(
        {
            "status": "ok",
            "group_key": group_key,
            "truncated_alerts": payload.truncated_alerts,
            "alerts": results,
        }
    )


def _not_attributable(
    app: web.Application, group_key: str, admissions: list[intake.Admission]
) -> None:
    """Log the alerts no one can act on; post each firing cause to Slack once."""
    missing = sorted({label for a in admissions for label in a.missing})
    log.warning(
        "%d alert(s) of group %s not attributable (missing %s): no action",
        len(admissions),
        group_key,
        ", ".join(missing),
        extra={"group_key": group_key, "missing": missing},
    )
    notifier = app[keys.NOTIFIER]
    for a in admissions:
        if a.wants_notice:
            notifier.notice_once(*intake.not_attributable_notice(a))
