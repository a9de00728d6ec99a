"""The same buttons over Socket Mode: envelopes acknowledged (with the modal's errors in the
acknowledgement), a redelivered envelope acting once, and the connection replaced when Slack
drops it."""

from __future__ import annotations

import json

from receiver import annotations as ours
from tests.slackactions.conftest import ALICE, incident_in, last_action, wait_incident
from tests.standins.slack import APP_TOKEN, selected_option


def paused_annotation(world) -> dict | None:
    value = world.deployment()["metadata"].get("annotations", {}).get(ours.PAUSED)
    return json.loads(value) if value else None


async def socket_desk(make_desk):
    desk = await make_desk(mode="notify", http=False, slack_app_token=APP_TOKEN)
    await desk.slack.wait_for(lambda: desk.slack.open_sockets == 1, timeout=10)
    return desk


async def test_pause_over_socket_mode_acts_once_for_a_redelivered_envelope(make_desk, delivery):
    desk = await socket_desk(make_desk)
    item = await incident_in(desk, delivery, "notified")
    payload = desk.slack.button_payload(
        await desk.message_with("rr_pause"), "rr_pause", user_id=ALICE
    )
    first = await desk.slack.push_interactive(payload)
    again = await desk.slack.push_interactive(payload)  # Slack delivers it once more
    assert await desk.slack.wait_for_ack(first) == {"envelope_id": first}
    assert await desk.slack.wait_for_ack(again) == {"envelope_id": again}
    await desk.settle()

    assert paused_annotation(desk.world)["actor"] == f"slack:{ALICE}"
    detail = await wait_incident(desk.client, item["id"], lambda d: True)
    assert [e["kind"] for e in detail["events"]].count("paused") == 1
    message = await desk.message_with("rr_resume")
    assert f"<@{ALICE}> paused automation" in last_action(message)
    # No HTTP door is needed: without a signing secret it stays shut.
    assert (await desk.client.post("/slack/actions", data=b"payload=%7B%7D")).status == 403


async def test_acknowledge_over_socket_mode(make_desk, delivery):
    desk = await socket_desk(make_desk)
    item = await incident_in(desk, delivery, "notified")
    press = desk.slack.button_payload(await desk.message_with("rr_ack"), "rr_ack", user_id=ALICE)
    await desk.slack.wait_for_ack(await desk.slack.push_interactive(press))
    await desk.settle()
    view = desk.slack.only_view()
    assert view.private_metadata == item["id"]

    wrong = desk.slack.submission_payload(
        view.id, {"rr_root_cause": {"rr_root_cause_select": selected_option("gremlins")}}
    )
    ack = await desk.slack.wait_for_ack(await desk.slack.push_interactive(wrong))
    assert ack["payload"]["response_action"] == "errors"
    assert "rr_root_cause" in ack["payload"]["errors"]

    right = desk.slack.submission_payload(
        view.id, {"rr_root_cause": {"rr_root_cause_select": selected_option("false_alarm")}}
    )
    ack = await desk.slack.wait_for_ack(await desk.slack.push_interactive(right))
    assert "payload" not in ack, "an empty acknowledgement closes the modal"
    detail = await wait_incident(
        desk.client, item["id"], lambda d: d["acknowledgement"] is not None
    )
    assert detail["acknowledgement"]["actor"] == f"slack:{ALICE}"
    assert detail["acknowledgement"]["root_cause"] == "false_alarm"
    await desk.slack.wait_for(
        lambda: "acknowledged: root cause false alarm" in last_action(desk.incident_message()),
        timeout=10,
    )


async def test_socket_mode_reconnects_after_slack_drops_the_connection(make_desk, delivery):
    desk = await socket_desk(make_desk)
    await incident_in(desk, delivery, "notified")
    await desk.slack.drop_socket(abrupt=True)
    await desk.slack.wait_for(
        lambda: desk.slack.socket_connections == 2 and desk.slack.open_sockets == 1, timeout=30
    )
    payload = desk.slack.button_payload(
        await desk.message_with("rr_pause"), "rr_pause", user_id=ALICE
    )
    await desk.slack.wait_for_ack(await desk.slack.push_interactive(payload))
    await desk.settle()
    assert paused_annotation(desk.world)["actor"] == f"slack:{ALICE}"
