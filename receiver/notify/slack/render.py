"""Block Kit for incidents and notices: pure functions from records to Slack payloads.

What on-call people read, escaped and within Slack's limits. No I/O here: delivery is
``outbox``; these are tested as tables.

Long because every Block Kit element (facts, timeline, confirmation, buttons with their
confirm dialogs, the modal) is built here, pure and table-tested.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from receiver.models import Incident, IncidentKind, IncidentState, IncidentTimes

# Block Kit limits (Slack's block reference): header text 150, section text 3000,
# each section field 2000, at most 10 fields per section. Fallback text is kept short
# as well: it is what notifications and screen readers show.
HEADER_MAX_CHARS = 150
SECTION_TEXT_MAX_CHARS = 3000
FIELD_MAX_CHARS = 2000
MAX_FIELDS = 10
FALLBACK_TEXT_MAX_CHARS = 3000
# A link longer than this is left out rather than cut: a cut URL is a wrong URL.
LINK_URL_MAX_CHARS = 1400

ACTIONS_BLOCK_ID = "incident_actions"

# Channel names/ids as users type them in the policy, and Slack's conversation ids.
_CHANNEL_RE = re.compile(r"^[#@]?[A-Za-z0-9._-]{1,80}$")
_CHANNEL_ID_RE = re.compile(r"^[CGDU][A-Z0-9]{8,}$")


def valid_channel(channel: str | None) -> bool:
    """True for a channel name (``#x``), user (``@x``) or Slack id safe to send to."""
    if not channel:
        return False
    return bool(_CHANNEL_ID_RE.fullmatch(channel) or _CHANNEL_RE.fullmatch(channel))


def escape(text: str) -> str:
    """Escape Slack's control characters; labels and versions come from alerts."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def verbatim(text: str) -> str:
    """No escaping: pass as ``esc`` for the same words as plain text (log lines)."""
    return text


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters with an ellipsis, never inside an ``&...;``."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def format_offset(seconds: float) -> str:
    """Signed, compact duration: ``+0.18s``, ``+1m02s``, ``+1h02m03s``, ``-2m10s``."""
    sign = "-" if seconds < 0 else "+"
    value = abs(seconds)
    if round(value, 2) < 60:
        return f"{sign}{value:.2f}s"
    total = round(value)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    return f"{sign}{minutes}m{secs:02d}s"


# State -> (emoji, title). The title is the first words of the fallback text and the log.
_STATE_VIEW: dict[IncidentState, tuple[str, str]] = {
    IncidentState.OPEN: (":rotating_light:", "Degraded model"),
    IncidentState.ACTING: (":hourglass_flowing_sand:", "Rolling back"),
    IncidentState.VERIFIED: (":white_check_mark:", "Rolled back, healthy"),
    IncidentState.VERIFICATION_FAILED: (":x:", "Rolled back, verification failed"),
    IncidentState.REFUSED: (":no_entry:", "Rollback refused"),
    IncidentState.NOTIFIED: (":bell:", "Not rolled back (notify only)"),
    IncidentState.CONFIRMED: (":white_check_mark:", "Rollback confirmed"),
    IncidentState.UNCONFIRMED: (":grey_question:", "Rollback unconfirmed"),
    IncidentState.FAILED: (":x:", "Rollback refused by the API server"),
}
_SWITCHED_VIEW = (":arrows_counterclockwise:", "Switched, verifying")

_TIMELINE: tuple[tuple[str, str], ...] = (
    ("alert_started", "Alert started"),
    ("received", "Received"),
    ("acting", "Acting"),
    ("switched", "Switched"),
    ("healthy", "Healthy"),
    ("confirmed", "Confirmed"),
)


def state_view(incident: Incident) -> tuple[str, str]:
    """Emoji and title for the incident's state; ``acting`` once switched reads as such."""
    if incident.state is IncidentState.ACTING and incident.times.switched is not None:
        return _SWITCHED_VIEW
    return _STATE_VIEW.get(incident.state, (":grey_question:", incident.state.value))


def _versions(incident: Incident, esc: Callable[[str], str]) -> str:
    target = esc(incident.target_version) if incident.target_version else "no target"
    return f"{esc(incident.bad_version) or '?'} → {target}"


def _where(incident: Incident, esc: Callable[[str], str]) -> str:
    where = esc(incident.namespace)
    if incident.cluster:
        where += f" (cluster {esc(incident.cluster)})"
    return where


def incident_text(incident: Incident, esc: Callable[[str], str]) -> str:
    """The one-paragraph summary: Slack's fallback text and, unescaped, the log line."""
    _, title = state_view(incident)
    parts = [
        f"{title}: {esc(incident.model)} in {_where(incident, esc)}, "
        f"version {_versions(incident, esc)}"
        + (f", strategy {esc(incident.strategy)}" if incident.strategy else "")
    ]
    if incident.triggers:
        trig = ", ".join(esc(t) for t in incident.triggers)
        parts.append(
            f"Trigger: {trig}" + (f" ({esc(incident.category)})" if incident.category else "")
        )
    if incident.reason:
        parts.append(f"Reason: {esc(incident.reason)}")
    parts.append(f"Incident {esc(incident.id)}")
    return clip(". ".join(parts) + ".", FALLBACK_TEXT_MAX_CHARS)


def _field(label: str, value: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": clip(f"*{label}*\n{value or '—'}", FIELD_MAX_CHARS)}


def _clock(at: datetime, with_date: bool) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC" if with_date else "%H:%M:%S UTC")


def timeline_lines(times: IncidentTimes) -> list[str]:
    """One mrkdwn line per known step, with the offset from when the alert was received."""
    lines: list[str] = []
    last_date = None
    received = times.received
    for attr, label in _TIMELINE:
        at: datetime | None = getattr(times, attr)
        if at is None:
            continue
        at = at.astimezone(UTC)
        line = f"• *{label}*  {_clock(at, at.date() != last_date)}"
        last_date = at.date()
        if received is not None and attr != "received":
            line += f"  ({format_offset((at - received).total_seconds())})"
        lines.append(line)
    return lines


def _link(url: str, label: str) -> str | None:
    """``<url|label>`` for an http(s) URL, with the characters that would break it encoded."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    safe = (
        url.replace("&", "&amp;")
        .replace("<", "%3C")
        .replace(">", "%3E")
        .replace("|", "%7C")
        .replace(" ", "%20")
    )
    if len(safe) > LINK_URL_MAX_CHARS:
        return None
    return f"<{safe}|{label}>"


ACTION_ACK = "rr_ack"
ACTION_ROLLBACK_NOW = "rr_rollback_now"
ACTION_ROLL_FORWARD = "rr_roll_forward"
ACTION_PAUSE = "rr_pause"
ACTION_RESUME = "rr_resume"

# Our rollback happened and may be undone (with a target to come back from).
_ROLLED_BACK_STATES = frozenset(
    {
        IncidentState.VERIFIED,
        IncidentState.CONFIRMED,
        IncidentState.UNCONFIRMED,
        IncidentState.VERIFICATION_FAILED,
    }
)
# Events that record a person's action (the actor prefixes of the control layer).
_PEOPLE = ("slack:", "admin:")
# How the last-action line names a person's event, by its kind (joined/opened: the job).
_DONE_BY_KIND = {
    "acknowledged": "acknowledged",
    "paused": "paused automation",
    "resumed": "resumed automation",
    "switched": "rolled back",
    "rolled_forward": "rolled forward",
    "roll_forward": "asked for a roll forward",
}
_DONE_BY_JOB = {
    "execute": "asked to roll back now",
    "force": "forced a rollback",
    "roll_forward": "asked for a roll forward",
    "drill": "started a drill",
}
_SLACK_USER_RE = re.compile(r"^slack:([UW][A-Z0-9]{2,30})$")


def _button(
    action_id: str, text: str, incident: Incident, style: str | None = None
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "value": incident.id,
    }
    if style is not None:
        button["style"] = style
    return button


def _confirm(title: str, text: str, confirm: str) -> dict[str, Any]:
    return {
        "title": {"type": "plain_text", "text": title},
        "text": {"type": "mrkdwn", "text": clip(text, 300)},
        "confirm": {"type": "plain_text", "text": confirm},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    }


def model_paused(incident: Incident) -> bool:
    """Whether the incident last saw its model paused (its latest pause or resume event).

    The incident knows only what happened through it: a pause set elsewhere shows Pause,
    which then is harmless (pausing again keeps it paused)."""
    for event in reversed(incident.events):
        if event.kind in ("paused", "resumed"):
            return event.kind == "paused"
    return False


def _rolled_forward(incident: Incident) -> bool:
    """Whether our rollback of this incident was undone after its last switch."""
    for event in reversed(incident.events):
        if event.kind == "rolled_forward":
            return True
        if event.kind == "switched":
            return False
    return False


def actions_block(incident: Incident) -> dict[str, Any] | None:
    """The buttons that fit the incident's state, ``value`` = incident id.

    Acknowledge always; Roll back now on a notify recommendation with a target; Roll
    forward after our rollback (not yet undone); Pause or Resume the model, by what the
    incident last saw. The dangerous ones ask for confirmation. ``None`` for none.
    """
    where = f"*{escape(incident.model)}* in {escape(incident.namespace)}"
    elements = [_button(ACTION_ACK, "Acknowledge", incident, "primary")]
    if incident.kind is IncidentKind.ALERT:
        if incident.state is IncidentState.NOTIFIED and incident.target_version:
            button = _button(ACTION_ROLLBACK_NOW, "Roll back now", incident, "danger")
            button["confirm"] = _confirm(
                "Roll back now?",
                f"Roll {where} back from {escape(incident.bad_version)} to"
                f" {escape(incident.target_version)}, if {escape(incident.bad_version)}"
                " still serves.",
                "Roll back",
            )
            elements.append(button)
        if (
            incident.state in _ROLLED_BACK_STATES
            and incident.target_version
            and not _rolled_forward(incident)
        ):
            button = _button(ACTION_ROLL_FORWARD, "Roll forward", incident)
            button["confirm"] = _confirm(
                "Roll forward?",
                f"Put {where} back on {escape(incident.bad_version)}. You vouch for that"
                " version: alerts about it are notified, not acted on, until another"
                " version replaces it.",
                "Roll forward",
            )
            elements.append(button)
        if model_paused(incident):
            elements.append(_button(ACTION_RESUME, "Resume automation", incident))
        else:
            button = _button(ACTION_PAUSE, "Pause automation", incident)
            button["confirm"] = _confirm(
                "Pause automation?",
                f"Alerts about {where} will be recorded and notified, never acted on, until"
                " someone resumes it.",
                "Pause",
            )
            elements.append(button)
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements}


def _who(actor: str) -> str:
    match = _SLACK_USER_RE.fullmatch(actor)
    return f"<@{match.group(1)}>" if match else escape(actor)


def last_action_line(incident: Incident) -> str | None:
    """Who did what, and when: the incident's latest event by a person, or ``None``."""
    for event in reversed(incident.events):
        if not event.actor.startswith(_PEOPLE):
            continue
        done = _DONE_BY_KIND.get(event.kind)
        if done is None and event.kind in ("opened", "joined"):
            done = _DONE_BY_JOB.get(event.message.split(" ", 1)[0])
        if done is None:
            done = escape(event.kind.replace("_", " "))
        if event.kind == "acknowledged" and incident.acknowledgement is not None:
            ack = incident.acknowledgement
            done += f": root cause {escape(ack.root_cause.replace('_', ' '))}"
            if ack.note:
                done += f" ({escape(clip(ack.note, 300))})"
        at = _clock(event.at.astimezone(UTC), True)
        return clip(f"{_who(event.actor)} {done} at {at}", SECTION_TEXT_MAX_CHARS)
    return None


def render_incident(
    incident: Incident, *, interactive: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """Fallback text and Block Kit blocks for the incident's single message; with
    ``interactive`` (Slack interactivity configured), its buttons and who acted last."""
    emoji, title = state_view(incident)
    text = incident_text(incident, escape)
    triggers = ", ".join(escape(t) for t in incident.triggers)
    state = incident.state.value.replace("_", " ")
    if incident.reason:
        state += f": {escape(incident.reason)}"
    fields = [
        _field("Model", escape(incident.model)),
        _field("Namespace", _where(incident, escape)),
        _field("Triggers" if len(incident.triggers) > 1 else "Trigger", triggers),
        _field("Category", escape(incident.category)),
        _field("Version", _versions(incident, escape)),
        _field("Strategy", escape(incident.strategy)),
        _field("State", state),
    ][:MAX_FIELDS]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "block_id": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f"{emoji} {title}: {escape(incident.model)}", HEADER_MAX_CHARS),
                "emoji": True,
            },
        },
        {"type": "section", "block_id": "facts", "fields": fields},
    ]
    lines = timeline_lines(incident.times)
    if lines:
        blocks.append(
            {
                "type": "section",
                "block_id": "timeline",
                "text": {
                    "type": "mrkdwn",
                    "text": clip("*Timeline*\n" + "\n".join(lines), SECTION_TEXT_MAX_CHARS),
                },
            }
        )
    confirmation = incident.confirmation
    if confirmation is not None:
        if confirmation.result in ("confirmed", "unconfirmed"):
            text = f"*Confirmation*: {escape(confirmation.result)} ({escape(confirmation.reason)})"
            if confirmation.query:
                text += f"\n`{escape(clip(confirmation.query, 500))}`"
        else:
            due = confirmation.due_at.strftime("%H:%M:%S UTC") if confirmation.due_at else "?"
            text = f"*Confirmation* due at {due}: the alert's own expression on the target"
        blocks.append(
            {
                "type": "section",
                "block_id": "confirmation",
                "text": {"type": "mrkdwn", "text": clip(text, SECTION_TEXT_MAX_CHARS)},
            }
        )
    links = [
        link
        for link in (
            _link(incident.generator_url, "Alert expression"),
            _link(incident.runbook_url, "Runbook"),
        )
        if link
    ]
    if links:
        blocks.append(
            {
                "type": "section",
                "block_id": "links",
                "text": {"type": "mrkdwn", "text": "  ·  ".join(links)},
            }
        )
    if interactive:
        actions = actions_block(incident)
        if actions is not None:
            blocks.append(actions)
    last = last_action_line(incident) if interactive else None
    if last is not None:
        blocks.append(
            {
                "type": "context",
                "block_id": "last_action",
                "elements": [{"type": "mrkdwn", "text": last}],
            }
        )
    blocks.append(
        {
            "type": "context",
            "block_id": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip(
                        f"Incident `{escape(incident.id)}`  ·  updated "
                        f"{_clock(incident.updated_at.astimezone(UTC), True)}",
                        SECTION_TEXT_MAX_CHARS,
                    ),
                }
            ],
        }
    )
    return text, blocks


def notice_text(title: str, lines: Sequence[str], esc: Callable[[str], str]) -> str:
    """A notice's one-line summary: Slack's fallback text and, with ``verbatim``, the log."""
    body = "; ".join(esc(line) for line in lines)
    return clip(f"{esc(title)}: {body}." if body else f"{esc(title)}.", FALLBACK_TEXT_MAX_CHARS)


def render_notice(title: str, lines: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """A one-off notice (alert not attributable, refusal): fallback text and blocks."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "block_id": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f":warning: {escape(title)}", HEADER_MAX_CHARS),
                "emoji": True,
            },
        }
    ]
    if lines:
        blocks.append(
            {
                "type": "section",
                "block_id": "details",
                "text": {
                    "type": "mrkdwn",
                    "text": clip("\n".join(escape(line) for line in lines), SECTION_TEXT_MAX_CHARS),
                },
            }
        )
    return notice_text(title, lines, escape), blocks
