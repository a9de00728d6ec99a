"""Slack's buttons through the whole app: the Kubernetes stand-in, real Redis, a model
server stand-in (the world of ``tests/worker``), and the Slack stand-in pressing buttons on
the messages the receiver posted, signed as Slack signs them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from receiver import keys
from tests.control.conftest import incident, wait_incident  # noqa: F401 - shared helpers
from tests.standins.slack import SIGNING_SECRET, Message, SlackStandIn
from tests.worker.conftest import World, deliver, wait_state, world, write_policy  # noqa: F401 - the fixture

ALICE = "U0ALICE001"
BOB = "U0BOB00001"
MALLORY = "U0MALLORY1"
ONCALL = "S0ONCALL01"
CHANNEL = "#ml-oncall"


def buttons(message: Message) -> list[str]:
    """The action ids of the message's buttons, in order."""
    return [
        element["action_id"]
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


def last_action(message: Message) -> str:
    """The message's who-did-what line ('' when it has none)."""
    for block in message.blocks:
        if block.get("block_id") == "last_action":
            return str(block["elements"][0]["text"])
    return ""


@dataclass
class Desk:
    """The app under test with Slack's side of it: press buttons, submit modals."""

    client: Any
    slack: SlackStandIn
    world: World

    @property
    def url(self) -> str:
        return str(self.client.make_url("/slack/actions"))

    async def settle(self) -> None:
        """Every interaction taken so far has been handled."""
        await self.client.app[keys.SLACK_ACTIONS].idle()

    def incident_message(self) -> Message:
        """The incident's one message (control notices are messages of their own)."""
        found = [m for m in self.slack.messages.values() if buttons(m)]
        assert len(found) == 1, f"expected one incident message, have {len(found)}"
        return found[0]

    async def message_with(self, action_id: str, timeout: float = 10) -> Message:
        """The incident's message once it carries ``action_id``."""

        def ready() -> bool:
            found = [m for m in self.slack.messages.values() if action_id in buttons(m)]
            return len(found) == 1

        await self.slack.wait_for(ready, timeout=timeout)
        return self.incident_message()

    async def press(
        self, action_id: str, user: str = ALICE, *, retries: int = 0, **send: Any
    ) -> dict[str, Any]:
        """Press ``action_id`` on the message as ``user``; Slack delivers it ``1 + retries``
        times (with ``X-Slack-Retry-Num``). The payload."""
        payload = self.slack.button_payload(
            await self.message_with(action_id), action_id, user_id=user
        )
        first = await self.send(payload, **send)
        assert first.status == 200, first.text
        for n in range(1, retries + 1):
            again = await self.send(payload, retry_num=n, **send)
            assert again.status == 200, again.text
        return payload

    async def send(self, payload: Any, **send: Any) -> Any:
        send.setdefault("signing_secret", SIGNING_SECRET)
        return await self.slack.send_action(self.url, payload, **send)


@pytest.fixture
def make_desk(world, slack, tmp_path: Path):  # noqa: F811 - the shared fixture
    async def make(
        *, mode: str = "auto", allowed: str = ALICE, http: bool = True, **overrides: Any
    ) -> Desk:
        policy = write_policy(tmp_path / f"{mode}.yaml", world.model_server.url, mode=mode)
        settings: dict[str, Any] = {
            "slack_bot_token": slack.token,
            "slack_api_url": slack.base_url,
            "slack_channel": CHANNEL,
            "slack_allowed_users": allowed,
        }
        if http:
            settings["slack_signing_secret"] = SIGNING_SECRET
        settings.update(overrides)
        client = await world.make_app(policy=policy, **settings)
        return Desk(client, slack, world)

    return make


async def incident_in(desk: Desk, delivery: Any, state: str) -> dict[str, Any]:
    """Deliver the captured firing alert; the incident once it reaches ``state``."""
    await deliver(desk.client, delivery("firing_single"))
    return await wait_state(desk.client, state)
