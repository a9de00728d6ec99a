"""The stand-in on its own event loop in a background thread, for tests of the sync client.

The sync `kubernetes.client` blocks, so it cannot share a loop with the server; here the
server, its controller and its store live on the thread's loop and every method call is
marshalled onto that loop, which keeps the store single-threaded.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .server import KubeStandIn

CALL_TIMEOUT = 30.0


class ThreadedKube:
    """Same API as KubeStandIn, but every coroutine method is a plain blocking call."""

    def __init__(self, kubeconfig_dir: Path, **options: Any) -> None:
        self._dir = kubeconfig_dir
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kube-standin", daemon=True
        )
        self._server: KubeStandIn | None = None

    def start(self) -> None:
        self._thread.start()

        async def boot() -> KubeStandIn:
            server = KubeStandIn(**self._options)
            await server.start(self._dir)
            return server

        self._server = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(CALL_TIMEOUT)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(CALL_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self._loop.close()

    @property
    def server(self) -> KubeStandIn:
        assert self._server is not None, "the stand-in is not started"
        return self._server

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.server, name)
        if inspect.iscoroutinefunction(attribute):

            def run_coroutine(*args: Any, **kwargs: Any) -> Any:
                future = asyncio.run_coroutine_threadsafe(attribute(*args, **kwargs), self._loop)
                return future.result(CALL_TIMEOUT)

            return run_coroutine
        if inspect.ismethod(attribute):
            return self._on_loop(attribute)
        return attribute

    def __setattr__(self, name: str, value: Any) -> None:
        """Knobs that are attributes (`user`, `bookmark_interval`) are set on the server."""
        server = self.__dict__.get("_server")
        if name.startswith("_") or server is None or not hasattr(server, name):
            object.__setattr__(self, name, value)
            return
        self._on_loop(setattr)(server, name, value)

    def _on_loop(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            async def call() -> Any:
                return function(*args, **kwargs)

            return asyncio.run_coroutine_threadsafe(call(), self._loop).result(CALL_TIMEOUT)

        return run
