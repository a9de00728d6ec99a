"""The buttons over HTTP (``POST /slack/actions``): each acts once through the control layer,
however often Slack delivers the press, and only for the people allowed."""

from __future__ import annotations

import json
import logging
import time

from receiver import annotations as ours
from tests.control.conftest import template_changes
from tests.slackactions.conftest import (
    ALICE,
    BOB,
    MALLORY,
    ONCALL,
    buttons,
    incident_in,
    last_action,
    wait_incident,
)
from tests.standins.slack import block_actions_payload, selected_option
from tests.worker.conftest import MODEL, NS, serving_version


def paused_annotation(world) -> dict | None:
    value = world.deployment()["metadata"].get("annotations", {}).get(ours.PAUSED)
    return json.loads(value) if value else None


async def test_roll_back_now_on_a_notify_recommendation_acts_once_despite_retries(
    make_desk, delivery
):
    desk = await make_desk(mode="notify")
    item = await incident_in(desk, delivery, "notified")
    message = await desk.message_with("rr_rollback_now")
    assert buttons(message) == ["rr_ack", "rr_rollback_now", "rr_pause"]
    assert template_changes(desk.world) == []

    await desk.press("rr_rollback_now", retries=2)
    detail = await wait_incident(desk.client, item["id"], lambda d: d["state"] == "verified")
    await desk.settle()
    assert detail["reason"] == "executed"
    assert f"slack:{ALICE}" in detail["actors"]
    assert serving_version(desk.world.kube) == "v2"
    assert len(template_changes(desk.world)) == 1, "one PATCH for three deliveries"

    message = await desk.message_with("rr_roll_forward")
    assert "rr_rollback_now" not in buttons(message)
    assert f"<@{ALICE}> rolled back" in last_action(message)


async def test_roll_forward_after_our_rollback(make_desk, delivery):
    desk = await make_desk()
    item = await incident_in(desk, delivery, "verified")
    await desk.press("rr_roll_forward", retries=1)
    await wait_incident(
        desk.client,
        item["id"],
        lambda d: (
            "forward_healthy" in [e["kind"] for e in d["events"]]
            or "roll_forward_healthy" in [e["kind"] for e in d["events"]]
        ),
        what="the roll forward verified",
    )
    assert serving_version(desk.world.kube) == "v3"
    accepted = desk.world.deployment()["metadata"]["annotations"][ours.ACCEPTED]
    assert f"slack:{ALICE}" in accepted
    # One rollback and one roll forward changed the template, whatever Slack retried.
    assert len(template_changes(desk.world)) == 2
    await desk.slack.wait_for(
        lambda: "rr_roll_forward" not in buttons(desk.incident_message()), timeout=10
    )
    assert f"<@{ALICE}> rolled forward" in last_action(desk.incident_message())


async def test_pause_then_resume_the_model_from_its_message(make_desk, delivery):
    desk = await make_desk(mode="notify")
    item = await incident_in(desk, delivery, "notified")
    assert paused_annotation(desk.world) is None

    await desk.press("rr_pause", retries=1)
    await desk.settle()
    pause = paused_annotation(desk.world)
    assert pause is not None and pause["actor"] == f"slack:{ALICE}"
    message = await desk.message_with("rr_resume")
    assert "rr_pause" not in buttons(message)
    assert f"<@{ALICE}> paused automation" in last_action(message)
    detail = await wait_incident(desk.client, item["id"], lambda d: True)
    assert [e["kind"] for e in detail["events"]].count("paused") == 1, "acted once"

    # Bob is not on the allow-list: his press changes nothing.
    await desk.press("rr_resume", BOB)
    await desk.settle()
    assert paused_annotation(desk.world) is not None


async def test_resume_by_an_allowed_user_lifts_the_pause(make_desk, delivery):
    desk = await make_desk(mode="notify", allowed=f"{ALICE},{BOB}")
    await incident_in(desk, delivery, "notified")
    await desk.press("rr_pause")
    await desk.settle()
    assert paused_annotation(desk.world) is not None
    await desk.press("rr_resume", BOB)
    await desk.settle()
    assert paused_annotation(desk.world) is None
    message = await desk.message_with("rr_pause")
    assert f"<@{BOB}> resumed automation" in last_action(message)


