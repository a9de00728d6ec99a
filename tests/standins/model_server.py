"""A model server that speaks the Open Inference Protocol (KServe v2) on loopback.

It serves one model name, in one version at a time, and can be made to misbehave the
ways real model servers do: not live, not ready, model not loaded, the wrong version
behind a ready server, failing or malformed inference, slow answers, or failing only
while a given version serves (``bad_versions``). Every request is logged.

The version served comes from ``version_source`` when one is given (a test can make it
follow the version a Kubernetes stand-in runs), else from the ``version`` attribute.
``None`` means no model is loaded: the server is live but not ready.

Register as a pytest plugin (``pytest_plugins = ["tests.standins.model_server"]``, or
``-p tests.standins.model_server``) for the fixtures ``model_server`` (one started
server for ``fraud-scorer`` ``v1``) and ``make_model_server`` (an async factory, for
several servers such as blue and green slots). Servers close at the end of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

# Not part of the protocol: where the stand-in answers the optional dependencies check
# (HealthPaths.dependencies), e.g. a feature-store ping.
DEPENDENCIES_PATH = "/v2/health/dependencies"

ROUTE_NAMES = ("live", "ready", "model_ready", "model_metadata", "dependencies", "infer")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in saw it."""

    method: str
    path: str
    route: str  # one of ROUTE_NAMES, or "unknown"
    body: Any  # parsed JSON, raw text if it was not JSON, None if empty
    at: float  # time.monotonic() on arrival


@dataclass
class ModelServer:
    """State and knobs of one stand-in; change attributes at any time, even mid-test."""

    model: str
    version: str | None = "v1"
    version_source: Callable[[], str | None] | None = None
    live: bool = True
    ready: bool = True
    model_ready: bool = True
    # Overrides the metadata ``versions`` list (e.g. a stale or wrong list); None: served one.
    versions: list[str] | None = None
    dependencies_ok: bool = True
    # Status of /infer for a healthy model; a non-2xx answers with an OIP error body.
    infer_status: int = 200
    infer_outputs: bool = True  # False: 200 with a body that has no ``outputs``
    # While one of these versions serves, inference fails with 500 (a bad model is
    # usually live and ready, and fails on real input).
    bad_versions: set[str] = field(default_factory=set)
    delay: float = 0.0  # seconds before answering any route
    route_delays: dict[str, float] = field(default_factory=dict)  # per ROUTE_NAMES entry
    requests: list[RecordedRequest] = field(default_factory=list)
    _server: TestServer | None = field(default=None, repr=False)
    _closing: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    # --- what it serves -----------------------------------------------------------------

    def current_version(self) -> str | None:
        """The version loaded right now."""
        return self.version_source() if self.version_source is not None else self.version

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        if self._server is None or not self._server.started:
            raise RuntimeError("model server stand-in is not started")
        return str(self._server.make_url("")).rstrip("/")

    def requests_to(self, route: str) -> list[RecordedRequest]:
        """Logged requests for one route name (``"infer"``, ``"live"``, ...)."""
        return [r for r in self.requests if r.route == route]

    # --- lifecycle ----------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application; ``start`` serves it on a free loopback port."""
        app = web.Application()
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get(DEPENDENCIES_PATH, self._dependencies)
        app.router.add_get("/v2/models/{name}/ready", self._model_ready)
        app.router.add_get("/v2/models/{name}", self._model_metadata)
        app.router.add_post("/v2/models/{name}/infer", self._infer)
        return app

    async def start(self) -> ModelServer:
        """Serve on 127.0.0.1, port chosen by the kernel."""
        self._closing = asyncio.Event()
        self._server = TestServer(self.make_app(), host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        """Stop serving; requests still in their delay end at once."""
        self._closing.set()
        if self._server is not None:
            await self._server.close()

    # --- handlers -----------------------------------------------------------------------

    async def _enter(self, request: web.Request, route: str) -> None:
        """Log the request, then wait out the configured delay (cut short by close)."""
        raw = await request.text()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        self.requests.append(
            RecordedRequest(request.method, request.path, route, body, time.monotonic())
        )
        delay = self.delay + self.route_delays.get(route, 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay)

    def _unknown_model(self, request: web.Request) -> web.Response | None:
        name = request.match_info["name"]
        if name != self.model:
            return _error(404, f"model {name!r} not found")
        return None

    async def _live(self, request: web.Request) -> web.Response:
        await self._enter(request, "live")
        return web.json_response({"live": self.live}, status=200 if self.live else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        await self._enter(request, "ready")
        ready = self.ready and self.current_version() is not None
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _dependencies(self, request: web.Request) -> web.Response:
        await self._enter(request, "dependencies")
        if not self.dependencies_ok:
            return _error(503, "feature store unreachable")
        return web.json_response({"dependencies": "ok"})

    async def _model_ready(self, request: web.Request) -> web.Response:
        await self._enter(request, "model_ready")
        if (missing := self._unknown_model(request)) is not None:
            return missing
        ready = self.model_ready and self.current_version() is not None
        return web.json_response({"name": self.model, "ready": ready}, status=200 if ready else 503)

    async def _model_metadata(self, request: web.Request) -> web.Response:
        await self._enter(request, "model_metadata")
        if (missing := self._unknown_model(request)) is not None:
            return missing
        version = self.current_version()
        if version is None:
            return _error(404, f"model {self.model!r} is not loaded")
        versions = self.versions if self.versions is not None else [version]
        return web.json_response(
            {
                "name": self.model,
                "versions": versions,
                "platform": "standin",
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 1]}],
            }
        )

    async def _infer(self, request: web.Request) -> web.Response:
        await self._enter(request, "infer")
        if (missing := self._unknown_model(request)) is not None:
            return missing
        version = self.current_version()
        if version is None:
            return _error(404, f"model {self.model!r} is not loaded")
        if version in self.bad_versions:
            return _error(500, f"inference failed in {self.model} {version}")
        if not 200 <= self.infer_status < 300:
            return _error(self.infer_status, "inference failed")
        body: dict[str, Any] = {"model_name": self.model, "model_version": version}
        if self.infer_outputs:
            body["outputs"] = [
                {"name": "output-0", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}
            ]
        return web.json_response(body, status=self.infer_status)


