"""deploy/slack-app-manifest.yaml, held to Slack's app manifest schema and to the receiver.

The limits are those of Slack's published manifest schema, version 1
(slackapi/manifest-schema, ``schemas/manifest.schema.1.0.0.json``): unknown keys are
refused at every level checked here, ``display_information.name`` is 1-35 characters,
``description`` 1-140, ``bot_user.display_name`` 1-80, ``interactivity.is_enabled`` is
required, URLs start with http(s):// and hold at most 3500 characters. Slack takes one
manifest at a time: the file holds the HTTP one, then the Socket Mode one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.standins.slack import BOT_SCOPES, SCOPE_NEEDED

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "slack-app-manifest.yaml"

TOP_LEVEL = {
    "$schema",
    "_metadata",
    "app_directory",
    "display_information",
    "features",
    "oauth_config",
    "settings",
    "functions",
    "workflows",
    "datastores",
    "outgoing_domains",
    "types",
    "external_auth_providers",
}
METADATA = {"schema_version", "min_version", "major_version", "minor_version"}
DISPLAY = {"name", "description", "background_color", "long_description"}
FEATURES = {
    "app_home",
    "bot_user",
    "functions",
    "shortcuts",
    "slash_commands",
    "workflow_steps",
    "unfurl_domains",
    "assistant_view",
}
BOT_USER = {"display_name", "always_online"}
OAUTH = {"redirect_urls", "scopes", "token_management_enabled", "pkce_enabled"}
SCOPE_KINDS = {"user", "bot", "user_optional", "bot_optional"}
SETTINGS = {
    "allowed_ip_address_ranges",
    "event_subscriptions",
    "incoming_webhooks",
    "interactivity",
    "org_deploy_enabled",
    "socket_mode_enabled",
    "is_hosted",
    "token_rotation_enabled",
    "siws_links",
    "hermes_app_type",
    "function_runtime",
    "is_mcp_enabled",
}
INTERACTIVITY = {"is_enabled", "request_url", "message_menu_options_url"}
SETTINGS_BOOLEANS = ("org_deploy_enabled", "socket_mode_enabled", "token_rotation_enabled")
URL_RE = re.compile(r"^https?://")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$")
# design.md: Slack's interactivity reaches the receiver at POST /slack/actions.
ACTIONS_PATH = "/slack/actions"


def _documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]


def _keys_known(where: str, value: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(value) - allowed
    assert not unknown, f"{where}: Slack's manifest schema refuses unknown keys {sorted(unknown)}"


def _length(where: str, value: object, low: int, high: int) -> None:
    assert isinstance(value, str), f"{where} must be a string, is {value!r}"
    assert low <= len(value) <= high, f"{where} must be {low}-{high} characters, is {len(value)}"


def _check_schema(doc: dict[str, Any]) -> None:
    """The parts of Slack's v1 manifest schema this manifest uses, key by key."""
    _keys_known("manifest", doc, TOP_LEVEL)
    _keys_known("_metadata", doc.get("_metadata", {}), METADATA)
    assert doc.get("_metadata", {}).get("major_version", 1) == 1
    display = doc["display_information"]
    _keys_known("display_information", display, DISPLAY)
    _length("display_information.name", display["name"], 1, 35)
    if "description" in display:
        _length("display_information.description", display["description"], 1, 140)
    if "long_description" in display:
        _length("display_information.long_description", display["long_description"], 175, 4000)
    if "background_color" in display:
        assert COLOR_RE.fullmatch(display["background_color"]), display["background_color"]
    features = doc["features"]
    _keys_known("features", features, FEATURES)
    _keys_known("features.bot_user", features["bot_user"], BOT_USER)
    _length("features.bot_user.display_name", features["bot_user"]["display_name"], 1, 80)
    oauth = doc["oauth_config"]
    _keys_known("oauth_config", oauth, OAUTH)
    _keys_known("oauth_config.scopes", oauth["scopes"], SCOPE_KINDS)
    for kind, scopes in oauth["scopes"].items():
        assert isinstance(scopes, list) and all(isinstance(s, str) for s in scopes), kind
        assert len(scopes) == len(set(scopes)), f"oauth_config.scopes.{kind} repeats a scope"
    settings = doc["settings"]
    _keys_known("settings", settings, SETTINGS)
    for key in SETTINGS_BOOLEANS:
        assert isinstance(settings.get(key), bool), f"settings.{key} must be true or false"
    interactivity = settings["interactivity"]
    _keys_known("settings.interactivity", interactivity, INTERACTIVITY)
    assert isinstance(interactivity.get("is_enabled"), bool), "interactivity.is_enabled is required"
    for key in ("request_url", "message_menu_options_url"):
        if key in interactivity:
            url = interactivity[key]
            assert URL_RE.match(url) and len(url) <= 3500, f"interactivity.{key}: {url!r}"


