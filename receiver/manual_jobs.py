"""Jobs people start: roll forward (back to the version our rollback replaced) and drills.

A mixin of ``RollbackService``: these jobs run in the same pipeline, under the same
workload lease, and record through the same steps (``_save``, ``_event``, ``_health``),
but their decisions and legs are their own (``decide_roll_forward``, ``decide_drill``).

Slightly long: a drill's two legs and their failure paths are one story.
"""

from __future__ import annotations

import asyncio
import logging

from receiver import annotations as ours
from receiver import audit, incidents
from receiver.decide import (
    Action,
    Facts,
    became_current,
    decide_drill,
    decide_roll_forward,
    newest_revision,
)
from receiver.errors import (
    KubeError,
    PermanentError,
    TemporaryError,
)
from receiver.job_parts import JobTarget, decision_inputs, has_event
from receiver.models import (
    Incident,
    IncidentKind,
    IncidentState,
    Job,
    Revision,
    Verdict,
    parse_time,
)
from receiver.rollback import (
    Applied,
)

log = logging.getLogger(__name__)

# Unmarking a version a person vouched for is retried this often on API errors.
_MARK_ATTEMPTS = 3


_DRILL_MARKS = (
    ours.INCIDENT,
    ours.CHANGED_AT,
    ours.ROLLED_BACK_FROM,
    ours.ROLLED_BACK_FROM_REVISION,
    ours.ROLLED_BACK_TO,
    ours.ROLLED_BACK_TO_REVISION,
)
"""The annotations a drill's first leg writes; its forward leg puts back what was there, so
a drill leaves no trace on the workload (no cooldown, no bad mark, no last rollback), and
records when the version became current before the drill (``current-since``)."""