def _error(status: int, message: str) -> web.Response:
    # The OIP error body: {"error": "<message>"}.
    return web.json_response({"error": message}, status=status)


class MakeModelServer(Protocol):
    """Type of the ``make_model_server`` fixture."""

    def __call__(self, model: str = ..., **knobs: Any) -> Awaitable[ModelServer]: ...


async def make_model_server(
    model: str = "fraud-scorer",
    *,
    version: str | None = "v1",
    version_source: Callable[[], str | None] | None = None,
    **knobs: Any,
) -> ModelServer:
    """Build and start a stand-in; the caller closes it (fixtures do that for tests)."""
    server = ModelServer(model=model, version=version, version_source=version_source, **knobs)
    return await server.start()


@pytest.fixture(name="make_model_server")
async def make_model_server_fixture() -> AsyncIterator[MakeModelServer]:
    """Async factory: ``await make_model_server("ranker", version="v2", delay=1.0)``.

    Each call starts one more server; all close when the test ends.
    """
    started: list[ModelServer] = []

    async def factory(model: str = "fraud-scorer", **kwargs: Any) -> ModelServer:
        server = await make_model_server(model, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.close()


@pytest.fixture
async def model_server(make_model_server: MakeModelServer) -> ModelServer:
    """One started stand-in serving ``fraud-scorer`` ``v1``."""
    return await make_model_server("fraud-scorer", version="v1")


__all__ = [
    "DEPENDENCIES_PATH",
    "ROUTE_NAMES",
    "MakeModelServer",
    "ModelServer",
    "RecordedRequest",
    "make_model_server",
    "make_model_server_fixture",
    "model_server",
]
