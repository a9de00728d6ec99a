"""Block Kit rendering: what on-call people read, field by field, escaped and within limits."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from receiver.models import IncidentState, IncidentTimes
from receiver.notify import (
    FIELD_MAX_CHARS,
    HEADER_MAX_CHARS,
    SECTION_TEXT_MAX_CHARS,
    actions_block,
    clip,
    format_offset,
    last_action_line,
    render_incident,
    render_notice,
    valid_channel,
)
from tests.slack.conftest import T0, make_incident


def verified_incident() -> Any:
    times = IncidentTimes(
        alert_started=T0 - timedelta(minutes=10),
        received=T0,
        acting=T0 + timedelta(seconds=0.18),
        switched=T0 + timedelta(seconds=0.42),
        healthy=T0 + timedelta(seconds=62),
    )
    return make_incident(
        state=IncidentState.VERIFIED,
        target_version="2.3.1",
        times=times,
        updated_at=T0 + timedelta(seconds=62),
    )


def by_id(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in blocks}


def texts(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (kind, text) of the blocks, kind naming the Slack limit that applies."""
    out: list[tuple[str, str]] = []
    for block in blocks:
        if block["type"] == "header":
            out.append(("header", block["text"]["text"]))
        elif block["type"] == "section":
            if "text" in block:
                out.append(("section", block["text"]["text"]))
            out.extend(("field", f["text"]) for f in block.get("fields", []))
        elif block["type"] == "context":
            out.extend(("section", e["text"]) for e in block["elements"])
    return out


def test_verified_incident_reads_field_by_field() -> None:
    text, blocks = render_incident(verified_incident())

    assert text == (
        "Rolled back, healthy: fraud-scorer in ml-prod, version 2.4.0 → 2.3.1, "
        "strategy rollout-undo. Trigger: error_rate (operational). Incident inc-0123456789ab."
    )
    assert [b["block_id"] for b in blocks] == ["header", "facts", "timeline", "links", "context"]
    blocks_by_id = by_id(blocks)
    assert blocks_by_id["header"] == {
        "type": "header",
        "block_id": "header",
        "text": {
            "type": "plain_text",
            "text": ":white_check_mark: Rolled back, healthy: fraud-scorer",
            "emoji": True,
        },
    }
    assert blocks_by_id["facts"]["type"] == "section"
    assert blocks_by_id["facts"]["fields"] == [
        {"type": "mrkdwn", "text": "*Model*\nfraud-scorer"},
        {"type": "mrkdwn", "text": "*Namespace*\nml-prod"},
        {"type": "mrkdwn", "text": "*Trigger*\nerror_rate"},
        {"type": "mrkdwn", "text": "*Category*\noperational"},
        {"type": "mrkdwn", "text": "*Version*\n2.4.0 → 2.3.1"},
        {"type": "mrkdwn", "text": "*Strategy*\nrollout-undo"},
        {"type": "mrkdwn", "text": "*State*\nverified"},
    ]
    assert blocks_by_id["timeline"]["text"] == {
        "type": "mrkdwn",
        "text": "*Timeline*\n"
        "• *Alert started*  2024-05-01 11:50:00 UTC  (-10m00s)\n"
        "• *Received*  12:00:00 UTC\n"
        "• *Acting*  12:00:00 UTC  (+0.18s)\n"
        "• *Switched*  12:00:00 UTC  (+0.42s)\n"
        "• *Healthy*  12:01:02 UTC  (+1m02s)",
    }
    assert blocks_by_id["links"]["text"] == {
        "type": "mrkdwn",
        "text": "<http://prometheus:9090/graph?g0.expr=errors%3E0.05&amp;g0.tab=1|Alert expression>"
        "  ·  <https://runbooks.example.internal/model-serving/modelservinghigherrorrate|Runbook>",
    }
    assert blocks_by_id["context"] == {
        "type": "context",
        "block_id": "context",
        "elements": [
            {
                "type": "mrkdwn",
                "text": "Incident `inc-0123456789ab`  ·  updated 2024-05-01 12:01:02 UTC",
            }
        ],
    }
    assert not [b for b in blocks if b["type"] == "actions"], "no buttons without interactivity"


