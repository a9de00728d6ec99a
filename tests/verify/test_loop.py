"""verify: wait for the rollout, then for the probe, within one deadline; answer a verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from receiver.errors import KubeNotFound, KubeUnavailable
from receiver.kinds.deployment import rollout_status
from receiver.models import RolloutStatus, Verdict
from receiver.policy import HealthPaths
from receiver.verify.loop import verify
from receiver.verify.probe import probe_model
from tests.kinds.recorded import load
from tests.standins.model_server import MakeModelServer
from tests.verify.helpers import DEADLINE, DONE, HEALTHY, WAITING, Script

NOT_LOADED = Verdict(False, "model_ready check failed (GET http://m/v2/models/x/ready): 503")


class FakeClock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def run(
    read_rollout: Callable[[], Awaitable[RolloutStatus]],
    probe: Callable[[], Awaitable[Verdict]],
    *,
    within: float = 5.0,
    clock: Callable[[], float] | None = None,
) -> Verdict:
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    return await verify(
        read_rollout=read_rollout, probe=probe, timeout=within, poll_interval=0.001, **kwargs
    )


async def test_the_probe_runs_only_once_the_rollout_is_complete() -> None:
    probe = Script([HEALTHY])
    reads = Script([WAITING, WAITING, DONE], on_call=lambda: calls.append(("read", probe.calls)))
    calls: list[tuple[str, int]] = []

    verdict = await run(reads, probe)

    assert verdict == HEALTHY
    assert reads.calls == 3
    assert probe.calls == 1
    assert calls == [("read", 0), ("read", 0), ("read", 0)]


async def test_the_rollout_is_read_again_before_each_new_probe_while_the_model_loads() -> None:
    reads = Script([DONE])
    probe = Script([NOT_LOADED, NOT_LOADED, HEALTHY])

    verdict = await run(reads, probe)

    assert verdict == HEALTHY
    assert (reads.calls, probe.calls) == (3, 3)


async def test_a_template_changed_after_the_rollout_completed_is_waited_for_again() -> None:
    # Done, the model not loaded yet; meanwhile a person deploys: the rollout runs again.
    calls: list[str] = []
    reads = Script([DONE, WAITING, WAITING, DONE], on_call=lambda: calls.append("read"))
    probe = Script([NOT_LOADED, HEALTHY], on_call=lambda: calls.append("probe"))

    verdict = await run(reads, probe)

    assert verdict == HEALTHY
    assert calls == ["read", "probe", "read", "read", "read", "probe"]


async def test_a_failed_rollout_ends_at_once_without_probing() -> None:
    reads = Script([WAITING, DEADLINE, DONE])
    probe = Script([HEALTHY])

    verdict = await run(reads, probe)

    assert verdict == Verdict(
        False, 'rollout failed: deployment "fraud-scorer" exceeded its progress deadline'
    )
    assert (reads.calls, probe.calls) == (2, 0)


async def test_the_deadline_names_the_last_probe_failure() -> None:
    clock = FakeClock()
    failures = [
        Verdict(False, "live check failed (GET http://m/v2/health/live): answered 503: down"),
        Verdict(False, "infer check failed (POST http://m/v2/models/x/infer): answered 500: boom"),
    ]

    def tick() -> None:
        clock.now += 1.0

    reads = Script([DONE])
    probe = Script(failures, on_call=tick)

    verdict = await run(reads, probe, within=3.0, clock=clock)

    assert not verdict.healthy
    assert verdict.reason == (
        "timed out after 3s: infer check failed (POST http://m/v2/models/x/infer): "
        "answered 500: boom"
    )
    assert probe.calls == 3


async def test_the_deadline_names_an_unfinished_rollout() -> None:
    clock = FakeClock()

    def tick() -> None:
        clock.now += 0.5

    stuck = rollout_status(load("072") | {"spec": load("072")["spec"] | {"paused": False}})
    reads = Script([stuck], on_call=tick)
    probe = Script([HEALTHY])

    verdict = await run(reads, probe, within=2.0, clock=clock)

    assert verdict.reason == (
        'timed out after 2s: Waiting for deployment "fraud-scorer" rollout to finish: '
        "0 out of 3 new replicas have been updated..."
    )
    assert (reads.calls, probe.calls) == (4, 0)


async def test_an_api_server_hiccup_is_one_failed_poll() -> None:
    reads = Script([KubeUnavailable("apiserver answered 503", status=503), DONE])
    probe = Script([HEALTHY])

    assert await run(reads, probe) == HEALTHY
    assert reads.calls == 2


async def test_a_permanent_error_from_the_reader_fails_verification_at_once() -> None:
    # A 404 or 403 will not heal by waiting: the incident must not stay "acting" forever.
    reads = Script([KubeNotFound('deployments.apps "fraud-scorer" not found', status=404)])

    verdict = await run(reads, Script([HEALTHY]))

    assert not verdict.healthy
    assert "could not read the rollout" in verdict.reason
    assert "not found" in verdict.reason


async def test_a_timeout_error_of_the_reader_itself_propagates() -> None:
    with pytest.raises(TimeoutError):
        await run(Script([TimeoutError("reader bug")]), Script([HEALTHY]))


async def test_a_hanging_probe_is_cut_at_the_deadline() -> None:
    async def hang() -> Verdict:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    verdict = await run(Script([DONE]), hang, within=0.1)

    assert verdict == Verdict(
        False, "timed out after 0.1s: no check finished (the probe was still running)"
    )


async def test_cancellation_propagates() -> None:
    polled = asyncio.Event()

    def note() -> None:
        polled.set()

    task = asyncio.create_task(run(Script([WAITING], on_call=note), Script([HEALTHY])))
    await polled.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_verifies_a_rollback_against_the_model_server_stand_in(
    session: aiohttp.ClientSession, make_model_server: MakeModelServer
) -> None:
    # The bad v3 serves until the rollout to v2 completes on the third read; v2 then needs
    # one more poll to load.
    serving = {"version": "v3"}
    server = await make_model_server(
        "fraud-scorer",
        version_source=lambda: serving["version"],
        bad_versions={"v3"},
        model_ready=False,
    )
    recorded = [load("009"), load("021"), load("021")]
    recorded[1]["status"]["availableReplicas"] = 1

    async def read_rollout() -> RolloutStatus:
        deployment = recorded.pop(0) if len(recorded) > 1 else recorded[0]
        status = rollout_status(deployment)
        if status.done:
            serving["version"] = "v2"
        return status

    async def probe() -> Verdict:
        verdict = await probe_model(
            session,
            base_url=server.url,
            model="fraud-scorer",
            version="v2",
            paths=HealthPaths(),
            sample_request={"inputs": []},
            request_timeout=2.0,
        )
        server.model_ready = True
        return verdict

    verdict = await verify(read_rollout=read_rollout, probe=probe, timeout=5.0, poll_interval=0.001)

    assert verdict.healthy, verdict.reason
    assert verdict.reason == "fraud-scorer v2 is healthy (5 checks passed)"
    model_ready = server.requests_to("model_ready")
    assert len(model_ready) == 2
    assert len(server.requests_to("infer")) == 1
