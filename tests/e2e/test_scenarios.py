"""Shipped rules and route, real Prometheus 2.42 and Alertmanager 0.25, and the receiver.

Each scenario rolls a bad version out during the test (v1 -> v2, then v3 misbehaving),
waits for the shipped rule to fire in Prometheus, for Alertmanager to deliver it through
the shipped route, and for the receiver's outcome as design.md states it: for a rollback,
verified and then confirmed (or not) by the alert's own expression restricted to the
target, evaluated by this Prometheus. The timeline (degraded, alert active, delivered,
received, switched, healthy, confirmed) is printed at the end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import promql_parser

from tests.conftest import WEBHOOK_TOKEN, wait_for
from tests.e2e.conftest import MODEL, NS, MakeStack, Stack, parse_time
from tests.e2e.instrumented import Behaviour

CONTRACT_KEYS = {
    "alertname",
    "namespace",
    "model",
    "model_version",
    "remediation",
    "category",
    "trigger",
    "tier",
    "severity",
}


def assert_label_contract(
    labels: dict[str, str], *, alertname: str, category: str, trigger: str, severity: str
) -> None:
    """The alert label contract of design.md, exactly: no label more, no label less."""
    assert set(labels) == CONTRACT_KEYS, labels
    assert labels == {
        "alertname": alertname,
        "namespace": NS,
        "model": MODEL,
        "model_version": "v3",
        "remediation": "rollback",
        "category": category,
        "trigger": trigger,
        "tier": "critical",
        "severity": severity,
    }


def assert_delivered(
    stack: Stack, alert: dict[str, Any], degraded: datetime, **contract: str
) -> list[tuple[Any, dict[str, Any]]]:
    """The alert reached the receiver from Alertmanager, through the shipped route."""
    name = contract["alertname"]
    delivered = stack.tap.firing(alertname=name, model_version="v3")
    assert delivered, f"no firing {name} was delivered: {stack.tap.deliveries}"
    stack.mark_first_delivery(alertname=name, model_version="v3")
    stack.timeline.mark("firing: startsAt (delivered)", parse_time(delivered[0][1]["startsAt"]))
    for delivery, item in delivered:
        assert delivery.authorization == f"Bearer {WEBHOOK_TOKEN}"
        assert delivery.status == 200, delivery.answer
        assert delivery.payload["version"] == "4"
        assert delivery.payload["receiver"] == "rollback-receiver"
        # The shipped route groups by (namespace, model).
        assert delivery.payload["groupLabels"] == {"namespace": NS, "model": MODEL}
        assert_label_contract(item["labels"], **contract)
        assert set(item["annotations"]) == {"summary", "description", "runbook_url"}
        assert "v3" in item["annotations"]["description"]
        # Prometheus sends startsAt = the moment the alert fired: activeAt + for:, to the
        # evaluation (a second here); Alertmanager sends it in milliseconds.
        started, active = parse_time(item["startsAt"]), parse_time(alert["activeAt"])
        assert started is not None and active is not None
        pending = timedelta(seconds=stack.rules.loaded_for(name, "critical"))
        assert active + pending - timedelta(milliseconds=1) <= started
        assert started <= active + pending + timedelta(seconds=2.5)
        # Causality holds without backdating: the alert started after v3 began to serve.
        assert active >= degraded - timedelta(seconds=1)
    return delivered


async def wait_v2_scraped(stack: Stack) -> None:
    """Prometheus sees the switch: v2's series are scraped again and v3's are stale.

    (v3's alert stays active meanwhile: its rates still hold v3's last samples, range
    selectors ignore staleness, so it lasts until the rate window has drained.)
    """

    async def switched() -> bool:
        now_v2 = await stack.prometheus.query(
            stack.session, f'model_predictions_total{{model="{MODEL}", model_version="v2"}}'
        )
        now_v3 = await stack.prometheus.query(
            stack.session, f'model_predictions_total{{model="{MODEL}", model_version="v3"}}'
        )
        return bool(now_v2) and not now_v3

    await wait_for(switched, timeout=30, interval=0.2, what="Prometheus scraping v2, not v3")
    stack.timeline.mark("v2 scraped, v3 stale (Prometheus)")


async def assert_rolled_back(stack: Stack, item: dict[str, Any], trigger: str) -> None:
    assert (item["bad_version"], item["target_version"], item["strategy"]) == (
        "v3",
        "v2",
        "rollout-undo",
    )
    assert item["triggers"] == [trigger]
    times = item["times"]
    assert times["alert_started"] and times["received"] and times["switched"] and times["healthy"]
    assert times["received"] <= times["switched"] <= times["healthy"]
    assert stack.serving_version() == "v2"
    assert len(stack.template_changes()) == 1, stack.deployment_patches()
    assert stack.model.current_version() == "v2"


async def assert_confirmation(
    stack: Stack,
    item: dict[str, Any],
    alert: dict[str, Any],
    *,
    result: str,
    reason: str,
    restricted: list[str],
) -> dict[str, Any]:
    """The incident ended ``result``: its evidence, its timing and the query it ran.

    ``alert`` is the firing alert as Alertmanager delivered it; ``restricted`` the shipped
    names of the recording rules its expression reads per version.
    """
    detail = await stack.wait_confirmation(item["id"])
    stack.timeline.notes.append(f"incident {item['id']}: {detail['events'][-1]['message']}")
    evidence = detail["confirmation"]
    assert (detail["state"], evidence["result"], evidence["reason"]) == (result, result, reason), (
        detail
    )
    assert detail["reason"] == reason
    target = detail["target_version"]
    assert target == "v2"

    # When: the target served for the rule's range window plus its for:, both read from
    # this Prometheus (the loaded 10s and 5s; the shipped 5m + 5m would be 10 minutes).
    name = alert["labels"]["alertname"]
    window = stack.rules.ranges[300.0]
    pending = stack.rules.loaded_for(name, alert["labels"]["tier"])
    switched = parse_time(detail["times"]["switched"])
    due, evaluated = parse_time(evidence["due_at"]), parse_time(evidence["evaluated_at"])
    assert switched and due and evaluated
    assert abs((due - switched).total_seconds() - (window + pending)) < 0.001, (switched, due)
    assert due <= evaluated <= due + timedelta(seconds=5), (due, evaluated)
    stack.timeline.mark("confirmation due (receiver)", due)
    stack.timeline.mark(f"{result}: evaluated at (receiver)", evaluated)

    # What: the alert's own expression (its generatorURL's g0.expr) with the target's
    # version, and the model's labels, on each selector of a per-version series; nothing
    # else changed. The model-wide tier selector is left alone.
    expr = parse_qs(urlsplit(alert["generatorURL"]).query)["g0.expr"][0]
    query = evidence["query"]
    pins = f'{{namespace="{NS}", model="{MODEL}", model_version="{target}"}}'
    for shipped in restricted:
        assert f"{stack.rules.record(shipped)}{pins}" in query, (shipped, query)
    assert 'model_version="v3"' not in query
    assert 'namespace_model:model_tier:info{tier="critical"}' in query
    unrestricted = query.replace(pins, "")
    assert repr(promql_parser.parse(unrestricted)) == repr(promql_parser.parse(expr)), (
        query,
        expr,
    )

    # The evidence is what Prometheus answers for that query at that time, and the target
    # had data in every restricted series then (no empty answer mistaken for health).
    at = f"{evaluated.timestamp():.3f}"
    answer = await stack.prometheus.api(stack.session, "query", query=query, time=at)
    assert [s["metric"] for s in answer["result"]] == [v["labels"] for v in evidence["value"]]
    for shipped in restricted:
        selector = f"{stack.rules.record(shipped)}{pins}"
        data = await stack.prometheus.api(stack.session, "query", query=selector, time=at)
        assert data["result"], f"no data for {target}: {selector}"
        values = ", ".join(f"{float(s['value'][1]):.3g}" for s in data["result"])
        stack.timeline.notes.append(f"at evaluation: {selector} = {values}")
    kinds = [e["kind"] for e in detail["events"]]
    assert "confirmation_scheduled" in kinds and result in kinds, kinds
    if result == "confirmed":
        assert evidence["value"] == []
        assert detail["times"]["confirmed"]
        message = next(e["message"] for e in detail["events"] if e["kind"] == "confirmed")
        assert "data checks found series" in message, message
    else:
        assert evidence["value"], evidence
        assert all(v["labels"]["model_version"] == target for v in evidence["value"])
        assert "escalated" in kinds
        assert detail["times"]["confirmed"] is None
    assert (await stack.receiver_metric("receiver_confirmations_total", result=result)) == 1
    return detail


# --- 1. error rate ---------------------------------------------------------------------


async def test_error_rate_rolls_the_deployment_back_verifies_and_confirms(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    degraded = await stack.roll_out_bad_version(Behaviour(error_ratio=0.5))

    alert = await stack.wait_alert("ModelServingHighErrorRate")
    contract = {
        "alertname": "ModelServingHighErrorRate",
        "category": "operational",
        "trigger": "error_rate",
        "severity": "critical",
    }
    assert_label_contract(alert["labels"], **contract)

    item = await stack.wait_incident("verified")
    delivered = assert_delivered(stack, alert, degraded, **contract)
    await assert_rolled_back(stack, item, "error_rate")
    await wait_v2_scraped(stack)
    assert len(stack.template_changes()) == 1

    # v2 (healthy: no errors) serves for the alert's window plus its for:, then the
    # alert's own expression restricted to v2 finds no breach, and v2 has data and
    # enough traffic for the guard: confirmed.
    await assert_confirmation(
        stack,
        item,
        delivered[0][1],
        result="confirmed",
        reason="no_breach",
        restricted=[
            "namespace_model_version:model_prediction_errors_per_predictions:ratio_rate5m",
            "namespace_model_version:model_predictions:rate5m",
        ],
    )
    assert stack.serving_version() == "v2"
    assert len(stack.template_changes()) == 1


# --- 2. p99 latency --------------------------------------------------------------------


async def test_p99_latency_rolls_back_and_verifies_but_a_slow_target_is_unconfirmed(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    degraded = await stack.roll_out_bad_version(Behaviour(latency_seconds=1.5))
    # v2 will be as slow once it serves again (it is not serving now: nothing is counted).
    stack.model.behave("v2", Behaviour(latency_seconds=1.5))

    alert = await stack.wait_alert("ModelServingLatencyHigh")
    contract = {
        "alertname": "ModelServingLatencyHigh",
        "category": "operational",
        "trigger": "latency_p99",
        "severity": "critical",
    }
    assert_label_contract(alert["labels"], **contract)
    assert float(alert["value"]) > 0.5  # the p99 against the critical tier's 0.5s SLA

    item = await stack.wait_incident("verified")
    delivered = assert_delivered(stack, alert, degraded, **contract)
    await assert_rolled_back(stack, item, "latency_p99")
    await wait_v2_scraped(stack)
    assert len(stack.template_changes()) == 1

    # The health routes answer, but v2's p99 breaches the SLA too: the alert's own
    # expression restricted to v2 returns v2's series. Unconfirmed and escalated; a person
    # decides, nothing is rolled back further.
    await assert_confirmation(
        stack,
        item,
        delivered[0][1],
        result="unconfirmed",
        reason="breach",
        restricted=[
            "namespace_model_version:model_prediction_duration_seconds:p99_rate5m",
            "namespace_model_version:model_predictions:rate5m",
        ],
    )

    # v2's own alert fires too and is delivered: the receiver does not act on a version
    # its own rollback made current.
    async def v2_refused() -> dict[str, Any] | None:
        return next(
            (
                i
                for i in await stack.incidents()
                if i["bad_version"] == "v2" and i["state"] not in ("open", "acting")
            ),
            None,
        )

    other = await wait_for(v2_refused, timeout=30, interval=0.2, what="v2's alert decided")
    assert stack.tap.firing(alertname=contract["alertname"], model_version="v2")
    assert (other["state"], other["reason"]) == ("refused", "made_current_by_us"), other
    assert stack.serving_version() == "v2"
    assert len(stack.template_changes()) == 1


# --- 3. drift: notify only -------------------------------------------------------------


async def test_feature_drift_is_notified_and_the_deployment_is_left_alone(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    degraded = await stack.roll_out_bad_version(Behaviour(drift=True))

    alert = await stack.wait_alert("ModelServingFeatureDrift")
    contract = {
        "alertname": "ModelServingFeatureDrift",
        "category": "data_quality",
        "trigger": "feature_drift",
        "severity": "warning",
    }
    assert_label_contract(alert["labels"], **contract)
    assert float(alert["value"]) > 0.1  # KL in nats over the threshold

    item = await stack.wait_incident("notified")
    assert_delivered(stack, alert, degraded, **contract)
    assert item["bad_version"] == "v3" and item["triggers"] == ["feature_drift"]
    # data_quality_mode (notify by default) decided, with v2 recommended, not applied.
    assert (item["reason"], item["target_version"]) == ("mode_notify", "v2")
    detail = await stack.incident(item["id"])
    stack.timeline.notes.append(f"incident {item['id']}: {detail['events'][0]['message']}")
    assert "data_quality_mode is notify" in detail["events"][0]["message"]
    assert "switched" not in [e["kind"] for e in detail["events"]]
    # The worker read the Deployment and changed nothing.
    assert stack.deployment_patches() == []
    assert stack.serving_version() == "v3"
    assert stack.model.current_version() == "v3"
    # Still serving v3, still firing: nothing resolved it behind our back.
    assert [a["state"] for a in await stack.model_alerts("ModelServingFeatureDrift")] == ["firing"]


# --- 4. too little traffic: the guard holds --------------------------------------------


async def test_too_little_traffic_raises_no_alert(make_stack: MakeStack) -> None:
    stack = await make_stack(traffic_rate=0.2)  # below the critical tier's 0.5/s guard
    await stack.roll_out_bad_version(Behaviour(error_ratio=1.0))
    prom, session = stack.prometheus, stack.session

    # Every prediction of v3 fails: the error condition alone holds ...
    rules = stack.rules
    ratio = (
        rules.record("namespace_model_version:model_prediction_errors_per_predictions:ratio_rate5m")
        + '{model_version="v3"}'
    )
    guard = rules.record("namespace_model_version:model_predictions:rate5m")
    guard += '{model_version="v3"}'

    async def errors_recorded() -> bool:
        return bool(await prom.query(session, f"{ratio} > 0.05"))

    await wait_for(errors_recorded, timeout=60, interval=0.2, what="v3's error ratio recorded")
    window_start = stack.timeline.mark("error ratio > 5% recorded")

    # ... for an observation window of six times the loaded for: (5s), in which the
    # guard must keep the alert from ever becoming pending.
    for_seconds = stack.rules.loaded_for("ModelServingHighErrorRate", "critical")
    window = 6 * for_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    evaluations: set[str] = set()
    guard_values: list[float] = []
    while loop.time() < deadline:
        active = [a for a in await prom.alerts(session) if a["labels"].get("model") == MODEL]
        assert active == [], f"an alert became active despite the traffic guard: {active}"
        assert await prom.query(session, f"{ratio} > 0.05"), "error condition stopped holding"
        guard_values += [float(s["value"][1]) for s in await prom.query(session, guard)]
        for group in await prom.rule_groups(session):
            if group["name"] == "model-rollback.operational":
                evaluations.add(group["lastEvaluation"])
        await asyncio.sleep(0.5)
    stack.timeline.mark("observation window over", note=f"{window:.0f}s, no alert pending/firing")

    assert guard_values and max(guard_values) < 0.5, guard_values
    # The rule was really evaluated throughout (about every second), not stalled.
    assert len(evaluations) >= window / 2, sorted(evaluations)
    assert stack.tap.deliveries == []
    assert not any((await stack.receiver_alert_outcomes()).values())
    for am in stack.alertmanagers:
        assert [a for a in await am.alerts(session) if a["labels"].get("model") == MODEL] == []
    assert await stack.incidents() == []
    stack.timeline.notes.append(
        f"guard (predictions rate of v3) peaked at {max(guard_values):.3f}/s over {window:.0f}s"
    )

    # Control: the same failing version with enough traffic does alert and is rolled back,
    # so the silence above was the traffic guard's doing.
    stack.model.traffic_rate = 100.0
    stack.timeline.mark("traffic raised to 100/s")
    alert = await stack.wait_alert("ModelServingHighErrorRate")
    assert parse_time(alert["activeAt"]) > window_start
    item = await stack.wait_incident("verified")
    stack.mark_first_delivery(alertname="ModelServingHighErrorRate", model_version="v3")
    await assert_rolled_back(stack, item, "error_rate")


# --- 5. two Alertmanagers, not clustered -----------------------------------------------


async def test_two_unclustered_alertmanagers_both_deliver_and_one_rollback_happens(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(alertmanagers=2)
    degraded = await stack.roll_out_bad_version(Behaviour(error_ratio=0.5))

    alert = await stack.wait_alert("ModelServingHighErrorRate")
    contract = {
        "alertname": "ModelServingHighErrorRate",
        "category": "operational",
        "trigger": "error_rate",
        "severity": "critical",
    }
    item = await stack.wait_incident("verified")

    senders = {am.base_url for am in stack.alertmanagers}

    def both_delivered() -> bool:
        firing = stack.tap.firing(alertname=contract["alertname"], model_version="v3")
        return {d.sender.rstrip("/") for d, _ in firing} == senders

    await wait_for(both_delivered, timeout=30, interval=0.1, what="a delivery from each replica")
    delivered = assert_delivered(stack, alert, degraded, **contract)
    for d, _ in delivered:
        stack.timeline.mark(f"delivered by {d.sender.removeprefix('http://')}", d.at)

    # Each replica delivered the same alert (same fingerprint and startsAt): the receiver
    # accepted it once and answered the other delivery as a duplicate.
    keys = {(a["fingerprint"], a["startsAt"]) for _, a in delivered}
    assert len(keys) == 1, keys
    outcomes = Counter(
        entry["outcome"]
        for d, _ in delivered
        for entry in d.answer["alerts"]
        if entry.get("alertname") == contract["alertname"] and entry["status"] == "firing"
    )
    assert outcomes["accepted"] == 1 and outcomes["duplicate"] >= 1, outcomes
    for am in stack.alertmanagers:
        sent, failed = await am.webhook_notifications(stack.session)
        assert sent >= 1 and failed == 0, (am.base_url, sent, failed)

    await assert_rolled_back(stack, item, "error_rate")
    assert len(await stack.incidents()) == 1
    await wait_v2_scraped(stack)
    assert len(stack.template_changes()) == 1
