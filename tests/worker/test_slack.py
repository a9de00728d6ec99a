"""Slack through the whole app: one message per incident, updated in place as it progresses."""

from __future__ import annotations

import asyncio

from tests.worker.conftest import deliver, wait_state


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
