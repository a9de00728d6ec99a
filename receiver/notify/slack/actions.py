"""Slack's buttons and the acknowledge modal, translated into calls of the control layer.

One entry point for both transports, :meth:`SlackActions.receive`: the HTTP route
(``POST /slack/actions``, after its signature check) and Socket Mode hand it the parsed
interaction payload and send back what it returns, at once. The slow part (the allow-list,
the control call, the reply) runs in a background task tracked here and drained at
shutdown, so Slack gets its answer well within its 3 seconds.

What this module must not do: act on anything by itself. Every action is a call of the
control layer (``SlackControl``, the subset of ``receiver.control.Control`` the buttons use)
with the actor ``slack:<user id>``, so a button, an API call and an alert go through the
same checks and the same queue. Signature checks belong to the transport, before parsing.

Long because Slack's two payload kinds, the allow-list, the modal and the replay guard
must agree with one another; each part is a small class or function.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from receiver.errors import ReceiverError, truncate
from receiver.models import ROOT_CAUSES, Incident, IncidentKind, utcnow
from receiver.notify.slack.outbox import Notifier
from receiver.notify.slack.render import (
    ACTION_ACK,
    ACTION_PAUSE,
    ACTION_RESUME,
    ACTION_ROLL_FORWARD,
    ACTION_ROLLBACK_NOW,
)
from receiver.store import Claims, Incidents, Messages

log = logging.getLogger(__name__)
audit_log = logging.getLogger("receiver.audit")

__all__ = [
    "ACK_MODAL_CALLBACK_ID",
    "DEDUP_SECONDS",
    "NOTE_BLOCK_ID",
    "ROOT_CAUSE_BLOCK_ID",
    "USERGROUP_CACHE_SECONDS",
    "AllowList",
    "ButtonPress",
    "SlackActions",
    "SlackControl",
    "Submission",
    "Unsupported",
    "ack_modal",
    "parse_interaction",
]

ACK_MODAL_CALLBACK_ID = "rr_ack_modal"
ROOT_CAUSE_BLOCK_ID = "rr_root_cause"
ROOT_CAUSE_ACTION_ID = "rr_root_cause_select"
NOTE_BLOCK_ID = "rr_note"
NOTE_ACTION_ID = "rr_note_input"
NOTE_MAX_CHARS = 500

USERGROUP_CACHE_SECONDS = 300.0
"""How long a user group's members are trusted without asking Slack again. A few minutes:
someone removed from the on-call group loses the buttons within that, and a burst of
presses costs one ``usergroups.users.list``."""

DEDUP_SECONDS = 3600.0
"""How long a press (action_ts + user) or a submission (view id + user) is remembered. Slack
retries an unanswered delivery three times within about a minute, and a Socket Mode
envelope is redelivered within minutes; an hour covers both with room."""

RESPONSE_TIMEOUT_SECONDS = 10.0

# Slack ids as they appear in payloads: checked before they go into store keys, Slack
# calls or log lines (a signed payload is still input).
_USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,30}$")
_INCIDENT_ID_RE = re.compile(r"^inc-[0-9a-f]{12}$")
_ACTION_TS_RE = re.compile(r"^[0-9]{1,12}\.[0-9]{1,9}$")
_VIEW_ID_RE = re.compile(r"^V[A-Z0-9]{2,30}$")
_CHANNEL_ID_RE = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
_TRIGGER_ID_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9a-f]{16,64}$")
_ACTION_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")

KNOWN_ACTIONS = (ACTION_ACK, ACTION_ROLLBACK_NOW, ACTION_ROLL_FORWARD, ACTION_PAUSE, ACTION_RESUME)


# ---------------------------------------------------------------------------------------
# What the buttons need from the control layer


class SlackControl(Protocol):
    """The part of ``receiver.control.Control`` the buttons call (same names, same errors:
    every ``ControlError`` is a ``ReceiverError`` whose message says why)."""

    async def pause_model(
        self, namespace: str, model: str, *, actor: str, reason: str, cluster: str = ""
    ) -> dict[str, Any]: ...

    async def resume_model(
        self, namespace: str, model: str, *, actor: str, reason: str = "", cluster: str = ""
    ) -> dict[str, Any]: ...

    async def execute(
        self, incident_id: str, *, actor: str, reason: str = ""
    ) -> dict[str, str]: ...

    async def roll_forward_incident(
        self, incident_id: str, *, actor: str, reason: str = ""
    ) -> dict[str, str]: ...

    async def acknowledge(
        self, incident_id: str, *, actor: str, root_cause: str, note: str = ""
    ) -> Incident: ...


class InteractionStore(Incidents, Claims, Messages, Protocol):
    """Incidents (read, note pauses), claims (act once per press) and message refs (where
    to answer a modal's submitter)."""


# ---------------------------------------------------------------------------------------
# Payloads


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{truncate(value, 40)!r} is not a {what}")
    return value


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True)

    user_id: str
    team_id: str = ""

    @field_validator("user_id")
    @classmethod
    def _user(cls, value: str) -> str:
        return _checked(value, _USER_ID_RE, "Slack user id")

    @property
    def actor(self) -> str:
        return f"slack:{self.user_id}"