def test_the_file_holds_one_http_manifest_then_one_socket_mode_manifest() -> None:
    docs = _documents()

    assert [d["settings"]["socket_mode_enabled"] for d in docs] == [False, True]


@pytest.mark.parametrize("index", [0, 1], ids=["http", "socket-mode"])
def test_each_manifest_satisfies_slacks_manifest_schema(index: int) -> None:
    _check_schema(_documents()[index])


@pytest.mark.parametrize("index", [0, 1], ids=["http", "socket-mode"])
def test_the_bot_asks_for_exactly_chat_write_and_usergroups_read(index: int) -> None:
    scopes = _documents()[index]["oauth_config"]["scopes"]

    assert set(scopes) == {"bot"}, "no user scopes: the receiver acts as its bot only"
    assert sorted(scopes["bot"]) == ["chat:write", "usergroups:read"]
    # The stand-in refuses a method whose scope the app lacks (missing_scope): it grants
    # what this manifest grants, and the methods it serves need no other scope.
    assert set(scopes["bot"]) == BOT_SCOPES == set(SCOPE_NEEDED.values())


@pytest.mark.parametrize("index", [0, 1], ids=["http", "socket-mode"])
def test_buttons_are_on_and_the_bot_token_does_not_rotate(index: int) -> None:
    settings = _documents()[index]["settings"]

    assert settings["interactivity"]["is_enabled"] is True
    assert settings["token_rotation_enabled"] is False, (
        "rotating tokens expire after 12 hours; the receiver holds one SLACK_BOT_TOKEN"
    )
    assert settings["org_deploy_enabled"] is False
    assert "event_subscriptions" not in settings, "the receiver subscribes to no events"


def test_the_http_manifest_sends_interactivity_to_the_receivers_actions_route() -> None:
    interactivity = _documents()[0]["settings"]["interactivity"]

    url = urlsplit(interactivity["request_url"])

    assert url.scheme == "https", "Slack needs an HTTPS request URL with a valid certificate"
    assert url.path == ACTIONS_PATH
    assert url.hostname == "rollback-receiver.example.com"


def test_the_socket_mode_manifest_has_no_request_url_and_names_the_app_token_scope() -> None:
    socket = _documents()[1]
    socket_text = MANIFEST.read_text().split("\n---\n", 1)[1]

    assert socket["settings"]["interactivity"] == {"is_enabled": True}
    assert "connections:write" in socket_text, "say which scope the app-level token needs"
    assert "SLACK_APP_TOKEN" in socket_text


def test_the_two_manifests_differ_only_in_how_slack_reaches_the_receiver() -> None:
    http, socket = _documents()

    def without_transport(doc: dict[str, Any]) -> dict[str, Any]:
        settings = dict(doc["settings"])
        settings.pop("socket_mode_enabled")
        settings["interactivity"] = {
            k: v for k, v in settings["interactivity"].items() if k != "request_url"
        }
        return {**doc, "settings": settings}

    assert without_transport(http) == without_transport(socket)
