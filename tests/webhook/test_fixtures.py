"""Every captured Alertmanager delivery gives the outcome the design implies."""

from __future__ import annotations

from typing import Any

import pytest

from receiver import keys
from tests.conftest import ADMIN_TOKEN, wait_for

WEBHOOK = "/webhook/alertmanager"


async def post(client: Any, delivery: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(WEBHOOK, data=delivery.body, headers=delivery.headers)
    return resp.status, await resp.json()


def outcomes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["alertname"], a["outcome"]) for a in body["alerts"]]


async def test_single_firing_alert_is_accepted_and_its_job_runs(
    make_client, delivery, recording_handler
):
    client = await make_client()
    status, body = await post(client, delivery("firing_single"))
    assert status == 200
    assert outcomes(body) == [("ModelErrorRateHigh", "accepted")]
    await wait_for(lambda: recording_handler.jobs, what="the job to run")
    job, _ = recording_handler.jobs[0]
    assert (job.namespace, job.model, job.model_version, job.trigger) == (
        "ml-prod",
        "fraud-scorer",
        "v3",
        "error_rate",
    )
    assert job.received_at is not None and job.starts_at is not None


async def test_group_of_two_accepts_each_alert_on_its_own(make_client, delivery):
    client = await make_client()
    status, body = await post(client, delivery("firing_group_two"))
    assert status == 200
    assert outcomes(body) == [
        ("ModelErrorRateHigh", "accepted"),
        ("ModelLatencyP99High", "accepted"),
    ]


async def test_ha_pair_gives_one_accepted_and_one_duplicate(make_client, delivery):
    client = await make_client()
    _, a = await post(client, delivery("ha_replica_a"))
    _, b = await post(client, delivery("ha_replica_b"))
    assert outcomes(a) == [("ModelErrorRateHigh", "accepted")]
    assert outcomes(b) == [("ModelErrorRateHigh", "duplicate")]


async def test_mixed_delivery_accepts_firing_and_records_resolved(make_client, delivery):
    client = await make_client()
    _, body = await post(client, delivery("mixed_firing_resolved"))
    by_status = {a["status"]: a["outcome"] for a in body["alerts"]}
    assert by_status == {"firing": "accepted", "resolved": "recorded"}


async def test_resend_of_a_group_is_duplicate_for_alerts_already_seen(make_client, delivery):
    client = await make_client()
    await post(client, delivery("firing_group_two"))
    _, body = await post(client, delivery("mixed_firing_resolved"))
    by_status = {a["status"]: a["outcome"] for a in body["alerts"]}
    # error_rate is still the same firing alert; latency_p99 resolved is a new (status) key.
    assert by_status == {"firing": "duplicate", "resolved": "recorded"}


async def test_all_resolved_are_recorded(make_client, delivery):
    client = await make_client()
    _, body = await post(client, delivery("resolved_all"))
    assert [a["outcome"] for a in body["alerts"]] == ["recorded", "recorded"]


async def test_second_model_group_is_accepted_with_its_own_labels(
    make_client, delivery, recording_handler
):
    client = await make_client()
    _, body = await post(client, delivery("two_models"))
    assert outcomes(body) == [("ModelFeatureDrift", "accepted")]
    await wait_for(lambda: recording_handler.jobs, what="the drift job")
    job, _ = recording_handler.jobs[0]
    assert (job.model, job.category, job.trigger) == ("ranker", "data_quality", "feature_drift")


async def test_truncated_delivery_is_counted_as_lost_alerts(make_client, delivery):
    client = await make_client()
    status, body = await post(client, delivery("truncated"))
    assert status == 200
    assert body["truncated_alerts"] == 1
    assert outcomes(body) == [("ModelErrorRateHigh", "accepted")]
    metrics = client.app[keys.METRICS]
    assert metrics.registry.get_sample_value("receiver_truncated_alerts_total") == 1.0
    text = await (await client.get("/metrics")).text()
    assert "receiver_truncated_alerts_total 1.0" in text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("firing_single", {"accepted": 1}),
        ("firing_group_two", {"accepted": 2}),
        ("resolved_all", {"recorded": 2}),
        ("two_models", {"accepted": 1}),
    ],
)
async def test_outcomes_are_counted_in_metrics(make_client, delivery, name, expected):
    client = await make_client()
    await post(client, delivery(name))
    registry = client.app[keys.METRICS].registry
    for outcome, count in expected.items():
        assert registry.get_sample_value("receiver_alerts_total", {"outcome": outcome}) == count


async def test_alerts_without_the_remediation_label_are_ignored(make_client, delivery):
    client = await make_client()
    payload = delivery("firing_single").payload
    del payload["alerts"][0]["labels"]["remediation"]
    resp = await client.post(WEBHOOK, json=payload, headers={"Authorization": "Bearer test-token"})
    body = await resp.json()
    assert resp.status == 200
    assert body["alerts"][0]["outcome"] == "ignored"
    stats = await client.app[keys.STORE].queue_stats()
    assert stats.depth == 0


@pytest.mark.parametrize("label", ["namespace", "model", "model_version"])
async def test_alert_missing_a_contract_label_is_not_attributable_yet_2xx(
    make_client, delivery, label
):
    client = await make_client()
    payload = delivery("firing_single").payload
    del payload["alerts"][0]["labels"][label]
    resp = await client.post(WEBHOOK, json=payload, headers={"Authorization": "Bearer test-token"})
    body = await resp.json()
    assert resp.status == 200
    assert body["alerts"][0]["outcome"] == "not_attributable"
    assert label in body["alerts"][0]["reason"]
    registry = client.app[keys.METRICS].registry
    assert registry.get_sample_value("receiver_alerts_total", {"outcome": "not_attributable"}) == 1


async def test_metrics_and_probes_answer(make_client):
    client = await make_client()
    assert (await client.get("/healthz")).status == 200

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_for(ready, what="readyz 200")
    metrics = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert metrics.status == 200
    assert "receiver_ready" in await metrics.text()
