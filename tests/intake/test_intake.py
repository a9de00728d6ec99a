"""The intake rules as tables: body -> envelope or 400 reason; alert -> outcome or job."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.intake import (
    NOT_ATTRIBUTABLE_TITLE,
    BadDelivery,
    admit,
    missing_labels,
    not_attributable_notice,
    parse_delivery,
    settle,
)
from receiver.models import Alert, AlertOutcome, Job
from tests.conftest import load_delivery

RECEIVED = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
GROUP = '{}:{model="fraud-scorer", namespace="ml-prod"}'


def alert(**changes: Any) -> dict[str, Any]:
    """The captured firing alert, with label changes (None removes a label)."""
    item = load_delivery("firing_single").payload["alerts"][0]
    labels = dict(item["labels"])
    for key, value in changes.pop("labels", {}).items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    return {**item, "labels": labels, **changes}


def body(**changes: Any) -> bytes:
    payload = load_delivery("firing_single").payload
    for key, value in changes.items():
        if value is ...:
            del payload[key]
        else:
            payload[key] = value
    return json.dumps(payload).encode()


# -- the envelope ----------------------------------------------------------------------


def test_a_captured_delivery_parses_with_its_alerts_validated():
    payload = parse_delivery(load_delivery("firing_group_two").body)
    assert payload.group_key == GROUP
    assert all(isinstance(a, Alert) for a in payload.alerts)
    assert [a.labels["trigger"] for a in payload.alerts] == ["error_rate", "latency_p99"]


def test_an_invalid_alert_stays_raw_beside_valid_ones_and_is_judged_alone():
    raw = json.loads(load_delivery("firing_group_two").body)
    del raw["alerts"][0]["startsAt"]
    payload = parse_delivery(json.dumps(raw).encode())
    first, second = payload.alerts
    assert isinstance(first, dict) and isinstance(second, Alert)
    admitted = admit(first, index=0, group_key=GROUP, received_at=RECEIVED)
    assert admitted.outcome is AlertOutcome.INVALID
    assert "startsAt" in admitted.reason


@pytest.mark.parametrize(
    ("raw", "message", "problem"),
    [
        (b"{not json", "body is not valid JSON", None),
        (b"\xff\xfe", "body is not valid JSON", None),
        (b"", "body is not valid JSON", None),
        (b"[1, 2]", "body must be a JSON object", None),
        (b'"text"', "body must be a JSON object", None),
        (body(version="3"), "unsupported payload version '3'", None),
        (body(version=4), 'the number 4: it must be the string "4"', None),
        (body(version=4.0), 'it must be the string "4"', None),
        (body(version=True), "unsupported payload version True", None),
        (body(version=None), 'no "version" field', None),
        (body(version=...), 'no "version" field', None),
        (body(groupKey=...), "not an Alertmanager v4 payload", "groupKey"),
        (body(alerts="many"), "not an Alertmanager v4 payload", "alerts"),
        (body(status="burning"), "not an Alertmanager v4 payload", "status"),
        (body(truncatedAlerts=-1), "not an Alertmanager v4 payload", "truncatedAlerts"),
    ],
)
def test_bodies_that_can_never_succeed_say_why(raw, message, problem):
    with pytest.raises(BadDelivery) as e:
        parse_delivery(raw)
    assert message in e.value.message
    if problem is None:
        assert e.value.problems == []
    else:
        assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


# -- one alert -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "outcome", "reason", "missing"),
    [
        (alert(), None, "", ()),
        (alert(status="resolved"), None, "", ()),
        (alert(labels={"remediation": None}), AlertOutcome.IGNORED, "remediation", ()),
        (alert(labels={"remediation": "page"}), AlertOutcome.IGNORED, "remediation", ()),
        (
            alert(labels={"model_version": None}),
            AlertOutcome.NOT_ATTRIBUTABLE,
            "missing labels: model_version; no action",
            ("model_version",),
        ),
        (
            alert(labels={"namespace": "", "model": None}),
            AlertOutcome.NOT_ATTRIBUTABLE,
            "missing labels: namespace, model; no action",
            ("namespace", "model"),
        ),
        (
            # Not ours: the remediation filter comes before the label contract.
            alert(labels={"remediation": None, "model": None}),
            AlertOutcome.IGNORED,
            "remediation",
            (),
        ),
        ({"status": "burning", "labels": "nope"}, AlertOutcome.INVALID, "status", ()),
        (alert(startsAt="yesterday"), AlertOutcome.INVALID, "startsAt", ()),
        (alert(fingerprint=""), AlertOutcome.INVALID, "fingerprint", ()),
        (alert(labels={"model": 7}), AlertOutcome.INVALID, "labels.model", ()),
        ("not an object", AlertOutcome.INVALID, "", ()),
    ],
)
def test_each_alert_gets_an_outcome_or_a_job(item, outcome, reason, missing):
    a = admit(item, index=3, group_key=GROUP, received_at=RECEIVED)
    assert a.index == 3
    assert a.outcome is outcome
    assert reason in a.reason
    assert a.missing == missing
    assert bool(a.wire) == (outcome is None)


def test_the_job_carries_the_alert_and_its_dedup_key():
    a = admit(alert(), index=0, group_key=GROUP, received_at=RECEIVED)
    job = Job.model_validate_json(a.wire)  # as a worker reads it
    assert a.dedup_key == job.dedup_key == "3cb9149f9addba39|2026-11-25T07:42:05.744000Z|firing"
    assert (job.namespace, job.model, job.model_version) == ("ml-prod", "fraud-scorer", "v3")
    assert (job.group_key, job.received_at, job.status) == (GROUP, RECEIVED, "firing")
    resolved = admit(alert(status="resolved"), index=0, group_key=GROUP, received_at=RECEIVED)
    assert resolved.dedup_key.endswith("|resolved")


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_the_queued_json_is_the_job_the_model_would_write(status):
    """The webhook writes a job's JSON without the model; a worker must read the same Job."""
    validated = Alert.model_validate(alert(status=status))
    a = admit(alert(status=status), index=0, group_key=GROUP, received_at=RECEIVED)
    made = Job.from_alert(validated, group_key=GROUP, received_at=RECEIVED)
    assert Job.model_validate_json(a.wire) == made
    assert Job.model_validate_json(made.wire()) == made


