"""The Slack stand-in's interactivity side answers as Slack does, driven by slack-sdk's clients.

Web API methods through ``AsyncWebClient``, response URLs through ``AsyncWebhookClient``,
Socket Mode through the asyncio ``SocketModeClient``; the signed deliveries are checked by
an endpoint that verifies them with slack-sdk's ``SignatureVerifier``, as the receiver does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.standins.slack import (
    APP_ID,
    SIGNING_SECRET,
    TEAM_ID,
    SlackStandIn,
    block_actions_payload,
    channel_id,
    new_trigger_id,
    selected_option,
    view_submission_payload,
)

ALICE = "U0ALICE001"
BOB = "U0BOB00002"
BUTTONS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*fraud-scorer* rolled back"}},
    {
        "type": "actions",
        "block_id": "rr_actions",
        "elements": [
            {
                "type": "button",
                "action_id": "rr_ack",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "value": "inc-0123456789ab",
            },
            {
                "type": "button",
                "action_id": "rr_roll_forward",
                "text": {"type": "plain_text", "text": "Roll forward"},
                "value": "inc-0123456789ab",
                "style": "danger",
                "confirm": {
                    "title": {"type": "plain_text", "text": "Roll forward?"},
                    "text": {"type": "plain_text", "text": "Serve 2.4.0 again."},
                    "confirm": {"type": "plain_text", "text": "Roll forward"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
        ],
    },
]
ACK_MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "rr_ack_modal",
    "private_metadata": "inc-0123456789ab",
    "title": {"type": "plain_text", "text": "Acknowledge"},
    "submit": {"type": "plain_text", "text": "Acknowledge"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "blocks": [
        {
            "type": "input",
            "block_id": "rr_cause",
            "label": {"type": "plain_text", "text": "Root cause"},
            "element": {
                "type": "static_select",
                "action_id": "rr_cause_select",
                "options": [
                    {"text": {"type": "plain_text", "text": "Bad deploy"}, "value": "deploy"},
                    {"text": {"type": "plain_text", "text": "Data drift"}, "value": "drift"},
                ],
            },
        },
        {
            "type": "input",
            "block_id": "rr_note",
            "optional": True,
            "label": {"type": "plain_text", "text": "Note"},
            "element": {"type": "plain_text_input", "action_id": "rr_note_text"},
        },
    ],
}


@pytest.fixture
def web_client(slack: SlackStandIn, session: aiohttp.ClientSession) -> AsyncWebClient:
    return AsyncWebClient(token=slack.token, base_url=slack.base_url, session=session)


async def api_error(call: Awaitable[Any]) -> dict[str, Any]:
    """The answer of a Web API call the SDK raised ``SlackApiError`` for."""
    with pytest.raises(SlackApiError) as raised:
        await call
    return dict(raised.value.response.data)


async def post_buttons(web_client: AsyncWebClient, channel: str = "#ml-oncall") -> Any:
    answer = await web_client.chat_postMessage(channel=channel, text="rolled back", blocks=BUTTONS)
    return answer


# ---------------------------------------------------------------- Web API methods


async def test_ephemeral_messages_go_to_one_member_of_the_channel(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    answer = await web_client.chat_postEphemeral(channel="#ml-oncall", user=ALICE, text="no")

    assert answer["ok"] is True
    assert answer["message_ts"]
    [ephemeral] = slack.ephemerals
    assert (ephemeral.channel, ephemeral.user, ephemeral.text) == (
        channel_id("#ml-oncall"),
        ALICE,
        "no",
    )
    assert ephemeral.via == "chat.postEphemeral"
    assert slack.messages == {}, "an ephemeral is not a message in the channel"

    slack.channel_members[channel_id("#ml-oncall")] = {ALICE}
    refused = await api_error(
        web_client.chat_postEphemeral(channel="#ml-oncall", user=BOB, text="x")
    )
    assert refused["error"] == "user_not_in_channel"
    # Through api_call: the SDK's chat_postEphemeral warns before sending a message without text.
    empty = {"channel": "#ml-oncall", "user": ALICE}
    no_text = await api_error(web_client.api_call("chat.postEphemeral", json=empty))
    assert no_text["error"] == "no_text"
    assert slack.counts["chat.postEphemeral"] == 3


async def test_usergroup_members_come_from_the_per_test_map_over_get(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    slack.usergroups = {"S0ONCALL01": [ALICE, BOB]}

    answer = await web_client.usergroups_users_list(usergroup="S0ONCALL01")

    assert answer["users"] == [ALICE, BOB]
    call = slack.calls_to("usergroups.users.list")[0]
    assert call.body == {"usergroup": "S0ONCALL01"}, "sent as a GET query, token in the header"
    unknown = await api_error(web_client.usergroups_users_list(usergroup="S0NOBODY01"))
    assert unknown["error"] == "no_such_subteam"


async def test_a_method_without_its_scope_is_refused_naming_the_scope(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    slack.scopes = {"chat:write"}

    refused = await api_error(web_client.usergroups_users_list(usergroup="S0ONCALL01"))

    assert refused == {
        "ok": False,
        "error": "missing_scope",
        "needed": "usergroups:read",
        "provided": "chat:write",
    }
    assert (await web_client.chat_postEphemeral(channel="#x", user=ALICE, text="t"))["ok"]


async def test_a_trigger_id_opens_one_modal_and_only_one(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    trigger = slack.new_trigger_id(ALICE)

    opened = await web_client.views_open(trigger_id=trigger, view=ACK_MODAL)

    view = opened["view"]
    assert view["id"].startswith("V")
    assert view["root_view_id"] == view["id"]
    assert view["callback_id"] == "rr_ack_modal"
    assert view["private_metadata"] == "inc-0123456789ab"
    assert (view["app_id"], view["team_id"]) == (APP_ID, TEAM_ID)
    stored = slack.only_view()
    assert (stored.id, stored.user, stored.hash) == (view["id"], ALICE, view["hash"])
    again = await api_error(web_client.views_open(trigger_id=trigger, view=ACK_MODAL))
    assert again["error"] == "exchanged_trigger_id"
    made_up = await api_error(web_client.views_open(trigger_id=new_trigger_id(), view=ACK_MODAL))
    assert made_up["error"] == "invalid_trigger_id"
    expired = slack.new_trigger_id(ALICE)
    slack.expire_trigger_id(expired)
    assert (await api_error(web_client.views_open(trigger_id=expired, view=ACK_MODAL)))[
        "error"
    ] == "expired_trigger_id"
    assert len(slack.views) == 1


async def test_a_trigger_older_than_the_ttl_of_an_injected_clock_is_expired(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    now = [1000.0]
    slack.clock = lambda: now[0]
    slack.trigger_ttl = 3.0
    fresh, stale = slack.new_trigger_id(ALICE), slack.new_trigger_id(BOB)
    now[0] += 2.5

    assert (await web_client.views_open(trigger_id=fresh, view=ACK_MODAL))["ok"]
    now[0] += 1.0
    refused = await api_error(web_client.views_open(trigger_id=stale, view=ACK_MODAL))
    assert refused["error"] == "expired_trigger_id"


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (
            {"title": {"type": "plain_text", "text": "A title far too long for Slack"}},
            "/view/title",
        ),
        ({"title": {"type": "mrkdwn", "text": "Ack"}}, "/view/title"),
        ({"submit": None}, "/view/submit"),
        ({"type": "message"}, "/view/type"),
        ({"private_metadata": "x" * 3001}, "/view/private_metadata"),
    ],
    ids=["title-over-24", "title-not-plain-text", "inputs-without-submit", "not-modal", "metadata"],
)
async def test_views_slack_would_refuse_are_refused_with_its_pointer(
    slack: SlackStandIn, web_client: AsyncWebClient, change: dict[str, Any], pointer: str
) -> None:
    view = {**ACK_MODAL, **change}
    if change.get("submit", "") is None:
        del view["submit"]
    trigger = slack.new_trigger_id(ALICE)

    refused = await api_error(web_client.views_open(trigger_id=trigger, view=view))

    assert refused["error"] == "invalid_arguments"
    assert any(pointer in m for m in refused["response_metadata"]["messages"]), refused
    assert slack.views == {}
    assert (await web_client.views_open(trigger_id=trigger, view=ACK_MODAL))["ok"], (
        "a refused view leaves the trigger unspent"
    )


async def test_views_update_replaces_the_modal_guarded_by_its_hash(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    opened = (await web_client.views_open(trigger_id=slack.new_trigger_id(ALICE), view=ACK_MODAL))[
        "view"
    ]
    done = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Acknowledged"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Thanks"}}],
    }

    updated = await web_client.views_update(view_id=opened["id"], hash=opened["hash"], view=done)

    assert updated["view"]["id"] == opened["id"]
    assert updated["view"]["hash"] != opened["hash"]
    assert slack.view(opened["id"]).view == done
    assert slack.view(opened["id"]).updates == 1
    stale = await api_error(
        web_client.views_update(view_id=opened["id"], hash=opened["hash"], view=done)
    )
    assert stale["error"] == "hash_conflict"
    missing = await api_error(web_client.views_update(view_id="V0NOSUCH01", view=done))
    assert missing["error"] == "not_found"


async def test_only_the_app_level_token_opens_socket_mode_urls(
    slack: SlackStandIn, session: aiohttp.ClientSession, web_client: AsyncWebClient
) -> None:
    app_client = AsyncWebClient(base_url=slack.base_url, session=session)

    opened = await app_client.apps_connections_open(app_token=slack.app_token)

    url = urlsplit(opened["url"])
    assert (url.scheme, url.hostname, url.path) == ("ws", "127.0.0.1", "/link/")
    assert parse_qs(url.query)["app_id"] == [APP_ID]
    call = slack.calls_to("apps.connections.open")[0]
    assert call.headers["Authorization"] == f"Bearer {slack.app_token}"
    bot = await api_error(app_client.apps_connections_open(app_token=slack.token))
    assert bot["error"] == "not_allowed_token_type"
    wrong = await api_error(app_client.apps_connections_open(app_token="xapp-1-wrong"))
    assert wrong["error"] == "invalid_auth"
    as_bot = AsyncWebClient(token=slack.app_token, base_url=slack.base_url, session=session)
    refused = await api_error(as_bot.chat_postMessage(channel="#x", text="hi"))
    assert refused["error"] == "not_allowed_token_type"
    slack.app_token_scopes = set()
    unscoped = await api_error(app_client.apps_connections_open(app_token=slack.app_token))
    assert (unscoped["error"], unscoped["needed"]) == ("missing_scope", "connections:write")


# ---------------------------------------------------------------- response URLs


async def test_an_ephemeral_reply_on_the_response_url_leaves_the_message_alone(
    slack: SlackStandIn, web_client: AsyncWebClient, session: aiohttp.ClientSession
) -> None:
    posted = await post_buttons(web_client)
    message = slack.only_message()
    url = slack.response_url(channel=posted["channel"], message_ts=posted["ts"], user_id=BOB)

    sent = await AsyncWebhookClient(url, session=session).send(
        text="You may not roll back fraud-scorer.",
        response_type="ephemeral",
        replace_original=False,
    )

    assert (sent.status_code, json.loads(sent.body)) == (200, {"ok": True})
    [response] = slack.responses
    assert response.url == url
    assert response.ephemeral and not response.replace_original
    assert response.text == "You may not roll back fraud-scorer."
    assert response.headers["Content-Type"].startswith("application/json")
    [ephemeral] = slack.ephemerals
    assert (ephemeral.user, ephemeral.channel, ephemeral.via) == (
        BOB,
        message.channel,
        "response_url",
    )
    assert message.edits == 0 and message.blocks == BUTTONS


async def test_replace_original_on_the_response_url_edits_the_message_in_place(
    slack: SlackStandIn, web_client: AsyncWebClient, session: aiohttp.ClientSession
) -> None:
    posted = await post_buttons(web_client)
    url = slack.response_url(channel=posted["channel"], message_ts=posted["ts"], user_id=ALICE)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "Acknowledged by Alice"}}]

    sent = await AsyncWebhookClient(url, session=session).send(
        text="Acknowledged by Alice", blocks=blocks, replace_original=True
    )

    assert sent.status_code == 200
    message = slack.only_message()
    assert (message.text, message.blocks, message.edits) == ("Acknowledged by Alice", blocks, 1)
    assert slack.ephemerals == []
    assert not slack.responses[0].ephemeral


async def test_a_response_url_takes_five_posts_and_refuses_what_slack_refuses(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> None:
    url = slack.response_url(channel=channel_id("#x"), user_id=ALICE)
    hook = AsyncWebhookClient(url, session=session)

    statuses = [(await hook.send(text=f"reply {n}")).status_code for n in range(5)]
    sixth = await hook.send(text="one too many")
    empty = await AsyncWebhookClient(slack.response_url(), session=session).send_dict(
        {"response_type": "ephemeral"}
    )
    async with session.post(slack.response_url(), data="payload=%7B%7D") as resp:
        form = (resp.status, await resp.json())
    expired_url = slack.response_url()
    slack.expire_response_url(expired_url)
    expired = await AsyncWebhookClient(expired_url, session=session).send(text="late")
    unknown = await AsyncWebhookClient(
        f"{slack.origin}/actions/{TEAM_ID}/1/nope", session=session
    ).send(text="?")

    assert statuses == [200] * 5
    assert (sixth.status_code, json.loads(sixth.body)["error"]) == (404, "used_url")
    assert (empty.status_code, json.loads(empty.body)["error"]) == (400, "no_text")
    assert form == (400, {"ok": False, "error": "invalid_payload"})
    assert (expired.status_code, json.loads(expired.body)["error"]) == (404, "expired_url")
    assert (unknown.status_code, json.loads(unknown.body)["error"]) == (404, "no_service")
    assert len(slack.ephemerals) == 5


# ---------------------------------------------------------------- signed deliveries


@dataclass
class AppEndpoint:
    """Stands for the receiver's POST /slack/actions: verifies like it, records what came."""

    url: str
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    verified: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def app_endpoint(
    aiohttp_server: Callable[..., Awaitable[Any]],
) -> AsyncIterator[AppEndpoint]:
    verifier = SignatureVerifier(SIGNING_SECRET)
    endpoint = AppEndpoint("")

    async def actions(request: web.Request) -> web.Response:
        raw = await request.read()
        endpoint.received.append((raw, dict(request.headers)))
        if not verifier.is_valid_request(raw, request.headers):
            return web.json_response({"error": "invalid signature"}, status=401)
        payload = json.loads(parse_qs(raw.decode())["payload"][0])
        endpoint.verified.append(payload)
        return web.json_response({"response_action": "clear"})

    app = web.Application()
    app.router.add_post("/slack/actions", actions)
    server = await aiohttp_server(app)
    endpoint.url = str(server.make_url("/slack/actions"))
    yield endpoint


