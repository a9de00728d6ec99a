"""The Slack stand-in answers like Slack, so the notifier tests prove the wire contract."""

from __future__ import annotations

import json

import aiohttp

from tests.standins.slack import SlackStandIn, channel_id


async def test_form_encoded_post_with_token_in_the_body_is_accepted(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    form = {"token": slack.token, "channel": "#x", "text": "hi", "blocks": json.dumps(blocks)}

    async with session.post(slack.base_url + "chat.postMessage", data=form) as resp:
        answer = await resp.json()

    assert answer["ok"] is True
    assert answer["channel"] == channel_id("#x")
    assert slack.calls[0].body["blocks"] == blocks
    assert slack.message(answer["channel"], answer["ts"]).blocks == blocks


async def test_missing_and_wrong_tokens_are_refused_as_slack_does(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> None:
    url = slack.base_url + "chat.postMessage"
    body = {"channel": "#x", "text": "hi"}
    async with session.post(url, json=body) as resp:
        assert (resp.status, await resp.json()) == (200, {"ok": False, "error": "not_authed"})
    headers = {"Authorization": "Bearer xoxb-wrong"}
    async with session.post(url, json=body, headers=headers) as resp:
        assert (await resp.json())["error"] == "invalid_auth"
    assert slack.messages == {}


async def test_update_needs_an_existing_message_and_the_channel_id(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {slack.token}"}
    post = {"channel": "#x", "text": "v1"}
    async with session.post(slack.base_url + "chat.postMessage", json=post, headers=headers) as r:
        posted = await r.json()
    url = slack.base_url + "chat.update"

    async def update(channel: str, ts: str) -> dict[str, object]:
        body = {"channel": channel, "ts": ts, "text": "v2"}
        async with session.post(url, json=body, headers=headers) as resp:
            return await resp.json()

    assert (await update(posted["channel"], "1.000001"))["error"] == "message_not_found"
    assert (await update("#x", posted["ts"]))["error"] == "channel_not_found"
    assert (await update(posted["channel"], posted["ts"]))["ok"] is True
    assert slack.message(posted["channel"], posted["ts"]).text == "v2"
    async with session.post(slack.base_url + "chat.postMessage", json=post, headers=headers) as r:
        second = await r.json()
    assert float(second["ts"]) > float(posted["ts"]), "ts increase like Slack's"
    assert slack.counts == {"chat.postMessage": 2, "chat.update": 3}


async def test_knobs_answer_429_with_retry_after_then_500_then_errors(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {slack.token}"}
    url = slack.base_url + "chat.postMessage"
    body = {"channel": "#x", "text": "hi"}
    slack.rate_limit(1, retry_after=3)
    slack.server_error(1)
    slack.fail_with("channel_not_found")

    seen = []
    for _ in range(4):
        async with session.post(url, json=body, headers=headers) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After"), await resp.text()))

    assert seen[0][:2] == (429, "3")
    assert json.loads(seen[0][2]) == {"ok": False, "error": "ratelimited"}
    assert seen[1][0] == 500
    assert json.loads(seen[2][2]) == {"ok": False, "error": "channel_not_found"}
    assert json.loads(seen[3][2])["ok"] is True