async def test_acknowledge_opens_a_modal_that_refuses_an_unknown_root_cause(make_desk, delivery):
    desk = await make_desk()
    item = await incident_in(desk, delivery, "verified")
    await desk.press("rr_ack", retries=1)
    await desk.settle()
    view = desk.slack.only_view()  # one modal for two deliveries
    assert view.callback_id == "rr_ack_modal"
    assert view.private_metadata == item["id"]
    select = view.view["blocks"][1]["element"]
    assert [o["value"] for o in select["options"]] == [
        "model_quality",
        "data_pipeline",
        "infrastructure",
        "dependency",
        "false_alarm",
        "drill",
        "other",
    ]

    wrong = desk.slack.submission_payload(
        view.id, {"rr_root_cause": {"rr_root_cause_select": selected_option("gremlins")}}
    )
    answer = await desk.send(wrong)
    assert answer.status == 200
    assert answer.json()["response_action"] == "errors"
    assert "model_quality" in answer.json()["errors"]["rr_root_cause"]
    await desk.settle()
    assert (await wait_incident(desk.client, item["id"], lambda d: True))["acknowledgement"] is None

    right = desk.slack.submission_payload(
        view.id,
        {
            "rr_root_cause": {"rr_root_cause_select": selected_option("data_pipeline")},
            "rr_note": {"rr_note_input": "late features from the batch job"},
        },
    )
    answer = await desk.send(right)
    assert (answer.status, answer.text) == (200, "")
    await desk.send(right, retry_num=1)
    detail = await wait_incident(
        desk.client, item["id"], lambda d: d["acknowledgement"] is not None
    )
    await desk.settle()
    ack = detail["acknowledgement"]
    assert (ack["actor"], ack["root_cause"], ack["note"]) == (
        f"slack:{ALICE}",
        "data_pipeline",
        "late features from the batch job",
    )
    assert [e["kind"] for e in detail["events"]].count("acknowledged") == 1
    assert detail["state"] == "verified", "an acknowledgement keeps the outcome"
    await desk.slack.wait_for(
        lambda: "acknowledged: root cause data pipeline" in last_action(desk.incident_message()),
        timeout=10,
    )
    assert f"<@{ALICE}>" in last_action(desk.incident_message())
    assert len(desk.slack.calls_to("chat.postMessage")) == 1, "updated in place"


async def test_a_bad_missing_or_stale_signature_is_401_and_nothing_happens(make_desk, delivery):
    desk = await make_desk(mode="notify")
    await incident_in(desk, delivery, "notified")
    message = await desk.message_with("rr_pause")
    payload = desk.slack.button_payload(message, "rr_pause", user_id=ALICE)

    bad = await desk.send(payload, signature="v0=" + "0" * 64)
    wrong_secret = await desk.send(payload, signing_secret="not-the-secret")
    unsigned = await desk.send(payload, signed=False)
    stale = await desk.send(payload, timestamp=int(time.time()) - 6 * 60)
    future = await desk.send(payload, timestamp=int(time.time()) + 6 * 60)
    for answer in (bad, wrong_secret, unsigned, stale, future):
        assert answer.status == 401, answer.text
        assert "signature" in answer.json()["error"]
    await desk.settle()
    assert paused_annotation(desk.world) is None
    assert desk.slack.responses == []


async def test_a_replayed_request_acts_once(make_desk, delivery):
    desk = await make_desk(mode="notify")
    item = await incident_in(desk, delivery, "notified")
    message = await desk.message_with("rr_pause")
    payload = desk.slack.button_payload(message, "rr_pause", user_id=ALICE)
    stamp = int(time.time())
    for _ in range(3):  # the very same signed request, captured and sent again
        assert (await desk.send(payload, timestamp=stamp)).status == 200
    await desk.settle()
    detail = await wait_incident(desk.client, item["id"], lambda d: True)
    assert [e["kind"] for e in detail["events"]].count("paused") == 1
    patches = [
        r
        for r in desk.world.kube.requests_to("PATCH", f"*/deployments/{MODEL}")
        if ours.PAUSED in json.dumps(r.body or {})
    ]
    assert len(patches) == 1


async def test_a_user_not_allowed_gets_an_ephemeral_refusal_that_is_audited(
    make_desk, delivery, caplog
):
    desk = await make_desk(mode="notify")
    await incident_in(desk, delivery, "notified")
    with caplog.at_level(logging.INFO, logger="receiver.audit"):
        await desk.press("rr_rollback_now", MALLORY)
        await desk.settle()
    assert template_changes(desk.world) == []
    assert len(desk.slack.ephemerals) == 1
    refusal = desk.slack.ephemerals[0]
    assert refusal.user == MALLORY and refusal.via == "response_url"
    assert "not allowed" in refusal.text and "RECEIVER_SLACK_ALLOWED_USERS" in refusal.text
    audits = [r for r in caplog.records if r.name == "receiver.audit"]
    assert [(r.actor, r.control, r.outcome) for r in audits] == [
        (f"slack:{MALLORY}", "rr_rollback_now", "refused")
    ]
    assert len(desk.slack.messages) == 1 and desk.incident_message().edits >= 0


