"""The control layer: what people (and the drill schedule) do to the automation.

Every door uses it: the admin API (and the CLI through it) now, Slack's buttons next. Each
action names its actor (``admin:<name>``, ``slack:<user id>``, ``drill:<schedule>``), is
written to the audit log and posted to Slack.

- Pauses are written durably **before** the call returns: a model's on its workload (the
  ``rollback-receiver.io/paused`` annotation), the global one on the state ConfigMap of the
  receiver's own namespace (``GlobalPause``). Both survive a Redis flush and a restart.
- Every other action is a ``Job`` on the same queue as alerts, run under the same workload
  lease, so a button, a CLI call and an alert never act on one workload at once. The answer
  names the incident and the job: the incident id is decided here, from a fresh read of the
  workload (or the incident acted on), and pinned on the job (``Job.incident``), so the job
  records under that id even if the workload changes before a worker takes it. The
  incident record itself is written by the job (``GET /api/incidents/{id}`` answers 404
  until a worker has taken it, normally well under a second).

Errors are ``ControlError``s: ``NotFound``, ``Refused`` (a conflict with the state of the
model or incident), ``Invalid`` (the request), ``Unavailable`` (Kubernetes or Redis); only
``receiver.web`` turns them into statuses.

Long because every door (API, CLI, Slack) goes through it: each action is a short method,
plus the durable global pause; splitting by action would spread the shared checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from receiver import annotations as ours
from receiver import audit, stats
from receiver.clients.k8s import Clusters, KubeClient
from receiver.decide import Action, Facts, decide_drill, identify
from receiver.errors import (
    ConfigError,
    KubeConflict,
    KubeError,
    KubeNotFound,
    ReceiverError,
    StoreUnavailable,
    TemporaryError,
)
from receiver.metrics import Metrics
from receiver.models import (
    LABEL_CLUSTER,
    LABEL_MODEL,
    LABEL_MODEL_VERSION,
    LABEL_NAMESPACE,
    ROOT_CAUSES,
    Acknowledgement,
    Incident,
    IncidentKind,
    IncidentState,
    Job,
    JobKind,
    incident_id,
    rfc3339,
    utcnow,
)
from receiver.notify import Notifier
from receiver.policy import ModelPolicy, Policy, resolve_model
from receiver.rollback import Executor, StrategyUnavailable, Workload, executor_for
from receiver.store import Store

log = logging.getLogger(__name__)
audit_log = logging.getLogger("receiver.audit")

__all__ = [
    "GLOBAL_PAUSE_REFRESH_SECONDS",
    "Control",
    "ControlError",
    "GlobalPause",
    "Invalid",
    "NotFound",
    "Refused",
    "Unavailable",
]

GLOBAL_PAUSE_REFRESH_SECONDS = 10.0
"""How often every replica re-reads the global pause from its ConfigMap. A pause set through
one replica is in force there at once (and before the answer); the others see it within
this, and also after a restart or a Redis flush since the ConfigMap is read at start."""

PAUSED_KEY = "paused"
"""The state ConfigMap's data key holding the global pause: JSON {actor, reason, at}, the
same value as the per-model annotation. Absent: not paused."""

EXECUTABLE_STATES = frozenset({IncidentState.OPEN, IncidentState.NOTIFIED, IncidentState.REFUSED})
"""An incident whose recommendation can still be executed: nothing was done yet."""


class ControlError(ReceiverError):
    """A control action that cannot be done; the message says why and what to do."""


class NotFound(ControlError):
    """The model, its workload or the incident does not exist."""


class Refused(ControlError):
    """The action conflicts with the model's or the incident's state."""


class Invalid(ControlError):
    """The request itself is wrong (an unknown root cause, a revision that is not there)."""


class Unavailable(ControlError):
    """Kubernetes or Redis could not be reached; worth retrying."""


def _new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:16]


# ---------------------------------------------------------------------------------------
# The global pause


class GlobalPause:
    """The global pause, kept on the state ConfigMap and read from a cache.

    ``paused`` is what the job pipeline reads for every decision (``Facts.global_paused``):
    a cached value, refreshed from the ConfigMap at start, after each write and every
    ``refresh_seconds``. Until the first read succeeds the replica is not ready (its workers
    wait), so a restart never acts while a pause it has not read yet is in force.
    """

    def __init__(
        self,
        clusters: Clusters,
        *,
        namespace: str,
        name: str,
        metrics: Metrics,
        refresh_seconds: float = GLOBAL_PAUSE_REFRESH_SECONDS,
    ) -> None:
        self.clusters = clusters
        self.namespace = namespace
        self.name = name
        self.metrics = metrics
        self.refresh_seconds = refresh_seconds
        self._pause: ours.Pause | None = None
        self.loaded = False

    @property
    def paused(self) -> bool:
        return self._pause is not None

    @property
    def pause(self) -> ours.Pause | None:
        return self._pause

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def _set(self, pause: ours.Pause | None) -> None:
        self._pause = pause
        self.loaded = True
        self.metrics.global_paused.set(1 if pause is not None else 0)

    async def refresh(self) -> None:
        """Read the ConfigMap; a missing one (or namespace) means not paused."""
        kube = await self.clusters.get("")
        try:
            configmap = await kube.get_configmap(self.namespace, self.name)
        except KubeNotFound:
            self._set(None)
            return
        value = (configmap.get("data") or {}).get(PAUSED_KEY)
        self._set(ours.pause({ours.PAUSED: value}) if value else None)

    async def write(self, value: str | None) -> None:
        """Set (or with None clear) the pause on the ConfigMap, creating it when missing."""
        kube = await self.clusters.get("")
        patch = {"data": {PAUSED_KEY: value}}
        try:
            await kube.patch_configmap(self.namespace, self.name, patch)
        except KubeNotFound:
            if value is None:
                self._set(None)
                return
            await self._create(kube, value)
        await self.refresh()

    async def _create(self, kube: KubeClient, value: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/name": "rollback-receiver",
                    "app.kubernetes.io/component": "state",
                },
            },
            "data": {PAUSED_KEY: value},
        }
        try:
            await kube.create_configmap(self.namespace, body)
        except KubeConflict:
            # Another replica created it meanwhile: write our value onto it.
            await kube.patch_configmap(self.namespace, self.name, {"data": {PAUSED_KEY: value}})

    async def load(self) -> bool:
        """One read; True once a value is known. A failed read keeps the last value read;
        no Kubernetes configuration at all counts as not paused (nothing can be acted on)."""
        try:
            await self.refresh()
        except ConfigError as e:
            if not self.loaded:
                log.warning("global pause not read (%s); taken as not paused", e)
                self._set(None)
        except KubeError as e:
            log.warning("global pause not read from %s: %s", self.where, e)
        return self.loaded

    async def run(self, stopping: asyncio.Event, on_loaded: Callable[[], None]) -> None:
        """Read again every ``refresh_seconds`` until ``stopping``."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.refresh_seconds)
            if not stopping.is_set() and await self.load():
                on_loaded()