def test_refused_incident_shows_the_reason_and_no_target() -> None:
    incident = make_incident(
        state=IncidentState.REFUSED,
        reason="Deployment ml-prod/fraud-scorer is paused by a human (spec.paused)",
        triggers=["error_rate", "latency_p99"],
    )

    text, blocks = render_incident(incident)

    assert text == (
        "Rollback refused: fraud-scorer in ml-prod, version 2.4.0 → no target, "
        "strategy rollout-undo. Trigger: error_rate, latency_p99 (operational). "
        "Reason: Deployment ml-prod/fraud-scorer is paused by a human (spec.paused). "
        "Incident inc-0123456789ab."
    )
    blocks_by_id = by_id(blocks)
    assert blocks_by_id["header"]["text"]["text"] == ":no_entry: Rollback refused: fraud-scorer"
    fields = [f["text"] for f in blocks_by_id["facts"]["fields"]]
    assert "*Triggers*\nerror_rate, latency_p99" in fields
    assert "*Version*\n2.4.0 → no target" in fields
    assert fields[-1] == (
        "*State*\nrefused: Deployment ml-prod/fraud-scorer is paused by a human (spec.paused)"
    )
    assert blocks_by_id["timeline"]["text"]["text"] == (
        "*Timeline*\n• *Alert started*  2024-05-01 11:50:00 UTC  (-10m00s)\n"
        "• *Received*  12:00:00 UTC"
    )


@pytest.mark.parametrize(
    ("state", "extra", "header"),
    [
        (IncidentState.OPEN, {}, ":rotating_light: Degraded model: fraud-scorer"),
        (IncidentState.ACTING, {}, ":hourglass_flowing_sand: Rolling back: fraud-scorer"),
        (
            IncidentState.ACTING,
            {"switched": T0 + timedelta(seconds=1)},
            ":arrows_counterclockwise: Switched, verifying: fraud-scorer",
        ),
        (
            IncidentState.VERIFICATION_FAILED,
            {},
            ":x: Rolled back, verification failed: fraud-scorer",
        ),
        (IncidentState.NOTIFIED, {}, ":bell: Not rolled back (notify only): fraud-scorer"),
    ],
)
def test_header_names_the_state_in_words(
    state: IncidentState, extra: dict[str, Any], header: str
) -> None:
    times = IncidentTimes(received=T0, **extra)
    _, blocks = render_incident(make_incident(state=state, times=times))
    assert blocks[0]["text"]["text"] == header


def test_user_provided_strings_are_escaped() -> None:
    incident = make_incident(
        model="a<b>&c",
        namespace="ns&1",
        bad_version="<!channel>",
        triggers=["t<1>"],
        category="x>y",
        reason="ask <@U0123456> & friends",
        strategy="<script>",
        generator_url="http://prom/graph?g0.expr=a|b>c&x=<y>",
        runbook_url="javascript:alert(1)",
    )

    text, blocks = render_incident(incident)

    assert "a&lt;b&gt;&amp;c" in text
    assert "&lt;!channel&gt;" in text
    assert "ask &lt;@U0123456&gt; &amp; friends" in text
    for kind, value in texts(blocks):
        if value.startswith("<http"):
            continue  # the links line, checked below
        unescaped = re.sub(r"&(amp|lt|gt);", "", value)
        assert "<" not in unescaped and ">" not in unescaped, (kind, value)
        assert "&" not in unescaped, (kind, value)
    fields = [f["text"] for f in by_id(blocks)["facts"]["fields"]]
    assert fields[0] == "*Model*\na&lt;b&gt;&amp;c"
    assert fields[4] == "*Version*\n&lt;!channel&gt; → no target"
    # The URL keeps working and cannot close the link early; a non-http URL is not linked.
    assert by_id(blocks)["links"]["text"]["text"] == (
        "<http://prom/graph?g0.expr=a%7Cb%3Ec&amp;x=%3Cy%3E|Alert expression>"
    )


def test_texts_stay_within_slack_limits_and_cut_no_entity_in_half() -> None:
    incident = make_incident(
        model="m" * 300,
        reason="&" * 10_000,
        triggers=[f"trigger_{i}" for i in range(500)],
        category="<" * 3000,
        generator_url="http://prom/graph?g0.expr=" + "x" * 5000,
    )

    text, blocks = render_incident(incident)

    limits = {
        "header": HEADER_MAX_CHARS,
        "section": SECTION_TEXT_MAX_CHARS,
        "field": FIELD_MAX_CHARS,
    }
    for kind, value in texts(blocks):
        assert len(value) <= limits[kind], (kind, len(value))
        if value.endswith("…"):
            tail = value[:-1]
            assert not re.search(r"&[a-z]*$", tail), f"entity cut in half: {tail[-8:]!r}"
    assert len(text) <= SECTION_TEXT_MAX_CHARS
    assert text.endswith("…")
    # A URL too long to link is left out, not cut: a cut URL is a wrong URL.
    assert by_id(blocks)["links"]["text"]["text"] == (
        "<https://runbooks.example.internal/model-serving/modelservinghigherrorrate|Runbook>"
    )
    assert by_id(blocks)["context"]["elements"][0]["text"].startswith("Incident `inc-")


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abcdef", 10, "abcdef"),
        ("abcdef", 4, "abc…"),
        ("ab&amp;cd", 5, "ab…"),
        ("ab&amp;cd", 8, "ab&amp;…"),
    ],
)
def test_clip_never_leaves_half_an_entity(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.18, "+0.18s"),
        (12.5, "+12.50s"),
        (62, "+1m02s"),
        (3723, "+1h02m03s"),
        (-130, "-2m10s"),
        (2 * 86400 + 3 * 3600 + 4 * 60, "+2d03h04m"),
    ],
)
def test_durations_since_received_are_compact(seconds: float, expected: str) -> None:
    assert format_offset(seconds) == expected


