"""Strategy ``rollout-undo``: the Deployment's pod template back to an earlier revision's.

What ``kubectl rollout undo`` does, with two differences: the write is a JSON merge patch
carrying ``metadata.resourceVersion`` (the API server answers 409 if anything changed since
our read) and our annotations in the same request. ``spec.replicas`` is never touched (an
HPA may own it) and ReplicaSets are never deleted: history stays in place.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.decide import ANNOTATION_PAUSED, Decision
from receiver.health import RolloutStatus, current_template_hash, rollout_status
from receiver.k8s import KubeClient, selector_string
from receiver.policy import ModelPolicy
from receiver.rollback.base import Applied, Workload
from receiver.workload import deployment_view, mark_bad_patch, template_matches, undo_patch


class RolloutUndo:
    """The Deployment strategy, chosen by name ``rollout-undo``."""

    name = "rollout-undo"

    async def read(self, kube: KubeClient, model: ModelPolicy) -> Workload:
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
        annotations: Mapping[str, str],
        *,
        dry_run: bool,
    ) -> Applied:
        target = decision.target
        if target is None:
            raise ValueError(f"decision {decision.reason!r} has no target to roll back to")
        deployment = workload.objects["deployment"]
        already = template_matches(deployment, target)
        patch = undo_patch(deployment, target, annotations)
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
        self, kube: KubeClient, workload: Workload, incident_id: str, *, dry_run: bool
    ) -> None:
        serving = workload.view.serving
        if serving is None or serving.bad:
            return
        await kube.patch_replicaset(
            workload.view.namespace, serving.name, mark_bad_patch(incident_id), dry_run=dry_run
        )

    async def rollout(self, kube: KubeClient, model: ModelPolicy) -> RolloutStatus:
        deployment = await kube.get_deployment(model.namespace, model.deployment_name)
        selector = selector_string(deployment.get("spec", {}).get("selector"))
        replicasets = await kube.list_replicasets(model.namespace, selector) if selector else []
        pods = await kube.list_pods(model.namespace, selector) if selector else []
        return rollout_status(
            deployment, pods, current_hash=current_template_hash(deployment, replicasets)
        )

    async def pause(self, kube: KubeClient, model: ModelPolicy, reason: str) -> None:
        await kube.patch_deployment(
            model.namespace,
            model.deployment_name,
            {"metadata": {"annotations": {ANNOTATION_PAUSED: reason[:250]}}},
        )

    def regarding(self, model: ModelPolicy) -> dict[str, str]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": model.namespace,
            "name": model.deployment_name,
        }
