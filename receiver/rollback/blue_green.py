"""Strategy ``blue-green``: the Service's ``slot`` selector switched to the warm standby.

Two Deployments (the slots ``blue`` and ``green``) run side by side; the Service sends the
traffic to the one its selector names. A rollback is one JSON merge patch of the Service:
the selector's ``slot``, our annotations (the Service is the workload: rule 0, pauses and
the guards read it) and ``metadata.resourceVersion``. The Deployments are never written.

The standby is checked before the decision, on every read (design.md, Strategies): it
exists, is not paused, is rolled out with at least the active slot's available replicas,
runs a known version that is neither the one alerted on nor listed bad, and answers the
Open Inference Protocol checks (served version and a sample inference) through its own
``health.slot_urls`` entry. A failed check is ``view.target_problem``: the decision
notifies with it and nothing switches.

Long because the standby pre-check (existence, replicas, bad versions, a health probe)
is the strategy's own knowledge and belongs beside its switch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from receiver import annotations as ours
from receiver.clients.k8s import KubeClient
from receiver.decide import Decision
from receiver.errors import ConfigError, KubeNotFound
from receiver.kinds.deployment import (
    LABEL_VERSION,
    available_replicas,
    gitops_manager,
    last_rollout_at,
    rollout_status,
    template_version,
)
from receiver.kinds.service import (
    SLOT_LABEL,
    selected_slot,
    selector_changed_at,
    service_annotations,
    switch_patch,
)
from receiver.models import Revision, RolloutStatus, WorkloadView
from receiver.policy import ModelPolicy
from receiver.rollback.base import Applied, Preflight, Workload
from receiver.rollback.reads import deployment_rollout, preflight, watch_deployment_rollout
from receiver.verify.probe import probe_model

__all__ = ["BlueGreen", "Slots", "blue_green_view", "standby_problem"]


@dataclass(frozen=True)
class Slots:
    """The Service and its two slots as one read found them: which slot is active, which
    is standby, and their Deployments (``standby`` None when it does not exist)."""

    service: Mapping[str, Any]
    active_slot: str
    active: Mapping[str, Any]
    standby_slot: str
    standby: Mapping[str, Any] | None
    standby_name: str


def blue_green_view(slots: Slots, *, target_problem: str = "") -> WorkloadView:
    """What the decision reads: the active slot's version as the serving one, the standby
    as the only candidate. Pure."""
    service = slots.service
    metadata = service.get("metadata") or {}
    annotations = service_annotations(service)
    bad_versions = ours.bad_versions(annotations)
    active_meta = slots.active.get("metadata") or {}
    serving_version = template_version(slots.active)
    active_generation = int(active_meta.get("generation") or 0)
    serving = Revision(
        number=active_generation,
        version=serving_version,
        name=str(active_meta.get("name", "")),
        bad=serving_version in bad_versions,
    )
    candidates: tuple[Revision, ...] = ()
    if slots.standby is not None:
        version = template_version(slots.standby)
        candidates = (
            Revision(
                number=int((slots.standby.get("metadata") or {}).get("generation") or 0),
                version=version,
                name=slots.standby_name,
                bad=bool(version) and version in bad_versions,
            ),
        )
    made_current_by_us = _made_current_by_us(annotations, slots, serving_version)
    if made_current_by_us:
        became_current_at = ours.changed_at(annotations)
    else:
        moments = [
            t
            for t in (last_rollout_at(slots.active), selector_changed_at(service))
            if t is not None
        ]
        became_current_at = max(moments, default=None)
    return WorkloadView(
        strategy=BlueGreen.name,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        serving_version=serving_version,
        serving_revision=str(active_generation),
        became_current_at=became_current_at,
        annotations=annotations,
        # The switch writes the Service only; a paused standby is a pre-check problem.
        spec_paused=False,
        gitops=gitops_manager(metadata),
        candidates=candidates,
        made_current_by_us=made_current_by_us,
        serving=serving,
        generation=int(metadata.get("generation") or 0),
        target_problem=target_problem,
    )


def standby_problem(slots: Slots) -> str:
    """The checks of the standby that need no request: ``""`` when they pass. Pure."""
    where = f"standby {slots.standby_name} (slot {slots.standby_slot})"
    standby = slots.standby
    if standby is None:
        namespace = (slots.service.get("metadata") or {}).get("namespace", "")
        return (
            f"{where}: Deployment {namespace}/{slots.standby_name} does not exist; deploy a"
            " good version to the standby slot before a switch can roll back"
        )
    if (standby.get("spec") or {}).get("paused"):
        return f"{where} is paused (spec.paused) by a person; resume it or switch by hand"
    version = template_version(standby)
    if not version:
        return (
            f"{where} has no {LABEL_VERSION} label on its pod template; add it so the"
            " version a switch would restore is known"
        )
    serving = template_version(slots.active)
    if version == serving:
        return (
            f"{where} runs {version} too, the version now serving; deploy a good version"
            " to the standby slot"
        )
    if version in ours.bad_versions(service_annotations(slots.service)):
        return (
            f"{where} runs {version}, marked bad on the Service ({ours.BAD_VERSIONS}); deploy"
            " a good version to the standby slot"
        )
    status = rollout_status(standby)
    if not status.done:
        return f"{where} is not rolled out: {status.message}"
    have, need = available_replicas(standby), available_replicas(slots.active)
    if have < need or have == 0:
        return (
            f"{where} has {have} available replicas, fewer than the active slot's {need};"
            " scale it up so it can take the traffic"
        )
    return ""


class BlueGreen:
    """The blue-green strategy, chosen by name ``blue-green``."""

    name = "blue-green"

    def workload_key(self, model: ModelPolicy) -> str:
        return f"{model.namespace}/service/{_service_name(model)}"

    async def read(
        self, kube: KubeClient, model: ModelPolicy, *, http: aiohttp.ClientSession
    ) -> Workload:
        slots = await self._slots(kube, model)
        problem = standby_problem(slots)
        if not problem:
            problem = await self._probe_standby(http, model, slots)
        view = blue_green_view(slots, target_problem=problem)
        return Workload(
            view,
            {
                "service": slots.service,
                "active_slot": slots.active_slot,
                "standby_slot": slots.standby_slot,
            },
        )

    async def _slots(self, kube: KubeClient, model: ModelPolicy) -> Slots:
        """The Service and both slots' Deployments, read at once (the slots' names are in
        the policy, so the Service's answer is not waited for)."""
        names = _slot_names(model)
        service_name = _service_name(model)

        async def slot(name: str) -> Mapping[str, Any] | None:
            try:
                return await kube.get_deployment(model.namespace, name)
            except KubeNotFound:
                return None

        service, blue, green = await asyncio.gather(
            kube.get_service(model.namespace, service_name),
            slot(names["blue"]),
            slot(names["green"]),
        )
        deployments = {"blue": blue, "green": green}
        active_slot = selected_slot(service)
        if active_slot not in names:
            selector = (service.get("spec") or {}).get("selector") or {}
            raise ConfigError(
                f"Service {model.namespace}/{service_name} selects {SLOT_LABEL}={active_slot!r}"
                f" (selector {selector}), not one of the policy's slots"
                f" {', '.join(sorted(names))}: set the selector's {SLOT_LABEL} to the slot"
                " that serves"
            )
        active = deployments[active_slot]
        if active is None:
            raise KubeNotFound(
                f"get deployment {model.namespace}/{names[active_slot]}: the Deployment of the"
                f" active slot {active_slot} does not exist",
                status=404,
            )
        standby_slot = next(s for s in sorted(names) if s != active_slot)
        return Slots(
            service=service,
            active_slot=active_slot,
            active=active,
            standby_slot=standby_slot,
            standby=deployments[standby_slot],
            standby_name=names[standby_slot],
        )

    async def _probe_standby(
        self, http: aiohttp.ClientSession, model: ModelPolicy, slots: Slots
    ) -> str:
        urls = model.health.slot_urls
        url = getattr(urls, slots.standby_slot, None) if urls is not None else None
        if not url:
            return (
                f"no health.slot_urls.{slots.standby_slot} in the policy: the standby cannot"
                " be checked before the switch"
            )
        assert slots.standby is not None
        version = template_version(slots.standby)
        verdict = await probe_model(
            http,
            base_url=url,
            model=model.name,
            version=version,
            paths=model.health.paths,
            sample_request=model.health.sample_request,
            request_timeout=model.health.request_timeout,
        )
        if verdict.healthy:
            return ""
        return (
            f"standby {slots.standby_name} (slot {slots.standby_slot}, {version}) is not"
            f" healthy: {verdict.reason}"
        )

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
            raise ValueError(f"decision {decision.reason!r} has no target to switch to")
        marks = {
            **annotations,
            ours.PREVIOUS_SLOT: workload.objects["active_slot"],
            # The standby's generation: a later change of that Deployment is not ours.
            ours.GENERATION: str(target.number),
        }
        return await self._switch(kube, workload, target, marks, dry_run=dry_run, verb="switch")

    async def mark_bad(
        self, kube: KubeClient, workload: Workload, bad_revision: str, incident_id: str
    ) -> None:
        """Nothing to write: the switch's own PATCH lists the bad version in the Service's
        ``bad-versions``, which is what the pre-check reads. A slot is re-deployed in place
        (no ReplicaSet of it is ever a target), so marking ReplicaSets would add nothing."""

    def forward_target(self, workload: Workload) -> Revision | None:
        """The slot our switch left (now the standby), while it still runs the version the
        switch removed (``rolled-back-from``): a roll forward switches back to it."""
        version = workload.view.annotations.get(ours.ROLLED_BACK_FROM)
        if not version:
            return None
        return next((r for r in workload.view.candidates if r.version == version), None)

    async def roll_forward(
        self,
        kube: KubeClient,
        workload: Workload,
        target: Revision,
        annotations: Mapping[str, str | None],
        *,
        dry_run: bool,
    ) -> Applied:
        marks = {
            **annotations,
            ours.PREVIOUS_SLOT: workload.objects["active_slot"],
            ours.GENERATION: None,
        }
        return await self._switch(
            kube, workload, target, marks, dry_run=dry_run, verb="switch back"
        )

    async def _switch(
        self,
        kube: KubeClient,
        workload: Workload,
        target: Revision,
        marks: Mapping[str, str | None],
        *,
        dry_run: bool,
        verb: str,
    ) -> Applied:
        """One Service PATCH: the selector to the standby slot, with ``marks``."""
        active_slot = workload.objects["active_slot"]
        standby_slot = workload.objects["standby_slot"]
        patch = switch_patch(workload.objects["service"], standby_slot, marks)
        result = await kube.patch_service(
            workload.view.namespace, workload.view.name, patch, dry_run=dry_run
        )
        rv = str(result.get("metadata", {}).get("resourceVersion", ""))
        what = (
            f"Service {workload.view.name} {SLOT_LABEL} {active_slot} -> {standby_slot}"
            f" ({target.name}, {target.version})"
        )
        past = verb.replace("switch", "switched", 1)
        if dry_run:
            return Applied(False, f"would {verb} {what}", rv)
        return Applied(True, f"{past} {what}", rv)

    async def unmark_bad(self, kube: KubeClient, workload: Workload, target: Revision) -> None:
        """Nothing to write: the roll forward's PATCH takes the version out of the
        Service's ``bad-versions`` itself."""

    async def rollout(self, kube: KubeClient, model: ModelPolicy) -> RolloutStatus:
        """The rollout of the slot the Service selects (after a switch, the former standby:
        already complete when it was warm)."""
        name = await self._selected_deployment(kube, model)
        return await deployment_rollout(kube, model.namespace, name)

    async def watch_rollout(
        self, kube: KubeClient, model: ModelPolicy
    ) -> AsyncIterator[RolloutStatus]:
        name = await self._selected_deployment(kube, model)
        watched = watch_deployment_rollout(kube, model.namespace, name)
        async with contextlib.aclosing(watched) as changes:
            async for status in changes:
                yield status

    async def _selected_deployment(self, kube: KubeClient, model: ModelPolicy) -> str:
        names = _slot_names(model)
        service = await kube.get_service(model.namespace, _service_name(model))
        slot = selected_slot(service)
        if slot not in names:
            raise ConfigError(
                f"Service {model.namespace}/{_service_name(model)} selects no slot of the"
                f" policy ({SLOT_LABEL}={slot!r})"
            )
        return names[slot]

    async def annotate(
        self, kube: KubeClient, model: ModelPolicy, annotations: Mapping[str, str | None]
    ) -> None:
        await kube.patch_service(
            model.namespace, _service_name(model), {"metadata": {"annotations": dict(annotations)}}
        )

    async def last_change(self, kube: KubeClient, model: ModelPolicy) -> datetime | None:
        service = await kube.get_service(model.namespace, _service_name(model))
        return ours.changed_at(service_annotations(service))

    def regarding(self, model: ModelPolicy) -> dict[str, str]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "namespace": model.namespace,
            "name": _service_name(model),
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
        service = workload.objects["service"]
        marks = {ours.PREVIOUS_SLOT: workload.objects["active_slot"]}
        await kube.patch_service(
            workload.view.namespace,
            workload.view.name,
            switch_patch(service, workload.objects["standby_slot"], marks),
            dry_run=True,
        )


def _service_name(model: ModelPolicy) -> str:
    if not model.service:
        raise ConfigError(f"model {model.name}: strategy blue-green needs service in the policy")
    return model.service


def _slot_names(model: ModelPolicy) -> dict[str, str]:
    if model.slots is None:
        raise ConfigError(
            f"model {model.name}: strategy blue-green needs slots: {{blue: ..., green: ...}}"
        )
    return {"blue": model.slots.blue, "green": model.slots.green}


def _made_current_by_us(annotations: Mapping[str, str], slots: Slots, serving: str) -> bool:
    """Our last switch selected the slot that serves, and nobody changed that slot's
    Deployment since (its generation is the one recorded at the switch)."""
    if not serving or annotations.get(ours.ROLLED_BACK_TO) != serving:
        return False
    if ours.changed_at(annotations) is None:
        return False
    if annotations.get(ours.PREVIOUS_SLOT) == slots.active_slot:
        return False
    generation = str((slots.active.get("metadata") or {}).get("generation") or 0)
    recorded = annotations.get(ours.GENERATION)
    return recorded is None or recorded == generation
