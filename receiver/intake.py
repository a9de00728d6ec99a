"""What the webhook does with a delivery, decided without I/O: the one place that judges
an alert before it is queued.

A delivery body either can never succeed (:class:`BadDelivery`, a 400 with the reason, so
Alertmanager's log says what to fix) or is a v4 envelope whose alerts are admitted one by
one: a bad alert never fails its delivery (design.md, "Alertmanager's delivery rules").
Each alert ends as an outcome known here (invalid, ignored, not attributable) or as a
job (its dedup key and :class:`Job` JSON) whose outcome the dedup claim settles
(accepted, duplicate, recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic_core
from pydantic import ValidationError

from receiver.models import (
    LABEL_REMEDIATION,
    REQUIRED_LABELS,
    Alert,
    AlertOutcome,
    Job,
    WebhookPayload,
)

NOT_ATTRIBUTABLE_TITLE = "Alert not attributable: no action"


class BadDelivery(ValueError):
    """A body that can never be accepted; ``problems`` name the fields at fault."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


def _problems(error: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in error.errors()]


def _version_problem(version: object) -> str:
    """Why ``version`` is not Alertmanager's ``"4"``, in words a person can act on."""
    if version is None:
        return 'payload has no "version" field: Alertmanager webhook payloads carry "version": "4"'
    if isinstance(version, int | float) and not isinstance(version, bool) and version == 4:
        return (
            f'payload version is the number {version}: it must be the string "4", as '
            "Alertmanager sends it"
        )
    return (
        f"unsupported payload version {version!r}: this receiver speaks Alertmanager "
        'webhook version "4"'
    )


def parse_delivery(body: bytes) -> WebhookPayload:
    """The v4 envelope of a delivery body; ``BadDelivery`` when it can never be accepted.

    Valid alerts come back as :class:`Alert`, invalid ones as raw objects :func:`admit`
    judges one by one.
    """
    try:
        # One pass of pydantic-core over the bytes: what nearly every delivery takes.
        return WebhookPayload.model_validate_json(body)
    except ValueError:
        pass  # a body that can never be accepted: find the words for why below
    try:
        raw = pydantic_core.from_json(body)
    except ValueError as e:
        raise BadDelivery(f"body is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise BadDelivery("body must be a JSON object (Alertmanager webhook v4)")
    if raw.get("version") != "4":
        raise BadDelivery(_version_problem(raw.get("version")))
    try:
        return WebhookPayload.model_validate(raw)
    except ValidationError as e:
        raise BadDelivery("not an Alertmanager v4 payload", _problems(e)) from e


def missing_labels(labels: dict[str, str]) -> tuple[str, ...]:
    """The contract labels (namespace, model, model_version) an alert lacks to be acted on."""
    missing: tuple[str, ...] = ()
    for name in REQUIRED_LABELS:  # a loop, not a generator: this runs for every alert
        if not labels.get(name):
            missing += (name,)
    return missing


@dataclass(frozen=True, slots=True)
class Admission:
    """One alert of a delivery, judged: a final ``outcome``, or a job to dedup and queue
    (``dedup_key`` and the job as the queue keeps it, ``wire``)."""

    index: int
    outcome: AlertOutcome | None
    reason: str = ""
    alert: Alert | None = None
    dedup_key: str = ""
    wire: bytes = b""
    missing: tuple[str, ...] = ()

    @property
    def wants_notice(self) -> bool:
        """A firing alert nobody can act on is posted once as "not attributable"."""
        return (
            self.outcome is AlertOutcome.NOT_ATTRIBUTABLE
            and self.alert is not None
            and self.alert.status == "firing"
        )


def admit(
    item: Alert | dict[str, Any], *, index: int, group_key: str, received_at: datetime
) -> Admission:
    """Judge one alert of a v4 delivery (validated, or raw when it is not a valid alert)."""
    if isinstance(item, Alert):
        alert = item
    else:
        try:
            alert = Alert.model_validate(item)
        except ValidationError as e:
            return Admission(index, AlertOutcome.INVALID, "; ".join(_problems(e)))
    if alert.labels.get(LABEL_REMEDIATION) != "rollback":
        return Admission(index, AlertOutcome.IGNORED, 'no remediation="rollback" label', alert)
    missing = missing_labels(alert.labels)
    if missing:
        return Admission(
            index,
            AlertOutcome.NOT_ATTRIBUTABLE,
            f"missing labels: {', '.join(missing)}; no action",
            alert,
            missing=missing,
        )
    key = alert.dedup_key()
    wire = Job.alert_wire(alert, dedup_key=key, group_key=group_key, received_at=received_at)
    return Admission(index, None, alert=alert, dedup_key=key, wire=wire)


def settle(admission: Admission, new: bool) -> tuple[AlertOutcome, str]:
    """The outcome of a queued alert once its dedup key was claimed (``new``) or not."""
    if admission.outcome is not None:
        return admission.outcome, admission.reason
    if not new:
        return AlertOutcome.DUPLICATE, ""
    assert admission.alert is not None, "only admissions with a job are settled by dedup"
    if admission.alert.status == "resolved":
        return AlertOutcome.RECORDED, "resolved alerts are recorded, never acted on"
    return AlertOutcome.ACCEPTED, ""


def not_attributable_notice(admission: Admission) -> tuple[str, str, list[str]]:
    """(cause key, title, lines) of the one Slack notice a not-attributable alert gets."""
    alert = admission.alert
    assert alert is not None and admission.missing, "only for not-attributable alerts"
    name = alert.labels.get("alertname", "?")
    return (
        f"not-attributable|{alert.dedup_key()}",
        NOT_ATTRIBUTABLE_TITLE,
        [
            f"Alert `{name}` lacks the label(s) {', '.join(admission.missing)}; the rule"
            " must aggregate by namespace, model and model_version.",
            f"Labels: {', '.join(f'{k}={v}' for k, v in sorted(alert.labels.items()))}",
        ],
    )
