"""The job pipeline: resolve -> read -> decide -> record -> act -> finish -> verify.

Runs inside a worker that holds the workload's lease, so no other job acts on the same
workload meanwhile. Every job is decided on its own; joining an incident only groups the
record. Each step after the PATCH is idempotent and runs on the re-drive path too (rule 0),
with its facts taken from our annotations: a crash, a lost reply or a Redis error between
the PATCH and the record loses nothing.

Long because it is the whole automatic path in order (read, decide, record, act, finish,
verify, save) and each step is idempotent on a re-drive: the order is the point, so it reads
top to bottom here. Manual jobs (roll forward, drills) live in ``manual_jobs``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from receiver import annotations as ours
from receiver import audit, incidents, stats
from receiver.clients.k8s import Clusters
from receiver.confirmation import Confirmer
from receiver.decide import (
    Action,
    Decision,
    Facts,
    decide,
    identify,
)
from receiver.errors import (
    ConfigError,
    KubeConflict,
    KubeError,
    KubeUnavailable,
    PermanentError,
    StoreUnavailable,
    TemporaryError,
)
from receiver.job_parts import JobTarget, decision_inputs
from receiver.manual_jobs import ManualJobs
from receiver.metrics import Metrics
from receiver.models import (
    Incident,
    IncidentState,
    Job,
    JobKind,
    Verdict,
    utcnow,
)
from receiver.notify import Notifier
from receiver.policy import Policy, Resolved, resolve
from receiver.rollback import (
    StrategyUnavailable,
    executor_for,
    workload_lease_key,
)
from receiver.store import Store, model_key
from receiver.verify.loop import verify
from receiver.verify.probe import probe_model
from receiver.worker import JobContext

log = logging.getLogger(__name__)

# A workload that changes under us this many times in a row is left for a later retry.
_CONFLICT_ATTEMPTS = 3
# Status-only writes (the controller's) also change the resourceVersion; those conflicts
# are retried at once, up to this many, without counting as a concurrent change.
_STATUS_CONFLICTS = 20
# Marking the bad revision is retried this often (with a short backoff) on API errors.
_MARK_ATTEMPTS = 3
# How long "notify once" causes are remembered (not-attributable alerts, refusals).
NOTICE_TTL_SECONDS = 6 * 3600.0


class RollbackService(ManualJobs):
    """The worker's job handler (``receiver.worker.JobHandler``)."""

    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        clusters: Clusters,
        metrics: Metrics,
        session: aiohttp.ClientSession,
        notifier: Notifier | None = None,
        events: audit.EventPoster | None = None,
        dry_run: bool = False,
        instance: str = "rollback-receiver",
        clock: Callable[[], datetime] = utcnow,
        verify_poll_seconds: float = 0.5,
        global_paused: Callable[[], bool] = lambda: False,
        confirmer: Confirmer | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clusters = clusters
        self.metrics = metrics
        self.session = session
        self.notifier = notifier
        self.events = events or audit.EventPoster()
        self.dry_run = dry_run
        self.instance = instance
        self.clock = clock
        self.verify_poll_seconds = verify_poll_seconds
        self.global_paused = global_paused
        self.confirmer = confirmer

    def lease_key(self, job: Job) -> str:
        """The workload the job acts on (two models on one Deployment share it)."""
        model = self.policy.lookup(job.cluster, job.namespace, job.model)
        if model is not None:
            try:
                executor = executor_for(self.policy.effective(model).strategy.value)
            except StrategyUnavailable:
                pass
            else:
                return workload_lease_key(executor, model)
        return model_key(job.namespace, job.model, job.cluster)

    # -- the pipeline ---------------------------------------------------------------------

    async def handle(self, job: Job, ctx: JobContext) -> None:
        resolved = resolve(self.policy, job)
        conflicts = status_conflicts = 0
        target = await self._read(job, resolved)
        while True:
            try:
                await self._decide_and_act(job, target)
                return
            except KubeConflict as e:
                self.metrics.rollbacks.labels(strategy=resolved.strategy, result="conflict").inc()
                # The read after a 409 is also the next attempt's read.
                fresh = await self._read(job, resolved)
                if _status_only(target, fresh) and status_conflicts < _STATUS_CONFLICTS:
                    status_conflicts += 1
                else:
                    conflicts += 1
                    log.info("%s changed while acting, reading again: %s", self.lease_key(job), e)
                    if conflicts >= _CONFLICT_ATTEMPTS:
                        raise TemporaryError(
                            f"{self.lease_key(job)} kept changing under {_CONFLICT_ATTEMPTS}"
                            " attempts; retrying later",
                            delay=1.0,
                        ) from e
                target = fresh

    async def _read(self, job: Job, resolved: Resolved) -> JobTarget:
        """Resolve the strategy and the cluster, and GET the workload fresh."""
        target = JobTarget(resolved)
        if resolved.model is None:
            return target
        try:
            target.executor = executor_for(resolved.strategy)
            target.kube = await self.clusters.get(job.cluster)
            target.workload = await target.executor.read(
                target.kube, resolved.model, http=self.session
            )
        except KubeUnavailable:
            raise  # temporary: the job is retried
        except (StrategyUnavailable, ConfigError, KubeError) as e:
            target.problem = str(e)
        if target.workload is not None:
            paused = ours.pause(target.workload.view.annotations) is not None
            self.metrics.model_paused.labels(
                namespace=resolved.model.namespace, model=resolved.model.name
            ).set(1 if paused else 0)
        return target

    async def _decide_and_act(self, job: Job, target: JobTarget) -> None:
        if job.kind is JobKind.ROLL_FORWARD:
            await self._roll_forward(job, target)
            return
        if job.kind is JobKind.DRILL:
            await self._drill(job, target)
            return
        now = self.clock()
        view = target.workload.view if target.workload is not None else None
        settings = target.resolved.settings
        recent: list[datetime] = []
        if settings is not None and view is not None:
            recent = await self.store.recent_rollbacks(
                self.lease_key(job), now - timedelta(seconds=settings.window_seconds)
            )
        existing = await self.store.get_incident(identify(job, view).incident_id)
        facts = Facts(
            now=now,
            global_paused=self.global_paused(),
            recent_rollbacks=tuple(recent),
            incident_state=existing.state if existing is not None else None,
            workload_problem=target.problem,
        )
        decision = decide(job, target.resolved, view, facts)
        incident, entered = incidents.record_job(existing, job, decision, target.resolved, now=now)
        if incident is None:
            log.info("resolved alert for no known incident: recorded in the log only")
            return
        self._count(entered)
        audit.record_decision(
            job,
            decision,
            incident,
            policy_version=target.resolved.policy_version,
            inputs=decision_inputs(target.workload, facts),
        )
        if decision.action is Action.ROLLBACK:
            if decision.escalate:  # acting on a version rolled back before: page people too
                incident.add_event("escalated", decision.detail, at=now)
                self._event(target, "ModelRollbackEscalated", decision.detail, "Warning")
            await self._rollback(job, target, decision, incident)
        elif decision.action is Action.VERIFY:
            await self._finish(job, target, decision, incident)
            await self._verify(target, incident)
        else:
            self._count(
                incidents.conclude(incident, decision, new=existing is None, now=self.clock())
            )
            if decision.escalate:
                self._event(target, "ModelRollbackEscalated", decision.detail, "Warning")
            await self._save(incident, notify=decision.reason not in ("resolved", "mode_off"))

    # -- act --------------------------------------------------------------------------------

    async def _rollback(
        self, job: Job, target: JobTarget, decision: Decision, incident: Incident
    ) -> None:
        assert target.executor and target.kube and target.workload and decision.target
        now = self.clock()
        strategy = target.resolved.strategy
        incident.target_version = decision.target.version
        incident.target_revision = str(decision.target.number)
        if incident.times.acting is None:
            incident.times.acting = now
        self._count([IncidentState.ACTING] if self._transition(incident, decision) else [])
        view = target.workload.view
        marks: dict[str, str | None] = dict(
            ours.rollback_annotations(
                incident_id=decision.incident_id,
                bad_version=decision.bad_version,
                bad_revision=decision.bad_revision,
                target_version=decision.target.version,
                target_revision=str(decision.target.number),
                at=now,
            )
        )
        marks[ours.BAD_VERSIONS] = ours.bad_versions_value(
            ours.bad_versions(view.annotations), add=decision.bad_version
        )
        marks[ours.CURRENT_SINCE] = None
        try:
            applied = await target.executor.apply(
                target.kube, target.workload, decision, marks, dry_run=self.dry_run
            )
        except KubeError as e:
            if isinstance(e, TemporaryError):
                raise  # a 409 reads and decides again; a 5xx or timeout retries the job
            await self._refused_by_api(target, incident, e)
            return
        if self.dry_run:
            incident.add_event("dry_run", f"dry run: {applied.detail}; nothing changed", at=now)
            self._count(
                [IncidentState.NOTIFIED]
                if incidents.transition(incident, IncidentState.NOTIFIED, "dry_run")
                else []
            )
            self.metrics.rollbacks.labels(strategy=strategy, result="dry_run").inc()
            await self._save(incident)
            return
        self.metrics.rollbacks.labels(
            strategy=strategy, result="applied" if applied.changed else "skipped"
        ).inc()
        await self._finish(job, target, decision, incident, applied=applied.detail, at=now)
        await self._verify(target, incident)

    async def _refused_by_api(
        self, target: JobTarget, incident: Incident, error: KubeError
    ) -> None:
        """The API server refused our write (403, 404, 422): failed, escalated, counted."""
        now = self.clock()
        reason = f"the API server refused the change: {error}"
        incident.add_event("failed", reason, at=now)
        incident.add_event("escalated", reason, at=now)
        if incidents.transition(incident, IncidentState.FAILED, reason):
            self._count([IncidentState.FAILED])
        self.metrics.rollbacks.labels(strategy=target.resolved.strategy, result="failed").inc()
        self._event(target, "ModelRollbackFailed", reason, "Warning")
        await self._save(incident)

    async def _finish(
        self,
        job: Job,
        target: JobTarget,
        decision: Decision,
        incident: Incident,
        *,
        applied: str = "",
        at: datetime | None = None,
    ) -> None:
        """Everything after the PATCH, idempotent, on the first run and on a re-drive: the
        target and switched time on the record, the rollback counted for the guards, the
        bad revision marked, the Event posted. Facts come from our annotations."""
        assert target.workload is not None and target.executor and target.kube
        annotations = target.workload.view.annotations if at is None else {}
        switched = at or ours.changed_at(annotations) or self.clock()
        if decision.target is not None and incident.target_version is None:
            incident.target_version = decision.target.version
        if not incident.target_version:
            incident.target_version = annotations.get(ours.ROLLED_BACK_TO) or None
        if not incident.target_revision:
            incident.target_revision = annotations.get(ours.ROLLED_BACK_TO_REVISION, "")
        if incident.times.acting is None:
            incident.times.acting = switched
        # This switch is known by our changed-at (the PATCH's own time): recorded once, and a
        # later rollback of a reopened incident is a switch of its own.
        first = incident.times.switched is None or incident.times.switched < switched
        if first:
            incident.times.switched = switched
            incident.add_event(
                "switched",
                applied
                or f"rolled back to {incident.target_version} (found applied on a re-drive)",
                at=self.clock(),
                actor=job.actor,
            )
            if incident.times.received is not None:
                self.metrics.received_to_switched.labels(strategy=target.resolved.strategy).observe(
                    max(0.0, (switched - incident.times.received).total_seconds())
                )
            self._event(
                target,
                "ModelRolledBack",
                f"{incident.model} {incident.bad_version} -> {incident.target_version}"
                f" (revision {incident.target_revision}), incident {incident.id}, trigger"
                f" {job.trigger or job.kind.value}, by {job.actor}",
            )
        # The guards count it (a sorted set keyed by the time: recording twice is one).
        await self.store.record_rollback(self.lease_key(job), switched)
        self._transition_acting(incident)
        await self._save(incident)
        await self._mark_bad(target, incident)

    async def _mark_bad(self, target: JobTarget, incident: Incident) -> None:
        assert target.workload is not None and target.executor and target.kube
        delay = 0.2
        for attempt in range(1, _MARK_ATTEMPTS + 1):
            try:
                await target.executor.mark_bad(
                    target.kube, target.workload, incident.bad_revision, incident.id
                )
                return
            except KubeError as e:
                if attempt == _MARK_ATTEMPTS or isinstance(e, PermanentError):
                    # The version is listed bad on the workload anyway (same PATCH).
                    log.warning(
                        "could not mark %s bad on its revision: %s", incident.bad_version, e
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 2

    # -- verify -----------------------------------------------------------------------------

    async def _verify(self, target: JobTarget, incident: Incident) -> None:
        resolved = target.resolved
        assert target.executor and target.kube and resolved.model and resolved.settings
        model = resolved.model
        version = incident.target_version or ""
        verdict = await self._health(target, version)
        now = self.clock()
        strategy = resolved.strategy
        if verdict.healthy:
            incident.times.healthy = now
            incident.add_event("healthy", verdict.reason or "healthy", at=now)
            if incidents.transition(incident, IncidentState.VERIFIED, incident.reason):
                self._count([IncidentState.VERIFIED])
            self.metrics.rollbacks.labels(strategy=strategy, result="verified").inc()
            if incident.times.received is not None:
                self.metrics.received_to_healthy.labels(strategy=strategy).observe(
                    max(0.0, (now - incident.times.received).total_seconds())
                )
            self._event(
                target,
                "ModelRollbackVerified",
                f"{model.name} {version} healthy after rollback, incident {incident.id}",
            )
            if self.confirmer is not None:
                await self.confirmer.schedule(incident)
            await self._save(incident)
            return
        incident.add_event("verification_failed", verdict.reason, at=now)
        if incidents.transition(incident, IncidentState.VERIFICATION_FAILED, "verification_failed"):
            self._count([IncidentState.VERIFICATION_FAILED])
        self.metrics.rollbacks.labels(strategy=strategy, result="verification_failed").inc()
        await self._pause_model(target, incident, f"verification of {incident.id} failed")
        incident.add_event("escalated", f"verification failed: {verdict.reason}", at=now)
        self._event(
            target,
            "ModelRollbackVerificationFailed",
            f"{model.name} {version} not healthy after rollback: {verdict.reason}",
            "Warning",
        )
        await self._save(incident)

    async def _pause_model(self, target: JobTarget, incident: Incident, why: str) -> None:
        """Pause automation for the model (actor ``receiver``) after a failed verification;
        a pause that cannot be written is recorded on the incident."""
        assert target.executor and target.kube and target.resolved.model
        model = target.resolved.model
        now = self.clock()
        try:
            await target.executor.annotate(
                target.kube,
                model,
                {ours.PAUSED: ours.pause_value("receiver", f"{why} at {now.isoformat()}", now)},
            )
            incident.add_event("paused", f"automation paused for {model.name}", at=now)
            self.metrics.model_paused.labels(namespace=model.namespace, model=model.name).set(1)
        except KubeError as e:
            incident.add_event("pause_failed", f"could not pause automation: {e}", at=now)

    async def _health(self, target: JobTarget, version: str) -> Verdict:
        """Wait for the rollout and probe the model for ``version``, within verify_timeout."""
        resolved = target.resolved
        assert target.executor and target.kube and resolved.model and resolved.settings
        executor, kube, model = target.executor, target.kube, resolved.model
        health = model.health

        async def read_rollout() -> Any:
            return await executor.rollout(kube, model)

        async def probe() -> Verdict:
            if not health.base_url:
                return Verdict(True, "rollout complete; no health base_url in the policy")
            return await probe_model(
                self.session,
                base_url=health.base_url,
                model=model.name,
                version=version,
                paths=health.paths,
                sample_request=health.sample_request,
                request_timeout=health.request_timeout,
            )

        return await verify(
            read_rollout=read_rollout,
            probe=probe,
            timeout=resolved.settings.verify_timeout_seconds,
            poll_interval=self.verify_poll_seconds,
            changes=lambda: executor.watch_rollout(kube, model),
        )

    # -- records ----------------------------------------------------------------------------

    def _transition(self, incident: Incident, decision: Decision) -> bool:
        return incidents.transition(incident, IncidentState.ACTING, decision.reason)

    def _transition_acting(self, incident: Incident) -> None:
        if (
            incident.state is not IncidentState.ACTING
            and incident.state
            not in (
                IncidentState.VERIFIED,
                IncidentState.CONFIRMED,
                IncidentState.UNCONFIRMED,
            )
            and incidents.transition(incident, IncidentState.ACTING, incident.reason)
        ):
            self._count([IncidentState.ACTING])

    def _count(self, states: list[IncidentState]) -> None:
        for state in states:
            self.metrics.incident_transitions.labels(state=state.value).inc()

    async def _save(self, incident: Incident, *, notify: bool = True) -> None:
        """Write the incident, keeping events others appended meanwhile (a lost notification).

        Both copies started from the same stored events: the stored ones stay, this job's
        new ones follow. Every other field is this job's.
        """
        # Counted before the write: once the record shows a step, its statistics do too.
        await self._add_stats(incident)
        mine = incident

        def merge(current: Incident) -> None:
            # What others recorded meanwhile (an acknowledgement, a lost notification)
            # stays: this job's copy was read before they wrote.
            acknowledgement = current.acknowledgement
            unmatched = [e.model_dump_json() for e in current.events]
            added = []
            for event in mine.events:
                seen = event.model_dump_json()
                if seen in unmatched:
                    unmatched.remove(seen)
                else:
                    added.append(event)
            events = [*current.events, *added]
            for name in Incident.model_fields:
                setattr(current, name, getattr(mine, name))
            current.events = events
            if acknowledgement is not None and (
                current.acknowledgement is None or current.acknowledgement.at < acknowledgement.at
            ):
                current.acknowledgement = acknowledgement

        saved = await self.store.update_incident(incident.id, merge)
        if saved is None:
            await self.store.put_incident(incident)
            saved = incident
        else:
            incident.acknowledgement, incident.events = saved.acknowledgement, saved.events
        if notify and self.notifier is not None:
            model = self.policy.lookup(saved.cluster, saved.namespace, saved.model)
            self.notifier.incident_changed(saved, model.slack_channel if model else None)

    async def _add_stats(self, incident: Incident) -> None:
        """Count what the incident newly shows into the statistics (each fact once); a
        store hiccup costs a sample, never the job."""
        for c in stats.contributions(incident):
            try:
                await self.store.add_stats(c.once, c.bucket, c.counts, c.maxima)
            except StoreUnavailable as e:
                log.warning("statistics of %s not counted: %s", incident.id, e)
                return

    def _event(self, target: JobTarget, reason: str, note: str, event_type: str = "Normal") -> None:
        """Post an Event in the background: reporting never blocks the work."""
        if self.dry_run or target.kube is None or target.executor is None:
            return
        model = target.resolved.model
        if model is None:
            return
        self.events.post(
            target.kube,
            audit.event_body(
                regarding=target.executor.regarding(model),
                reason=reason,
                note=note,
                at=self.clock(),
                instance=self.instance,
                event_type=event_type,
            ),
        )


def _status_only(before: JobTarget, after: JobTarget) -> bool:
    """Between two reads, did only the status change (same generation, same annotations)?
    Then a 409 was the controller's write, not a concurrent change: retry at once."""
    if before.workload is None or after.workload is None:
        return False
    old, new = before.workload.view, after.workload.view
    return old.generation == new.generation and dict(old.annotations) == dict(new.annotations)