def test_notice_lists_its_lines_escaped() -> None:
    text, blocks = render_notice(
        "Alert not attributable: no action",
        ["ModelServingHighErrorRate from ml-prod", "missing labels: model_version <none>"],
    )

    assert text == (
        "Alert not attributable: no action: ModelServingHighErrorRate from ml-prod; "
        "missing labels: model_version &lt;none&gt;."
    )
    assert blocks == [
        {
            "type": "header",
            "block_id": "header",
            "text": {
                "type": "plain_text",
                "text": ":warning: Alert not attributable: no action",
                "emoji": True,
            },
        },
        {
            "type": "section",
            "block_id": "details",
            "text": {
                "type": "mrkdwn",
                "text": "ModelServingHighErrorRate from ml-prod\n"
                "missing labels: model_version &lt;none&gt;",
            },
        },
    ]


@pytest.mark.parametrize(
    ("channel", "ok"),
    [
        ("#fraud-oncall", True),
        ("C0123ABCDEF", True),
        ("@alice", True),
        ("general", True),
        ("", False),
        (None, False),
        ("#two words", False),
        ("#x" * 60, False),
        ("<!channel>", False),
    ],
)
def test_channels_are_checked_before_use(channel: str | None, ok: bool) -> None:
    assert valid_channel(channel) is ok


# ---------------------------------------------------------------------------------------
# Buttons (Slack interactivity)


def _event(kind: str, actor: str = "receiver", at_seconds: float = 1, message: str = "") -> Any:
    from receiver.models import IncidentEvent

    return IncidentEvent(
        at=T0 + timedelta(seconds=at_seconds), kind=kind, message=message or kind, actor=actor
    )


def _buttons(incident: Any) -> list[str]:
    block = actions_block(incident)
    assert block is not None and block["block_id"] == "incident_actions"
    return [e["action_id"] for e in block["elements"]]


@pytest.mark.parametrize(
    ("state", "target", "events", "kind", "expected"),
    [
        (IncidentState.OPEN, None, [], "alert", ["rr_ack", "rr_pause"]),
        (
            IncidentState.NOTIFIED,
            "2.3.1",
            [],
            "alert",
            ["rr_ack", "rr_rollback_now", "rr_pause"],
        ),
        (IncidentState.NOTIFIED, None, [], "alert", ["rr_ack", "rr_pause"]),
        (IncidentState.REFUSED, "2.3.1", [], "alert", ["rr_ack", "rr_pause"]),
        (IncidentState.ACTING, "2.3.1", [], "alert", ["rr_ack", "rr_pause"]),
        (
            IncidentState.VERIFIED,
            "2.3.1",
            ["switched"],
            "alert",
            ["rr_ack", "rr_roll_forward", "rr_pause"],
        ),
        (
            IncidentState.CONFIRMED,
            "2.3.1",
            ["switched"],
            "alert",
            ["rr_ack", "rr_roll_forward", "rr_pause"],
        ),
        (
            IncidentState.UNCONFIRMED,
            "2.3.1",
            ["switched"],
            "alert",
            ["rr_ack", "rr_roll_forward", "rr_pause"],
        ),
        (
            IncidentState.VERIFICATION_FAILED,
            "2.3.1",
            ["switched", "paused"],
            "alert",
            ["rr_ack", "rr_roll_forward", "rr_resume"],
        ),
        (
            IncidentState.VERIFIED,
            "2.3.1",
            ["switched", "rolled_forward"],
            "alert",
            ["rr_ack", "rr_pause"],
        ),
        (
            IncidentState.VERIFIED,
            "2.3.1",
            ["switched", "rolled_forward", "switched"],
            "alert",
            ["rr_ack", "rr_roll_forward", "rr_pause"],
        ),
        (IncidentState.VERIFIED, None, ["switched"], "alert", ["rr_ack", "rr_pause"]),
        (IncidentState.FAILED, "2.3.1", [], "alert", ["rr_ack", "rr_pause"]),
        (
            IncidentState.NOTIFIED,
            "2.3.1",
            ["paused", "resumed"],
            "alert",
            ["rr_ack", "rr_rollback_now", "rr_pause"],
        ),
        (
            IncidentState.NOTIFIED,
            "2.3.1",
            ["resumed", "paused"],
            "alert",
            ["rr_ack", "rr_rollback_now", "rr_resume"],
        ),
        (IncidentState.VERIFIED, "2.3.1", ["switched"], "drill", ["rr_ack"]),
    ],
)
def test_buttons_fit_the_state(state, target, events, kind, expected) -> None:
    incident = make_incident(
        state=state,
        target_version=target,
        kind=kind,
        events=[_event(k, at_seconds=i) for i, k in enumerate(events)],
    )
    assert _buttons(incident) == expected


