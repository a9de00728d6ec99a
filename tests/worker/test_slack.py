"""Slack through the whole app: one message per incident, updated in place as it progresses."""

from __future__ import annotations

import asyncio
import json

from receiver import keys
from receiver.app import NOTIFIER
from tests.conftest import wait_for
from tests.worker.test_rollback import deliver, wait_state


async def test_a_rollback_is_one_message_updated_until_it_reads_healthy(world, delivery, slack):
    client = await world.make_app(
        slack_bot_token=slack.token, slack_api_url=slack.base_url, slack_channel="#ml-oncall"
    )
    d = delivery("firing_single")
    await asyncio.gather(*(deliver(client, d) for _ in range(50)))
    item = await wait_state(client, "verified")
    await slack.wait_for(
        lambda: (
            len(slack.messages) == 1
            and slack.only_message().text.startswith("Rolled back, healthy")
        ),
        timeout=10,
    )
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert slack.calls_to("chat.postMessage")[0].body["channel"] == "#ml-oncall"
    message = slack.only_message()
    assert message.edits >= 1
    header, facts, timeline, links, context = message.blocks
    assert header["text"]["text"] == ":white_check_mark: Rolled back, healthy: fraud-scorer"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in facts["fields"]}
    assert fields == {
        "*Model*": "fraud-scorer",
        "*Namespace*": "ml-prod",
        "*Trigger*": "error_rate",
        "*Category*": "operational",
        "*Version*": "v3 → v2",
        "*Strategy*": "rollout-undo",
        "*State*": "verified: rollback",
    }
    for step in ("Alert started", "Received", "Acting", "Switched", "Healthy"):
        assert f"*{step}*" in timeline["text"]["text"]
    assert "|Alert expression>" in links["text"]["text"] and "|Runbook>" in links["text"]["text"]
    assert item["id"] in context["elements"][0]["text"]


async def test_an_alert_missing_labels_is_noticed_once_however_often_it_runs(
    world, delivery, slack
):
    client = await world.make_app(
        slack_bot_token=slack.token,
        slack_api_url=slack.base_url,
        slack_channel="#ml-oncall",
        dedup_ttl_seconds=0.1,
    )
    registry = client.app[keys.METRICS].registry
    payload = delivery("firing_single").payload
    del payload["alerts"][0]["labels"]["model_version"]

    def done() -> float:
        return registry.get_sample_value("receiver_jobs_total", {"result": "done"}) or 0

    async def three_jobs_ran() -> bool:
        resp = await client.post(
            "/webhook/alertmanager", json=payload, headers={"Authorization": "Bearer test-token"}
        )
        assert (await resp.json())["alerts"][0]["outcome"] == "not_attributable"
        return done() >= 3

    # The dedup key expires quickly, so the same alert runs as a job several times.
    await wait_for(three_jobs_ran, timeout=15, interval=0.15, what="three jobs of the alert")
    assert await client.app[NOTIFIER].flush(10), "every notice handled"
    (post,) = slack.calls_to("chat.postMessage")
    assert "not attributable" in post.body["text"].lower()
    assert "model_version" in json.dumps(post.body)
