"""Fixtures for confirmation: a real Prometheus per test module, loaded by backfilling.

``prometheus`` is a started ``PrometheusServer`` (tests/confirm/prometheus.py) with the
shipped rule files, one per test module: a module loads its samples once in a
module-scoped fixture of its own (``prometheus.backfill(...)``, then optionally
``prometheus.backfill_rules(...)``), and its tests query them at explicit evaluation
times, each test reading series (models, versions) no other test writes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.confirm.prometheus import PrometheusServer


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
