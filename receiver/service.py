"""The job handler: read the workload fresh, decide, act, verify, record, notify.

Runs inside a worker that holds the model's lease, so no other job acts on the same workload
meanwhile. Every job is decided on its own; joining an incident only groups the record. A
re-driven job (another replica, after a crash) finds our annotation on the workload (rule 0)
and goes on to verify without a second write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from receiver import audit
from receiver.decide import Action, Decision, Facts, decide, rollback_annotations
from receiver.errors import ConfigError, KubeConflict, KubeError, KubeUnavailable, TemporaryError
from receiver.health import Verdict, probe_model, verify
from receiver.k8s import Clusters, KubeClient
from receiver.metrics import Metrics
from receiver.models import (
    CLOSED_STATES,
    LABEL_SEVERITY,
    LABEL_TIER,
    Incident,
    IncidentState,
    Job,
    JobKind,
    missing_labels,
    utcnow,
)
from receiver.notify import Notifier
from receiver.policy import ModelPolicy, Policy
from receiver.rollback import Executor, StrategyUnavailable, Workload, executor_for
from receiver.store import Store, model_key
from receiver.worker import JobContext

log = logging.getLogger(__name__)

# A workload that changes under us this many times in a row is left for a later retry.
_CONFLICT_ATTEMPTS = 3
# How long "notify once" causes are remembered (not-attributable alerts, refusals).
NOTICE_TTL_SECONDS = 6 * 3600.0


@dataclass
class _Context:
    """What one job carries between its steps."""

    job: Job
    model: ModelPolicy | None
    executor: Executor | None
    kube: KubeClient | None
    strategy: str
    verify_timeout: float


class RollbackService:
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
        dry_run: bool = False,
        instance: str = "rollback-receiver",
        clock: Callable[[], datetime] = utcnow,
        verify_poll_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clusters = clusters
        self.metrics = metrics
        self.session = session
        self.notifier = notifier
        self.dry_run = dry_run
        self.instance = instance
        self.clock = clock
        self.verify_poll_seconds = verify_poll_seconds

    def lease_key(self, job: Job) -> str:
        return model_key(job.namespace, job.model, job.cluster)

    # -- entry point ----------------------------------------------------------------------

    async def handle(self, job: Job, ctx: JobContext) -> None:
        missing = missing_labels(job.labels)
        if missing and job.kind is JobKind.ALERT:
            self._not_attributable(job, missing)
            return
        model = self.policy.lookup(job.cluster, job.namespace, job.model)
        if model is None:
            await self._decide_without_workload(job, None, "")
            return
        settings = self.policy.effective(model, alert_tier=job.labels.get(LABEL_TIER) or None)
        strategy = settings.strategy.value
        try:
            executor = executor_for(strategy)
        except StrategyUnavailable as e:
            await self._decide_without_workload(job, model, str(e), strategy=strategy)
            return
        try:
            kube = await self.clusters.get(job.cluster)
        except ConfigError as e:
            await self._decide_without_workload(job, model, str(e), strategy=strategy)
            return
        c = _Context(job, model, executor, kube, strategy, settings.verify_timeout_seconds)
        for _ in range(_CONFLICT_ATTEMPTS):
            try:
                await self._decide_and_act(c)
                return
            except KubeConflict as e:
                log.info("%s changed while acting, reading again: %s", self.lease_key(job), e)
                self.metrics.rollbacks.labels(strategy=strategy, result="conflict").inc()
        raise TemporaryError(
            f"{self.lease_key(job)} kept changing under {_CONFLICT_ATTEMPTS} attempts; retrying"
            " later",
            delay=1.0,
        )

    # -- steps --------------------------------------------------------------------------

    def _not_attributable(self, job: Job, missing: list[str]) -> None:
        log.warning(
            "alert %s is not attributable (missing %s): no action",
            job.labels.get("alertname", "?"),
            ", ".join(missing),
            extra={"alert_key": job.dedup_key, "labels": job.labels},
        )
        if self.notifier is not None and job.status == "firing":
            self.notifier.notice_once(
                f"not-attributable|{job.dedup_key}",
                "Alert not attributable: no action",
                [
                    f"Alert `{job.labels.get('alertname', '?')}` lacks the label(s)"
                    f" {', '.join(missing)}; the rule must aggregate by namespace, model and"
                    " model_version.",
                    f"Labels: {', '.join(f'{k}={v}' for k, v in sorted(job.labels.items()))}",
                ],
            )

    async def _decide_without_workload(
        self, job: Job, model: ModelPolicy | None, problem: str, *, strategy: str = ""
    ) -> None:
        forced = job.kind is JobKind.FORCE
        facts = Facts(now=self.clock(), forced=forced, actor=job.actor)
        decision = decide(job, self.policy, None, facts)
        if problem and decision.action is not Action.RECORD:
            decision = replace(
                decision,
                action=Action.REFUSE if forced else Action.NOTIFY,
                reason="workload_unavailable",
                state=IncidentState.REFUSED if forced else IncidentState.NOTIFIED,
                target=None,
                escalate=False,
                detail=f"{job.namespace}/{job.model} {job.model_version}: {problem}",
            )
        incident = await self._open_or_join(job, decision, model, strategy)
        if incident is None:
            return
        audit.record_decision(
            job, decision, incident, policy_version=self.policy.version, inputs={"view": None}
        )
        await self._conclude(job, decision, incident, model, kube=None, executor=None)

    async def _decide_and_act(self, c: _Context) -> None:
        assert c.model is not None and c.executor is not None and c.kube is not None
        job = c.job
        try:
            workload = await c.executor.read(c.kube, c.model)
        except KubeUnavailable:
            raise
        except KubeError as e:
            await self._decide_without_workload(job, c.model, str(e), strategy=c.strategy)
            return
        now = self.clock()
        settings = self.policy.effective(c.model)
        recent = await self.store.recent_rollbacks(
            self.lease_key(job), now - timedelta(seconds=settings.window_seconds)
        )
        facts = Facts(
            now=now,
            recent_rollbacks=tuple(recent),
            forced=job.kind is JobKind.FORCE,
            actor=job.actor,
        )
        decision = decide(job, self.policy, workload.view, facts)
        incident = await self._open_or_join(job, decision, c.model, c.strategy)
        if incident is None:
            return
        audit.record_decision(
            job,
            decision,
            incident,
            policy_version=self.policy.version,
            inputs=_inputs(workload, facts),
        )
        if decision.action is Action.ROLLBACK:
            await self._rollback(c, workload, decision, incident)
        elif decision.action is Action.VERIFY:
            if incident.state in CLOSED_STATES:
                await self._save(incident)  # joined: the trigger is on the record
                return
            await self._verify(c, incident, workload.view.serving_version)
        else:
            await self._conclude(job, decision, incident, c.model, c.kube, c.executor)

    async def _open_or_join(
        self, job: Job, decision: Decision, model: ModelPolicy | None, strategy: str
    ) -> Incident | None:
        """The incident this job belongs to, created or joined; None for a stray resolved."""
        now = self.clock()
        incident = await self.store.get_incident(decision.incident_id)
        if incident is None:
            if decision.action is Action.RECORD and decision.reason == "resolved":
                log.info("resolved alert for no known incident: recorded in the log only")
                return None
            incident = Incident(
                id=decision.incident_id,
                cluster=job.cluster,
                namespace=job.namespace,
                model=job.model,
                bad_version=decision.bad_version,
                bad_revision=decision.bad_revision,
                strategy=strategy,
                created_at=now,
                updated_at=now,
                category=job.category,
                tier=job.labels.get(LABEL_TIER, ""),
                severity=job.labels.get(LABEL_SEVERITY, ""),
                generator_url=job.generator_url,
                runbook_url=job.annotations.get("runbook_url", ""),
                slack_channel=model.slack_channel if model else None,
            )
            incident.times.received = job.received_at
            incident.times.alert_started = job.starts_at
            incident.add_event(
                "opened",
                f"{_what(job)}: {decision.detail}",
                at=now,
                actor=job.actor,
                trigger=job.trigger,
                alert_key=job.dedup_key,
            )
            self.metrics.incident_transitions.labels(state=IncidentState.OPEN.value).inc()
        else:
            incident.add_event(
                "joined" if job.status == "firing" else "resolved",
                f"{_what(job)}: {decision.detail}",
                at=now,
                actor=job.actor,
                trigger=job.trigger,
                alert_key=job.dedup_key,
            )
            if job.received_at and (
                incident.times.received is None or job.received_at < incident.times.received
            ):
                incident.times.received = job.received_at
            if (
                incident.state in CLOSED_STATES
                and decision.action in (Action.ROLLBACK, Action.REFUSE, Action.NOTIFY)
                and job.status == "firing"
            ):
                incident.add_event(
                    "reopened", f"{decision.bad_version} serves again: escalating", at=now
                )
        if job.trigger and job.status == "firing" and job.trigger not in incident.triggers:
            incident.triggers.append(job.trigger)
        return incident

    async def _conclude(
        self,
        job: Job,
        decision: Decision,
        incident: Incident,
        model: ModelPolicy | None,
        kube: KubeClient | None,
        executor: Executor | None,
    ) -> None:
        """NOTIFY, REFUSE and RECORD: set the state and reason, tell people once."""
        new = len(incident.events) == 1
        if decision.action is Action.RECORD:
            if new:
                self._transition(incident, IncidentState.NOTIFIED, decision.reason)
        elif incident.state not in CLOSED_STATES or decision.escalate:
            self._transition(incident, decision.state, decision.reason)
            if decision.target is not None and incident.target_version is None:
                incident.target_version = decision.target.version
        if decision.escalate:
            incident.add_event("escalated", decision.detail, at=self.clock())
            if kube is not None and executor is not None and model is not None:
                await self._event(
                    kube, executor, model, "ModelRollbackEscalated", decision.detail, "Warning"
                )
        await self._save(incident, notify=decision.reason not in ("resolved", "mode_off"))

    async def _rollback(
        self, c: _Context, workload: Workload, decision: Decision, incident: Incident
    ) -> None:
        assert c.executor is not None and c.kube is not None and c.model is not None
        job = c.job
        now = self.clock()
        assert decision.target is not None
        incident.target_version = decision.target.version
        if incident.times.acting is None:
            incident.times.acting = now
        self._transition(incident, IncidentState.ACTING, decision.reason)
        applied = await c.executor.apply(
            c.kube,
            workload,
            decision,
            rollback_annotations(decision, at=now),
            dry_run=self.dry_run,
        )
        if self.dry_run:
            incident.add_event("dry_run", f"dry run: {applied.detail}; nothing changed", at=now)
            self._transition(incident, IncidentState.NOTIFIED, "dry_run")
            self.metrics.rollbacks.labels(strategy=c.strategy, result="dry_run").inc()
            await self._save(incident)
            return
        switched = self.clock()
        incident.times.switched = switched
        incident.add_event(
            "switched",
            applied.detail,
            at=switched,
            actor=job.actor,
            resource_version=applied.resource_version,
        )
        self.metrics.rollbacks.labels(
            strategy=c.strategy, result="applied" if applied.changed else "skipped"
        ).inc()
        if incident.times.received is not None:
            self.metrics.received_to_switched.labels(strategy=c.strategy).observe(
                max(0.0, (switched - incident.times.received).total_seconds())
            )
        await self.store.record_rollback(self.lease_key(job), switched)
        await self._save(incident)
        try:
            await c.executor.mark_bad(c.kube, workload, incident.id, dry_run=False)
        except KubeError as e:
            log.warning("could not mark %s bad: %s", decision.bad_version, e)
        await self._event(
            c.kube,
            c.executor,
            c.model,
            "ModelRolledBack",
            f"{job.model} {decision.bad_version} -> {decision.target.version}"
            f" (revision {decision.target.number}), incident {incident.id}, trigger"
            f" {job.trigger or job.kind.value}, by {job.actor}",
        )
        await self._verify(c, incident, decision.target.version)

    async def _verify(self, c: _Context, incident: Incident, version: str) -> None:
        assert c.executor is not None and c.kube is not None and c.model is not None
        executor, kube, model = c.executor, c.kube, c.model
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

        verdict = await verify(
            read_rollout=read_rollout,
            probe=probe,
            timeout=c.verify_timeout,
            poll_interval=self.verify_poll_seconds,
        )
        now = self.clock()
        if verdict.healthy:
            incident.times.healthy = now
            incident.add_event("healthy", verdict.reason or "healthy", at=now)
            self._transition(incident, IncidentState.VERIFIED, incident.reason)
            self.metrics.rollbacks.labels(strategy=c.strategy, result="verified").inc()
            if incident.times.received is not None:
                self.metrics.received_to_healthy.labels(strategy=c.strategy).observe(
                    max(0.0, (now - incident.times.received).total_seconds())
                )
            # The Event first: once the incident reads verified, its record is complete.
            await self._event(
                kube,
                executor,
                model,
                "ModelRollbackVerified",
                f"{model.name} {version} healthy after rollback, incident {incident.id}",
            )
            await self._save(incident)
            return
        incident.add_event("verification_failed", verdict.reason, at=now)
        self._transition(incident, IncidentState.VERIFICATION_FAILED, "verification_failed")
        self.metrics.rollbacks.labels(strategy=c.strategy, result="verification_failed").inc()
        pause_reason = f"verification of {incident.id} failed at {now.isoformat()}"
        try:
            await executor.pause(kube, model, pause_reason)
            incident.add_event("paused", f"automation paused for {model.name}", at=now)
        except KubeError as e:
            incident.add_event("pause_failed", f"could not pause automation: {e}", at=now)
        incident.add_event("escalated", f"verification failed: {verdict.reason}", at=now)
        await self._event(
            kube,
            executor,
            model,
            "ModelRollbackVerificationFailed",
            f"{model.name} {version} not healthy after rollback: {verdict.reason}",
            "Warning",
        )
        await self._save(incident)

    # -- records ------------------------------------------------------------------------

    def _transition(self, incident: Incident, state: IncidentState, reason: str) -> None:
        if incident.state is not state:
            self.metrics.incident_transitions.labels(state=state.value).inc()
        incident.state = state
        incident.reason = reason

    async def _save(self, incident: Incident, *, notify: bool = True) -> None:
        """Write the incident, keeping events others appended meanwhile (a lost notification).

        Both copies started from the same stored events: the stored ones stay, this job's
        new ones follow. Every other field is this job's.
        """
        mine = incident

        def merge(current: Incident) -> None:
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

        saved = await self.store.update_incident(incident.id, merge)
        if saved is None:
            await self.store.put_incident(incident)
            saved = incident
        if notify and self.notifier is not None:
            model = self.policy.lookup(saved.cluster, saved.namespace, saved.model)
            self.notifier.incident_changed(saved, model.slack_channel if model else None)

    async def _event(
        self,
        kube: KubeClient,
        executor: Executor,
        model: ModelPolicy,
        reason: str,
        note: str,
        event_type: str = "Normal",
    ) -> None:
        if self.dry_run:
            return
        await audit.post_event(
            kube,
            audit.event_body(
                regarding=executor.regarding(model),
                reason=reason,
                note=note,
                at=self.clock(),
                instance=self.instance,
                event_type=event_type,
            ),
        )


def _what(job: Job) -> str:
    if job.kind is JobKind.ALERT:
        return f"{job.status} alert {job.labels.get('alertname', '?')} ({job.trigger or '-'})"
    return f"{job.kind.value} by {job.actor}" + (f": {job.reason}" if job.reason else "")


def _inputs(workload: Workload, facts: Facts) -> dict[str, Any]:
    view = workload.view
    return {
        "workload": f"{view.namespace}/{view.name}",
        "resource_version": view.resource_version,
        "serving_version": view.serving_version,
        "serving_revision": view.serving_revision,
        "became_current_at": view.became_current_at.isoformat() if view.became_current_at else None,
        "spec_paused": view.spec_paused,
        "gitops": view.gitops,
        "candidates": [(r.number, r.version, r.bad) for r in view.candidates],
        "recent_rollbacks": len(facts.recent_rollbacks),
        "forced": facts.forced,
    }