async def test_an_unset_allow_list_allows_nobody(make_desk, delivery):
    desk = await make_desk(mode="notify", allowed="")
    await incident_in(desk, delivery, "notified")
    await desk.press("rr_pause")
    await desk.settle()
    assert paused_annotation(desk.world) is None
    assert "not allowed" in desk.slack.ephemerals[0].text


async def test_a_member_of_an_allowed_user_group_may_act(make_desk, delivery):
    desk = await make_desk(mode="notify", allowed=ONCALL)
    desk.slack.usergroups[ONCALL] = [BOB]
    await incident_in(desk, delivery, "notified")
    await desk.press("rr_pause", BOB)
    await desk.settle()
    assert paused_annotation(desk.world)["actor"] == f"slack:{BOB}"
    await desk.press("rr_resume", MALLORY)
    await desk.settle()
    assert paused_annotation(desk.world) is not None, "Mallory is not in the group"
    assert "not allowed" in desk.slack.ephemerals[-1].text
    # The group's members were read once and cached for both presses.
    assert len(desk.slack.calls_to("usergroups.users.list")) == 1


async def test_an_unknown_action_is_answered_and_does_nothing(make_desk, delivery):
    desk = await make_desk(mode="notify")
    item = await incident_in(desk, delivery, "notified")
    message = await desk.message_with("rr_pause")
    payload = block_actions_payload(
        ALICE,
        "rr_self_destruct",
        item["id"],
        message_ts=message.ts,
        channel=message.channel,
        response_url=desk.slack.response_url(
            channel=message.channel, message_ts=message.ts, user_id=ALICE
        ),
        trigger_id=desk.slack.new_trigger_id(ALICE),
    )
    assert (await desk.send(payload)).status == 200
    await desk.settle()
    assert "no action 'rr_self_destruct'" in desk.slack.ephemerals[0].text
    assert paused_annotation(desk.world) is None and template_changes(desk.world) == []


async def test_a_control_refusal_is_told_to_the_presser(make_desk, delivery):
    desk = await make_desk(mode="notify")
    item = await incident_in(desk, delivery, "notified")
    message = await desk.message_with("rr_pause")
    # A stale message could still show Roll forward; the control layer refuses it.
    payload = block_actions_payload(
        ALICE,
        "rr_roll_forward",
        item["id"],
        message_ts=message.ts,
        channel=message.channel,
        response_url=desk.slack.response_url(
            channel=message.channel, message_ts=message.ts, user_id=ALICE
        ),
        trigger_id=desk.slack.new_trigger_id(ALICE),
    )
    assert (await desk.send(payload)).status == 200
    await desk.settle()
    reply = desk.slack.ephemerals[0].text
    assert reply.startswith("Not done:") and "nothing to roll forward" in reply


async def test_malformed_payloads_are_400(make_desk, delivery):
    desk = await make_desk(mode="notify")
    item = await incident_in(desk, delivery, "notified")
    message = await desk.message_with("rr_pause")
    not_json = await desk.send("{not json")
    assert not_json.status == 400
    forged = desk.slack.button_payload(message, "rr_pause", user_id=ALICE)
    forged["actions"][0]["value"] = "inc-../../etc"
    assert (await desk.send(forged)).status == 400
    forged["actions"][0]["value"] = item["id"]
    forged["user"]["id"] = "alice; DROP"
    assert (await desk.send(forged)).status == 400
    await desk.settle()
    assert paused_annotation(desk.world) is None


async def test_without_a_signing_secret_the_route_is_403(make_desk, delivery):
    desk = await make_desk(mode="notify", http=False)
    resp = await desk.client.post("/slack/actions", data=b"payload=%7B%7D")
    assert resp.status == 403
    assert "SLACK_SIGNING_SECRET" in (await resp.json())["error"]
    # Without interactivity the messages carry no buttons.
    await incident_in(desk, delivery, "notified")
    await desk.slack.wait_for(lambda: len(desk.slack.messages) == 1, timeout=10)
    assert buttons(desk.slack.only_message()) == []
    assert NS  # the model the world runs


def test_the_allow_list_takes_slack_ids_only(make_settings):
    import pytest
    from pydantic import ValidationError

    settings = make_settings(slack_allowed_users=f" {ALICE}, {ONCALL} ,W0GRID0001")
    assert settings.slack_allowed_users == {ALICE, ONCALL, "W0GRID0001"}
    with pytest.raises(ValidationError, match=r"'alice@example\.com'.*user ids"):
        make_settings(slack_allowed_users=f"{ALICE},alice@example.com")
