"""pytest fixtures for the Kubernetes API stand-in (register as a plugin in tests/conftest.py).

- `kube`: the stand-in started in the test's own event loop (async tests, `kubernetes.aio`).
- `kube_threaded`: the same on a background thread's loop (sync tests, `kubernetes.client`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from .server import KubeStandIn
from .threaded import ThreadedKube


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeStandIn]:
    """A started stand-in; `kube.kubeconfig` points the official client at it."""
    server = KubeStandIn()
    await server.start(tmp_path)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kube_threaded(tmp_path: Path) -> Iterator[ThreadedKube]:
    """A stand-in served from a background thread, so blocking sync clients can call it."""
    server = ThreadedKube(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
