"""A Slack message given up is noted on the incident, and the job's later saves keep it."""

from __future__ import annotations

from typing import Any

from receiver.app import NOTIFIER
from tests.conftest import wait_for
from tests.worker.conftest import ADMIN, deliver, wait_state, write_policy


async def lost_notes(client: Any, incident_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/incidents/{incident_id}", headers=ADMIN)
    assert resp.status == 200
    events = (await resp.json())["events"]
    return [e for e in events if e["kind"] == "notification_lost"]


async def test_a_lost_notification_noted_mid_job_survives_the_jobs_next_save(
    world, delivery, slack, tmp_path
):
    # Verification is held below while the note is written: give it room on a busy machine.
    policy = write_policy(tmp_path / "policy.yaml", world.model_server.url, verify_timeout="5m")
    client = await world.make_app(
        policy=policy,
        slack_bot_token=slack.token,
        slack_api_url=slack.base_url,
        slack_channel="#ml-oncall",
    )
    slack.fail_with("channel_not_found", times=1000, method="chat.postMessage")
    world.model_server.ready = False  # verification waits: the job is mid-way

    await deliver(client, delivery("firing_single"))
    acting = await wait_state(client, "acting", timeout=30)
    # The notifier gave the message up and noted it on the stored incident...
    first = await wait_for(
        lambda: lost_notes(client, acting["id"]), timeout=30, what="a notification_lost note"
    )
    # ...then the job, holding its own copy from before the note, goes on and saves.
    world.model_server.ready = True
    await wait_state(client, "verified", timeout=30)
    assert await client.app[NOTIFIER].flush(10)

    notes = await lost_notes(client, acting["id"])
    assert notes[: len(first)] == first, "the job's save dropped the notifier's note"
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) >= 2
    assert len(notes) == len(posts), "every message given up is noted once"
    assert all(n["message"] == "Slack chat.postMessage failed: channel_not_found" for n in notes)
