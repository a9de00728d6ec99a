"""Deliveries first: while they arrive, the workers keep to a small share of the loop."""

from __future__ import annotations

import pytest

from receiver import keys
from receiver.worker import IngestLoad
from tests.conftest import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def load(clock: Clock) -> IngestLoad:
    return IngestLoad(share=0.1, quiet=0.05, max_pause=1.0, clock=clock)


def test_when_no_delivery_is_in_flight_jobs_start_at_once(load):
    assert [load.delay() for _ in range(5)] == [0.0] * 5


def test_while_deliveries_arrive_one_job_starts_then_waits_for_its_share(load, clock):
    load.enter()
    assert load.delay() == 0.0  # the first job starts
    assert load.delay() > 0  # a second one waits while the first runs
    clock.now += 0.002
    load.ran(0.002)  # the job took 2 ms: 18 ms of pause keeps the workers to 10 %
    assert load.delay() == pytest.approx(0.018)
    clock.now += 0.018
    assert load.delay() == 0.0
    assert load.delay() > 0


def test_the_pause_after_a_long_job_is_bounded(load, clock):
    load.enter()
    assert load.delay() == 0.0
    load.ran(5.0)
    assert load.delay() == pytest.approx(1.0)


def test_the_workers_resume_once_deliveries_stop_for_a_moment(load, clock):
    load.enter()
    assert load.delay() == 0.0
    load.ran(0.5)
    assert load.delay() == pytest.approx(1.0)
    load.leave()
    assert load.delay() > 0  # a delivery just ended: more may follow
    clock.now += 0.06
    assert load.delay() == 0.0


def test_a_job_that_ended_with_no_delivery_arriving_leaves_no_pause(load, clock):
    """Alerts one at a time: each job starts as soon as its delivery is answered."""
    assert load.delay() == 0.0
    clock.now += 0.5
    load.ran(0.5)  # a long job (verification included), nothing arrived meanwhile
    clock.now += 0.01
    load.enter()  # the next lone alert's delivery
    load.leave()
    assert load.delay() == 0.0, "its job starts at once, not after the quiet period"


def test_a_job_that_ended_just_after_a_delivery_still_pauses(load, clock):
    load.enter()
    load.leave()
    assert load.delay() == 0.0
    clock.now += 0.01
    load.ran(0.01)  # deliveries were arriving: the workers keep to their share
    assert load.delay() == pytest.approx(0.09)


def test_a_job_granted_but_never_run_does_not_block_the_workers_for_good(load, clock):
    load.enter()
    assert load.delay() == 0.0  # granted; its worker stops before running it
    clock.now += 1.0
    assert load.delay() == 0.0


async def test_the_webhook_counts_its_deliveries_and_jobs_still_run(
    make_client, delivery, recording_handler
):
    client = await make_client()
    load = client.app[keys.INGEST_LOAD]
    d = delivery("firing_single")
    resp = await client.post("/webhook/alertmanager", data=d.body, headers=d.headers)
    assert resp.status == 200
    assert load.in_flight == 0
    await wait_for(lambda: recording_handler.jobs, what="the job to run after the delivery")
