"""Strategy ``canary``: the canary Deployment scaled to zero, the stable one left as it is.

A canary runs a new version beside the stable Deployment, both behind one Service. An
alert that names the canary's version (while the canary has replicas) is answered with one
JSON merge patch of the canary: ``spec.replicas: 0``, our annotations (its replica count
kept in ``previous-replicas`` for a roll forward) and ``metadata.resourceVersion``. The
stable Deployment is never written. An alert naming the stable version is not fixed by
removing the canary: the view says so (``unaffected_versions``) and the decision notifies.

An HPA on the canary would scale it up again (an HPA cannot go below one replica): canaries
managed this way run without one, as canary tooling usually requires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import aiohttp

from receiver import annotations as ours
from receiver.clients.k8s import KubeClient
from receiver.decide import Decision
from receiver.errors import ConfigError, KubeNotFound
from receiver.kinds.deployment import (
    available_replicas,
    gitops_manager,
    last_rollout_at,
    scale_to_zero_patch,
    spec_replicas,
    template_version,
)
from receiver.models import Revision, RolloutStatus, WorkloadView
from receiver.policy import CanarySpec, ModelPolicy
from receiver.rollback.base import Applied, Preflight, Workload
from receiver.rollback.reads import deployment_rollout, preflight

__all__ = ["Canary", "canary_gone", "canary_view"]


def canary_view(canary: Mapping[str, Any], stable: Mapping[str, Any] | None) -> WorkloadView:
    """What the decision reads: the canary's version as the serving one while it has
    replicas (else the stable's), the stable as the only candidate. Pure."""
    metadata = canary.get("metadata") or {}
    spec = canary.get("spec") or {}
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    bad_versions = ours.bad_versions(annotations)
    name = str(metadata.get("name", ""))
    live = spec_replicas(canary) > 0
    stable_revision = _revision(stable, bad_versions) if stable is not None else None
    canary_revision = _revision(canary, bad_versions)

    unaffected: dict[str, str] = {}
    target_problem = ""
    if stable_revision is not None and stable is not None:
        stable_name = stable_revision.name
        if stable_revision.version:
            unaffected[stable_revision.version] = (
                f"{stable_revision.version} is the stable version ({stable_name}); a canary"
                f" rollback (scaling {name} to zero) does not fix the stable version: roll"
                " it back by hand, or give it a strategy of its own"
            )
        if available_replicas(stable) == 0:
            target_problem = (
                f"stable {stable_name} has no available replicas; scaling the canary {name}"
                " to zero would leave nothing serving"
            )
    else:
        target_problem = (
            f"the stable Deployment of canary {name} does not exist; scaling the canary to"
            " zero would leave nothing serving"
        )

    if live:
        serving: Revision | None = canary_revision
        became_current_at = last_rollout_at(canary)
        candidates = (stable_revision,) if stable_revision is not None else ()
    else:
        # Scaled to zero: the canary no longer serves; what serves is the stable.
        serving = stable_revision
        became_current_at = last_rollout_at(stable) if stable is not None else None
        candidates = ()
    return WorkloadView(
        strategy=Canary.name,
        namespace=str(metadata.get("namespace", "")),
        name=name,
        resource_version=str(metadata.get("resourceVersion", "")),
        serving_version=serving.version if serving is not None else "",
        serving_revision=str(serving.number) if serving is not None else "",
        became_current_at=became_current_at,
        annotations=annotations,
        spec_paused=bool(spec.get("paused", False)),
        gitops=gitops_manager(metadata),
        candidates=candidates,
        # We only ever remove a canary: no version is made current by us.
        made_current_by_us=False,
        serving=serving,
        generation=int(metadata.get("generation") or 0),
        target_problem=target_problem,
        unaffected_versions=unaffected,
    )


def canary_gone(canary: Mapping[str, Any]) -> RolloutStatus:
    """The canary's scale-down as its Deployment shows it: observed, and no pod left."""
    metadata = canary.get("metadata") or {}
    status = canary.get("status") or {}
    name = metadata.get("name", "")
    if int(metadata.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")
    left = int(status.get("replicas") or 0)
    if left:
        return RolloutStatus(
            False, False, f'Waiting for canary "{name}" to scale to zero: {left} pods left...'
        )
    return RolloutStatus(True, False, f'canary "{name}" scaled to zero')


class Canary:
    """The canary strategy, chosen by name ``canary``."""

    name = "canary"

    def workload_key(self, model: ModelPolicy) -> str:
        return f"{model.namespace}/deployment/{_spec(model).deployment}"

    async def read(
        self, kube: KubeClient, model: ModelPolicy, *, http: aiohttp.ClientSession
    ) -> Workload:
        # The stable is checked from its Deployment; its health is verified after the act.
        spec = _spec(model)

        async def stable() -> Mapping[str, Any] | None:
            try:
                return await kube.get_deployment(model.namespace, spec.stable)
            except KubeNotFound:
                return None

        canary, stable_deployment = await asyncio.gather(
            kube.get_deployment(model.namespace, spec.deployment), stable()
        )
        view = canary_view(canary, stable_deployment)
        return Workload(view, {"deployment": canary})

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
            raise ValueError(f"decision {decision.reason!r} has no stable version to keep")
        canary = workload.objects["deployment"]
        replicas = spec_replicas(canary)
        patch = scale_to_zero_patch(canary, annotations)
        result = await kube.patch_deployment(
            workload.view.namespace, workload.view.name, patch, dry_run=dry_run
        )
        rv = str(result.get("metadata", {}).get("resourceVersion", ""))
        what = (
            f"canary {workload.view.name} from {replicas} to 0 replicas; {target.name}"
            f" ({target.version}) serves"
        )
        if dry_run:
            return Applied(False, f"would scale {what}", rv)
        return Applied(True, f"scaled {what}", rv)

    async def mark_bad(
        self, kube: KubeClient, workload: Workload, bad_revision: str, incident_id: str
    ) -> None:
        """Nothing to write: the scale-down's own PATCH lists the canary's version in its
        ``bad-versions``, and a canary's ReplicaSets are never a target."""

    def forward_target(self, workload: Workload) -> Revision | None:
        """The canary itself, scaled to zero by our rollback of its version: a roll forward
        gives it back its replicas (``previous-replicas``)."""
        canary = workload.objects["deployment"]
        annotations = (canary.get("metadata") or {}).get("annotations") or {}
        version = template_version(canary)
        if not version or annotations.get(ours.ROLLED_BACK_FROM) != version:
            return None
        return _revision(canary, frozenset())

    async def roll_forward(
        self,
        kube: KubeClient,
        workload: Workload,
        target: Revision,
        annotations: Mapping[str, str | None],
        *,
        dry_run: bool,
    ) -> Applied:
        canary = workload.objects["deployment"]
        metadata = canary.get("metadata") or {}
        kept = (metadata.get("annotations") or {}).get(ours.PREVIOUS_REPLICAS, "1")
        try:
            replicas = max(1, int(kept))
        except ValueError:
            replicas = 1
        already = spec_replicas(canary) == replicas
        patch = {
            "metadata": {
                "resourceVersion": metadata.get("resourceVersion"),
                "annotations": {**annotations, ours.PREVIOUS_REPLICAS: None},
            },
            "spec": {"replicas": replicas},
        }
        result = await kube.patch_deployment(
            workload.view.namespace, workload.view.name, patch, dry_run=dry_run
        )
        rv = str(result.get("metadata", {}).get("resourceVersion", ""))
        what = f"canary {workload.view.name} ({target.version}) back to {replicas} replicas"
        if dry_run:
            return Applied(False, f"would scale {what}", rv)
        if already:
            return Applied(False, f"{what} already", rv)
        return Applied(True, f"scaled {what}", rv)

    async def unmark_bad(self, kube: KubeClient, workload: Workload, target: Revision) -> None:
        """Nothing to write: the roll forward's PATCH takes the version out of
        ``bad-versions`` itself."""

    async def rollout(self, kube: KubeClient, model: ModelPolicy) -> RolloutStatus:
        """The stable's rollout complete, and no canary pod left to answer in its place."""
        spec = _spec(model)
        stable = await deployment_rollout(kube, model.namespace, spec.stable)
        if not stable.done:
            return stable
        return canary_gone(await kube.get_deployment(model.namespace, spec.deployment))

    async def watch_rollout(
        self, kube: KubeClient, model: ModelPolicy
    ) -> AsyncIterator[RolloutStatus]:
        # The stable does not change; the canary's pods going away is what is waited for.
        spec = _spec(model)
        watched = kube.watch_deployment(model.namespace, spec.deployment)
        async with contextlib.aclosing(watched) as changes:
            async for canary in changes:
                gone = canary_gone(canary)
                if not gone.done:
                    yield gone
                    continue
                stable = await deployment_rollout(kube, model.namespace, spec.stable)
                yield stable if not stable.done else gone

    async def annotate(
        self, kube: KubeClient, model: ModelPolicy, annotations: Mapping[str, str | None]
    ) -> None:
        await kube.patch_deployment(
            model.namespace,
            _spec(model).deployment,
            {"metadata": {"annotations": dict(annotations)}},
        )

    async def last_change(self, kube: KubeClient, model: ModelPolicy) -> datetime | None:
        canary = await kube.get_deployment(model.namespace, _spec(model).deployment)
        return ours.changed_at((canary.get("metadata") or {}).get("annotations") or {})

    def regarding(self, model: ModelPolicy) -> dict[str, str]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": model.namespace,
            "name": _spec(model).deployment,
        }

    async def readiness(
        self, kube: KubeClient, model: ModelPolicy, session: aiohttp.ClientSession
    ) -> Preflight:
        """The workload reads, its target passes the pre-check, and the rollback's own
        PATCH is accepted in a dry run (``reads.preflight``)."""
        return await preflight(
            lambda: self.read(kube, model, http=session),
            lambda workload: self._dry_run(kube, workload),
            model,
        )

    async def _dry_run(self, kube: KubeClient, workload: Workload) -> None:
        canary = workload.objects["deployment"]
        await kube.patch_deployment(
            workload.view.namespace,
            workload.view.name,
            scale_to_zero_patch(canary, {}),
            dry_run=True,
        )


def _spec(model: ModelPolicy) -> CanarySpec:
    if model.canary is None:
        raise ConfigError(
            f"model {model.name}: strategy canary needs canary: {{deployment: ..., stable: ...}}"
        )
    return model.canary


def _revision(deployment: Mapping[str, Any], bad_versions: frozenset[str]) -> Revision:
    metadata = deployment.get("metadata") or {}
    version = template_version(deployment)
    return Revision(
        number=int(metadata.get("generation") or 0),
        version=version,
        name=str(metadata.get("name", "")),
        bad=bool(version) and version in bad_versions,
    )
