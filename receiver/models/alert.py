"""The Alertmanager v4 payload, the label contract, and jobs (alerts or manual actions).

Pure data, no I/O. Inbound models ignore unknown fields (Alertmanager adds fields over
releases, e.g. ``notification_reason``) and are frozen.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from receiver.models.times import rfc3339

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
    # Each alert is an Alert if it is valid on its own and stays a raw object otherwise, so
    # one bad alert cannot fail the batch: intake judges the raw ones one by one. Validating
    # in this one pass, from the body's bytes, saves a Python dict per alert.
    alerts: list[Annotated[Alert | dict[str, Any], Field(union_mode="left_to_right")]]


class AlertOutcome(StrEnum):
    """What the webhook did with one alert of a delivery."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # no remediation="rollback": not ours to act on
    NOT_ATTRIBUTABLE = "not_attributable"  # missing namespace/model/model_version
    RECORDED = "recorded"  # resolved: kept for the record, proves nothing
    INVALID = "invalid"  # malformed alert object inside a valid payload


class JobKind(StrEnum):
    """Why a job is on the queue: an alert, or a person's (or a schedule's) action."""

    ALERT = "alert"
    FORCE = "force"
    """Roll back now, skipping mode, guards and causality (never spec.paused or health)."""
    EXECUTE = "execute"
    """Carry out a notify decision's recommendation, if its bad version still serves."""
    ROLL_FORWARD = "roll_forward"
    """Undo our last rollback of the model: back to the version it replaced."""
    DRILL = "drill"
    """Back to the rule-7 target and forward again, both verified; marks nothing bad."""


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
    incident: str = ""
    """The incident a manual action is about (execute, roll forward on an incident)."""
    to_revision: int | None = None
    """A forced rollback's chosen revision; rule 7's target when absent."""
    job_id: str = ""
    """Set by the control layer so its answer can name the job before a worker runs it."""

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

    @staticmethod
    def alert_wire(alert: Alert, *, dedup_key: str, group_key: str, received_at: datetime) -> bytes:
        """``from_alert(...).wire()`` without making the model: what the webhook queues.

        This runs for every alert of every delivery, and validating again what the Alert
        already validated, then serialising, cost more than the rest of the alert's work.
        The worker reads it back with ``model_validate_json`` (the same Job: tested).
        """
        return pydantic_core.to_json(
            {
                "dedup_key": dedup_key,
                "received_at": received_at,
                "group_key": group_key,
                "status": alert.status,
                "labels": alert.labels,
                "annotations": alert.annotations,
                "starts_at": alert.starts_at,
                "generator_url": alert.generator_url,
                "fingerprint": alert.fingerprint,
            }
        )

    def wire(self) -> bytes:
        """The job as the queue stores it (JSON)."""
        return self.__pydantic_serializer__.to_json(self)

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