class ButtonPress(_Payload):
    """One press of one of our buttons on an incident message."""

    kind: Literal["button"] = "button"
    action_id: str
    incident_id: str
    action_ts: str
    trigger_id: str = ""
    response_url: str = ""
    channel_id: str = ""
    message_ts: str = ""

    @field_validator("incident_id")
    @classmethod
    def _incident(cls, value: str) -> str:
        return _checked(value, _INCIDENT_ID_RE, "incident id")

    @field_validator("action_ts")
    @classmethod
    def _ts(cls, value: str) -> str:
        return _checked(value, _ACTION_TS_RE, "Slack action timestamp")

    @field_validator("action_id")
    @classmethod
    def _action(cls, value: str) -> str:
        return _checked(value, _ACTION_ID_RE, "Slack action id")

    @field_validator("trigger_id")
    @classmethod
    def _trigger(cls, value: str) -> str:
        return value if _TRIGGER_ID_RE.fullmatch(value) else ""

    @field_validator("channel_id")
    @classmethod
    def _channel(cls, value: str) -> str:
        return value if _CHANNEL_ID_RE.fullmatch(value) else ""

    @field_validator("response_url")
    @classmethod
    def _response_url(cls, value: str) -> str:
        return value if value.startswith(("https://", "http://")) and len(value) < 500 else ""

    @property
    def known(self) -> bool:
        return self.action_id in KNOWN_ACTIONS


class Submission(_Payload):
    """The acknowledge modal, submitted."""

    kind: Literal["submission"] = "submission"
    view_id: str
    incident_id: str
    root_cause: str | None
    note: str = ""

    @field_validator("view_id")
    @classmethod
    def _view(cls, value: str) -> str:
        return _checked(value, _VIEW_ID_RE, "Slack view id")

    @field_validator("incident_id")
    @classmethod
    def _incident(cls, value: str) -> str:
        return _checked(value, _INCIDENT_ID_RE, "incident id")


class Unsupported(BaseModel):
    """An interaction we do not handle (another callback, a shortcut); answered, ignored."""

    kind: Literal["unsupported"] = "unsupported"
    what: str


Interaction = ButtonPress | Submission | Unsupported


