"""Reads every strategy makes of a Deployment it verifies: its rollout, polled or watched,
and the readiness check of the strategies with a fixed target.

Shared by the strategies (which do not import each other): the rollout as kubectl judges
it, with the pods counted, and the watch of the same Deployment that tells when reading it
again is worth it. No decisions here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from receiver.clients.k8s import KubeClient
from receiver.errors import ConfigError, KubeConflict, KubeError, KubeUnavailable
from receiver.kinds.deployment import current_template_hash, rollout_status, selector_string
from receiver.models import RolloutStatus
from receiver.policy import ModelPolicy
from receiver.rollback.base import Preflight, Probe, Workload

__all__ = ["deployment_rollout", "preflight", "watch_deployment_rollout"]


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


async def preflight(
    read: Callable[[], Awaitable[Workload]],
    dry_run: Callable[[Workload], Awaitable[object]],
    model: ModelPolicy,
) -> Preflight:
    """Readiness of a strategy whose target is fixed (a standby slot, a stable Deployment):
    the workload reads, its target passes the strategy's pre-check (``target_problem``),
    and the API server accepts the rollback's own PATCH in a dry run (``dryRun=All``).
    ``KubeUnavailable`` propagates: Kubernetes could not tell."""
    try:
        workload = await read()
    except KubeUnavailable:
        raise
    except (KubeError, ConfigError) as e:
        return Preflight((f"cannot read the workload of {model.namespace}/{model.name}: {e}",))
    view = workload.view
    problems = [view.target_problem] if view.target_problem else []
    target = view.candidates[0] if view.candidates else None
    try:
        await dry_run(workload)
    except KubeConflict:
        problems.append("the workload changed during the dry run; the next check will retry")
    except KubeUnavailable:
        raise
    except KubeError as e:
        problems.append(f"the API server refused the rollback's PATCH in a dry run: {e}")
    probes: tuple[Probe, ...] = ()
    if model.health.base_url and view.serving_version:
        probes = (Probe("service", model.health.base_url, view.serving_version),)
    return Preflight(tuple(problems), view, target, probes)