async def test_a_button_press_is_delivered_signed_and_form_encoded_as_slack_does(
    slack: SlackStandIn, web_client: AsyncWebClient, app_endpoint: AppEndpoint
) -> None:
    await post_buttons(web_client)
    payload = slack.button_payload(slack.only_message(), "rr_ack", user_id=ALICE)

    delivery = await slack.send_action(app_endpoint.url, payload, signing_secret=SIGNING_SECRET)

    assert delivery.status == 200
    assert delivery.json() == {"response_action": "clear"}
    assert app_endpoint.verified == [payload], "slack-sdk's verifier accepts the signature"
    raw, headers = app_endpoint.received[0]
    assert raw.decode().startswith("payload=%7B")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert headers["User-Agent"].startswith("Slackbot 1.0")
    assert headers["X-Slack-Signature"].startswith("v0=")
    assert abs(int(headers["X-Slack-Request-Timestamp"]) - time.time()) < 300
    assert "X-Slack-Retry-Num" not in headers
    assert slack.deliveries == [delivery]


@pytest.mark.parametrize(
    "tamper",
    [
        {"signature": "v0=" + "0" * 64},
        {"timestamp": int(time.time()) - 6 * 60},
        {"signed": False},
        {"signing_secret": "not-the-app-secret"},
    ],
    ids=["bad-signature", "stale-timestamp", "unsigned", "other-secret"],
)
async def test_tampered_deliveries_fail_slack_sdk_verification(
    slack: SlackStandIn, app_endpoint: AppEndpoint, tamper: dict[str, Any]
) -> None:
    payload = block_actions_payload(
        ALICE,
        "rr_ack",
        "inc-0123456789ab",
        message_ts="1700000000.000200",
        channel=channel_id("#ml-oncall"),
        response_url=slack.response_url(),
        trigger_id=slack.new_trigger_id(ALICE),
    )
    kwargs: dict[str, Any] = {"signing_secret": SIGNING_SECRET, **tamper}

    delivery = await slack.send_action(app_endpoint.url, payload, **kwargs)

    assert delivery.status == 401
    assert app_endpoint.verified == []
    headers = app_endpoint.received[0][1]
    assert ("X-Slack-Signature" in headers) is tamper.get("signed", True)