def parse_interaction(payload: Any) -> Interaction:
    """The typed interaction of a Slack payload; ``ValueError`` naming what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    kind = payload.get("type")
    user = payload.get("user") or {}
    team = payload.get("team") or {}
    try:
        if kind == "block_actions":
            actions = payload.get("actions") or []
            if len(actions) != 1 or not isinstance(actions[0], dict):
                raise ValueError("a block_actions payload must carry exactly one action")
            action = actions[0]
            container = payload.get("container") or {}
            return ButtonPress(
                user_id=str(user.get("id", "")),
                team_id=str(team.get("id", "")),
                action_id=str(action.get("action_id", "")),
                incident_id=str(action.get("value", "")),
                action_ts=str(action.get("action_ts", "")),
                trigger_id=str(payload.get("trigger_id") or ""),
                response_url=str(payload.get("response_url") or ""),
                channel_id=str(
                    (payload.get("channel") or {}).get("id") or container.get("channel_id") or ""
                ),
                message_ts=str(container.get("message_ts") or ""),
            )
        if kind == "view_submission":
            view = payload.get("view") or {}
            callback = str(view.get("callback_id", ""))
            if callback != ACK_MODAL_CALLBACK_ID:
                return Unsupported(what=f"view_submission {truncate(callback, 40)}")
            values = (view.get("state") or {}).get("values") or {}
            select = (values.get(ROOT_CAUSE_BLOCK_ID) or {}).get(ROOT_CAUSE_ACTION_ID) or {}
            chosen = select.get("selected_option") or {}
            note = (values.get(NOTE_BLOCK_ID) or {}).get(NOTE_ACTION_ID) or {}
            return Submission(
                user_id=str(user.get("id", "")),
                team_id=str(team.get("id", "")),
                view_id=str(view.get("id", "")),
                incident_id=str(view.get("private_metadata", "")),
                root_cause=chosen.get("value") if isinstance(chosen, dict) else None,
                note=str(note.get("value") or "")[:NOTE_MAX_CHARS],
            )
    except ValidationError as e:
        first = e.errors()[0]
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return Unsupported(what=truncate(str(kind), 40))


# ---------------------------------------------------------------------------------------
# The modal


def ack_modal(incident: Incident) -> dict[str, Any]:
    """The acknowledge modal: root cause (one of ``ROOT_CAUSES``) and an optional note."""
    options = [
        {"text": {"type": "plain_text", "text": cause.replace("_", " ")}, "value": cause}
        for cause in ROOT_CAUSES
    ]
    summary = (
        f"*{incident.model}* in {incident.namespace}, version {incident.bad_version}:"
        f" {incident.state.value.replace('_', ' ')}"
    )
    return {
        "type": "modal",
        "callback_id": ACK_MODAL_CALLBACK_ID,
        "private_metadata": incident.id,
        "title": {"type": "plain_text", "text": "Acknowledge"},
        "submit": {"type": "plain_text", "text": "Acknowledge"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "block_id": "rr_summary",
                "text": {"type": "mrkdwn", "text": summary[:3000]},
            },
            {
                "type": "input",
                "block_id": ROOT_CAUSE_BLOCK_ID,
                "label": {"type": "plain_text", "text": "Root cause"},
                "element": {
                    "type": "static_select",
                    "action_id": ROOT_CAUSE_ACTION_ID,
                    "placeholder": {"type": "plain_text", "text": "Choose the root cause"},
                    "options": options,
                },
            },
            {
                "type": "input",
                "block_id": NOTE_BLOCK_ID,
                "optional": True,
                "label": {"type": "plain_text", "text": "Note"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_ACTION_ID,
                    "multiline": True,
                    "max_length": NOTE_MAX_CHARS,
                },
            },
        ],
    }


# ---------------------------------------------------------------------------------------
# Who may press


class AllowList:
    """``RECEIVER_SLACK_ALLOWED_USERS``: user ids (``U…``/``W…``) and user group ids
    (``S…``, members read with ``usergroups.users.list`` and cached). Empty: nobody."""

    def __init__(
        self,
        entries: frozenset[str],
        client: AsyncWebClient | None,
        *,
        cache_seconds: float = USERGROUP_CACHE_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.users = frozenset(e for e in entries if e[:1] in ("U", "W"))
        self.groups = tuple(sorted(e for e in entries if e.startswith("S")))
        self.client = client
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def allows(self, user_id: str) -> bool:
        if user_id in self.users:
            return True
        for group in self.groups:
            if user_id in await self._group(group):
                return True
        return False

    async def _group(self, group: str) -> frozenset[str]:
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:
            cached = self._members.get(group)
            if cached is not None and self._now() - cached[0] < self.cache_seconds:
                return cached[1]
            if self.client is None:
                log.warning("user group %s not resolved: SLACK_BOT_TOKEN is not set", group)
                return frozenset()
            try:
                resp = await self.client.usergroups_users_list(usergroup=group)
            except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as e:
                # Deny on doubt, and ask again next time (nothing cached).
                log.warning("members of user group %s not read: %s", group, truncate(str(e), 200))
                return cached[1] if cached is not None else frozenset()
            members = frozenset(str(u) for u in resp.get("users") or [])
            self._members[group] = (self._now(), members)
            return members


# ---------------------------------------------------------------------------------------
# Handling


@dataclass(frozen=True, slots=True)
class _Done:
    """What a handled press says back to the presser (``None``: nothing, the message shows it)."""

    reply: str | None = None


class SlackActions:
    """The handlers behind the buttons and the modal, shared by HTTP and Socket Mode."""

    def __init__(
        self,
        *,
        control: SlackControl,
        store: InteractionStore,
        notifier: Notifier,
        client: AsyncWebClient | None,
        session: aiohttp.ClientSession,
        allowed: AllowList,
        dedup_seconds: float = DEDUP_SECONDS,
    ) -> None:
        self.control = control
        self.store = store
        self.notifier = notifier
        self.client = client
        self.session = session
        self.allowed = allowed
        self.dedup_seconds = dedup_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- the entry point --------------------------------------------------------------------

    def receive(self, payload: Any, *, retry: int = 0) -> dict[str, Any] | None:
        """Take one interaction: what to answer Slack now (``None``: an empty 200), the work
        started in the background. ``ValueError`` for a payload that is not Slack's."""
        interaction = parse_interaction(payload)
        if isinstance(interaction, Unsupported):
            log.info("Slack interaction ignored: %s", interaction.what)
            return None
        if isinstance(interaction, Submission) and interaction.root_cause not in ROOT_CAUSES:
            # Shown under the select in the modal; nothing is claimed, so the person can
            # correct it and submit the same view again.
            return {
                "response_action": "errors",
                "errors": {
                    ROOT_CAUSE_BLOCK_ID: "Choose one of: " + ", ".join(ROOT_CAUSES),
                },
            }
        if retry:
            log.info("Slack delivered an interaction again (retry %d)", retry)
        self._spawn(self._handle(interaction))
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            coro.close()
            log.warning("Slack interaction after shutdown, not handled")
            return
        task = asyncio.create_task(coro, name="slack-interaction")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every interaction taken so far is handled (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, timeout: float) -> None:  # noqa: ASYNC109 - the drain budget
        """Take nothing new; let what runs finish within ``timeout``, then cancel it."""
        self._closed = True
        if not self._tasks:
            return
        _, late = await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning("%d Slack interactions cut short by shutdown", len(late))

    # -- the work ---------------------------------------------------------------------------

    async def _handle(self, interaction: ButtonPress | Submission) -> None:
        try:
            if isinstance(interaction, ButtonPress):
                await self._press(interaction)
            else:
                await self._submit(interaction)
        except Exception:
            log.exception("Slack interaction of %s failed", interaction.actor)

    async def _claim(self, key: str) -> bool:
        try:
            return await self.store.claim_once(key, self.dedup_seconds)
        except Exception as e:
            # Unclaimable means we cannot promise once: do nothing; the person presses again.
            log.warning("Slack interaction not handled, the store is unavailable: %s", e)
            return False

    async def _press(self, press: ButtonPress) -> None:
        if not press.known:
            await self._reply(press, f"The receiver has no action {press.action_id!r}.")
            return
        if not await self._claim(f"slack:press:{press.action_ts}:{press.user_id}"):
            log.info("Slack press %s by %s already handled", press.action_ts, press.actor)
            return
        if not await self.allowed.allows(press.user_id):
            self._refusal(press.actor, press.action_id, press.incident_id)
            await self._reply(press, _NOT_ALLOWED)
            return
        try:
            done = await self._act(press)
        except ReceiverError as e:
            done = _Done(f"Not done: {e}")
        if done.reply:
            await self._reply(press, done.reply)

    async def _act(self, press: ButtonPress) -> _Done:
        actor, incident_id = press.actor, press.incident_id
        if press.action_id == ACTION_ACK:
            return await self._open_modal(press)
        if press.action_id == ACTION_ROLLBACK_NOW:
            answer = await self.control.execute(incident_id, actor=actor, reason="Slack button")
            return _Done(f"Rollback queued for {incident_id} (job {answer['job']}).")
        if press.action_id == ACTION_ROLL_FORWARD:
            answer = await self.control.roll_forward_incident(
                incident_id, actor=actor, reason="Slack button"
            )
            return _Done(f"Roll forward queued for {incident_id} (job {answer['job']}).")
        incident = await self._incident(incident_id)
        if press.action_id == ACTION_PAUSE:
            await self.control.pause_model(
                incident.namespace,
                incident.model,
                actor=actor,
                reason=f"from Slack on {incident_id}",
                cluster=incident.cluster,
            )
            await self._note(incident, "paused", f"automation paused for {incident.model}", actor)
        else:
            await self.control.resume_model(
                incident.namespace, incident.model, actor=actor, cluster=incident.cluster
            )
            await self._note(incident, "resumed", f"automation resumed for {incident.model}", actor)
        return _Done()

    async def _incident(self, incident_id: str) -> Incident:
        incident = await self.store.get_incident(incident_id)
        if incident is None:
            raise ReceiverError(f"no incident {incident_id} (expired or never existed)")
        if incident.kind is not IncidentKind.ALERT:
            raise ReceiverError(f"{incident_id} is a drill: its model is paused from the API")
        return incident

    async def _note(self, incident: Incident, kind: str, message: str, actor: str) -> None:
        """Record a pause or resume on the incident pressed on, and update its message."""
        at = utcnow()

        def change(stored: Incident) -> None:
            stored.add_event(kind, f"{message} by {actor}", at=at, actor=actor)

        saved = await self.store.update_incident(incident.id, change)
        if saved is not None:
            self.notifier.incident_changed(saved)

    async def _open_modal(self, press: ButtonPress) -> _Done:
        if self.client is None:
            return _Done("Not done: the receiver has no SLACK_BOT_TOKEN to open the form.")
        if not press.trigger_id:
            return _Done("Not done: Slack sent no trigger to open the form; press again.")
        incident = await self.store.get_incident(press.incident_id)
        if incident is None:
            return _Done(f"Not done: no incident {press.incident_id} (expired or never existed).")
        try:
            await self.client.views_open(trigger_id=press.trigger_id, view=ack_modal(incident))
        except SlackApiError as e:
            error = e.response.get("error", "") if e.response is not None else ""
            return _Done(f"Not done: Slack refused to open the form ({error}); press again.")
        return _Done()

    async def _submit(self, submission: Submission) -> None:
        if not await self._claim(f"slack:view:{submission.view_id}:{submission.user_id}"):
            log.info("Slack submission %s already handled", submission.view_id)
            return
        if not await self.allowed.allows(submission.user_id):
            self._refusal(submission.actor, ACK_MODAL_CALLBACK_ID, submission.incident_id)
            await self._whisper(submission, _NOT_ALLOWED)
            return
        assert submission.root_cause is not None
        try:
            await self.control.acknowledge(
                submission.incident_id,
                actor=submission.actor,
                root_cause=submission.root_cause,
                note=submission.note,
            )
        except ReceiverError as e:
            await self._whisper(submission, f"Not acknowledged: {e}")

    # -- replies ----------------------------------------------------------------------------

    def _refusal(self, actor: str, action: str, incident_id: str) -> None:
        audit_log.warning(
            "control %s on %s refused for %s: not in RECEIVER_SLACK_ALLOWED_USERS",
            action,
            incident_id,
            actor,
            extra={
                "audit": True,
                "control": action,
                "actor": actor,
                "incident": incident_id,
                "outcome": "refused",
                "reason": "not in RECEIVER_SLACK_ALLOWED_USERS",
            },
        )

    async def _reply(self, press: ButtonPress, text: str) -> None:
        """An ephemeral message to the presser, through the press's ``response_url``."""
        if not press.response_url:
            log.info("no response_url to tell %s: %s", press.actor, text)
            return
        body = {"response_type": "ephemeral", "replace_original": False, "text": text}
        try:
            async with self.session.post(
                press.response_url,
                json=body,
                timeout=aiohttp.ClientTimeout(total=RESPONSE_TIMEOUT_SECONDS),
            ) as resp:
                if resp.status != 200:
                    answer = truncate(await resp.text(), 200)
                    log.warning("Slack response_url answered %s: %s", resp.status, answer)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("Slack response_url not reached: %s", type(e).__name__)

    async def _whisper(self, submission: Submission, text: str) -> None:
        """An ephemeral message to a modal's submitter, beside the incident's message (a
        submission has no response_url)."""
        if self.client is None:
            log.info("cannot tell %s: %s", submission.actor, text)
            return
        ref = None
        with contextlib.suppress(Exception):
            ref = await self.store.get_message_ref(submission.incident_id)
        if ref is None:
            log.info(
                "no message of %s to answer %s: %s", submission.incident_id, submission.actor, text
            )
            return
        try:
            await self.client.chat_postEphemeral(channel=ref[0], user=submission.user_id, text=text)
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as e:
            log.warning(
                "ephemeral reply to %s not sent: %s", submission.actor, truncate(str(e), 200)
            )


_NOT_ALLOWED = (
    "You are not allowed to act on rollbacks from Slack. Ask an admin to add you (or your"
    " user group) to RECEIVER_SLACK_ALLOWED_USERS."
)


def loads_form_payload(value: str) -> Any:
    """The JSON of a form field ``payload``; ``ValueError`` when it is not JSON."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"the payload field is not JSON: {e.msg}") from None
