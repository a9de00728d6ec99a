"""A real Prometheus holding backfilled samples, for tests that query it at chosen times.

``PrometheusServer`` runs Debian's ``prometheus`` on a free loopback port with its own
storage directory, the shipped ``alert_rules/*.rules.yaml`` loaded (so ``/api/v1/rules``
lists them) and a one-second evaluation interval. Samples are written into its storage
with ``promtool tsdb create-blocks-from openmetrics`` (``backfill``); recording rules are
computed over them with ``promtool tsdb create-blocks-from rules`` against the running
server (``backfill_rules``). Prometheus reads new blocks at start, so both restart it on
the same port. Backfilled data lies hours in the past (``BASE``): tests query it with an
explicit evaluation time, which makes them deterministic; nothing is scraped.

The process dies with the test process (``PR_SET_PDEATHSIG``), so an interrupted run
leaks nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port

RULE_FILES = sorted((ROOT / "alert_rules").glob("*.rules.yaml"))
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
PROMTOOL_TIMEOUT_SECONDS = 120.0

# Backfilled samples start here: whole hours, far enough back that they never meet the
# head block the running server writes its own rule evaluations to.
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def shipped_rules() -> list[dict[str, Any]]:
    """Every rule of the shipped rule files, in file order, with the file's name."""
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "file": path.name, "group": group["name"]})
    return rules


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"{binary} not found on PATH: these tests run the real one; install Debian's "
            "prometheus package (apt-get install prometheus)",
            pytrace=False,
        )
    return path


@dataclass
class Series:
    """One series to backfill: name, labels and (time, value) points in time order."""

    name: str
    labels: dict[str, str]
    points: list[tuple[datetime, float]] = field(default_factory=list)


def counter(
    name: str,
    labels: dict[str, str],
    *,
    start: datetime,
    end: datetime,
    per_second: float,
    step: timedelta = timedelta(seconds=15),
) -> Series:
    """A counter growing by ``per_second`` from 0 at ``start``, sampled every ``step``."""
    points = []
    at, value = start, 0.0
    while at <= end:
        points.append((at, value))
        at += step
        value += per_second * step.total_seconds()
    return Series(name, labels, points)


def gauge(
    name: str,
    labels: dict[str, str],
    *,
    start: datetime,
    end: datetime,
    value: float,
    step: timedelta = timedelta(seconds=15),
) -> Series:
    """A gauge holding ``value`` from ``start`` to ``end``, sampled every ``step``."""
    points = []
    at = start
    while at <= end:
        points.append((at, value))
        at += step
    return Series(name, labels, points)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(series: Iterable[Series]) -> str:
    """The OpenMetrics text of ``series``, each family's lines together, ending in # EOF."""
    by_family: dict[str, list[Series]] = {}
    for s in series:
        by_family.setdefault(s.name, []).append(s)
    lines = []
    for name, members in by_family.items():
        for s in members:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
            for at, value in s.points:
                lines.append(f"{name}{{{labels}}} {value!r} {at.timestamp():.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class PrometheusServer:
    """Debian's ``prometheus`` on ``url``; ``backfill``/``backfill_rules`` load data."""

    def __init__(self, workdir: Path, *, rule_files: Sequence[Path] = RULE_FILES) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.rule_files = list(rule_files)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._batches = 0
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = workdir / "prometheus.yml"
        config = {
            "global": {"evaluation_interval": "1s", "scrape_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    # --- process --------------------------------------------------------------------

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    require("prometheus"),
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--web.external-url={self.url}/",
                    "--storage.tsdb.retention.time=30d",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self._ready():
            if self._proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus not ready in {READY_TIMEOUT_SECONDS}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_SECONDS)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- data -----------------------------------------------------------------------

    def backfill(self, series: Iterable[Series]) -> None:
        """Write ``series`` into the storage as blocks, then restart to load them."""
        self._batches += 1
        source = self.workdir / f"backfill-{self._batches}.om"
        source.write_text(openmetrics(series))
        self._promtool(
            ["tsdb", "create-blocks-from", "openmetrics", str(source), str(self.data_dir)]
        )
        self.restart()

    def backfill_rules(
        self,
        start: datetime,
        end: datetime,
        *,
        rule_files: Sequence[Path] | None = None,
        eval_interval: str = "15s",
    ) -> None:
        """Evaluate the recording rules over ``[start, end]`` into blocks, then restart.

        promtool evaluates each rule against this server's current data, so a rule that
        reads another recording rule needs that one backfilled by an earlier call.
        """
        self._batches += 1
        out = self.workdir / f"rules-{self._batches}"
        self._promtool(
            [
                "tsdb",
                "create-blocks-from",
                "rules",
                f"--url={self.url}",
                f"--start={int(start.timestamp())}",
                f"--end={int(end.timestamp())}",
                f"--eval-interval={eval_interval}",
                f"--output-dir={out}",
                *(str(p) for p in (rule_files or self.rule_files)),
            ]
        )
        for block in out.iterdir():
            block.rename(self.data_dir / block.name)
        self.restart()

    def _promtool(self, args: list[str]) -> None:
        done = subprocess.run(
            [require("promtool"), *args],
            capture_output=True,
            text=True,
            timeout=PROMTOOL_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"promtool {' '.join(args[:3])} failed:\n{done.stdout}{done.stderr}")

    # --- reading (synchronous, for fixtures and assertions) --------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a success, else the test fails."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        assert body.get("status") == "success", body
        return body["data"]

    def instant(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        return self.api("query", query=expr, time=f"{at.timestamp():.3f}")["result"]
