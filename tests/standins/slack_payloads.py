"""Interaction payloads as Slack sends them, and the signing of their HTTP delivery.

Field names and nesting follow Slack's ``block_actions`` and ``view_submission`` payloads
(docs.slack.dev "Interaction payloads"; the payloads in slack-bolt's own tests): ``type``,
``user{id,username,name,team_id}``, ``api_app_id``, ``token`` (the legacy verification
token), ``container``, ``trigger_id``, ``team{id,domain}``, ``channel{id,name}``,
``message{...,ts}``, ``state``, ``response_url``, ``actions[...]``; for a submission
``view{id, callback_id, private_metadata, state.values{block_id{action_id{...}}}, hash}``.

Pure functions, no I/O: the stand-in (``tests.standins.slack``) uses them to deliver over
HTTP or Socket Mode, and tests may build odd payloads with them directly.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0STANDIN1"
TEAM_DOMAIN = "standin-workspace"
APP_ID = "A0STANDIN01"
BOT_ID = "B0STANDIN01"
BOT_USER_ID = "U0STANDBOT1"
# Slack still puts the legacy verification token in every payload; it proves nothing
# (the signature does), so apps must not rely on it.
VERIFICATION_TOKEN = "standinVerificationTok1"
SIGNING_SECRET = "standin-signing-secret-0123456789abcdef"
# What Slack's own HTTP client announces itself as on interactivity requests.
SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"


def new_trigger_id() -> str:
    """A trigger id in Slack's format (``12345.98765.abcd2358fdea``), not registered anywhere."""
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"


def action_ts(now: float | None = None) -> str:
    """A Slack timestamp string (seconds, six decimals) for ``now`` (wall clock by default)."""
    return f"{time.time() if now is None else now:.6f}"


def _user(user_id: str, team_id: str, username: str | None) -> dict[str, Any]:
    name = username or user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": team_id}


def block_actions_payload(
    user_id: str,
    action_id: str,
    value: str | None,
    *,
    message_ts: str,
    channel: str,
    response_url: str,
    trigger_id: str,
    team_id: str = TEAM_ID,
    block_id: str = "rr_actions",
    button_text: str = "Button",
    style: str | None = None,
    channel_name: str = "ml-oncall",
    username: str | None = None,
    message_text: str = "",
    message_blocks: Sequence[Mapping[str, Any]] = (),
    at: float | None = None,
) -> dict[str, Any]:
    """The payload of one button press on a message the app posted in ``channel``.

    ``value`` is the button's ``value`` (Slack omits the key when the button has none);
    ``message_text``/``message_blocks`` are the message as it stood when pressed.
    """
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": {"type": "plain_text", "text": button_text, "emoji": True},
        "type": "button",
        "action_ts": action_ts(at),
    }
    if value is not None:
        action["value"] = value
    if style is not None:
        action["style"] = style
    return {
        "type": "block_actions",
        "user": _user(user_id, team_id, username),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": channel_name},
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "text": message_text,
            "ts": message_ts,
            "bot_id": BOT_ID,
            "user": BOT_USER_ID,
            "app_id": APP_ID,
            "team": team_id,
            "blocks": [dict(b) for b in message_blocks],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def selected_option(value: str, text: str | None = None) -> dict[str, Any]:
    """A ``static_select`` input's state as Slack reports it in ``view.state.values``."""
    return {
        "type": "static_select",
        "selected_option": {
            "text": {"type": "plain_text", "text": text or value, "emoji": True},
            "value": value,
        },
    }


def _input_state(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    # A plain string is a plain_text_input; an empty optional input reports value null.
    if value is None or isinstance(value, str):
        return {"type": "plain_text_input", "value": value}
    return dict(value)


def view_submission_payload(
    user_id: str,
    callback_id: str,
    private_metadata: str,
    values: Mapping[str, Mapping[str, str | Mapping[str, Any] | None]],
    *,
    view_id: str,
    team_id: str = TEAM_ID,
    trigger_id: str | None = None,
    view_hash: str | None = None,
    blocks: Sequence[Mapping[str, Any]] = (),
    title: str = "Acknowledge",
    submit: str | None = "Submit",
    close: str | None = "Cancel",
    external_id: str = "",
    username: str | None = None,
) -> dict[str, Any]:
    """The payload of a modal submitted by ``user_id``.

    ``values`` maps ``block_id`` -> ``action_id`` -> the input's value: a string for a
    ``plain_text_input``, ``None`` for an empty one, or a full state object such as
    ``selected_option("deploy")`` for a select.
    """
    state = {
        block: {action: _input_state(v) for action, v in actions.items()}
        for block, actions in values.items()
    }

    def text(t: str | None) -> dict[str, Any] | None:
        return None if t is None else {"type": "plain_text", "text": t, "emoji": True}

    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "user": _user(user_id, team_id, username),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or new_trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": [dict(b) for b in blocks],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": state},
            "hash": view_hash or f"{int(time.time())}.{secrets.token_hex(4)}",
            "title": text(title),
            "clear_on_close": False,
            "notify_on_close": False,
            "close": text(close),
            "submit": text(submit),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "external_id": external_id,
            "app_installed_team_id": team_id,
            "bot_id": BOT_ID,
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def form_body(payload: Mapping[str, Any] | str) -> str:
    """The request body Slack POSTs: ``payload=<url-encoded JSON>``; a str is sent as is."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return urlencode({"payload": text})


def signature(signing_secret: str, timestamp: str, body: str) -> str:
    """``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``, exactly as Slack signs."""
    signed = SignatureVerifier(signing_secret).generate_signature(timestamp=timestamp, body=body)
    assert signed is not None  # only None without a timestamp
    return signed
