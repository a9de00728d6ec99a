"""Shared helpers of the benchmark scripts: paths, payloads, machine facts, statistics,
Redis clean-up and server subprocesses.

The scripts are run as ``python benchmarks/<name>.py``; this module puts the repository root
on ``sys.path`` so ``receiver`` and the stand-ins under ``tests/standins`` import as in the
test suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AM_FIXTURES = ROOT.parent / "shared" / "fixtures" / "alertmanager"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WEBHOOK_TOKEN = "test-token"  # what the captured payloads were sent with
ADMIN_TOKEN = "bench-admin-token"
SERVE = Path(__file__).resolve().parent / "_serve.py"


def fixture_body(name: str = "firing_single") -> bytes:
    """A captured Alertmanager POST body, byte for byte."""
    return (AM_FIXTURES / f"{name}.json").read_bytes()


def fixture_payload(name: str = "firing_single") -> dict[str, Any]:
    return json.loads(fixture_body(name))


def webhook_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def new_prefix() -> str:
    """A Redis key prefix of this run only; ``delete_prefix`` removes it afterwards."""
    return f"bench:{uuid.uuid4().hex[:10]}:"


def delete_prefix(prefix: str, url: str = REDIS_URL) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_facts() -> None:
    facts = machine_facts()
    print(
        f"# {facts['date']}  nproc={facts['nproc']}  cpu={facts['cpu']!r}  python={facts['python']}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n), at least 1
    return ordered[min(rank, len(ordered)) - 1]


def summarize_ms(values: Sequence[float]) -> str:
    """p50/p90/p99/max of seconds, printed in milliseconds."""
    return (
        f"n={len(values)}  p50={percentile(values, 50) * 1000:.1f} ms  "
        f"p90={percentile(values, 90) * 1000:.1f} ms  "
        f"p99={percentile(values, 99) * 1000:.1f} ms  max={max(values) * 1000:.1f} ms"
    )


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def rss_kib(pid: int | str = "self") -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -------------------------------------------------------------------------- payloads


TRIGGERS: list[tuple[str, str, str]] = [
    # (alertname, trigger, category): one per rule family of alert_rules/
    ("ModelServingHighErrorRate", "error_rate", "operational"),
    ("ModelServingLatencyHigh", "latency_p99", "operational"),
    ("ModelServingOOMKilled", "oom", "operational"),
    ("ModelServingAccuracyBelowSLO", "accuracy_slo", "accuracy"),
    ("ModelServingMissingFeatures", "missing_features", "data_quality"),
]


def model_alert(
    namespace: str,
    model: str,
    version: str,
    *,
    fingerprint: str,
    trigger: int = 0,
    starts_at: str | None = None,
) -> dict[str, Any]:
    """One firing alert shaped like the captured ``firing_single.json`` one, for any model."""
    alert = copy.deepcopy(fixture_payload("firing_single")["alerts"][0])
    alertname, trigger_name, category = TRIGGERS[trigger % len(TRIGGERS)]
    alert["labels"].update(
        {
            "alertname": alertname,
            "trigger": trigger_name,
            "category": category,
            "model": model,
            "namespace": namespace,
            "model_version": version,
        }
    )
    alert["fingerprint"] = fingerprint
    if starts_at is not None:
        alert["startsAt"] = starts_at
    return alert


def notification(
    alerts: list[dict[str, Any]], *, external_url: str = "http://127.0.0.1:29093"
) -> bytes:
    """A v4 notification of one group (one model) carrying ``alerts``, compact JSON."""
    payload = fixture_payload("firing_single")
    first = alerts[0]["labels"]
    common = {k: v for k, v in first.items() if all(a["labels"].get(k) == v for a in alerts[1:])}
    payload["alerts"] = alerts
    payload["groupLabels"] = {"model": first["model"], "namespace": first["namespace"]}
    payload["commonLabels"] = common
    payload["commonAnnotations"] = alerts[0]["annotations"] if len(alerts) == 1 else {}
    payload["groupKey"] = f'{{}}:{{model="{first["model"]}", namespace="{first["namespace"]}"}}'
    payload["externalURL"] = external_url
    return json.dumps(payload, separators=(",", ":")).encode()


# -------------------------------------------------------------------------- subprocesses


@dataclass
class ServerProcess:
    """A server started by ``_serve.py`` in its own process; ``url`` once it is listening."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(
    args: list[str], *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> ServerProcess:
    """Run ``_serve.py args`` with this interpreter; wait for its ``LISTENING <url>`` line."""
    log = log_path.open("wb") if log_path is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, str(SERVE), *args],
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, **(env or {})},
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if line.startswith("LISTENING "):
            return ServerProcess(proc, line.split(" ", 1)[1], log_path)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server {args} did not start (see {log_path or 'its stderr'})")


@contextlib.contextmanager
def running(
    args: list[str], *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> Iterator[ServerProcess]:
    server = start_server(args, env=env, log_path=log_path)
    try:
        yield server
    finally:
        server.stop()


async def wait_ready(session: Any, url: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Poll ``/readyz`` until 200 (start-up facts read, consumer group created)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
                reason = await resp.text()
        except OSError as e:
            reason = str(e)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {timeout}s: {reason}")
        await asyncio.sleep(0.05)


async def all_incidents(session: Any, url: str) -> list[dict[str, Any]]:
    """Every incident through ``GET /api/incidents``, page by page (500 per page)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        params = {"limit": "500"}
        if cursor:
            params["cursor"] = cursor
        async with session.get(
            f"{url}/api/incidents", params=params, headers=admin_headers()
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(
                    f"GET /api/incidents answered {resp.status}: {await resp.text()}"
                )
            page = await resp.json()
        items.extend(page["items"])
        cursor = page.get("next")
        if not cursor:
            break
    return items
