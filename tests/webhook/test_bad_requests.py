"""Requests that can never succeed get a 4xx with the reason; nothing is enqueued."""

from __future__ import annotations

import json
from typing import Any

import pytest

from receiver import keys

WEBHOOK = "/webhook/alertmanager"
AUTH = {"Authorization": "Bearer test-token", "Content-Type": "application/json"}


def body_of(delivery: Any, **changes: Any) -> bytes:
    payload = delivery("firing_single").payload
    payload.update(changes)
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("headers", "status", "needle"),
    [
        ({"Content-Type": "application/json"}, 401, "bearer token"),
        ({"Authorization": "Bearer wrong", "Content-Type": "application/json"}, 401, "bearer"),
        (
            {"Authorization": "Basic dGVzdC10b2tlbg==", "Content-Type": "application/json"},
            401,
            "bearer",
        ),
        ({"Authorization": "Bearer", "Content-Type": "application/json"}, 401, "bearer"),
        ({"Authorization": "Bearer test-token", "Content-Type": "text/plain"}, 415, "text/plain"),
    ],
)
async def test_unauthorised_or_wrong_type_is_refused(
    make_client, delivery, headers, status, needle
):
    client = await make_client()
    resp = await client.post(WEBHOOK, data=delivery("firing_single").body, headers=headers)
    assert resp.status == status
    assert needle in (await resp.json())["error"]
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.app[keys.STORE].queue_stats()).depth == 0


async def test_a_token_set_with_a_trailing_newline_still_matches(make_client, delivery):
    # A Secret made with `echo token | kubectl create secret ... --from-file` ends in "\n".
    client = await make_client(webhook_token="test-token\n")
    resp = await client.post(WEBHOOK, data=delivery("firing_single").body, headers=AUTH)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
    ],
)
async def test_malformed_json_is_400_with_the_reason(make_client, body, needle):
    client = await make_client()
    resp = await client.post(WEBHOOK, data=body, headers=AUTH)
    assert resp.status == 400
    assert needle in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        ("3", "unsupported payload version '3'"),
        ("5", "unsupported payload version '5'"),
        (4, 'the number 4: it must be the string "4"'),
        (None, 'no "version" field'),
    ],
)
async def test_wrong_payload_version_is_400_saying_what_to_send(
    make_client, delivery, version, needle
):
    client = await make_client()
    resp = await client.post(WEBHOOK, data=body_of(delivery, version=version), headers=AUTH)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert needle in error
    assert "speaks version 4" not in error


async def test_a_missing_version_is_named_as_missing(make_client, delivery):
    client = await make_client()
    payload = delivery("firing_single").payload
    del payload["version"]
    resp = await client.post(WEBHOOK, json=payload, headers=AUTH)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert 'no "version" field' in error and "None" not in error


@pytest.mark.parametrize("field", ["groupKey", "status", "receiver", "alerts"])
async def test_payload_missing_a_required_field_is_400_naming_it(make_client, delivery, field):
    client = await make_client()
    payload = delivery("firing_single").payload
    del payload[field]
    resp = await client.post(WEBHOOK, json=payload, headers={"Authorization": "Bearer test-token"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "not an Alertmanager v4 payload"
    assert any(p.startswith(field) for p in body["problems"])


async def test_body_over_the_limit_is_413_by_content_length(make_client, delivery):
    client = await make_client(max_body_bytes=512)
    resp = await client.post(WEBHOOK, data=delivery("firing_single").body, headers=AUTH)
    assert resp.status == 413
    assert "512 bytes" in (await resp.json())["error"]


async def test_chunked_body_over_the_limit_is_413(make_client, delivery):
    client = await make_client(max_body_bytes=512)
    data = delivery("firing_single").body

    async def chunks():
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    resp = await client.post(WEBHOOK, data=chunks(), headers=AUTH)
    assert resp.status == 413
    assert (await client.app[keys.STORE].queue_stats()).depth == 0


async def test_unknown_fields_are_ignored(make_client, delivery):
    client = await make_client()
    payload = delivery("firing_single").payload
    payload["notification_reason"] = "new_alert"
    payload["alerts"][0]["silencedBy"] = []
    resp = await client.post(WEBHOOK, json=payload, headers={"Authorization": "Bearer test-token"})
    assert resp.status == 200
    assert (await resp.json())["alerts"][0]["outcome"] == "accepted"


async def test_one_malformed_alert_does_not_fail_the_good_ones(
    make_client, delivery, recording_handler
):
    from tests.conftest import wait_for

    client = await make_client()
    payload = delivery("firing_group_two").payload
    payload["alerts"].insert(1, {"status": "burning", "labels": "nope"})
    resp = await client.post(WEBHOOK, json=payload, headers={"Authorization": "Bearer test-token"})
    assert resp.status == 200
    alerts = (await resp.json())["alerts"]
    assert [a["outcome"] for a in alerts] == ["accepted", "invalid", "accepted"]
    assert "status" in alerts[1]["reason"] and "labels" in alerts[1]["reason"]
    await wait_for(lambda: len(recording_handler.jobs) == 2, what="both good alerts to run")
    registry = client.app[keys.METRICS].registry
    assert registry.get_sample_value("receiver_alerts_total", {"outcome": "invalid"}) == 1


async def test_wrong_method_is_a_json_405_keeping_the_allow_header(make_client):
    client = await make_client()
    resp = await client.get(WEBHOOK)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert resp.content_type == "application/json"
    error = (await resp.json())["error"]
    assert "GET" in error and "allowed: POST" in error


@pytest.mark.parametrize("path", ["/nope", "/webhook/alertmanager/extra"])
async def test_an_unknown_path_is_a_json_404_naming_it(make_client, path):
    client = await make_client()
    resp = await client.post(path, data=b"{}", headers=AUTH)
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert path in (await resp.json())["error"]


async def test_aiohttp_body_limit_answers_a_json_413(make_settings, aiohttp_client):
    # A route reading the body through aiohttp itself hits client_max_size; the answer is
    # JSON like every other error. (The webhook checks the limit on its own, see above.)
    from aiohttp import web

    from receiver.app import create_app

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = create_app(make_settings(max_body_bytes=512), run_workers=False)
    app.router.add_post("/_echo", echo)
    client = await aiohttp_client(app)
    resp = await client.post("/_echo", data=b"x" * 2048)
    assert resp.status == 413
    assert resp.content_type == "application/json"
    assert "RECEIVER_MAX_BODY_BYTES" in (await resp.json())["error"]