def test_every_button_carries_the_incident_id_and_the_dangerous_ones_ask_first() -> None:
    notified = make_incident(state=IncidentState.NOTIFIED, target_version="2.3.1")
    verified = make_incident(
        state=IncidentState.VERIFIED, target_version="2.3.1", events=[_event("paused")]
    )
    elements = {
        e["action_id"]: e
        for incident in (notified, verified)
        for e in actions_block(incident)["elements"]
    }
    assert set(elements) == {
        "rr_ack",
        "rr_rollback_now",
        "rr_pause",
        "rr_roll_forward",
        "rr_resume",
    }
    for action_id, element in elements.items():
        assert element["type"] == "button" and element["value"] == "inc-0123456789ab"
        assert ("confirm" in element) == (
            action_id in ("rr_rollback_now", "rr_roll_forward", "rr_pause")
        ), action_id
    confirm = elements["rr_rollback_now"]["confirm"]
    assert confirm["title"]["text"] == "Roll back now?"
    assert confirm["text"]["text"] == (
        "Roll *fraud-scorer* in ml-prod back from 2.4.0 to 2.3.1, if 2.4.0 still serves."
    )
    assert (confirm["confirm"]["text"], confirm["deny"]["text"]) == ("Roll back", "Cancel")


def test_buttons_and_the_last_action_appear_only_with_interactivity() -> None:
    from receiver.models import Acknowledgement

    incident = make_incident(
        state=IncidentState.VERIFIED,
        target_version="2.3.1",
        events=[
            _event("switched", "alertmanager", 1),
            _event("acknowledged", "slack:U0ALICE001", 2),
            _event("confirmed", "receiver", 3),
        ],
        acknowledgement=Acknowledgement(
            actor="slack:U0ALICE001", at=T0, root_cause="data_pipeline", note="late <batch>"
        ),
    )
    _, plain = render_incident(incident)
    assert [b["block_id"] for b in plain] == ["header", "facts", "timeline", "links", "context"]
    _, blocks = render_incident(incident, interactive=True)
    assert [b["block_id"] for b in blocks] == [
        "header",
        "facts",
        "timeline",
        "links",
        "incident_actions",
        "last_action",
        "context",
    ]
    assert by_id(blocks)["last_action"]["elements"][0]["text"] == (
        "<@U0ALICE001> acknowledged: root cause data pipeline (late &lt;batch&gt;)"
        " at 2024-05-01 12:00:02 UTC"
    )


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], None),
        ([_event("switched", "alertmanager")], None),
        ([_event("paused", "slack:U0BOB00001")], "<@U0BOB00001> paused automation"),
        ([_event("resumed", "admin:carol")], "admin:carol resumed automation"),
        (
            [_event("joined", "slack:U0BOB00001", message="execute by slack:U0BOB00001: go")],
            "<@U0BOB00001> asked to roll back now",
        ),
        ([_event("switched", "slack:U0BOB00001")], "<@U0BOB00001> rolled back"),
        ([_event("rolled_forward", "admin:<dan>")], "admin:&lt;dan&gt; rolled forward"),
        (
            [_event("paused", "slack:U0BOB00001", 1), _event("confirmed", "receiver", 2)],
            "<@U0BOB00001> paused automation",
        ),
    ],
)
def test_the_last_action_names_who_did_what_and_when(events, expected) -> None:
    line = last_action_line(make_incident(events=events))
    if expected is None:
        assert line is None
    else:
        assert line is not None and line.startswith(expected + " at 2024-05-01 12:00:0")
