"""Strategy ``rollout-undo``: the Deployment's pod template back to an earlier revision's.

What ``kubectl rollout undo`` does, with two differences: the write is a JSON merge patch
carrying ``metadata.resourceVersion`` (the API server answers 409 if anything changed since
our read) and our annotations in the same request. ``spec.replicas`` is never touched (an
HPA may own it) and ReplicaSets are never deleted: history stays in place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime

import aiohttp

from receiver import annotations as ours
from receiver.clients.k8s import KubeClient
from receiver.decide import Decision
from receiver.kinds.deployment import (
    deployment_view,
    mark_bad_patch,
    selector_string,
    template_matches,
    undo_patch,
)
from receiver.models import RolloutStatus
from receiver.policy import ModelPolicy
from receiver.rollback.base import Applied, Workload
from receiver.rollback.reads import deployment_rollout, watch_deployment_rollout


class RolloutUndo:
    """The Deployment strategy, chosen by name ``rollout-undo``."""

    name = "rollout-undo"

    def workload_key(self, model: ModelPolicy) -> str:
        return f"{model.namespace}/deployment/{model.deployment_name}"

    async def read(
        self, kube: KubeClient, model: ModelPolicy, *, http: aiohttp.ClientSession
    ) -> Workload:
        # The target is chosen among the ReplicaSets by the decision; nothing to probe first.
        deployment = await kube.get_deployment(model.namespace, model.deployment_name)
        selector = selector_string(deployment.get("spec", {}).get("selector"))
        replicasets = await kube.list_replicasets(model.namespace, selector) if selector else []
        view = deployment_view(deployment, replicasets, strategy=self.name)
        return Workload(view, {"deployment": deployment, "replicasets": replicasets})

    async def apply(
        self,
        kube: KubeClient,
        workload: Workload,
        decision: Decision,
        annotations: Mapping[str, str | None],
        *,
        dry_run: bool,
    ) -> Applied:
        target = decision.target
        if target is None:
            raise ValueError(f"decision {decision.reason!r} has no target to roll back to")
        deployment = workload.objects["deployment"]
        already = template_matches(deployment, target)
        # The generation our write produces: a template change bumps it by exactly one.
        generation = workload.view.generation + (0 if already else 1)
        marks = {**annotations, ours.GENERATION: str(generation)}
        patch = undo_patch(deployment, target, marks)
        result = await kube.patch_deployment(
            workload.view.namespace, workload.view.name, patch, dry_run=dry_run
        )
        rv = str(result.get("metadata", {}).get("resourceVersion", ""))
        if dry_run:
            return Applied(
                False, f"would roll back to {target.version} (revision {target.number})", rv
            )
        if already:
            return Applied(False, f"template already at revision {target.number}", rv)
        return Applied(True, f"rolled back to {target.version} (revision {target.number})", rv)

    async def mark_bad(
        self, kube: KubeClient, workload: Workload, bad_revision: str, incident_id: str
    ) -> None:
        view = workload.view
        revisions = [*view.candidates, *([view.serving] if view.serving else [])]
        for revision in revisions:
            if str(revision.number) == bad_revision and not revision.bad:
                await kube.patch_replicaset(
                    view.namespace, revision.name, mark_bad_patch(incident_id)
                )

    async def rollout(self, kube: KubeClient, model: ModelPolicy) -> RolloutStatus:
        return await deployment_rollout(kube, model.namespace, model.deployment_name)

    def watch_rollout(self, kube: KubeClient, model: ModelPolicy) -> AsyncIterator[RolloutStatus]:
        return watch_deployment_rollout(kube, model.namespace, model.deployment_name)

    async def annotate(
        self, kube: KubeClient, model: ModelPolicy, annotations: Mapping[str, str | None]
    ) -> None:
        await kube.patch_deployment(
            model.namespace,
            model.deployment_name,
            {"metadata": {"annotations": dict(annotations)}},
        )

    async def last_change(self, kube: KubeClient, model: ModelPolicy) -> datetime | None:
        deployment = await kube.get_deployment(model.namespace, model.deployment_name)
        return ours.changed_at(deployment.get("metadata", {}).get("annotations") or {})

    def regarding(self, model: ModelPolicy) -> dict[str, str]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": model.namespace,
            "name": model.deployment_name,
        }
