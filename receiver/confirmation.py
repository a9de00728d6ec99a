"""Confirmation as durable work: schedule it when an incident is verified, run it when due.

design.md ("Verification and confirmation", **Confirmed**): once the target has served for
the alert rule's range window plus its ``for:`` (read from Prometheus's ``/api/v1/rules``,
the window through the recording rules it lists; else the policy's ``confirm_after`` for
the alert's category), the alert's own expression, restricted to the target version, must
show no breach **and** data for the target. The evaluation itself is ``verify.confirm``;
this module decides when, takes the work so that exactly one replica does it, and records
the evidence on the incident.

Pending confirmations live in the store (a sorted set by due time), so a crash between
"verified" and "confirmed" loses nothing: any replica's loop finds the work when it is
due, under a per-incident lease. Without ``RECEIVER_PROMETHEUS_URL`` nothing is scheduled
and the incident says confirmation is off. An unconfirmed rollback is escalated to people;
the receiver never rolls back further on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from receiver.clients.prometheus import PrometheusClient
from receiver.errors import ReceiverError
from receiver.metrics import Metrics
from receiver.models import Confirmation, Incident, IncidentState, utcnow
from receiver.notify import Notifier
from receiver.policy import Policy
from receiver.store import Confirmations, Incidents, Leases
from receiver.verify.confirm import confirm, confirm_delay_seconds
from receiver.verify.promql import ConfirmationError, extract_expr

log = logging.getLogger(__name__)

# How many due confirmations one pass takes; the rest wait for the next pass.
_BATCH = 16
# How long Prometheus may stay unreachable past the due time before the verdict is
# "prometheus_unavailable": long enough to ride out a restart, short enough for people.
RETRY_BUDGET_SECONDS = 300.0


class Confirmer:
    """Schedules confirmations and runs the due ones (one loop per replica)."""

    def __init__(
        self,
        *,
        store: Confirmations | None,
        incidents: Incidents,
        leases: Leases,
        policy: Policy,
        prometheus: PrometheusClient | None,
        metrics: Metrics,
        notifier: Notifier | None = None,
        clock: Callable[[], datetime] = utcnow,
        interval_seconds: float = 5.0,
        retry_interval_seconds: float = 15.0,
        lease_seconds: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.incidents = incidents
        self.leases = leases
        self.policy = policy
        self.prometheus = prometheus
        self.metrics = metrics
        self.notifier = notifier
        self.clock = clock
        self.interval_seconds = interval_seconds
        self.retry_interval_seconds = retry_interval_seconds
        self.lease_seconds = lease_seconds
        self.sleep = sleep
        self.owner = uuid.uuid4().hex[:12]

    @property
    def enabled(self) -> bool:
        return self.prometheus is not None and self.store is not None

    async def schedule(self, incident: Incident) -> None:
        """Called when an incident is verified: record when it will be confirmed.

        Changes ``incident`` (its ``confirmation.due_at`` or a note that confirmation is
        off); the caller saves it."""
        now = self.clock()
        if not self.enabled or self.store is None:
            incident.add_event(
                "confirmation_off",
                "confirmation is off: set RECEIVER_PROMETHEUS_URL to check the alert's own"
                " signal after the rollback",
                at=now,
            )
            return
        if not incident.generator_url:
            incident.add_event(
                "confirmation_off",
                "no alert expression to confirm with (the incident was opened by a person"
                " and no alert joined it)",
                at=now,
            )
            return
        delay = await self._delay(incident)
        started = incident.times.switched or incident.times.healthy or now
        due = started + timedelta(seconds=delay)
        incident.confirmation = Confirmation(result="pending", reason="scheduled", due_at=due)
        incident.add_event(
            "confirmation_scheduled",
            f"confirmation due at {due.isoformat()} (the target serves for {delay:g}s first)",
            at=now,
        )
        await self.store.schedule_confirmation(incident.id, due)

    async def _delay(self, incident: Incident) -> float:
        fallback = self._fallback(incident)
        assert self.prometheus is not None
        try:
            expr = extract_expr(incident.generator_url)
        except ConfirmationError:
            return fallback
        name = incident.alert_labels.get("alertname", "")
        try:
            rule = (
                await self.prometheus.alert_rule(name, labels=incident.alert_labels, expr=expr)
                if name
                else None
            )
        except ReceiverError as e:
            log.warning("rule %s not read from Prometheus (%s): using confirm_after", name, e)
            rule = None
        if rule is None:
            return fallback
        return confirm_delay_seconds(rule, expr, fallback, await self._recording_rules(name))

    async def _recording_rules(self, alert: str) -> dict[str, tuple[str, ...]] | None:
        """Recording rule name -> its expressions (a name may be recorded in several
        groups); None when Prometheus cannot list them, and each recording rule of the
        alert then counts the window its name states."""
        assert self.prometheus is not None
        try:
            rules = await self.prometheus.recording_rules()
        except ReceiverError as e:
            log.warning(
                "recording rules not read from Prometheus (%s): the window of %s counts"
                " the windows their names state",
                e,
                alert,
            )
            return None
        exprs: dict[str, tuple[str, ...]] = {}
        for r in rules:
            exprs[r.name] = (*exprs.get(r.name, ()), r.expr)
        return exprs

    def _fallback(self, incident: Incident) -> float:
        model = self.policy.lookup(incident.cluster, incident.namespace, incident.model)
        if model is None:
            return self.policy.defaults.confirm_after.for_category(incident.category)
        settings = self.policy.effective(model, alert_tier=incident.tier or None)
        return settings.confirm_after.for_category(incident.category)

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping``: take the due confirmations and carry them out."""
        if not self.enabled:
            return
        while not stopping.is_set():
            try:
                await self.run_due()
            except ReceiverError as e:
                log.warning("confirmations not taken this pass: %s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval_seconds)

    async def run_due(self) -> int:
        """One pass: every due confirmation this replica can lease. Returns how many ran."""
        if self.store is None:
            return 0
        done = 0
        for incident_id in await self.store.due_confirmations(self.clock(), _BATCH):
            lease = f"confirm:{incident_id}"
            if not await self.leases.acquire_lease(lease, self.owner, self.lease_seconds):
                continue  # another replica has it
            try:
                if await self.confirm_one(incident_id):
                    done += 1
            finally:
                await self.leases.release_lease(lease, self.owner)
        return done

    async def confirm_one(self, incident_id: str) -> bool:
        """Evaluate and record one confirmation; finish it in the store last, so a crash
        before the record leaves it pending for another try. False when there was nothing
        left to confirm (done by another replica, or the incident moved on)."""
        assert self.store is not None and self.prometheus is not None
        incident = await self.incidents.get_incident(incident_id)
        if incident is None or incident.state is not IncidentState.VERIFIED:
            await self.store.finish_confirmation(incident_id)
            return False
        try:
            expr = extract_expr(incident.generator_url)
        except ConfirmationError as e:
            outcome_result, reason, detail, query, values = (
                "unconfirmed",
                "bad_expression",
                str(e),
                "",
                [],
            )
            evaluated_at = self.clock()
        else:
            due = incident.confirmation.due_at if incident.confirmation else None
            deadline = max(due or self.clock(), self.clock()) + timedelta(
                seconds=RETRY_BUDGET_SECONDS
            )
            outcome = await confirm(
                self.prometheus,
                expr=expr,
                target_version=incident.target_version or "",
                model_labels={"namespace": incident.namespace, "model": incident.model},
                deadline=deadline,
                clock=self.clock,
                retry_interval=self.retry_interval_seconds,
                sleep=self.sleep,
            )
            outcome_result, reason, detail = outcome.result, outcome.reason, outcome.detail
            query = outcome.query
            values = [{"labels": dict(s.labels), "value": s.value} for s in outcome.value]
            evaluated_at = outcome.evaluated_at or self.clock()
        await self._record(incident_id, outcome_result, reason, detail, query, values, evaluated_at)
        await self.store.finish_confirmation(incident_id)
        return True

    async def _record(
        self,
        incident_id: str,
        result: str,
        reason: str,
        detail: str,
        query: str,
        values: list[dict[str, object]],
        evaluated_at: datetime,
    ) -> None:
        now = self.clock()
        confirmed = result == "confirmed"

        def change(incident: Incident) -> None:
            if incident.state is not IncidentState.VERIFIED:
                return  # someone acted meanwhile (a roll forward): that outcome stands
            due = incident.confirmation.due_at if incident.confirmation else None
            incident.confirmation = Confirmation(
                result=result,
                reason=reason,
                query=query,
                value=values,
                evaluated_at=evaluated_at,
                due_at=due,
            )
            incident.state = IncidentState.CONFIRMED if confirmed else IncidentState.UNCONFIRMED
            incident.reason = reason
            if confirmed:
                incident.times.confirmed = now
                incident.add_event("confirmed", detail or "no breach for the target", at=now)
            else:
                incident.add_event("unconfirmed", detail or reason, at=now)
                incident.add_event(
                    "escalated",
                    f"the rollback did not confirm ({reason}): a person decides; the"
                    " receiver does not roll back further on its own",
                    at=now,
                )

        saved = await self.incidents.update_incident(incident_id, change)
        if saved is None or saved.state not in (
            IncidentState.CONFIRMED,
            IncidentState.UNCONFIRMED,
        ):
            return
        self.metrics.confirmations.labels(result=result).inc()
        self.metrics.incident_transitions.labels(state=saved.state.value).inc()
        if confirmed and saved.times.received is not None:
            self.metrics.received_to_confirmed.labels(strategy=saved.strategy).observe(
                max(0.0, (now - saved.times.received).total_seconds())
            )
        log.info(
            "%s: %s (%s)",
            saved.id,
            result,
            reason,
            extra={"audit": True, "incident": saved.id, "query": query, "reason": reason},
        )
        if self.notifier is not None:
            model = self.policy.lookup(saved.cluster, saved.namespace, saved.model)
            self.notifier.incident_changed(saved, model.slack_channel if model else None)
