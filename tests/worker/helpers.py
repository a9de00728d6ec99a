"""Helpers shared by this package's tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from receiver import keys
from receiver.models import rfc3339
from tests.conftest import Delivery, wait_for
from tests.worker.conftest import (
    MODEL,
    NS,
    alert_started,
    backdate_current,
    deliver,
    incidents,
    serving_version,
    template_changes,
    wait_state,
)


def alert(
    delivery: Any,
    *,
    labels: dict[str, str] | None = None,
    fingerprint: str | None = None,
    starts_at: datetime | None = None,
) -> Delivery:
    """The captured ``firing_single`` delivery, its alert's labels, fingerprint or startsAt
    changed.

    Alertmanager's fingerprint is a hash of the labels: an alert with other labels carries
    another fingerprint. The webhook's dedup key is (fingerprint, startsAt, status).
    """
    base = delivery("firing_single")
    payload = base.payload
    item = payload["alerts"][0]
    item["labels"].update(labels or {})
    payload["commonLabels"].update(labels or {})
    for name in payload["groupLabels"]:
        payload["groupLabels"][name] = item["labels"][name]
    if fingerprint is not None:
        item["fingerprint"] = fingerprint
    if starts_at is not None:
        item["startsAt"] = rfc3339(starts_at)
    return Delivery(base.name, json.dumps(payload).encode(), base.headers)


def jobs_done(client: Any) -> float:
    registry = client.app[keys.METRICS].registry
    return registry.get_sample_value("receiver_jobs_total", {"result": "done"}) or 0.0


async def decided(client: Any, jobs: int = 1) -> list[dict[str, Any]]:
    """The incidents once ``jobs`` jobs have finished (every write and notice is made)."""
    await wait_for(
        lambda: jobs_done(client) >= jobs, timeout=15, interval=0.05, what=f"{jobs} job(s) done"
    )
    return await incidents(client)


def resource_version(kube: Any, name: str = MODEL) -> str:
    return kube.deployment(NS, name)["metadata"]["resourceVersion"]


async def settled(kube: Any, name: str = MODEL) -> str:
    """The Deployment's resourceVersion once the controller has nothing left to write."""

    def observed() -> bool:
        d = kube.store.get("deployments", NS, name)
        status = d.get("status") or {}
        return status.get("observedGeneration") == d["metadata"]["generation"]

    await kube.wait_for(observed, 5, f"{NS}/{name} observed by the controller")
    if not (kube.deployment(NS, name)["spec"].get("paused")):
        await kube.wait_rollout_complete(NS, name)
    return resource_version(kube, name)


async def first_rollback(world: Any, client: Any, delivery: Any) -> dict[str, Any]:
    """The captured alert rolls v3 back to v2; return the verified incident."""
    await deliver(client, delivery("firing_single"))
    item = await wait_state(client, "verified")
    await wait_for(lambda: jobs_done(client) >= 1, timeout=15, what="the first job done")
    assert (item["bad_version"], item["target_version"]) == ("v3", "v2")
    assert serving_version(world.kube) == "v2"
    assert len(template_changes(world)) == 1
    return item


REFIRED = alert_started() + timedelta(minutes=20)


async def v3_serves_again(world: Any) -> str:
    """Someone redeploys v3 (the controller re-adopts its ReplicaSet) shortly before the
    alert fires anew at ``REFIRED``; return the Deployment's resourceVersion then."""
    await world.kube.set_version(NS, MODEL, "v3", wait=True)
    backdate_current(world.kube, REFIRED - timedelta(minutes=3))
    return await settled(world.kube)
