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
    owned_replicasets,
    revision_number,
    selector_string,
    template_matches,
    undo_patch,
    unmark_bad_patch,
)
from receiver.models import Revision, RolloutStatus
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
        # Every owned ReplicaSet, by its own mark: on a re-drive the view lists the bad
        # version as bad already (``bad-versions``, same PATCH), and a lagging controller
        # may not have re-adopted the target yet, leaving the bad revision the newest.
        deployment = workload.objects["deployment"]
        for rs in owned_replicasets(deployment, workload.objects["replicasets"]):
            metadata = rs.get("metadata") or {}
            if str(revision_number(rs)) == bad_revision and ours.BAD not in (
                metadata.get("annotations") or {}
            ):
                await kube.patch_replicaset(
                    workload.view.namespace,
                    str(metadata.get("name", "")),
                    mark_bad_patch(incident_id),
                )

    def forward_target(self, workload: Workload) -> Revision | None:
        view = workload.view
        version = view.annotations.get(ours.ROLLED_BACK_FROM)
        if not version:
            return None
        recorded = view.annotations.get(ours.ROLLED_BACK_FROM_REVISION, "")
        same = [r for r in view.candidates if r.version == version]
        exact = [r for r in same if str(r.number) == recorded]
        # The ReplicaSet that ran it, else the newest of that version (re-created since).
        return (exact or sorted(same, key=lambda r: r.number, reverse=True) or [None])[0]

    async def roll_forward(
        self,
        kube: KubeClient,
        workload: Workload,
        target: Revision,
        annotations: Mapping[str, str | None],
        *,
        dry_run: bool,
    ) -> Applied:
        deployment = workload.objects["deployment"]
        already = template_matches(deployment, target)
        generation = workload.view.generation + (0 if already else 1)
        marks = {ours.GENERATION: str(generation), **annotations}
        patch = undo_patch(deployment, target, marks)
        result = await kube.patch_deployment(
            workload.view.namespace, workload.view.name, patch, dry_run=dry_run
        )
        rv = str(result.get("metadata", {}).get("resourceVersion", ""))
        what = f"{target.version} (revision {target.number})"
        if dry_run:
            return Applied(False, f"would roll forward to {what}", rv)
        if already:
            return Applied(False, f"template already at revision {target.number}", rv)
        return Applied(True, f"rolled forward to {what}", rv)

    async def unmark_bad(self, kube: KubeClient, workload: Workload, target: Revision) -> None:
        if target.name:
            await kube.patch_replicaset(workload.view.namespace, target.name, unmark_bad_patch())

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
