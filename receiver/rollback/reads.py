"""Reads every strategy makes of a Deployment it verifies: its rollout, polled or watched.

Shared by the strategies (which do not import each other): the rollout as kubectl judges
it, with the pods counted, and the watch of the same Deployment that tells when reading it
again is worth it. No decisions here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from receiver.clients.k8s import KubeClient
from receiver.kinds.deployment import current_template_hash, rollout_status, selector_string
from receiver.models import RolloutStatus

__all__ = ["deployment_rollout", "watch_deployment_rollout"]


async def deployment_rollout(kube: KubeClient, namespace: str, name: str) -> RolloutStatus:
    """The Deployment's rollout as ``kubectl rollout status`` judges it, and no pod of an
    older template left (the Deployment, then its ReplicaSets and its pods at once: two
    round trips, since the moment a rollout completes waits on them)."""
    deployment = await kube.get_deployment(namespace, name)
    selector = selector_string(deployment.get("spec", {}).get("selector"))
    if not selector:
        return rollout_status(deployment, [])
    replicasets, pods = await asyncio.gather(
        kube.list_replicasets(namespace, selector), kube.list_pods(namespace, selector)
    )
    return rollout_status(
        deployment, pods, current_hash=current_template_hash(deployment, replicasets)
    )


async def watch_deployment_rollout(
    kube: KubeClient,
    namespace: str,
    name: str,
    judge: Callable[[Mapping[str, Any]], RolloutStatus] = rollout_status,
) -> AsyncIterator[RolloutStatus]:
    """``judge`` of the Deployment at each of its changes (the first from a fresh read)."""
    async with contextlib.aclosing(kube.watch_deployment(namespace, name)) as changes:
        async for deployment in changes:
            yield judge(deployment)