async def test_a_redelivery_carries_slacks_retry_headers_and_a_fresh_signature(
    slack: SlackStandIn, app_endpoint: AppEndpoint
) -> None:
    payload = view_submission_payload(ALICE, "rr_ack_modal", "inc-1", {}, view_id="V0VIEW0001")
    then = int(time.time()) - 10

    first = await slack.send_action(
        app_endpoint.url, payload, signing_secret=SIGNING_SECRET, timestamp=then
    )
    again = await slack.send_action(
        app_endpoint.url, payload, signing_secret=SIGNING_SECRET, retry_num=1
    )

    assert (first.status, again.status) == (200, 200)
    headers = app_endpoint.received[1][1]
    assert (headers["X-Slack-Retry-Num"], headers["X-Slack-Retry-Reason"]) == ("1", "http_timeout")
    assert app_endpoint.received[0][1]["X-Slack-Request-Timestamp"] == str(then)
    assert first.headers["X-Slack-Signature"] != again.headers["X-Slack-Signature"]


# ---------------------------------------------------------------- payloads


async def test_a_button_payload_is_the_press_of_that_button_on_the_message_as_it_stands(
    slack: SlackStandIn, web_client: AsyncWebClient, session: aiohttp.ClientSession
) -> None:
    posted = await post_buttons(web_client)

    payload = slack.button_payload(slack.only_message(), "rr_roll_forward", user_id=BOB)

    assert payload["type"] == "block_actions"
    assert payload["user"] == {
        "id": BOB,
        "username": BOB.lower(),
        "name": BOB.lower(),
        "team_id": TEAM_ID,
    }
    assert (payload["api_app_id"], payload["team"]["id"]) == (APP_ID, TEAM_ID)
    assert payload["token"], "Slack still sends the legacy verification token"
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": posted["channel"],
        "is_ephemeral": False,
    }
    assert payload["channel"]["id"] == posted["channel"]
    assert (payload["message"]["ts"], payload["message"]["blocks"]) == (posted["ts"], BUTTONS)
    [action] = payload["actions"]
    assert {k: action[k] for k in ("action_id", "block_id", "value", "type", "style")} == {
        "action_id": "rr_roll_forward",
        "block_id": "rr_actions",
        "value": "inc-0123456789ab",
        "type": "button",
        "style": "danger",
    }
    assert action["text"]["text"] == "Roll forward"
    assert float(action["action_ts"]) > 0
    assert (await web_client.views_open(trigger_id=payload["trigger_id"], view=ACK_MODAL))["ok"]
    reply = await AsyncWebhookClient(payload["response_url"], session=session).send(text="ok")
    assert reply.status_code == 200 and slack.ephemerals[0].user == BOB
    with pytest.raises(AssertionError, match="rr_pause"):
        slack.button_payload(slack.only_message(), "rr_pause", user_id=BOB)


