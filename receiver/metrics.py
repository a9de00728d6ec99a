"""Prometheus metrics on an explicit registry (one per app, so tests get a fresh one).

Names follow prometheus/docs naming.md: ``receiver_`` prefix, base units, ``_total`` on
counters, only bounded label values (no model names: a fleet of models must not explode
the series count; per-model detail lives in the incidents API and the logs).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Time-to-recovery buckets: from a blue-green switch (sub-second) to a slow rollout (minutes).
_RECOVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, float("inf"))


class Metrics:
    """Every metric the receiver exports; ``Metrics(CollectorRegistry())`` in tests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "receiver_http_requests_total",
            "HTTP requests answered, by route template and status code.",
            ["route", "code"],
            registry=r,
        )
        self.webhook_duration = Histogram(
            "receiver_webhook_duration_seconds",
            "Time to answer an Alertmanager delivery.",
            registry=r,
        )
        self.alerts = Counter(
            "receiver_alerts_total",
            "Alerts received, by what the webhook did with them.",
            ["outcome"],
            registry=r,
        )
        self.truncated_alerts = Counter(
            "receiver_truncated_alerts_total",
            "Alerts cut from deliveries by Alertmanager (truncatedAlerts): never acted on.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "receiver_queue_depth",
            "Jobs waiting or running in the work queue.",
            registry=r,
        )
        self.queue_lag = Gauge(
            "receiver_queue_lag_seconds",
            "Age of the oldest job not yet acknowledged (0 when the queue is empty).",
            registry=r,
        )
        self.jobs = Counter(
            "receiver_jobs_total",
            "Jobs finished by this replica, by result (done, retried, failed, reclaimed).",
            ["result"],
            registry=r,
        )
        self.incident_transitions = Counter(
            "receiver_incident_transitions_total",
            "Incidents entering each state.",
            ["state"],
            registry=r,
        )
        self.rollbacks = Counter(
            "receiver_rollbacks_total",
            "Rollback attempts by strategy and result "
            "(applied, skipped, dry_run, conflict, failed, verified, verification_failed).",
            ["strategy", "result"],
            registry=r,
        )
        self.received_to_switched = Histogram(
            "receiver_received_to_switched_seconds",
            "From the alert's arrival to the change applied in the cluster.",
            ["strategy"],
            buckets=_RECOVERY_BUCKETS,
            registry=r,
        )
        self.received_to_healthy = Histogram(
            "receiver_received_to_healthy_seconds",
            "From the alert's arrival to the restored version verified healthy.",
            ["strategy"],
            buckets=_RECOVERY_BUCKETS,
            registry=r,
        )
        self.received_to_confirmed = Histogram(
            "receiver_received_to_confirmed_seconds",
            "From the alert's arrival to the alert's own signal confirmed recovered.",
            ["strategy"],
            buckets=(60, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400),
            registry=r,
        )
        self.confirmations = Counter(
            "receiver_confirmations_total",
            "Confirmations by result: the alert's expression on the target (confirmed or"
            " unconfirmed).",
            ["result"],
            registry=r,
        )
        self.notifications = Counter(
            "receiver_notifications_total",
            "Slack notifications by result (sent, retried, lost, logged).",
            ["result"],
            registry=r,
        )
        # Per model: bounded by the policy file (one series per model it lists), and the
        # shipped alerts and dashboard need them by model.
        self.model_paused = Gauge(
            "receiver_model_paused",
            "1 when automation is paused for the model (rollback-receiver.io/paused), as last"
            " read from its workload.",
            ["namespace", "model"],
            registry=r,
        )
        self.global_paused = Gauge(
            "receiver_global_paused",
            "1 when automation is paused for every model (the state ConfigMap).",
            registry=r,
        )
        self.drill_enabled = Gauge(
            "receiver_drill_enabled",
            "1 when the policy allows rollback drills for the model (drills: true).",
            ["namespace", "model"],
            registry=r,
        )
        self.drill_last_success = Gauge(
            "receiver_drill_last_success_timestamp_seconds",
            "When the model's last drill passed (both legs verified), Unix seconds.",
            ["namespace", "model"],
            registry=r,
        )
        self.drills = Counter(
            "receiver_drills_total",
            "Rollback drills finished by this replica, by result (passed, failed, refused).",
            ["result"],
            registry=r,
        )
        # Per model: bounded by the policy file (one series per model it lists); the shipped
        # ModelRollbackNotReady alert needs them by model.
        self.rollback_ready = Gauge(
            "receiver_rollback_ready",
            "1 when the model could be rolled back now, 0 when not, by its latest readiness"
            " check (kept in the store: every replica exports the same value). Absent when no"
            " replica has checked it for 4 readiness intervals.",
            ["namespace", "model"],
            registry=r,
        )
        self.readiness_checks = Counter(
            "receiver_readiness_checks_total",
            "Rollback readiness checks run by this replica, by result (ready, not_ready, and"
            " error when Kubernetes could not be reached to tell).",
            ["result"],
            registry=r,
        )
        self.ready = Gauge(
            "receiver_ready",
            "1 when this replica is ready (Redis reachable, policy loaded, start-up facts read).",
            registry=r,
        )