class ManualJobs:
    """Roll forward and drills, mixed into ``RollbackService`` (which provides the shared
    steps these methods call)."""

    # -- roll forward -----------------------------------------------------------------------

    async def _roll_forward(self, job: Job, target: JobTarget) -> None:
        """Undo our last rollback (``job.incident``): back to the version it replaced,
        accepted (bad mark removed) and verified. Recorded on the rollback's incident, whose
        outcome stays unless the roll forward fails to verify."""
        now = self.clock()
        workload, executor = target.workload, target.executor
        forward = executor.forward_target(workload) if workload and executor else None
        view = workload.view if workload is not None else None
        decision = decide_roll_forward(job, target.resolved, view, forward)
        existing = await self.store.get_incident(decision.incident_id)
        if existing is None:
            incident, entered = incidents.record_job(None, job, decision, target.resolved, now=now)
            assert incident is not None
            self._count(entered)
        else:
            incident = existing
            incident.add_event(
                "roll_forward",
                f"{incidents.describe_job(job)}: {decision.detail}",
                at=now,
                actor=job.actor,
            )
        audit.record_decision(
            job,
            decision,
            incident,
            policy_version=target.resolved.policy_version,
            inputs=decision_inputs(workload, Facts(now=now, workload_problem=target.problem)),
        )
        if decision.action is Action.REFUSE:
            incident.add_event("roll_forward_refused", decision.detail, at=now)
            if existing is None:
                self._count(incidents.conclude(incident, decision, new=True, now=now))
            await self._save(incident)
            return
        assert workload is not None and executor is not None and target.kube is not None
        version = decision.target.version if decision.target else decision.bad_version
        if decision.action is Action.ROLLBACK:
            assert decision.target is not None
            marks: dict[str, str | None] = {
                ours.ROLLED_BACK_FROM: None,
                ours.ROLLED_BACK_FROM_REVISION: None,
                ours.ROLLED_BACK_TO: None,
                ours.ROLLED_BACK_TO_REVISION: None,
                ours.CURRENT_SINCE: None,
                ours.INCIDENT: incident.id,
                ours.ACCEPTED: ours.accepted_value(
                    version, job.actor, now, revision=newest_revision(workload.view)
                ),
                ours.BAD_VERSIONS: ours.bad_versions_value(
                    ours.bad_versions(workload.view.annotations), remove=version
                ),
            }
            applied = await self._apply_forward(target, incident, decision.target, marks)
            if applied is None:
                return
            incident.add_event("rolled_forward", applied.detail, at=self.clock(), actor=job.actor)
            self._event(
                target,
                "ModelRolledForward",
                f"{incident.model} -> {version}, incident {incident.id}, by {job.actor}:"
                f" {version} accepted",
            )
            await self._save(incident)
        if decision.target is not None:
            await self._unmark(target, decision.target)
        verdict = await self._health(target, version)
        now = self.clock()
        if verdict.healthy:
            incident.add_event("roll_forward_healthy", verdict.reason or "healthy", at=now)
            if existing is None and incidents.transition(
                incident, IncidentState.VERIFIED, "roll_forward"
            ):
                # Its rollback's record was lost (Redis): this one is the roll forward's.
                self._count([IncidentState.VERIFIED])
            self._event(
                target,
                "ModelRollForwardVerified",
                f"{incident.model} {version} healthy after roll forward, incident {incident.id}",
            )
            await self._save(incident)
            return
        await self._forward_failed(target, incident, verdict, "roll_forward_verification_failed")

    async def _apply_forward(
        self,
        target: JobTarget,
        incident: Incident,
        revision: Revision,
        marks: dict[str, str | None],
    ) -> Applied | None:
        """The forward write; None when the API server refused it (recorded, escalated)."""
        assert target.executor and target.kube and target.workload
        try:
            applied = await target.executor.roll_forward(
                target.kube, target.workload, revision, marks, dry_run=self.dry_run
            )
        except KubeError as e:
            if isinstance(e, TemporaryError):
                raise  # a 409 reads and decides again; a 5xx or timeout retries the job
            now = self.clock()
            reason = f"the API server refused the roll forward: {e}"
            incident.add_event("failed", reason, at=now)
            incident.add_event("escalated", reason, at=now)
            self._event(target, "ModelRollForwardFailed", reason, "Warning")
            await self._save(incident)
            return None
        if self.dry_run:
            incident.add_event(
                "dry_run", f"dry run: {applied.detail}; nothing changed", at=self.clock()
            )
            await self._save(incident)
            return None
        return applied

    async def _unmark(self, target: JobTarget, revision: Revision) -> None:
        """Remove the bad mark from the version a person vouched for (retried briefly)."""
        assert target.executor and target.kube and target.workload
        delay = 0.2
        for attempt in range(1, _MARK_ATTEMPTS + 1):
            try:
                await target.executor.unmark_bad(target.kube, target.workload, revision)
                return
            except KubeError as e:
                if attempt == _MARK_ATTEMPTS or isinstance(e, PermanentError):
                    log.warning("could not remove the bad mark of %s: %s", revision.version, e)
                    return
                await asyncio.sleep(delay)
                delay *= 2

    async def _forward_failed(
        self, target: JobTarget, incident: Incident, verdict: Verdict, reason: str
    ) -> None:
        """A roll forward (or a drill leg) that did not verify: pause the model, escalate."""
        now = self.clock()
        incident.add_event("verification_failed", verdict.reason, at=now)
        if incidents.transition(incident, IncidentState.VERIFICATION_FAILED, reason):
            self._count([IncidentState.VERIFICATION_FAILED])
        await self._pause_model(target, incident, f"{reason.replace('_', ' ')} ({incident.id})")
        incident.add_event("escalated", f"{reason.replace('_', ' ')}: {verdict.reason}", at=now)
        self._event(
            target,
            "ModelRollbackVerificationFailed",
            f"{incident.model}: {reason.replace('_', ' ')}: {verdict.reason}",
            "Warning",
        )
        await self._save(incident)

    # -- drills ------------------------------------------------------------------------------

    async def _drill(self, job: Job, target: JobTarget) -> None:
        """Back to rule 7's target (marking nothing bad), verify, forward to the original
        version, verify again: one incident of kind ``drill`` with both legs' times.

        Every step is idempotent on a re-drive: the incident's events say which legs are
        done, the workload says whether a write already happened. A leg that fails to
        verify pauses the model and escalates; a failed first leg still returns the model
        to the version it served before the drill."""
        incident = await self.store.get_incident(job.incident)
        if incident is None:
            incident = await self._drill_open(job, target)
            if incident is None:
                return
        elif incident.state is not IncidentState.ACTING:
            return  # finished already: a re-delivered job
        back_ok = has_event(incident, "healthy")
        if not back_ok and not has_event(incident, "verification_failed"):
            back_ok = await self._drill_back(job, target, incident)
            if back_ok is None:
                return
        await self._drill_forward(job, target, incident, back_ok=back_ok)

    async def _drill_open(self, job: Job, target: JobTarget) -> Incident | None:
        now = self.clock()
        view = target.workload.view if target.workload is not None else None
        facts = Facts(now=now, global_paused=self.global_paused(), workload_problem=target.problem)
        decision = decide_drill(job, target.resolved, view, facts)
        incident, entered = incidents.record_job(
            None, job, decision, target.resolved, now=now, kind=IncidentKind.DRILL
        )
        assert incident is not None
        self._count(entered)
        audit.record_decision(
            job,
            decision,
            incident,
            policy_version=target.resolved.policy_version,
            inputs=decision_inputs(target.workload, facts),
        )
        if decision.action is not Action.ROLLBACK or view is None or decision.target is None:
            self._count(incidents.conclude(incident, decision, new=True, now=now))
            self.metrics.drills.labels(result="refused").inc()
            await self._save(incident)
            return None
        incident.target_version = decision.target.version
        incident.target_revision = str(decision.target.number)
        incident.times.acting = now
        if incidents.transition(incident, IncidentState.ACTING, decision.reason):
            self._count([IncidentState.ACTING])
        # What the drill's writes change, to be put back by the forward leg.
        previous = {key: view.annotations.get(key) for key in _DRILL_MARKS}
        since = became_current(view)
        incident.add_event(
            "drill_started",
            decision.detail,
            at=now,
            actor=job.actor,
            previous=previous,
            current_since=since.isoformat() if since else None,
        )
        await self._save(incident)
        return incident

    async def _drill_back(self, job: Job, target: JobTarget, incident: Incident) -> bool | None:
        """The first leg; True when healthy, False when not, None when it stopped (refused)."""
        assert target.executor and target.kube and target.workload
        view = target.workload.view
        if not has_event(incident, "switched"):
            now = self.clock()
            applied_already = (
                view.annotations.get(ours.INCIDENT) == incident.id
                and view.serving_version != incident.bad_version
            )
            detail = f"drill: rolled back to {incident.target_version} (found applied)"
            if not applied_already:
                facts = Facts(now=now, global_paused=self.global_paused())
                decision = decide_drill(job, target.resolved, view, facts)
                if decision.action is not Action.ROLLBACK or decision.target is None:
                    incident.add_event("refused", decision.detail, at=now)
                    incidents.transition(incident, IncidentState.REFUSED, decision.reason)
                    self._count([IncidentState.REFUSED])
                    self.metrics.drills.labels(result="refused").inc()
                    await self._save(incident)
                    return None
                marks: dict[str, str | None] = {ours.CURRENT_SINCE: None}
                marks.update(
                    ours.rollback_annotations(
                        incident_id=incident.id,
                        bad_version=incident.bad_version,
                        bad_revision=incident.bad_revision,
                        target_version=decision.target.version,
                        target_revision=str(decision.target.number),
                        at=now,
                    )
                )
                applied = await target.executor.apply(
                    target.kube, target.workload, decision, marks, dry_run=self.dry_run
                )
                if self.dry_run:
                    incident.add_event("dry_run", f"dry run: {applied.detail}", at=now)
                    incidents.transition(incident, IncidentState.NOTIFIED, "dry_run")
                    await self._save(incident)
                    return None
                incident.target_version = decision.target.version
                incident.target_revision = str(decision.target.number)
                detail = f"drill: {applied.detail}"
            incident.times.switched = now
            incident.add_event("switched", detail, at=now, actor=job.actor)
            self._event(
                target,
                "ModelRollbackDrill",
                f"{incident.model} {incident.bad_version} -> {incident.target_version}"
                f" (drill {incident.id}, by {job.actor}); rolling forward once verified",
            )
            await self._save(incident)
        verdict = await self._health(target, incident.target_version or "")
        now = self.clock()
        if verdict.healthy:
            incident.times.healthy = now
            incident.add_event("healthy", verdict.reason or "healthy", at=now)
            await self._save(incident)
            return True
        incident.add_event(
            "verification_failed",
            f"drill: {incident.target_version} not healthy: {verdict.reason}; returning to"
            f" {incident.bad_version}",
            at=now,
        )
        await self._save(incident)
        return False

    async def _drill_forward(
        self, job: Job, target: JobTarget, incident: Incident, *, back_ok: bool
    ) -> None:
        """The second leg: back to the version that served before the drill, verified."""
        assert target.executor and target.kube and target.resolved.model
        executor, kube = target.executor, target.kube
        if not has_event(incident, "forward_started"):
            started_at = self.clock()
            workload = await executor.read(kube, target.resolved.model, http=self.session)
            target.workload = workload
            if workload.view.serving_version != incident.bad_version:
                forward = executor.forward_target(workload)
                if forward is None or forward.version != incident.bad_version:
                    verdict = Verdict(
                        False,
                        f"the revision of {incident.bad_version} to return to was not found on"
                        " the workload; restore it by hand (`kubectl rollout undo`)",
                    )
                    await self._drill_end(target, incident, verdict, back_ok=back_ok)
                    return
                started = next(e for e in incident.events if e.kind == "drill_started")
                previous = started.data.get("previous") or {}
                marks = {key: previous.get(key) for key in _DRILL_MARKS}
                since = parse_time(started.data.get("current_since"))
                marks[ours.CURRENT_SINCE] = (
                    ours.current_since_value(incident.bad_version, since) if since else None
                )
                applied = await self._apply_forward(target, incident, forward, marks)
                if applied is None:
                    incidents.transition(incident, IncidentState.FAILED, "drill_failed")
                    self.metrics.drills.labels(result="failed").inc()
                    await self._save(incident)
                    return
            incident.add_event(
                "forward_started",
                f"drill: rolling forward to {incident.bad_version}",
                at=started_at,
                actor=job.actor,
            )
            await self._save(incident)
        verdict = await self._health(target, incident.bad_version)
        if verdict.healthy:
            incident.add_event("forward_healthy", verdict.reason or "healthy", at=self.clock())
        await self._drill_end(target, incident, verdict, back_ok=back_ok)

    async def _drill_end(
        self, target: JobTarget, incident: Incident, verdict: Verdict, *, back_ok: bool
    ) -> None:
        model = target.resolved.model
        assert model is not None
        if verdict.healthy and back_ok:
            now = self.clock()
            if incidents.transition(incident, IncidentState.VERIFIED, "drill_passed"):
                self._count([IncidentState.VERIFIED])
            self.metrics.drills.labels(result="passed").inc()
            self.metrics.drill_last_success.labels(namespace=model.namespace, model=model.name).set(
                now.timestamp()
            )
            self._event(
                target,
                "ModelRollbackDrillPassed",
                f"{model.name}: drill {incident.id} passed: {incident.bad_version} ->"
                f" {incident.target_version} -> {incident.bad_version}, each verified",
            )
            await self._save(incident)
            return
        self.metrics.drills.labels(result="failed").inc()
        if not verdict.healthy:
            await self._forward_failed(target, incident, verdict, "drill_failed")
            return
        # The forward leg is healthy but the first leg was not: the drill failed.
        await self._forward_failed(
            target,
            incident,
            Verdict(False, f"the rollback leg to {incident.target_version} did not verify"),
            "drill_failed",
        )