# ---------------------------------------------------------------------------------------
# The control layer


class Control:
    """Pause, resume, force, execute, roll forward, drill, acknowledge, statistics."""

    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        clusters: Clusters,
        metrics: Metrics,
        global_pause: GlobalPause,
        http: aiohttp.ClientSession,
        notifier: Notifier | None = None,
        events: audit.EventPoster | None = None,
        instance: str = "rollback-receiver",
        retention_seconds: float = 30 * 86400.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clusters = clusters
        self.metrics = metrics
        self.global_pause = global_pause
        self.http = http
        self.notifier = notifier
        self.events = events or audit.EventPoster()
        self.instance = instance
        self.retention_seconds = retention_seconds
        self.clock = clock

    # -- lookups ------------------------------------------------------------------------

    def model(self, namespace: str, name: str, cluster: str = "") -> ModelPolicy:
        """The policy entry, or ``NotFound`` naming what to add."""
        model = self.policy.lookup(cluster, namespace, name)
        if model is None:
            where = f" in cluster {cluster!r}" if cluster else ""
            raise NotFound(
                f"model {namespace}/{name}{where} is not in the policy file; add it under"
                " models to control it"
            )
        return model

    def _executor(self, model: ModelPolicy) -> Executor:
        try:
            return executor_for(self.policy.effective(model).strategy.value)
        except StrategyUnavailable as e:
            raise Refused(str(e)) from e

    async def _kube(self, model: ModelPolicy) -> KubeClient:
        try:
            return await self.clusters.get(model.cluster)
        except ConfigError as e:
            raise Unavailable(str(e)) from e

    async def _read(self, model: ModelPolicy) -> tuple[Executor, KubeClient, Workload]:
        executor = self._executor(model)
        kube = await self._kube(model)
        try:
            workload = await executor.read(kube, model, http=self.http)
        except KubeError as e:
            raise _kube_error(e, model) from e
        self._note_paused(model, workload.view.annotations)
        return executor, kube, workload

    async def _incident(self, incident_id: str) -> Incident:
        try:
            incident = await self.store.get_incident(incident_id)
        except StoreUnavailable as e:
            raise Unavailable(str(e)) from e
        if incident is None:
            raise NotFound(f"no incident {incident_id!r} (expired or never existed)")
        return incident

    def _note_paused(self, model: ModelPolicy, annotations: Any) -> None:
        self.metrics.model_paused.labels(namespace=model.namespace, model=model.name).set(
            1 if ours.pause(annotations) is not None else 0
        )

    # -- pauses -----------------------------------------------------------------------------

    async def pause_model(
        self, namespace: str, model: str, *, actor: str, reason: str, cluster: str = ""
    ) -> dict[str, Any]:
        """Pause automation for one model: its alerts are recorded and notified once per
        incident, never acted on. In force (on the workload) when this returns."""
        entry = self.model(namespace, model, cluster)
        now = self.clock()
        value = ours.pause_value(actor, reason, now)
        kube = await self._annotate(entry, {ours.PAUSED: value})
        self.metrics.model_paused.labels(namespace=namespace, model=model).set(1)
        why = f": {reason}" if reason else ""
        self._record("pause", actor, reason, namespace=namespace, model=model)
        self._event(kube, entry, "ModelAutomationPaused", f"automation paused by {actor}{why}")
        self._notice(
            f"Automation paused for {namespace}/{model}",
            [f"by {actor}", *([f"reason: {reason}"] if reason else [])],
            entry.slack_channel,
        )
        return _pause_answer("model", True, actor, reason, now, namespace=namespace, model=model)

    async def resume_model(
        self, namespace: str, model: str, *, actor: str, reason: str = "", cluster: str = ""
    ) -> dict[str, Any]:
        """Resume automation for one model (removes the pause, whoever set it)."""
        entry = self.model(namespace, model, cluster)
        now = self.clock()
        kube = await self._annotate(entry, {ours.PAUSED: None})
        self.metrics.model_paused.labels(namespace=namespace, model=model).set(0)
        self._record("resume", actor, reason, namespace=namespace, model=model)
        self._event(kube, entry, "ModelAutomationResumed", f"automation resumed by {actor}")
        self._notice(
            f"Automation resumed for {namespace}/{model}",
            [f"by {actor}", *([f"reason: {reason}"] if reason else [])],
            entry.slack_channel,
        )
        return _pause_answer("model", False, actor, reason, now, namespace=namespace, model=model)

    async def _annotate(self, model: ModelPolicy, marks: dict[str, str | None]) -> KubeClient:
        executor = self._executor(model)
        kube = await self._kube(model)
        try:
            await executor.annotate(kube, model, marks)
        except KubeError as e:
            raise _kube_error(e, model) from e
        return kube

    async def pause_all(self, *, actor: str, reason: str) -> dict[str, Any]:
        """Pause automation for every model. In force on this replica and written to the
        state ConfigMap when this returns; other replicas read it within
        ``GLOBAL_PAUSE_REFRESH_SECONDS``."""
        now = self.clock()
        await self._write_global(ours.pause_value(actor, reason, now))
        self._record("pause_all", actor, reason)
        self._notice(
            "Automation paused for every model",
            [f"by {actor}", *([f"reason: {reason}"] if reason else [])],
        )
        return _pause_answer("global", True, actor, reason, now)

    async def resume_all(self, *, actor: str, reason: str = "") -> dict[str, Any]:
        """Lift the global pause (per-model pauses stay)."""
        now = self.clock()
        await self._write_global(None)
        self._record("resume_all", actor, reason)
        self._notice(
            "Automation resumed for every model",
            [f"by {actor}", *([f"reason: {reason}"] if reason else [])],
        )
        return _pause_answer("global", False, actor, reason, now)

    async def _write_global(self, value: str | None) -> None:
        try:
            await self.global_pause.write(value)
        except ConfigError as e:
            raise Unavailable(f"cannot write the global pause: {e}") from e
        except KubeError as e:
            raise Unavailable(
                f"cannot write the global pause to {self.global_pause.where}: {e}"
                " (RECEIVER_NAMESPACE, RECEIVER_STATE_CONFIGMAP and the receiver's Role there)"
            ) from e

    # -- queued actions ---------------------------------------------------------------------

    async def force(
        self,
        namespace: str,
        model: str,
        *,
        actor: str,
        reason: str = "",
        to_revision: int | None = None,
        cluster: str = "",
    ) -> dict[str, str]:
        """Roll back now, skipping mode, guards and causality (never a Deployment paused by
        a person, never the health checks). Without ``to_revision``: rule 7's target."""
        entry = self.model(namespace, model, cluster)
        _, _, workload = await self._read(entry)
        view = workload.view
        if not view.serving_version:
            raise Refused(
                f"{namespace}/{model}: the serving pod template has no app.kubernetes.io/version"
                " label, so there is no version to roll back from"
            )
        if to_revision is not None and to_revision not in {r.number for r in view.candidates}:
            earlier = ", ".join(str(r.number) for r in view.candidates) or "none"
            raise Invalid(
                f"to_revision {to_revision} is not an earlier revision of {view.namespace}/"
                f"{view.name} that still exists (earlier revisions: {earlier})"
            )
        job = self._job(JobKind.FORCE, entry, view.serving_version, actor, reason)
        job = job.model_copy(
            update={"incident": identify(job, view).incident_id, "to_revision": to_revision}
        )
        return await self._enqueue(job)

    async def execute(self, incident_id: str, *, actor: str, reason: str = "") -> dict[str, str]:
        """Carry out a notify decision's recommendation. The job acts only if the incident's
        bad version still serves; otherwise it records why and changes nothing."""
        incident = await self._incident(incident_id)
        if incident.kind is not IncidentKind.ALERT:
            raise Refused(f"incident {incident_id} is a drill: there is nothing to execute")
        if incident.state not in EXECUTABLE_STATES:
            raise Refused(
                f"incident {incident_id} is {incident.state.value}: a rollback was already"
                " attempted; force one on the model if another is needed"
            )
        entry = self.model(incident.namespace, incident.model, incident.cluster)
        job = self._job(JobKind.EXECUTE, entry, incident.bad_version, actor, reason)
        revision = incident.target_revision
        job = job.model_copy(
            update={
                "incident": incident.id,
                "to_revision": int(revision) if revision.isdigit() else None,
            }
        )
        return await self._enqueue(job)

    async def roll_forward(
        self, namespace: str, model: str, *, actor: str, reason: str = "", cluster: str = ""
    ) -> dict[str, str]:
        """Undo our last rollback of the model: back to the version it replaced, which is
        then accepted (its bad mark removed) until another version replaces it."""
        entry = self.model(namespace, model, cluster)
        return await self._roll_forward(entry, None, actor=actor, reason=reason)

    async def roll_forward_incident(
        self, incident_id: str, *, actor: str, reason: str = ""
    ) -> dict[str, str]:
        """Roll forward the rollback of this incident; it must be the model's last one."""
        incident = await self._incident(incident_id)
        if incident.kind is not IncidentKind.ALERT:
            raise Refused(f"incident {incident_id} is a drill: drills roll forward by themselves")
        entry = self.model(incident.namespace, incident.model, incident.cluster)
        return await self._roll_forward(entry, incident.id, actor=actor, reason=reason)

    async def _roll_forward(
        self, entry: ModelPolicy, expected: str | None, *, actor: str, reason: str
    ) -> dict[str, str]:
        executor, _, workload = await self._read(entry)
        annotations = workload.view.annotations
        name = f"{entry.namespace}/{entry.name}"
        version = annotations.get(ours.ROLLED_BACK_FROM)
        last = annotations.get(ours.INCIDENT, "")
        if not version or not last:
            raise Refused(
                f"{name}: its workload carries no rollback of ours to undo (nothing to roll"
                " forward)"
            )
        if expected is not None and last != expected:
            raise Refused(
                f"incident {expected} is not the last rollback of {name} (the last is {last});"
                " roll that one forward instead"
            )
        if workload.view.serving_version == version:
            raise Refused(f"{name} serves {version} again already: nothing to roll forward")
        if executor.forward_target(workload) is None:
            raise Refused(
                f"{name}: the revision that ran {version} no longer exists; deploy it again"
            )
        job = self._job(JobKind.ROLL_FORWARD, entry, version, actor, reason)
        return await self._enqueue(job.model_copy(update={"incident": last}))

    async def drill(
        self, namespace: str, model: str, *, actor: str, cluster: str = ""
    ) -> dict[str, str]:
        """Roll the model back to its rule-7 target as an alert would (marking nothing bad),
        verify, roll forward to the original version and verify again. Only for models
        whose policy says ``drills: true``; a model that cannot be drilled now is refused
        with the reason (the job decides again when it runs)."""
        entry = self.model(namespace, model, cluster)
        if not entry.drills:
            raise Refused(
                f"drills are not enabled for {namespace}/{model}: set `drills: true` on its"
                " entry in the policy file"
            )
        _, _, workload = await self._read(entry)
        view = workload.view
        job = self._job(JobKind.DRILL, entry, view.serving_version, actor, "rollback drill")
        drill_id = incident_id(
            entry.cluster, namespace, model, f"drill:{view.serving_version}", job.job_id
        )
        job = job.model_copy(update={"incident": drill_id})
        facts = Facts(now=self.clock(), global_paused=self.global_pause.paused)
        decision = decide_drill(job, resolve_model(self.policy, entry), view, facts)
        if decision.action is Action.REFUSE:
            self.metrics.drills.labels(result="refused").inc()
            self._record("drill_refused", actor, decision.detail, namespace=namespace, model=model)
            raise Refused(decision.detail)
        return await self._enqueue(job)

    def _job(self, kind: JobKind, entry: ModelPolicy, version: str, actor: str, reason: str) -> Job:
        labels = {
            LABEL_NAMESPACE: entry.namespace,
            LABEL_MODEL: entry.name,
            LABEL_MODEL_VERSION: version,
        }
        if entry.cluster:
            labels[LABEL_CLUSTER] = entry.cluster
        return Job(
            kind=kind,
            received_at=self.clock(),
            labels=labels,
            actor=actor,
            reason=reason,
            job_id=_new_job_id(),
        )

    async def _enqueue(self, job: Job) -> dict[str, str]:
        try:
            await self.store.enqueue(job)
        except StoreUnavailable as e:
            raise Unavailable(f"the action could not be queued, retry: {e}") from e
        self._record(
            job.kind.value,
            job.actor,
            job.reason,
            namespace=job.namespace,
            model=job.model,
            incident=job.incident,
            job=job.job_id,
            to_revision=job.to_revision,
        )
        return {"incident": job.incident, "job": job.job_id}

    # -- acknowledge ------------------------------------------------------------------------

    async def acknowledge(
        self, incident_id: str, *, actor: str, root_cause: str, note: str = ""
    ) -> Incident:
        """Record who, when and why beside the incident's outcome (its state is kept)."""
        if root_cause not in ROOT_CAUSES:
            raise Invalid(f"root_cause {root_cause!r} is not one of: {', '.join(ROOT_CAUSES)}")
        now = self.clock()
        previous: list[str | None] = [None]

        def change(incident: Incident) -> None:
            old = incident.acknowledgement
            previous[0] = old.root_cause if old is not None else None
            incident.acknowledgement = Acknowledgement(
                actor=actor, at=now, root_cause=root_cause, note=note
            )
            text = f"acknowledged by {actor}: root cause {root_cause}"
            incident.add_event(
                "acknowledged",
                text + (f" ({note})" if note else ""),
                at=now,
                actor=actor,
                root_cause=root_cause,
            )

        try:
            saved = await self.store.update_incident(incident_id, change)
        except StoreUnavailable as e:
            raise Unavailable(str(e)) from e
        if saved is None:
            raise NotFound(f"no incident {incident_id!r} (expired or never existed)")
        contribution = stats.acknowledgement_contribution(saved, previous[0])
        with contextlib.suppress(StoreUnavailable):
            await self.store.add_stats(
                contribution.once, contribution.bucket, contribution.counts, contribution.maxima
            )
        self._record(
            "acknowledge",
            actor,
            note,
            namespace=saved.namespace,
            model=saved.model,
            incident=saved.id,
            root_cause=root_cause,
        )
        if self.notifier is not None:
            entry = self.policy.lookup(saved.cluster, saved.namespace, saved.model)
            self.notifier.incident_changed(saved, entry.slack_channel if entry else None)
        return saved

    # -- statistics -------------------------------------------------------------------------

    async def stats(self, since: datetime | None) -> dict[str, Any]:
        """Rollbacks by model, strategy, trigger and root cause; times to switched, healthy
        and confirmed; drills. From hourly aggregates (``receiver.stats``): the cost does
        not grow with the history."""
        now = self.clock()
        horizon = now - timedelta(seconds=self.retention_seconds)
        start = max(since, horizon) if since is not None else horizon
        try:
            aggregates = await self.store.read_stats(stats.bucket_of(start), stats.bucket_of(now))
        except StoreUnavailable as e:
            raise Unavailable(str(e)) from e
        return stats.summarize(aggregates, since=since, until=now)

    async def publish_drill_stats(self) -> None:
        """Export each drill-enabled model's flag and last passed drill (from the retained
        aggregates) as metrics; called at start."""
        for entry in self.policy.models:
            self.metrics.drill_enabled.labels(namespace=entry.namespace, model=entry.name).set(
                1 if entry.drills else 0
            )
        summary = await self.stats(None)
        for key, at in summary["drills"]["last_success"].items():
            namespace, name = key.split("/")[-2:]
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
            self.metrics.drill_last_success.labels(namespace=namespace, model=name).set(
                when.timestamp()
            )

    # -- models -----------------------------------------------------------------------------

    def global_state(self) -> dict[str, Any]:
        pause = self.global_pause.pause
        return {
            "paused": pause is not None,
            "actor": pause.actor if pause else None,
            "reason": pause.reason if pause else None,
            "at": rfc3339(pause.at) if pause else None,
        }

    # -- records ----------------------------------------------------------------------------

    def _record(self, action: str, actor: str, reason: str, **fields: Any) -> None:
        """The audit line of a control action: who did what, to what, and why."""
        what = f"{fields.get('namespace')}/{fields.get('model')}" if "model" in fields else "all"
        audit_log.info(
            "control %s on %s by %s",
            action,
            what,
            actor,
            extra={
                "audit": True,
                "control": action,
                "actor": actor,
                "reason": reason,
                "policy_version": self.policy.version,
                **{k: v for k, v in fields.items() if v is not None},
            },
        )

    def _event(self, kube: KubeClient, model: ModelPolicy, reason: str, note: str) -> None:
        """An Event on the model's workload, posted in the background."""
        self.events.post(
            kube,
            audit.event_body(
                regarding=self._executor(model).regarding(model),
                reason=reason,
                note=note,
                at=self.clock(),
                instance=self.instance,
                action="Control",
            ),
        )

    def _notice(self, title: str, lines: list[str], channel: str | None = None) -> None:
        if self.notifier is not None:
            self.notifier.notice_once(f"control:{uuid.uuid4().hex}", title, lines, channel)


def _pause_answer(
    scope: str, paused: bool, actor: str, reason: str, at: datetime, **where: str
) -> dict[str, Any]:
    return {
        "scope": scope,
        **where,
        "paused": paused,
        "actor": actor,
        "reason": reason,
        "at": rfc3339(at),
    }


def _kube_error(error: KubeError, model: ModelPolicy) -> ControlError:
    name = f"{model.namespace}/{model.name}"
    if isinstance(error, KubeNotFound):
        return NotFound(f"the workload of {name} was not found: {error}")
    if isinstance(error, TemporaryError):
        return Unavailable(f"{name}: {error}")
    return Unavailable(f"{name}: the API server refused the request: {error}")