async def test_a_submission_payload_fills_the_opened_modal_as_slack_reports_it(
    slack: SlackStandIn, web_client: AsyncWebClient
) -> None:
    opened = (await web_client.views_open(trigger_id=slack.new_trigger_id(ALICE), view=ACK_MODAL))[
        "view"
    ]

    payload = slack.submission_payload(
        opened["id"], {"rr_cause": {"rr_cause_select": selected_option("deploy", "Bad deploy")}}
    )

    assert payload["type"] == "view_submission"
    assert payload["user"]["id"] == ALICE, "the user the modal was opened for"
    view = payload["view"]
    assert (view["id"], view["hash"], view["callback_id"], view["private_metadata"]) == (
        opened["id"],
        opened["hash"],
        "rr_ack_modal",
        "inc-0123456789ab",
    )
    assert view["state"]["values"] == {
        "rr_cause": {
            "rr_cause_select": {
                "type": "static_select",
                "selected_option": {
                    "text": {"type": "plain_text", "text": "Bad deploy", "emoji": True},
                    "value": "deploy",
                },
            }
        },
        "rr_note": {"rr_note_text": {"type": "plain_text_input", "value": None}},
    }
    assert view["blocks"] == ACK_MODAL["blocks"]
    assert payload["trigger_id"] and payload["response_urls"] == []
    with pytest.raises(AssertionError, match="rr_cause/rr_cause_select is empty"):
        slack.submission_payload(opened["id"], {"rr_note": {"rr_note_text": "why"}})
    with pytest.raises(AssertionError, match="is a static_select"):
        slack.submission_payload(opened["id"], {"rr_cause": {"rr_cause_select": "deploy"}})
    with pytest.raises(AssertionError, match="no input rr_root"):
        slack.submission_payload(opened["id"], {"rr_root": {"x": "y"}})


