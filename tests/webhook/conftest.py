"""An app under test wired to real Redis, with a handler that records the jobs it ran."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.app import create_app
from receiver.models import Job
from receiver.store import model_key
from receiver.worker import JobContext


class RecordingHandler:
    """Records every job it runs; ``gate`` (when set) holds jobs until released."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Job, JobContext]] = []
        self.gate: asyncio.Event | None = None
        self.running: dict[str, int] = {}
        self.max_running: dict[str, int] = {}

    def lease_key(self, job: Job) -> str:
        return model_key(job.namespace, job.model, job.cluster)

    async def handle(self, job: Job, ctx: JobContext) -> None:
        key = self.lease_key(job)
        self.running[key] = self.running.get(key, 0) + 1
        self.max_running[key] = max(self.max_running.get(key, 0), self.running[key])
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
            self.jobs.append((job, ctx))
        finally:
            self.running[key] -= 1


@pytest.fixture
def recording_handler() -> RecordingHandler:
    return RecordingHandler()


AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(
    make_settings: Any, aiohttp_client: Any, recording_handler: RecordingHandler
) -> AppFactory:
    # make_settings (and with it the key prefix) is set up before aiohttp_client, so the
    # apps are closed before the prefix's keys are deleted.
    async def make(
        *, handler: Any = None, run_workers: bool = True, restore: Any = None, **overrides: Any
    ) -> TestClient:
        settings = make_settings(**overrides)
        app = create_app(
            settings,
            handler=handler or recording_handler,
            run_workers=run_workers,
            restore=restore,
            read_block_seconds=0.1,
        )
        return await aiohttp_client(app)

    return make
