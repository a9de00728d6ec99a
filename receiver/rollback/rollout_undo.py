"""Strategy ``rollout-undo``: the Deployment's pod template back to an earlier revision's.

What ``kubectl rollout undo`` does, with two differences: the write is a JSON merge patch
carrying ``metadata.resourceVersion`` (the API server answers 409 if anything changed since
our read) and our annotations in the same request. ``spec.replicas`` is never touched (an
HPA may own it) and ReplicaSets are never deleted: history stays in place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime

import aiohttp

from receiver import annotations as ours
from receiver.clients.k8s import KubeClient
from receiver.decide import Decision, select_target
from receiver.errors import KubeConflict, KubeError, KubeNotFound, KubeUnavailable
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
from receiver.models import Revision, RolloutStatus, WorkloadView, incident_id, utcnow
from receiver.policy import ModelPolicy
from receiver.rollback.base import Applied, Preflight, Probe, Workload
from receiver.rollback.reads import deployment_rollout, watch_deployment_rollout

# A Deployment's status (and so its resourceVersion) changes while it rolls out: a dry run
# that meets a 409 reads again, this many times, before it says so.
_READINESS_ATTEMPTS = 3


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
        # Our annotations first, then the generation this write produces.
        return await self._restore(
            kube,
            workload,
            target,
            lambda generation: {**annotations, ours.GENERATION: generation},
            dry_run=dry_run,
            verb=("roll back to", "rolled back to"),
        )

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
        # The generation first: annotations the caller puts back (a drill) win over it.
        return await self._restore(
            kube,
            workload,
            target,
            lambda generation: {ours.GENERATION: generation, **annotations},
            dry_run=dry_run,
            verb=("roll forward to", "rolled forward to"),
        )

    async def _restore(
        self,
        kube: KubeClient,
        workload: Workload,
        target: Revision,
        marks: Callable[[str], Mapping[str, str | None]],
        *,
        dry_run: bool,
        verb: tuple[str, str],
    ) -> Applied:
        """One undo PATCH to ``target``'s template with ``marks(generation)``, where
        generation is what the write produces (a template change bumps it by exactly one)."""
        deployment = workload.objects["deployment"]
        already = template_matches(deployment, target)
        generation = str(workload.view.generation + (0 if already else 1))
        patch = undo_patch(deployment, target, marks(generation))
        result = await kube.patch_deployment(
            workload.view.namespace, workload.view.name, patch, dry_run=dry_run
        )
        rv = str(result.get("metadata", {}).get("resourceVersion", ""))
        what = f"{target.version} (revision {target.number})"
        if dry_run:
            return Applied(False, f"would {verb[0]} {what}", rv)
        if already:
            return Applied(False, f"template already at revision {target.number}", rv)
        return Applied(True, f"{verb[1]} {what}", rv)

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

    async def readiness(
        self, kube: KubeClient, model: ModelPolicy, session: aiohttp.ClientSession
    ) -> Preflight:
        """The Deployment exists, rule 7 finds a target, and the API server accepts, in a
        dry run, the very PATCH a rollback sends (template, annotations, resourceVersion)
        and the bad mark on the serving ReplicaSet."""
        what = f"Deployment {model.namespace}/{model.deployment_name}"
        for _ in range(_READINESS_ATTEMPTS):
            try:
                workload = await self.read(kube, model, http=session)
            except KubeNotFound:
                return Preflight(
                    (
                        f"{what} not found: create it, or fix `deployment` of"
                        f" {model.namespace}/{model.name} in the policy",
                    )
                )
            except KubeUnavailable:
                raise
            except KubeError as e:
                return Preflight((f"cannot read {what}: {e}",))
            view = workload.view
            problems = _view_problems(view, what)
            target = (
                select_target(view.candidates, view.serving_version)
                if view.serving_version
                else None
            )
            if view.serving_version and target is None:
                problems.append(_no_target(view, what))
            try:
                problems += await _dry_run(kube, model, workload, target)
            except KubeConflict:
                continue  # changed since the read (a rollout's status): read again
            probes = ()
            if model.health.base_url and view.serving_version:
                probes = (Probe("service", model.health.base_url, view.serving_version),)
            return Preflight(tuple(problems), view, target, probes)
        return Preflight(
            (
                f"{what} changed under each of {_READINESS_ATTEMPTS} dry runs (a rollout in"
                " progress?): the rollback PATCH could not be tried; the next check will",
            )
        )


def _view_problems(view: WorkloadView, what: str) -> list[str]:
    """What on the Deployment itself keeps the decision from rolling it back."""
    problems = []
    if view.spec_paused:
        problems.append(
            f"{what} is paused (spec.paused) by a person: the receiver refuses to roll it back"
            " and never unpauses it; `kubectl rollout resume` it when done"
        )
    if view.gitops:
        problems.append(
            f"{what} is managed by {view.gitops}: its alerts are only notified, since the next"
            " sync would undo a rollback"
        )
    if not view.serving_version:
        problems.append(
            f"{what}'s pod template has no app.kubernetes.io/version label: alerts cannot be"
            " matched to the serving version; add it"
        )
    return problems


def _no_target(view: WorkloadView, what: str) -> str:
    """Why rule 7 finds no target, naming each earlier revision and what rules it out."""
    if not view.candidates:
        return (
            f"no earlier revision of {what} to roll back to: only {view.serving_version} has a"
            " ReplicaSet (raise revisionHistoryLimit to keep earlier ones)"
        )
    why = []
    for revision in view.candidates:
        if revision.bad:
            why.append(f"revision {revision.number} ({revision.version}) is marked bad")
        elif not revision.version:
            why.append(f"revision {revision.number} has no version label")
        else:
            why.append(f"revision {revision.number} runs {revision.version} too")
    return (
        f"no earlier revision of {what} with another version that is not marked bad: "
        + "; ".join(why)
    )


async def _dry_run(
    kube: KubeClient, model: ModelPolicy, workload: Workload, target: Revision | None
) -> list[str]:
    """Send, with ``dryRun=All``, the writes a rollback would: the Deployment PATCH (only its
    annotations when there is no target, which still asks for the permission) and the bad
    mark on the serving ReplicaSet. A refusal is a problem; a 409 propagates."""
    view = workload.view
    deployment = workload.objects["deployment"]
    now = utcnow()
    incident = incident_id(
        model.cluster, model.namespace, model.name, view.serving_version, view.serving_revision
    )
    marks: dict[str, str | None] = dict(
        ours.rollback_annotations(
            incident_id=incident,
            bad_version=view.serving_version,
            bad_revision=view.serving_revision,
            target_version=target.version if target else "",
            target_revision=str(target.number) if target else "",
            at=now,
        )
    )
    marks[ours.BAD_VERSIONS] = ours.bad_versions_value(
        ours.bad_versions(view.annotations), add=view.serving_version
    )
    marks[ours.GENERATION] = str(view.generation + (1 if target else 0))
    if target is not None:
        patch = undo_patch(deployment, target, marks)
    else:
        rv = deployment.get("metadata", {}).get("resourceVersion")
        patch = {"metadata": {"resourceVersion": rv, "annotations": marks}}
    problems = []
    try:
        await kube.patch_deployment(view.namespace, view.name, patch, dry_run=True)
    except (KubeConflict, KubeUnavailable):
        raise
    except KubeError as e:
        problems.append(f"the rollback PATCH would be refused: {e}")
    if view.serving is not None:
        try:
            await kube.patch_replicaset(
                view.namespace, view.serving.name, mark_bad_patch(incident), dry_run=True
            )
        except KubeUnavailable:
            raise
        except KubeError as e:
            problems.append(f"the bad revision could not be marked: {e}")
    return problems