# ---------------------------------------------------------------- Socket Mode


@dataclass
class SocketApp:
    """slack-sdk's asyncio Socket Mode client, acking every request as an app must."""

    client: SocketModeClient
    requests: list[SocketModeRequest] = field(default_factory=list)
    ack_payload: dict[str, Any] | None = None


@pytest.fixture
async def socket_app(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> AsyncIterator[SocketApp]:
    # A short ping interval: the client notices a silently dropped connection after one.
    client = SocketModeClient(
        app_token=slack.app_token,
        web_client=AsyncWebClient(base_url=slack.base_url, session=session),
        ping_interval=0.2,
    )
    app = SocketApp(client)

    async def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        app.requests.append(request)
        payload = app.ack_payload if request.accepts_response_payload else None
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload))

    client.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    try:
        yield app
    finally:
        await client.close()


async def test_the_socket_mode_client_connects_gets_an_envelope_and_acks_it(
    slack: SlackStandIn, socket_app: SocketApp
) -> None:
    await socket_app.client.connect()
    payload = block_actions_payload(
        ALICE,
        "rr_ack",
        "inc-0123456789ab",
        message_ts="1700000000.000200",
        channel=channel_id("#ml-oncall"),
        response_url=slack.response_url(),
        trigger_id=slack.new_trigger_id(ALICE),
    )

    envelope_id = await slack.push_interactive(payload)

    assert await slack.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}
    [request] = socket_app.requests
    assert (request.type, request.envelope_id, request.payload) == (
        "interactive",
        envelope_id,
        payload,
    )
    assert request.accepts_response_payload is False
    assert slack.envelopes == [
        {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": "interactive",
            "accepts_response_payload": False,
        }
    ]
    assert (slack.socket_connections, slack.open_sockets) == (1, 1)
    assert slack.counts["apps.connections.open"] == 1


