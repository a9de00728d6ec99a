"""Reads every strategy makes of a Deployment it verifies: its rollout, polled or watched.

Shared by the strategies (which do not import each other): the rollout as kubectl judges
it, with the pods counted, and the watch of the same Deployment that tells when reading it
again is worth it. No decisions here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from receiver.clients.k8s import KubeClient
from receiver.kinds.deployment import current_template_hash, rollout_status, selector_string
from receiver.models import RolloutStatus

__all__ = ["deployment_rollout", "watch_deployment_rollout"]


async def deployment_rollout(kube: KubeClient, namespace: str, name: str) -> RolloutStatus:
    """The Deployment's rollout as ``kubectl rollout status`` judges it, and no pod of an
    older template left (the Deployment, then its ReplicaSets and its pods at once)."""
    return await _with_pods(kube, await kube.get_deployment(namespace, name))


async def _with_pods(kube: KubeClient, deployment: Mapping[str, Any]) -> RolloutStatus:
    """``rollout_status`` of a Deployment already read, with its ReplicaSets and pods
    listed at once: the old pods only the pod list shows."""
    namespace = str((deployment.get("metadata") or {}).get("namespace", ""))
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
    kube: KubeClient, namespace: str, name: str
) -> AsyncIterator[RolloutStatus]:
    """The Deployment's rollout at each of its changes (the first from a fresh read),
    judged as ``deployment_rollout`` judges it: while the watched object shows the rollout
    unfinished, from the object alone; once it looks complete, with its pods listed too,
    so a complete answer is final and saves verification a read."""
    async with contextlib.aclosing(kube.watch_deployment(namespace, name)) as changes:
        async for deployment in changes:
            status = rollout_status(deployment)
            yield await _with_pods(kube, deployment) if status.done else status
