"""Two replicas notifying about one incident still make one Slack message."""

from __future__ import annotations

from typing import Any

from receiver.metrics import Metrics
from receiver.models import IncidentState
from receiver.notifier import Notifier, build_client
from receiver.store import MemoryStore
from tests.slack.conftest import FAST_RETRY, advance, make_incident


def replica(session: Any, slack: Any, store: MemoryStore) -> Notifier:
    """A notifier wired to the shared store the way the app wires it."""

    async def save_ref(incident_id: str, channel: str, ts: str) -> None:
        def change(incident: Any) -> None:
            incident.slack_channel, incident.slack_ts = channel, ts

        await store.update_incident(incident_id, change)

    async def record_lost(incident_id: str, error: str) -> None:
        return None

    async def claim_once(key: str) -> bool:
        return await store.claim_once(key, 3600)

    async def load_ref(incident_id: str) -> tuple[str, str] | None:
        incident = await store.get_incident(incident_id)
        if incident is None or not (incident.slack_channel and incident.slack_ts):
            return None
        return incident.slack_channel, incident.slack_ts

    return Notifier(
        build_client(session, slack.token, slack.base_url),
        default_channel="#ml-oncall",
        metrics=Metrics(),
        save_ref=save_ref,
        record_lost=record_lost,
        claim_once=claim_once,
        load_ref=load_ref,
        retry=FAST_RETRY,
    )


async def test_two_replicas_changing_a_new_incident_post_one_message(session, slack):
    store = MemoryStore(retention_seconds=3600)
    incident = make_incident()
    await store.put_incident(incident)
    a, b = replica(session, slack, store), replica(session, slack, store)
    await a.start()
    await b.start()
    slack.delay = 0.2  # A's post is still in flight when B's change arrives
    try:
        a.incident_changed(incident)
        await slack.wait_for(
            lambda: len(slack.calls_to("chat.postMessage")) + len(slack.calls) >= 1
        )
        b.incident_changed(advance(incident, IncidentState.ACTING, 1))
        assert await a.flush(10) and await b.flush(10)
    finally:
        await a.close(5)
        await b.close(5)
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert len(slack.calls_to("chat.update")) == 1
    message = slack.only_message()
    assert message.text.startswith("Rolling back")
