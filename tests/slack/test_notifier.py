"""Delivery against the Slack stand-in with a real AsyncWebClient on a shared session.

Nothing here sleeps to win a race: tests wait on the stand-in's calls, on the store's
writes or on ``Notifier.flush``, each with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from receiver.metrics import Metrics
from receiver.models import IncidentState
from receiver.notify import Notifier, RetryPolicy, render_incident, render_notice
from tests.slack.conftest import (
    T0,
    ObservedStore,
    advance,
    make_incident,
    sent_count,
    stored,
)
from tests.standins.slack import SlackStandIn, channel_id

MakeNotifier = Callable[..., Awaitable[Notifier]]
POST = "chat.postMessage"
UPDATE = "chat.update"


async def test_a_full_incident_is_one_message_posted_then_updated_in_place(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore, metrics: Metrics
) -> None:
    notifier = await make_notifier()
    opened = make_incident()
    steps = [
        advance(
            opened,
            IncidentState.ACTING,
            0.18,
            times=opened.times.model_copy(update={"acting": T0 + timedelta(seconds=0.18)}),
        ),
    ]
    steps.append(
        advance(
            steps[-1],
            IncidentState.ACTING,
            0.42,
            target_version="2.3.1",
            times=steps[-1].times.model_copy(update={"switched": T0 + timedelta(seconds=0.42)}),
        )
    )
    steps.append(
        advance(
            steps[-1],
            IncidentState.VERIFIED,
            62,
            times=steps[-1].times.model_copy(update={"healthy": T0 + timedelta(seconds=62)}),
        )
    )

    notifier.incident_changed(opened, "#fraud-oncall")
    await store.wait_for(lambda: len(store.refs) == 1)
    for number, step in enumerate(steps, start=1):
        notifier.incident_changed(step, "#fraud-oncall")
        await slack.wait_for(lambda n=number: slack.counts[UPDATE] == n)
    assert await notifier.flush(5)

    assert slack.counts == {POST: 1, UPDATE: 3}
    cid = channel_id("#fraud-oncall")
    post = slack.calls_to(POST)[0]
    assert post.body["channel"] == "#fraud-oncall"
    assert post.headers["Authorization"] == f"Bearer {slack.token}"
    ts = post.answer["ts"]
    assert store.refs == [(opened.id, cid, ts)], "the channel id Slack answered is kept"
    assert [(c.body["channel"], c.body["ts"]) for c in slack.calls_to(UPDATE)] == [(cid, ts)] * 3
    final_text, final_blocks = render_incident(steps[-1])
    message = slack.only_message()
    assert message.text == final_text
    assert message.text.startswith("Rolled back, healthy: fraud-scorer in ml-prod")
    assert message.blocks == final_blocks
    assert "(+1m02s)" in message.blocks[2]["text"]["text"]
    assert sent_count(metrics, "sent") == 4
    assert sent_count(metrics, "lost") == 0


async def test_fifty_changes_for_one_incident_make_one_message(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore
) -> None:
    notifier = await make_notifier()
    slack.delay = 0.1  # keep the first post in flight while more changes arrive
    snapshots = [
        advance(make_incident(), IncidentState.ACTING, i, reason=f"step {i}") for i in range(50)
    ]

    for snapshot in snapshots[:25]:
        notifier.incident_changed(snapshot)
    await slack.wait_for(lambda: slack.arrivals[POST] == 1)
    # The post's answer is not in yet: these must wait for it and update, never post again.
    for snapshot in snapshots[25:]:
        notifier.incident_changed(snapshot)
    assert await notifier.flush(5)

    assert slack.counts == {POST: 1, UPDATE: 1}, "only the newest snapshot follows the post"
    assert len(store.refs) == 1
    assert slack.only_message().text == render_incident(snapshots[-1])[0]


async def test_repeated_deliveries_of_the_same_state_send_nothing_more(
    make_notifier: MakeNotifier, slack: SlackStandIn
) -> None:
    notifier = await make_notifier()
    incident = make_incident()

    notifier.incident_changed(incident)
    assert await notifier.flush(5)
    for _ in range(49):
        notifier.incident_changed(incident)
    assert await notifier.flush(5)

    assert slack.counts == {POST: 1}


async def test_an_older_snapshot_never_overwrites_a_newer_one(
    make_notifier: MakeNotifier, slack: SlackStandIn
) -> None:
    notifier = await make_notifier()
    newer = advance(make_incident(), IncidentState.VERIFIED, 60)
    older = advance(make_incident(), IncidentState.ACTING, 1)

    notifier.incident_changed(newer)
    notifier.incident_changed(older)
    assert await notifier.flush(5)

    assert slack.only_message().text == render_incident(newer)[0]


async def test_rate_limit_waits_retry_after_without_blocking_other_incidents(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore, metrics: Metrics
) -> None:
    notifier = await make_notifier(senders=1)  # one sender: a blocked FIFO would show
    first = make_incident(id="inc-aaaaaaaaaaaa")
    second = make_incident(id="inc-bbbbbbbbbbbb", model="ranker")
    notifier.incident_changed(first)
    await store.wait_for(lambda: len(store.refs) == 1)

    slack.rate_limit(1, retry_after=1, method=UPDATE)
    notifier.incident_changed(advance(first, IncidentState.ACTING, 1))
    await slack.wait_for(lambda: any(c.status == 429 for c in slack.calls))
    notifier.incident_changed(second)
    await slack.wait_for(lambda: slack.counts[POST] == 2)
    await slack.wait_for(lambda: any(c.ok for c in slack.calls_to(UPDATE)), timeout=5)

    limited, retried = slack.calls_to(UPDATE)
    other_post = slack.calls_to(POST)[1]
    assert limited.status == 429
    assert retried.ok
    assert retried.at - limited.at >= 1.0, "the retry came before Retry-After"
    assert limited.at < other_post.at < retried.at, "another incident waited behind the limit"
    assert sent_count(metrics, "retried") == 1
    assert sent_count(metrics, "lost") == 0


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived"])
async def test_a_permanent_error_is_recorded_lost_at_once(
    make_notifier: MakeNotifier,
    slack: SlackStandIn,
    store: ObservedStore,
    metrics: Metrics,
    error: str,
) -> None:
    notifier = await make_notifier()
    slack.fail_with(error, times=100, method=POST)
    incident = await stored(store)

    notifier.incident_changed(incident, "#fraud-oncall")
    await store.wait_for(lambda: bool(store.lost))
    assert await notifier.flush(5)

    assert slack.counts == {POST: 1}, "no retry storm on a permanent error"
    assert store.lost == [(incident.id, f"Slack chat.postMessage failed: {error}")]
    assert sent_count(metrics, "lost") == 1
    assert sent_count(metrics, "retried") == 0
    assert sent_count(metrics, "sent") == 0


async def test_a_wrong_token_is_lost_as_invalid_auth(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore
) -> None:
    notifier = await make_notifier(token="xoxb-not-the-right-one")

    notifier.incident_changed(await stored(store))
    assert await notifier.flush(5)

    assert slack.counts == {POST: 1}
    assert store.lost == [("inc-0123456789ab", "Slack chat.postMessage failed: invalid_auth")]


@pytest.mark.parametrize(
    ("channel", "default", "reason"),
    [
        ("#two words", None, "invalid Slack channel '#two words'"),
        ("<!channel>", None, "invalid Slack channel '<!channel>'"),
        (None, None, "no Slack channel: set the model's slack_channel or RECEIVER_SLACK_CHANNEL"),
    ],
)
async def test_a_bad_or_missing_channel_is_lost_without_a_call(
    make_notifier: MakeNotifier,
    slack: SlackStandIn,
    store: ObservedStore,
    channel: str | None,
    default: str | None,
    reason: str,
) -> None:
    notifier = await make_notifier(channel=default)

    notifier.incident_changed(await stored(store), channel)
    assert await notifier.flush(5)

    assert slack.calls == []
    assert store.lost == [("inc-0123456789ab", reason)]


async def test_a_server_error_is_retried_then_sent(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore, metrics: Metrics
) -> None:
    notifier = await make_notifier()
    slack.server_error(1, method=POST)

    notifier.incident_changed(await stored(store))
    assert await notifier.flush(5)

    assert [c.status for c in slack.calls_to(POST)] == [500, 200]
    assert len(slack.messages) == 1
    assert len(store.refs) == 1
    assert store.lost == []
    assert sent_count(metrics, "retried") == 1
    assert sent_count(metrics, "sent") == 1


async def test_retries_give_up_after_the_attempt_budget(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore, metrics: Metrics
) -> None:
    retry = RetryPolicy(
        max_attempts=3, base_backoff_seconds=0.01, max_backoff_seconds=0.02, jitter=False
    )
    notifier = await make_notifier(retry=retry)
    slack.server_error(100)

    notifier.incident_changed(await stored(store))
    await store.wait_for(lambda: bool(store.lost))
    assert await notifier.flush(5)

    assert slack.counts == {POST: 3}
    [(_, reason)] = store.lost
    assert reason == "chat.postMessage: HTTP 500; gave up after 3 attempts"
    assert sent_count(metrics, "retried") == 2
    assert sent_count(metrics, "lost") == 1


async def test_a_deleted_message_is_posted_anew_and_its_ref_saved(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore
) -> None:
    notifier = await make_notifier()
    incident = make_incident()
    notifier.incident_changed(incident)
    await store.wait_for(lambda: len(store.refs) == 1)
    _, channel, old_ts = store.refs[0]
    slack.delete_message(channel, old_ts)

    acting = advance(incident, IncidentState.ACTING, 1)
    notifier.incident_changed(acting)
    await store.wait_for(lambda: len(store.refs) == 2)
    assert await notifier.flush(5)

    assert [c.answer.get("error") for c in slack.calls_to(UPDATE)] == ["message_not_found"]
    assert slack.counts == {POST: 2, UPDATE: 1}
    _, new_channel, new_ts = store.refs[1]
    assert new_ts != old_ts
    assert slack.message(new_channel, new_ts).text == render_incident(acting)[0]

    assert await store.get_message_ref(incident.id) == (new_channel, new_ts)

    # The next change goes to the new message.
    notifier.incident_changed(advance(acting, IncidentState.VERIFIED, 2))
    assert await notifier.flush(5)
    assert slack.calls_to(UPDATE)[-1].body["ts"] == new_ts
    assert slack.counts == {POST: 2, UPDATE: 2}


async def test_a_ref_stored_by_one_process_is_updated_by_a_fresh_one(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore
) -> None:
    first = await make_notifier()
    incident = make_incident()
    first.incident_changed(incident)
    await store.wait_for(lambda: len(store.refs) == 1)

    restarted = await make_notifier()
    restarted.incident_changed(advance(incident, IncidentState.ACTING, 1))
    assert await restarted.flush(5)

    assert slack.counts == {POST: 1, UPDATE: 1}
    assert slack.only_message().text.startswith("Rolling back: fraud-scorer")


async def test_without_a_token_messages_go_to_the_log_in_the_same_words(
    make_notifier: MakeNotifier,
    slack: SlackStandIn,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="receiver.notifier")
    notifier = await make_notifier(token=None)
    opened = make_incident()
    refused = advance(opened, IncidentState.REFUSED, 1, reason="model is paused")

    notifier.incident_changed(opened)
    notifier.incident_changed(refused)
    notifier.notice_once("na|fp1", "Alert not attributable: no action", ["missing model"])
    assert await notifier.flush(5)

    lines = [r.getMessage() for r in caplog.records if r.name == "receiver.notifier"]
    assert lines == [
        render_incident(opened)[0],
        render_incident(refused)[0],
        render_notice("Alert not attributable: no action", ["missing model"])[0],
    ]
    assert "Rollback refused: fraud-scorer in ml-prod" in lines[1]
    assert all("xoxb" not in line for line in caplog.text.splitlines())
    assert slack.calls == []
    assert sent_count(metrics, "logged") == 3


async def test_notice_once_posts_once_per_cause_across_calls_and_replicas(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore
) -> None:
    notifier = await make_notifier()
    other_replica = await make_notifier()

    for _ in range(50):
        notifier.notice_once("not-attributable|fp1", "Alert not attributable: no action", ["x"])
    assert await notifier.flush(5)
    other_replica.notice_once("not-attributable|fp1", "Alert not attributable: no action", ["x"])
    assert await other_replica.flush(5)

    assert slack.counts == {POST: 1}
    assert store.claims == ["not-attributable|fp1", "not-attributable|fp1"]
    assert slack.only_message().text == "Alert not attributable: no action: x."

    notifier.notice_once("refused|ml-prod/fraud-scorer", "Rollback refused", ["paused"])
    assert await notifier.flush(5)
    assert slack.counts == {POST: 2}


async def test_close_drains_what_is_pending(
    make_notifier: MakeNotifier, slack: SlackStandIn, metrics: Metrics
) -> None:
    notifier = await make_notifier()
    slack.delay = 0.05
    for i in range(5):
        notifier.incident_changed(make_incident(id=f"inc-00000000000{i}"))

    await notifier.close(timeout=5)

    assert slack.counts == {POST: 5}
    assert sent_count(metrics, "sent") == 5
    assert sent_count(metrics, "lost") == 0


async def test_close_counts_what_it_could_not_deliver_as_lost(
    make_notifier: MakeNotifier, slack: SlackStandIn, store: ObservedStore, metrics: Metrics
) -> None:
    notifier = await make_notifier()
    slack.rate_limit(1, retry_after=30)

    notifier.incident_changed(await stored(store))
    await slack.wait_for(lambda: slack.counts[POST] == 1)
    await notifier.close(timeout=0.2)

    assert store.lost == [("inc-0123456789ab", "not delivered before shutdown (waited 0.2s)")]
    assert sent_count(metrics, "lost") == 1
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("slack-sender")] == []


async def test_the_caller_never_waits_on_slack(
    make_notifier: MakeNotifier, slack: SlackStandIn
) -> None:
    notifier = await make_notifier()
    slack.delay = 0.2

    for i in range(20):
        result = notifier.incident_changed(advance(make_incident(), IncidentState.ACTING, i))
        assert result is None

    assert slack.arrivals[POST] == 0, "nothing was sent on the caller's path"
    assert await notifier.flush(5)
    assert slack.counts == {POST: 1}
