"""The audit trail of every decision: one structured log line, and a Kubernetes Event.

The log line is the durable record (collected with the pod's logs); the Event makes the
action visible where people look (``kubectl describe``, ``kubectl events``). Posting an Event
never fails the job: a refusal by RBAC or an API hiccup is logged and the work goes on.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from receiver.clients.k8s import KubeClient
from receiver.decide import Decision
from receiver.errors import KubeError
from receiver.models import Incident, Job, rfc3339

log = logging.getLogger("receiver.audit")

REPORTING_CONTROLLER = "rollback-receiver.io/receiver"
# Events API limit on the note (kopf cuts at the same size).
NOTE_MAX = 1024


def record_decision(
    job: Job,
    decision: Decision,
    incident: Incident,
    *,
    policy_version: str,
    inputs: Mapping[str, Any],
) -> None:
    """One JSON log line naming who or what acted, why, the policy version and the inputs."""
    log.info(
        "%s: %s (%s)",
        incident.id,
        decision.action.value,
        decision.reason,
        extra={
            "audit": True,
            "incident": incident.id,
            "namespace": job.namespace,
            "model": job.model,
            "bad_version": decision.bad_version,
            "target_version": decision.target.version if decision.target else None,
            "action": decision.action.value,
            "reason": decision.reason,
            "detail": decision.detail,
            "actor": job.actor,
            "job_kind": job.kind.value,
            "alert_key": job.dedup_key,
            "trigger": job.trigger,
            "policy_version": policy_version,
            "inputs": dict(inputs),
        },
    )


def event_body(
    *,
    regarding: Mapping[str, str],
    reason: str,
    note: str,
    at: datetime,
    instance: str,
    event_type: str = "Normal",
    action: str = "Rollback",
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about ``regarding``.

    Named as client-go's recorder names Events, ``<regarding name>.<16 hex digits>``: the API
    server refuses a ``generateName`` that does not end in an alphanumeric (``name.``).
    """
    stamp = (rfc3339(at) or "").replace("Z", "")
    if "." not in stamp:
        stamp += ".000000"
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": f"{regarding['name']}.{secrets.token_hex(8)}",
            "namespace": regarding["namespace"],
        },
        "eventTime": stamp + "Z",
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": action,
        "reason": reason,
        "regarding": dict(regarding),
        "note": note[:NOTE_MAX],
        "type": event_type,
    }


async def post_event(kube: KubeClient, body: Mapping[str, Any]) -> None:
    """Create the Event; failures are logged, never raised."""
    try:
        await kube.create_event(body["metadata"]["namespace"], body)
    except KubeError as e:
        log.warning("could not post event %s: %s", body.get("reason"), e)


class EventPoster:
    """Posts Events in the background (kopf's posting engine): a slow or refusing API
    server never delays the job that reports. ``close`` waits for what is in flight."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, kube: KubeClient, body: Mapping[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(post_event(kube, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Wait until every Event handed over so far is posted (or given up)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Drain within ``timeout``; what is left is cancelled (and logged by the log line)."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
