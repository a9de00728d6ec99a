"""Value types shared by the layers: the Alertmanager v4 payload, jobs and incidents.

Pure data, no I/O. Inbound models ignore unknown fields (Alertmanager adds fields over
releases, e.g. ``notification_reason``) and are frozen.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Labels of the contract between the rules and the receiver (design.md).
LABEL_REMEDIATION = "remediation"
LABEL_NAMESPACE = "namespace"
LABEL_MODEL = "model"
LABEL_MODEL_VERSION = "model_version"
LABEL_CATEGORY = "category"
LABEL_TRIGGER = "trigger"
LABEL_TIER = "tier"
LABEL_SEVERITY = "severity"
LABEL_CLUSTER = "cluster"
REQUIRED_LABELS = (LABEL_NAMESPACE, LABEL_MODEL, LABEL_MODEL_VERSION)


def missing_labels(labels: dict[str, str]) -> list[str]:
    """The contract labels an alert lacks to be attributed to a model version."""
    return [name for name in REQUIRED_LABELS if not labels.get(name)]


def utcnow() -> datetime:
    """Timezone-aware now in UTC; the only clock the domain code reads by default."""
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z``, as the API promises."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Inbound):
    """One alert of a notification; act on its own ``status``, not the group's."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=64)

    def dedup_key(self) -> str:
        """(fingerprint, startsAt, status): the same alert delivered twice maps to one key."""
        return f"{self.fingerprint}|{rfc3339(self.starts_at)}|{self.status}"

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    def missing_labels(self) -> list[str]:
        """Contract labels needed to attribute the alert to a model version."""
        return missing_labels(self.labels)


class WebhookPayload(_Inbound):
    """Alertmanager's webhook body, version 4 (docs/configuration.md, <webhook_config>)."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    # Alerts are validated one by one by the webhook so one bad alert cannot fail the batch.
    alerts: list[dict[str, Any]]


class AlertOutcome(StrEnum):
    """What the webhook did with one alert of a delivery."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # no remediation="rollback": not ours to act on
    NOT_ATTRIBUTABLE = "not_attributable"  # missing namespace/model/model_version
    RECORDED = "recorded"  # resolved: kept for the record, proves nothing
    INVALID = "invalid"  # malformed alert object inside a valid payload


class JobKind(StrEnum):
    """Why a job is on the queue."""

    ALERT = "alert"
    FORCE = "force"
    ROLL_FORWARD = "roll_forward"


class Job(BaseModel):
    """A unit of work on the queue: one alert (or a manual action) to decide on its own."""

    model_config = ConfigDict(frozen=True)

    kind: JobKind = JobKind.ALERT
    dedup_key: str = ""
    received_at: datetime
    group_key: str = ""
    status: Literal["firing", "resolved"] = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = None
    generator_url: str = ""
    fingerprint: str = ""
    actor: str = "alertmanager"
    reason: str = ""

    @classmethod
    def from_alert(cls, alert: Alert, *, group_key: str, received_at: datetime) -> Job:
        return cls(
            dedup_key=alert.dedup_key(),
            received_at=received_at,
            group_key=group_key,
            status=alert.status,
            labels=alert.labels,
            annotations=alert.annotations,
            starts_at=alert.starts_at,
            generator_url=alert.generator_url,
            fingerprint=alert.fingerprint,
        )

    @property
    def namespace(self) -> str:
        return self.labels.get(LABEL_NAMESPACE, "")

    @property
    def model(self) -> str:
        return self.labels.get(LABEL_MODEL, "")

    @property
    def model_version(self) -> str:
        return self.labels.get(LABEL_MODEL_VERSION, "")

    @property
    def cluster(self) -> str:
        return self.labels.get(LABEL_CLUSTER, "")

    @property
    def trigger(self) -> str:
        return self.labels.get(LABEL_TRIGGER, "")

    @property
    def category(self) -> str:
        return self.labels.get(LABEL_CATEGORY, "")


