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
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from receiver import intake, keys
from receiver.errors import StoreUnavailable
from receiver.metrics import Metrics
from receiver.models import AlertOutcome, utcnow
from receiver.notify import Notifier
from receiver.settings import Settings
from receiver.store import Store
from receiver.web.middleware import Handler, bearer_ok, error_response, json_body
from receiver.worker import IngestLoad

log = logging.getLogger(__name__)

PATH = "/webhook/alertmanager"


async def _read_body(request: web.Request, length: int | None, limit: int) -> bytes | web.Response:
    """A body over the limit, or one of unknown length (chunked), read with care."""
    if length is not None:
        return error_response(
            413,
            f"body of {length} bytes exceeds the limit of {limit} bytes "
            "(RECEIVER_MAX_BODY_BYTES); lower max_alerts in the Alertmanager webhook config",
        )
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


@dataclass
class _Wiring:
    """The app's objects the webhook uses, looked up once instead of on every delivery."""

    settings: Settings
    store: Store
    metrics: Metrics
    load: IngestLoad
    notifier: Notifier
    outcomes: dict[AlertOutcome, Any]  # receiver_alerts_total children by outcome

    @classmethod
    def of(cls, app: web.Application) -> _Wiring:
        metrics = app[keys.METRICS]
        return cls(
            app[keys.SETTINGS],
            app[keys.STORE],
            metrics,
            app[keys.INGEST_LOAD],
            app[keys.NOTIFIER],
            {o: metrics.alerts.labels(o.value) for o in AlertOutcome},
        )


def handler(app: web.Application) -> Handler:
    """The ``POST /webhook/alertmanager`` handler of ``app``.

    The app's objects are read at the first delivery (they exist once the app has started)
    and kept: a delivery is the hot path, and every lookup shows in ingest throughput.
    """
    wiring: _Wiring | None = None

    async def receive(request: web.Request) -> web.Response:
        """Per-alert dedup and enqueue, then 2xx at once."""
        nonlocal wiring
        w = wiring or (wiring := _Wiring.of(app))
        w.load.enter()  # the workers yield the event loop to deliveries in flight
        try:
            return await _receive(request, w)
        finally:
            w.load.leave()

    return receive


async def _receive(request: web.Request, w: _Wiring) -> web.Response:
    started = time.perf_counter()
    settings = w.settings
    if not bearer_ok(request, settings.webhook_token.get_secret_value()):
        return error_response(
            401,
            "missing or wrong bearer token: set http_config.authorization in the "
            "Alertmanager webhook config to RECEIVER_WEBHOOK_TOKEN",
        )
    if request.content_type != "application/json":
        return error_response(415, f"content type {request.content_type!r} is not application/json")
    length = request.content_length
    if length is not None and length <= settings.max_body_bytes:
        body: bytes | web.Response = await request.read()  # exact length, within the limit
    else:
        body = await _read_body(request, length, settings.max_body_bytes)
        if isinstance(body, web.Response):
            return body
    try:
        payload = intake.parse_delivery(body)
    except intake.BadDelivery as e:
        extra = {"problems": e.problems} if e.problems else {}
        return error_response(400, e.message, **extra)

    group_key = payload.group_key
    received = utcnow()
    admissions = [
        intake.admit(item, index=i, group_key=group_key, received_at=received)
        for i, item in enumerate(payload.alerts)
    ]
    queued = [(a.dedup_key, a.wire) for a in admissions if a.wire]
    try:
        fresh = iter(await w.store.ingest(queued, settings.dedup_ttl_seconds))
    except StoreUnavailable as e:
        log.error("could not record delivery of group %s: %s", group_key, e)
        return error_response(
            503, f"alerts could not be recorded, retry later: {e}", group_key=group_key
        )

    results: list[dict[str, Any]] = []
    unattributed = False
    for a in admissions:
        # Queued alerts take their dedup answers in order; the others are final already.
        outcome, reason = intake.settle(a, next(fresh) if a.wire else False)
        alert = a.alert
        if alert is None:
            entry: dict[str, Any] = {"index": a.index, "outcome": outcome}
        else:
            entry = {
                "index": a.index,
                "fingerprint": alert.fingerprint,
                "alertname": alert.labels.get("alertname", ""),
                "status": alert.status,
                "outcome": outcome,
            }
        if reason:
            entry["reason"] = reason
        results.append(entry)
        w.outcomes[outcome].inc()
        unattributed = unattributed or outcome is AlertOutcome.NOT_ATTRIBUTABLE
    if unattributed:
        _not_attributable(w, group_key, admissions)
    if payload.truncated_alerts:
        w.metrics.truncated_alerts.inc(payload.truncated_alerts)
        log.warning(
            "Alertmanager cut %d alerts from group %s (max_alerts); they were never seen",
            payload.truncated_alerts,
            group_key,
        )
    w.metrics.webhook_duration.observe(time.perf_counter() - started)
    return json_body(
        {
            "status": "ok",
            "group_key": group_key,
            "truncated_alerts": payload.truncated_alerts,
            "alerts": results,
        }
    )


def _not_attributable(w: _Wiring, group_key: str, admissions: list[intake.Admission]) -> None:
    """Log the alerts no one can act on; post each firing cause to Slack once."""
    admissions = [a for a in admissions if a.outcome is AlertOutcome.NOT_ATTRIBUTABLE]
    missing = sorted({label for a in admissions for label in a.missing})
    log.warning(
        "%d alert(s) of group %s not attributable (missing %s): no action",
        len(admissions),
        group_key,
        ", ".join(missing),
        extra={"group_key": group_key, "missing": missing},
    )
    for a in admissions:
        if a.wants_notice:
            w.notifier.notice_once(*intake.not_attributable_notice(a))
