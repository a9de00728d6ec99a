"""Watching a rollout: the client's Deployment watch on the Kubernetes stand-in (fresh read
first, bookmarks asked for, reconnect, 410 Gone, deletion), and verification woken by it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from receiver.clients.k8s import KubeClient
from receiver.errors import KubeNotFound, KubeUnavailable
from receiver.models import RolloutStatus, Verdict
from receiver.policy import parse_policy
from receiver.rollback import executor_for
from receiver.verify.loop import verify
from tests.conftest import wait_for
from tests.verify.helpers import DEADLINE, DONE, HEALTHY, WAITING, Script

NS, NAME = "ml-prod", "fraud-scorer"
WATCH_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"
# Guards against a hang only: every wait below ends on a condition long before.
GUARD_SECONDS = 30


@pytest.fixture
async def client(kube: Any) -> AsyncIterator[KubeClient]:
    await kube.create_deployment(NS, NAME, "v1")
    client = await KubeClient.connect(Path(kube.kubeconfig))
    yield client
    await client.close()


def watches(kube: Any) -> list[Any]:
    return [r for r in kube.requests_to("GET", WATCH_PATH) if r.query.get("watch") == "true"]


async def test_the_watch_yields_a_fresh_read_then_each_change_from_its_version(kube, client):
    seen: list[dict[str, Any]] = []
    async with contextlib.aclosing(client.watch_deployment(NS, NAME)) as changes:
        async for deployment in changes:
            seen.append(deployment)
            if len(seen) == 1:
                first_rv = deployment["metadata"]["resourceVersion"]
                await kube.scale(NS, NAME, 3)
            if deployment["status"].get("availableReplicas") == 3:
                break
    assert seen[0]["metadata"]["name"] == NAME
    assert seen[1]["spec"]["replicas"] == 3
    (request,) = watches(kube)
    assert request.query["fieldSelector"] == f"metadata.name={NAME}"
    assert request.query["allowWatchBookmarks"] == "true"
    assert request.query["resourceVersion"] == first_rv
    versions = [int(d["metadata"]["resourceVersion"]) for d in seen]
    assert versions == sorted(versions)


async def test_a_watch_the_server_ends_is_opened_again_from_the_last_version(kube, client):
    seen: list[dict[str, Any]] = []

    async def consume() -> None:
        watched = client.watch_deployment(NS, NAME, watch_seconds=1)
        async with contextlib.aclosing(watched) as changes:
            async for deployment in changes:
                seen.append(deployment)
                if deployment["spec"]["replicas"] == 1:
                    return

    consumer = asyncio.create_task(consume())
    await wait_for(lambda: len(watches(kube)) == 2, timeout=GUARD_SECONDS, what="a reconnect")
    await kube.scale(NS, NAME, 1)
    await asyncio.wait_for(consumer, GUARD_SECONDS)
    first, second = watches(kube)
    assert second.query["resourceVersion"] == first.query["resourceVersion"]
    assert seen[-1]["spec"]["replicas"] == 1


async def test_a_compacted_version_reads_the_deployment_again(kube, client):
    await kube.scale(NS, NAME, 3)
    kube.compact()
    current = kube.deployment(NS, NAME)["metadata"]["resourceVersion"]
    async with contextlib.aclosing(
        client.watch_deployment(NS, NAME, resource_version="1")
    ) as changes:
        first = await anext(changes)
    # The stale watch got 410 Gone; the Deployment was read again and yielded.
    assert int(first["metadata"]["resourceVersion"]) >= int(current)
    assert watches(kube)[0].query["resourceVersion"] == "1"
    assert kube.requests_to("GET", f"{WATCH_PATH}/{NAME}")


async def test_a_deleted_deployment_ends_the_watch_with_not_found(kube, client):
    with pytest.raises(KubeNotFound, match="deleted"):
        async with contextlib.aclosing(client.watch_deployment(NS, NAME)) as changes:
            async for _ in changes:
                await kube.delete("deployments", NS, NAME)


async def test_a_failing_watch_request_is_unavailable(kube, client):
    kube.fail("GET", WATCH_PATH, 500, times=None)
    with pytest.raises(KubeUnavailable):
        async with contextlib.aclosing(client.watch_deployment(NS, NAME)) as changes:
            async for _ in changes:
                pass


async def test_the_strategy_watch_judges_each_change_as_a_rollout(kube, client):
    policy = parse_policy(f"models:\n  - {{name: {NAME}, namespace: {NS}}}\n")
    (model,) = policy.models
    statuses: list[RolloutStatus] = []
    watched = executor_for("rollout-undo").watch_rollout(client, model)
    async with contextlib.aclosing(watched) as changes:
        async for status in changes:
            statuses.append(status)
            if len(statuses) == 1:
                await kube.set_version(NS, NAME, "v2")
            elif status.done:
                break
    assert statuses[0].done
    assert any(not s.done for s in statuses[1:-1])
    assert statuses[-1].done


# --- verification woken by the watch --------------------------------------------------------


async def test_a_complete_answer_of_the_watch_ends_the_wait_before_any_poll_is_due():
    first_read = asyncio.Event()
    reads = Script([WAITING], on_call=first_read.set)
    probe = Script([HEALTHY])
    closed = asyncio.Event()

    async def changes() -> AsyncIterator[RolloutStatus]:
        try:
            yield WAITING
            await first_read.wait()
            yield DONE
            await asyncio.Event().wait()
        finally:
            closed.set()

    # Polls are an hour apart: only the watch can end the wait; its answer is final.
    verdict = await asyncio.wait_for(
        verify(
            read_rollout=reads,
            probe=probe,
            timeout=3600,
            poll_interval=3600,
            watch_fallback=3600,
            changes=changes,
        ),
        GUARD_SECONDS,
    )
    assert verdict == HEALTHY
    assert reads.calls == 1 and probe.calls == 1
    assert closed.is_set(), "the watch is closed once it has answered"


async def test_a_failed_answer_of_the_watch_ends_verification():
    reads = Script([WAITING])

    async def changes() -> AsyncIterator[RolloutStatus]:
        yield DEADLINE

    verdict = await asyncio.wait_for(
        verify(
            read_rollout=reads,
            probe=Script([HEALTHY]),
            timeout=3600,
            poll_interval=3600,
            watch_fallback=3600,
            changes=changes,
        ),
        GUARD_SECONDS,
    )
    assert not verdict.healthy
    assert verdict.reason == f"rollout failed: {DEADLINE.message}"


async def test_a_broken_watch_falls_back_to_polling():
    reads = Script([WAITING, WAITING, DONE])
    probe = Script([HEALTHY])

    async def changes() -> AsyncIterator[RolloutStatus]:
        raise KubeUnavailable("watch deployment ml-prod/fraud-scorer: the watch broke")
        yield WAITING  # an async generator

    verdict = await asyncio.wait_for(
        verify(
            read_rollout=reads,
            probe=probe,
            timeout=3600,
            poll_interval=0.001,
            watch_fallback=3600,
            changes=changes,
        ),
        GUARD_SECONDS,
    )
    assert verdict == HEALTHY and reads.calls == 3


async def test_the_watch_is_closed_when_verification_ends():
    opened, closed = asyncio.Event(), asyncio.Event()

    async def changes() -> AsyncIterator[RolloutStatus]:
        opened.set()
        try:
            yield WAITING
            await asyncio.Event().wait()
        finally:
            closed.set()

    async def probe() -> Verdict:
        await opened.wait()
        return HEALTHY

    verdict = await verify(read_rollout=Script([DONE]), probe=probe, timeout=60, changes=changes)
    assert verdict == HEALTHY
    assert closed.is_set()