@pytest.mark.parametrize(
    ("item", "new", "outcome", "reason"),
    [
        (alert(), True, AlertOutcome.ACCEPTED, ""),
        (alert(), False, AlertOutcome.DUPLICATE, ""),
        (alert(status="resolved"), True, AlertOutcome.RECORDED, "never acted on"),
        (alert(status="resolved"), False, AlertOutcome.DUPLICATE, ""),
        (alert(labels={"model": None}), False, AlertOutcome.NOT_ATTRIBUTABLE, "model"),
        (alert(labels={"remediation": None}), True, AlertOutcome.IGNORED, "remediation"),
    ],
)
def test_the_dedup_claim_settles_queued_alerts_only(item, new, outcome, reason):
    a = admit(item, index=0, group_key=GROUP, received_at=RECEIVED)
    got, why = settle(a, new)
    assert got is outcome
    assert reason in why


@pytest.mark.parametrize(
    ("labels", "missing"),
    [
        ({"namespace": "n", "model": "m", "model_version": "v"}, ()),
        ({"namespace": "n", "model": "m"}, ("model_version",)),
        ({"namespace": "", "model": "m", "model_version": "v"}, ("namespace",)),
        ({}, ("namespace", "model", "model_version")),
    ],
)
def test_missing_labels(labels, missing):
    assert missing_labels(labels) == missing


def test_only_a_firing_unattributable_alert_wants_its_notice():
    firing = admit(alert(labels={"model": None}), index=0, group_key=GROUP, received_at=RECEIVED)
    resolved = admit(
        alert(labels={"model": None}, status="resolved"),
        index=0,
        group_key=GROUP,
        received_at=RECEIVED,
    )
    accepted = admit(alert(), index=0, group_key=GROUP, received_at=RECEIVED)
    assert (firing.wants_notice, resolved.wants_notice, accepted.wants_notice) == (
        True,
        False,
        False,
    )
    key, title, lines = not_attributable_notice(firing)
    assert key == "not-attributable|3cb9149f9addba39|2026-11-25T07:42:05.744000Z|firing"
    assert title == NOT_ATTRIBUTABLE_TITLE
    assert "`ModelErrorRateHigh` lacks the label(s) model;" in lines[0]
    assert "model_version=v3" in lines[1] and "namespace=ml-prod" in lines[1]
