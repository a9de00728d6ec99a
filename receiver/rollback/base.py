"""What every rollback strategy provides to the service, and the values it returns.

A strategy reads its workload fresh into a ``WorkloadView`` (running any pre-check of its
fixed target then: the read is the only step before the decision), applies a decision with
one optimistic-concurrency write that also carries our annotations, marks the bad revision,
reports (and watches) the rollout of the restored version, and pauses automation on its
workload. It decides nothing: ``decide`` does. kubectl's ``Rollbacker``, one per strategy.

Executors hold no state and no clients: the cluster client and the HTTP session come with
each call, so one executor per strategy serves every cluster and every job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from receiver.clients.k8s import KubeClient
from receiver.decide import Decision
from receiver.models import Revision, RolloutStatus, WorkloadView
from receiver.policy import ModelPolicy


@dataclass(frozen=True)
class Workload:
    """A fresh read: the view the rules use and the raw objects the write is built from."""

    view: WorkloadView
    objects: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """The result of applying a decision."""

    changed: bool
    """False when the live object already matched (idempotent re-apply) or in dry run."""
    detail: str
    resource_version: str = ""


@dataclass(frozen=True)
class Probe:
    """A model server the readiness check probes (Open Inference Protocol health routes),
    expecting ``version`` to be listed: what a rollback's verification would need."""

    name: str
    """What it reaches, for the reason: ``service``, ``standby slot green``..."""
    base_url: str
    version: str


@dataclass(frozen=True)
class Preflight:
    """What a strategy found when asked whether it could roll back now.

    ``problems`` is empty when it could: each is a sentence naming what is wrong and what to
    do. ``view`` and ``target`` are what the read found (None when it could not read), for
    people to see; ``probes`` are the servers to check, left to the caller (the strategy
    does no HTTP besides Kubernetes)."""

    problems: tuple[str, ...]
    view: WorkloadView | None = None
    target: Revision | None = None
    probes: tuple[Probe, ...] = ()


class Executor(Protocol):
    """One strategy's reads and writes."""

    name: str

    def workload_key(self, model: ModelPolicy) -> str:
        """The object our writes change (``namespace/kind/name``): the per-workload lease
        is held on it, so two models served by one workload never act at once."""

    async def read(
        self, kube: KubeClient, model: ModelPolicy, *, http: aiohttp.ClientSession
    ) -> Workload:
        """GET the workload fresh; raises KubeError subclasses. ``http`` reaches the model
        servers, for a strategy whose target is checked before the decision (blue-green's
        standby); a pre-check that fails is ``view.target_problem``, not an exception."""

    async def apply(
        self,
        kube: KubeClient,
        workload: Workload,
        decision: Decision,
        annotations: Mapping[str, str | None],
        *,
        dry_run: bool,
    ) -> Applied:
        """Make the change: one write with a resourceVersion precondition (409 on a race)."""

    async def mark_bad(
        self, kube: KubeClient, workload: Workload, bad_revision: str, incident_id: str
    ) -> None:
        """Mark the bad revision so it is never chosen as a target again (idempotent)."""

    def forward_target(self, workload: Workload) -> Revision | None:
        """The revision our last rollback replaced (``rolled-back-from`` and its revision on
        the workload), when it still exists: where a roll forward or a drill's second leg
        returns to. None when there is no rollback of ours or the revision is gone."""

    async def roll_forward(
        self,
        kube: KubeClient,
        workload: Workload,
        target: Revision,
        annotations: Mapping[str, str | None],
        *,
        dry_run: bool,
    ) -> Applied:
        """Return to ``target`` (from ``forward_target``) in one write with a resourceVersion
        precondition that also carries ``annotations`` (None removes one); idempotent when
        the workload runs it already."""

    async def unmark_bad(self, kube: KubeClient, workload: Workload, target: Revision) -> None:
        """Remove the bad mark ``mark_bad`` left on ``target`` (a person vouched for it);
        idempotent."""

    async def rollout(self, kube: KubeClient, model: ModelPolicy) -> RolloutStatus:
        """How far the restored version's rollout is, as kubectl would judge it."""

    def watch_rollout(self, kube: KubeClient, model: ModelPolicy) -> AsyncIterator[RolloutStatus]:
        """The rollout at each change of the Deployment it waits for. A ``done`` or
        ``failed`` answer is final, judged as ``rollout`` would (pods included); one still
        waiting may come from the watched object alone. Raises KubeError subclasses when
        the watch cannot go on."""

    async def annotate(
        self, kube: KubeClient, model: ModelPolicy, annotations: Mapping[str, str | None]
    ) -> None:
        """Set (or with None remove) our annotations on the workload (pause, resume...)."""

    async def last_change(self, kube: KubeClient, model: ModelPolicy) -> datetime | None:
        """When we last changed the workload (start-up facts after Redis data loss)."""

    def regarding(self, model: ModelPolicy) -> dict[str, str]:
        """The object Events about this model are attached to."""

    async def readiness(
        self, kube: KubeClient, model: ModelPolicy, session: aiohttp.ClientSession
    ) -> Preflight:
        """Could this model be rolled back now? A fresh read, the target the decision would
        choose, and a server-side dry run (``dryRun=All``) of the write(s) a rollback sends,
        so the API server's authorization and validation answer without a change. Changes
        nothing; raises ``KubeUnavailable`` when Kubernetes cannot tell (other refusals are
        problems)."""
