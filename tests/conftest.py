"""Shared fixtures: real Redis, settings, the Alertmanager fixtures, an app under test.

Stand-ins for external services live in tests/standins/ and register here as plugins.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from receiver.metrics import Metrics
from receiver.settings import Settings

pytest_plugins = [
    "tests.standins.kube.fixtures",
    "tests.standins.model_server",
    "tests.standins.slack",
]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
AM_FIXTURES = SHARED / "fixtures" / "alertmanager"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WEBHOOK_TOKEN = "test-token"  # what the captured Alertmanager payloads were sent with
ADMIN_TOKEN = "admin-test-token"


@dataclass(frozen=True)
class Delivery:
    """One captured Alertmanager POST: body bytes exactly as received, and its headers."""

    name: str
    body: bytes
    headers: dict[str, str]

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


def load_delivery(name: str) -> Delivery:
    body = (AM_FIXTURES / f"{name}.json").read_bytes()
    raw_headers = json.loads((AM_FIXTURES / f"{name}.headers.json").read_text())
    headers = dict(raw_headers)
    # Hop-by-hop and length headers belong to the original connection, not to a replay.
    for drop in ("Content-Length", "Host", "Connection", "Accept-Encoding"):
        for key in list(headers):
            if key.lower() == drop.lower():
                del headers[key]
    return Delivery(name, body, headers)


@pytest.fixture
def delivery() -> Callable[[str], Delivery]:
    return load_delivery


@pytest.fixture(scope="session")
def redis_available() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(
            f"Redis at {REDIS_URL} is not reachable ({e}); start it with "
            "`redis-server --daemonize yes` or run `bash .ci/run`"
        )
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
async def key_prefix(redis_available: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.Redis.from_url(redis_available)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def make_settings(key_prefix: str) -> Callable[..., Settings]:
    """Settings for a test app: Redis with this test's prefix, test tokens, short lease."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "webhook_token": WEBHOOK_TOKEN,
            "admin_token": ADMIN_TOKEN,
            "redis_url": REDIS_URL,
            "key_prefix": key_prefix,
            "job_lease_seconds": 3.0,
            "log_format": "text",
        }
        values.update(overrides)
        return Settings(**values)

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A private redis-server that a test may stop and start again (empty, no persistence)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None:
                        pytest.fail(f"redis-server on port {self.port} exited at start")
                    import time

                    time.sleep(0.02)
            pytest.fail(f"redis-server on port {self.port} did not answer within 4s")
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(free_port(), tmp_path)
    proc.start()
    yield proc
    proc.stop()


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail with ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    leftovers = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    if leftovers:
        # Give just-cancelled tasks one turn of the loop to finish.
        await asyncio.sleep(0)
        leftovers = [t for t in leftovers if not t.done()]
    assert not leftovers, f"tasks left running: {leftovers}"