async def test_a_view_submission_envelope_accepts_a_response_payload_in_the_ack(
    slack: SlackStandIn, socket_app: SocketApp
) -> None:
    socket_app.ack_payload = {"response_action": "errors", "errors": {"rr_cause": "Pick one"}}
    await socket_app.client.connect()
    payload = view_submission_payload(ALICE, "rr_ack_modal", "inc-1", {}, view_id="V0VIEW0001")

    envelope_id = await slack.push_interactive(payload)

    ack = await slack.wait_for_ack(envelope_id)
    assert ack == {"envelope_id": envelope_id, "payload": socket_app.ack_payload}
    assert socket_app.requests[0].accepts_response_payload is True


@pytest.mark.parametrize("how", ["close", "abrupt", "disconnect-message"])
async def test_the_socket_mode_client_reconnects_with_a_new_url_after_a_drop(
    slack: SlackStandIn, socket_app: SocketApp, how: str
) -> None:
    await socket_app.client.connect()
    first = await slack.push_interactive({"type": "block_actions", "n": 1})
    await slack.wait_for_ack(first)

    if how == "disconnect-message":
        await slack.disconnect_socket("refresh_requested")
    else:
        await slack.drop_socket(abrupt=how == "abrupt")
    await slack.wait_for(lambda: slack.socket_connections == 2 and slack.open_sockets == 1)
    second = await slack.push_interactive({"type": "block_actions", "n": 2})

    await slack.wait_for_ack(second)
    assert [r.payload["n"] for r in socket_app.requests] == [1, 2]
    assert slack.counts["apps.connections.open"] == 2, "each connection takes a new ticket"
    assert slack.socket.refused_tickets == []
    first_conn, second_conn = slack.socket.connections
    assert first_conn.closed and not second_conn.closed
    assert first_conn.frames == [{"envelope_id": first}]
    assert second_conn.frames == [{"envelope_id": second}]


async def test_a_ticket_opens_one_connection_and_the_first_frame_is_hello(
    slack: SlackStandIn, session: aiohttp.ClientSession
) -> None:
    app_client = AsyncWebClient(base_url=slack.base_url, session=session)
    url = (await app_client.apps_connections_open(app_token=slack.app_token))["url"]

    async with session.ws_connect(url) as ws:
        hello = await ws.receive_json()
        with pytest.raises(aiohttp.WSServerHandshakeError) as again:
            await session.ws_connect(url)

    assert again.value.status == 401
    assert hello["type"] == "hello"
    assert hello["num_connections"] == 1
    assert hello["connection_info"] == {"app_id": APP_ID}
    assert set(hello["debug_info"]) == {"host", "build_number", "approximate_connection_time"}
    assert len(slack.socket.refused_tickets) == 1