class IncidentState(StrEnum):
    """Lifecycle of an incident (design.md, Incidents)."""

    OPEN = "open"
    ACTING = "acting"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    REFUSED = "refused"
    NOTIFIED = "notified"
    CONFIRMED = "confirmed"
    UNCONFIRMED = "unconfirmed"
    ACKNOWLEDGED = "acknowledged"


CLOSED_STATES = frozenset(
    {
        IncidentState.VERIFIED,
        IncidentState.VERIFICATION_FAILED,
        IncidentState.CONFIRMED,
        IncidentState.UNCONFIRMED,
        IncidentState.ACKNOWLEDGED,
    }
)


def incident_id(cluster: str, namespace: str, model: str, bad_version: str, revision: str) -> str:
    """``inc-`` + 12 hex digits of sha256 over the identity; stable before and after acting."""
    raw = "\x1f".join((cluster, namespace, model, bad_version, revision)).encode()
    return "inc-" + hashlib.sha256(raw).hexdigest()[:12]


class IncidentTimes(BaseModel):
    """When each step happened; ``None`` until it does."""

    alert_started: datetime | None = None
    received: datetime | None = None
    acting: datetime | None = None
    switched: datetime | None = None
    healthy: datetime | None = None
    confirmed: datetime | None = None


class IncidentEvent(BaseModel):
    """One entry of an incident's timeline."""

    at: datetime
    kind: str
    message: str
    actor: str = "receiver"
    data: dict[str, Any] = Field(default_factory=dict)


class Incident(BaseModel):
    """The record of one bad version on one workload revision, and what was done about it."""

    id: str
    cluster: str = ""
    namespace: str
    model: str
    bad_version: str
    bad_revision: str = ""
    target_version: str | None = None
    strategy: str = ""
    state: IncidentState = IncidentState.OPEN
    reason: str = ""
    triggers: list[str] = Field(default_factory=list)
    times: IncidentTimes = Field(default_factory=IncidentTimes)
    actors: list[str] = Field(default_factory=list)
    events: list[IncidentEvent] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    category: str = ""
    tier: str = ""
    severity: str = ""
    generator_url: str = ""
    runbook_url: str = ""
    # The channel the policy names for the incident's Slack message. Where the message
    # itself is (channel id and ts) is the notifier's, kept in the store's Messages.
    slack_channel: str | None = None

    def add_event(
        self, kind: str, message: str, *, at: datetime, actor: str = "receiver", **data: Any
    ) -> None:
        self.events.append(IncidentEvent(at=at, kind=kind, message=message, actor=actor, data=data))
        if actor not in self.actors:
            self.actors.append(actor)
        self.updated_at = at

    def summary(self) -> dict[str, Any]:
        """The list item of ``GET /api/incidents`` (design.md), times in RFC 3339 UTC."""
        return {
            "id": self.id,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "model": self.model,
            "bad_version": self.bad_version,
            "target_version": self.target_version,
            "strategy": self.strategy,
            "state": self.state.value,
            "reason": self.reason,
            "triggers": list(self.triggers),
            "times": {k: rfc3339(v) for k, v in self.times.model_dump().items()},
            "actors": list(self.actors),
        }

    def detail(self) -> dict[str, Any]:
        """``GET /api/incidents/{id}``: the summary plus the full event list."""
        out = self.summary()
        out["revision"] = self.bad_revision
        out["events"] = [
            {
                "at": rfc3339(e.at),
                "kind": e.kind,
                "message": e.message,
                "actor": e.actor,
                "data": e.data,
            }
            for e in self.events
        ]
        return out


class HealthPaths(BaseModel):
    """HTTP routes probed to call a model healthy; Open Inference Protocol (KServe v2) by
    default, as spoken by KServe, Triton and MLServer. ``{model}`` is replaced by the
    model's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    live: str = "/v2/health/live"
    ready: str = "/v2/health/ready"
    model_ready: str = "/v2/models/{model}/ready"
    model_metadata: str = "/v2/models/{model}"
    infer: str = "/v2/models/{model}/infer"
    dependencies: str | None = None
    """Optional route that checks the model's dependencies (a feature store); 2xx = healthy."""
