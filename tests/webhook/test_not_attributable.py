"""An alert without namespace, model or model_version: 2xx, counted, posted once, no job."""

from __future__ import annotations

import json
from typing import Any

from receiver import keys
from tests.conftest import wait_for

WEBHOOK = "/webhook/alertmanager"
AUTH = {"Authorization": "Bearer test-token"}


def unattributable(delivery: Any, *, status: str = "firing", fingerprint: str = "") -> Any:
    payload = delivery("firing_single").payload
    alert = payload["alerts"][0]
    del alert["labels"]["model_version"]
    alert["status"] = status
    if fingerprint:
        alert["fingerprint"] = fingerprint
    return payload


async def slack_app(make_client: Any, slack: Any) -> Any:
    return await make_client(
        slack_bot_token=slack.token, slack_api_url=slack.base_url, slack_channel="#ml-oncall"
    )


async def post(client: Any, payload: Any) -> dict[str, Any]:
    resp = await client.post(WEBHOOK, json=payload, headers=AUTH)
    assert resp.status == 200
    return await resp.json()


async def test_posted_once_across_resends_and_replicas_and_never_queued(
    make_client, delivery, slack, recording_handler
):
    replica_a = await slack_app(make_client, slack)
    replica_b = await slack_app(make_client, slack)  # same Redis prefix: another replica
    payload = unattributable(delivery)
    for client in (replica_a, replica_b, replica_a, replica_b, replica_a):
        body = await post(client, payload)
        (alert,) = body["alerts"]
        assert alert["outcome"] == "not_attributable"
        assert "model_version" in alert["reason"]
    for client in (replica_a, replica_b):
        assert await client.app[keys.NOTIFIER].flush(10), "every notice handled"
    (notice,) = slack.calls_to("chat.postMessage")
    assert "not attributable" in notice.body["text"].lower()
    assert "model_version" in json.dumps(notice.body)
    assert notice.body["channel"] == "#ml-oncall"
    assert (await replica_a.app[keys.STORE].queue_stats()).depth == 0
    assert recording_handler.jobs == []
    counted = replica_a.app[keys.METRICS].registry.get_sample_value(
        "receiver_alerts_total", {"outcome": "not_attributable"}
    )
    assert counted == 3


async def test_each_cause_is_posted_once(make_client, delivery, slack):
    client = await slack_app(make_client, slack)
    await post(client, unattributable(delivery, fingerprint="aaaa000000000001"))
    await post(client, unattributable(delivery, fingerprint="aaaa000000000002"))
    await post(client, unattributable(delivery, fingerprint="aaaa000000000001"))
    await wait_for(lambda: len(slack.calls_to("chat.postMessage")) == 2, what="two notices")
    assert await client.app[keys.NOTIFIER].flush(10)
    assert len(slack.calls_to("chat.postMessage")) == 2


async def test_a_resolved_one_is_counted_but_not_posted(make_client, delivery, slack):
    client = await slack_app(make_client, slack)
    body = await post(client, unattributable(delivery, status="resolved"))
    assert body["alerts"][0]["outcome"] == "not_attributable"
    assert await client.app[keys.NOTIFIER].flush(10)
    assert slack.calls_to("chat.postMessage") == []
