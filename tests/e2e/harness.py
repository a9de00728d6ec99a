"""Real Prometheus and Alertmanager for the end-to-end tests: configs and processes.

- ``rewrite_rules``: the shipped ``alert_rules/*.rules.yaml`` with only ``for:`` (and a
  group ``interval``, were one set) and, when asked, the range durations shortened (with
  the window a recording rule's name states); labels and annotations are checked to be
  unchanged, and each expression to parse to the shipped syntax tree but for those
  durations and names.
- ``rewrite_route``: the shipped ``deploy/alertmanager.yml`` with only the webhook url,
  the ``credentials_file`` path and the rollback route's ``group_wait`` /
  ``group_interval`` changed; every other key is checked to be unchanged, and the
  result passes ``amtool check-config``.
- ``Prometheus`` / ``Alertmanager``: the Debian binaries on free loopback ports with data
  dirs under the test's ``tmp_path``, ready when ``/-/ready`` answers 200, stopped with
  terminate, wait, kill on timeout. They also die with the test process
  (``PR_SET_PDEATHSIG``), so an interrupted run leaks nothing.
- ``DeliveryTap``: a recording pass-through in front of the receiver's webhook, so a test
  sees each Alertmanager delivery exactly as it was posted and the receiver's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest
import yaml
from aiohttp import web

from receiver.durations import format_duration as prom_duration
from receiver.durations import parse_duration as prom_seconds
from tests.conftest import ROOT, free_port

RULES_DIR = ROOT / "alert_rules"
ROUTE_FILE = ROOT / "deploy" / "alertmanager.yml"
ROLLBACK_RECEIVER = "rollback-receiver"

# binary -> Debian package that installs it
PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}

STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0


def require_binary(name: str) -> str:
    """The binary's path; a missing one fails the test naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        package = PACKAGES[name]
        pytest.fail(
            f"{name} not found on PATH: the end-to-end tests run the real binary; install "
            f"Debian's {package} package (apt-get install {package})",
            pytrace=False,
        )
    return path


# --- durations -------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> float:
    match = _DURATION.match(str(text).strip())
    if not match or not any(match.groups()):
        raise ValueError(f"unsupported duration {text!r}")
    h, m, s = (int(g or 0) for g in match.groups())
    return h * 3600.0 + m * 60.0 + s


def format_duration(seconds: float) -> str:
    whole = int(seconds)
    if whole != seconds:
        return f"{int(seconds * 1000)}ms"
    return f"{whole}s"


# --- rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ForRewrite:
    group: str
    alert: str
    tier: str
    shipped: str
    loaded: str


@dataclass
class LoadedRules:
    """The rewritten rule files and what was rewritten.

    ``records`` maps each shipped recording rule name that states a window to its loaded
    name (``...:ratio_rate5m`` -> ``...:ratio_rate10s``); ``ranges`` maps each shipped
    range duration, in seconds, to the loaded one.
    """

    files: list[Path]
    rewrites: list[ForRewrite]
    records: dict[str, str] = field(default_factory=dict)
    ranges: dict[float, float] = field(default_factory=dict)

    def loaded_for(self, alert: str, tier: str) -> float:
        for r in self.rewrites:
            if (r.alert, r.tier) == (alert, tier):
                return parse_duration(r.loaded)
        raise KeyError((alert, tier))

    def shipped_for(self, alert: str, tier: str) -> str:
        for r in self.rewrites:
            if (r.alert, r.tier) == (alert, tier):
                return r.shipped
        raise KeyError((alert, tier))

    def record(self, shipped_name: str) -> str:
        """The loaded name of a shipped recording rule (unchanged when it states no window)."""
        return self.records.get(shipped_name, shipped_name)


def _without(rule: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if k not in keys}


# A range duration as written in PromQL: ``[5m]``, ``[1h30m]``, a subquery's ``[30m:1m]``
# (its range only; a step is a resolution, not a window).
_RANGE = re.compile(r"\[(\s*)((?:\d+(?:ms|[smhdwy]))+)(\s*)(?=[\]:])")
# The window a recording rule's name states at the end of its operations part
# (``level:metric:operations``): ``ratio_rate5m``, ``increase30m``. The receiver reads an
# alert's range window from the recording rules Prometheus lists, and from these names when
# it cannot list them (``receiver.verify.promql.range_window_seconds``), so a rule whose
# window is rewritten is renamed by the same mapping.
_RECORDED_WINDOW = re.compile(r"(?<=[a-z])((?:\d+(?:ms|[smhdwy]))+)$")
# Lines of the parser's tree dump (Rust ``Debug``): a range, and a string on its own line.
_TREE_RANGE = re.compile(r"(\s*)range: (\d+(?:\.\d+)?)(s|ms|µs|ns),")
_TREE_STRING = re.compile(r'(\s*)"(.*)",')
_RUST_UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}


def _scaled(text: str, scale: Callable[[float], float]) -> str:
    return prom_duration(scale(prom_seconds(text)))


def _renamed(name: str, ranges: Callable[[float], float]) -> str:
    head, sep, operations = name.rpartition(":")
    match = _RECORDED_WINDOW.search(operations) if sep else None
    if match is None:
        return name
    return f"{head}:{operations[: match.start()]}{_scaled(match.group(1), ranges)}"


def _rewrite_expr(expr: str, ranges: Callable[[float], float], names: dict[str, str]) -> str:
    text = _RANGE.sub(lambda m: f"[{m[1]}{_scaled(m[2], ranges)}{m[3]}", expr)
    if names:
        alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        pattern = re.compile(rf"(?<![A-Za-z0-9_:])({alternatives})(?![A-Za-z0-9_:])")
        text = pattern.sub(lambda m: names[m[1]], text)
    return text


def _tree(expr: str) -> list[str]:
    """The complete syntax tree of ``expr`` as the PromQL parser dumps it, line by line."""
    return repr(promql_parser.parse(expr)).splitlines()


def _check_expr(
    shipped: str, loaded: str, ranges: Callable[[float], float], names: dict[str, str], where: str
) -> None:
    """``loaded`` parses to ``shipped``'s tree with every range duration mapped by ``ranges``
    and every selector naming a renamed recording rule renamed, and nothing else changed."""
    before, after = _tree(shipped), _tree(loaded)
    assert len(before) == len(after), f"{where}: the expression's tree changed shape"
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        b_range, a_range = _TREE_RANGE.fullmatch(b), _TREE_RANGE.fullmatch(a)
        if b_range and a_range and b_range[1] == a_range[1]:
            want = ranges(float(b_range[2]) * _RUST_UNITS[b_range[3]])
            got = float(a_range[2]) * _RUST_UNITS[a_range[3]]
            assert math.isclose(got, want), f"{where}: range {b.strip()} loaded as {a.strip()}"
            continue
        b_name, a_name = _TREE_STRING.fullmatch(b), _TREE_STRING.fullmatch(a)
        if b_name and a_name and i and before[i - 1].strip() == "name: Some(":
            # A selector's metric name: renamed exactly when it names a renamed rule.
            want_name = names.get(b_name[2], b_name[2])
            assert a_name[2] == want_name, f"{where}: selector {b_name[2]} loaded as {a_name[2]}"
            continue
        assert b == a, f"{where}: the expression changed beyond range durations: {b!r} -> {a!r}"


def rewrite_rules(
    dest: Path,
    scale: Callable[[float], float],
    sources: Iterable[Path] | None = None,
    *,
    ranges: Callable[[float], float] | None = None,
) -> LoadedRules:
    """Copy the shipped rule files into ``dest`` with every ``for:`` mapped by ``scale``.

    With ``ranges``, every range duration of every expression (``[5m]``) is mapped by it
    too, and so is the window that a recording rule's name states (``...:rate5m``), in its
    ``record:`` and wherever an expression reads it: the rules keep Prometheus's naming
    practice, which the receiver falls back on to know an alert's window. A group
    ``interval``, were one set, is mapped by ``scale``.

    Nothing else changes; that is checked by reloading each written file and comparing
    each rule to the shipped one: keys other than ``for``, ``record`` and ``expr``
    unchanged, names renamed exactly as stated, and each expression parsed by the PromQL
    parser to the shipped syntax tree with only those durations and names changed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(sources or RULES_DIR.glob("*.rules.yaml"))
    range_map = ranges or (lambda seconds: seconds)
    names: dict[str, str] = {}
    if ranges is not None:
        for src in sources:
            for group in yaml.safe_load(src.read_text())["groups"]:
                for rule in group["rules"]:
                    if "record" in rule and _renamed(rule["record"], ranges) != rule["record"]:
                        names[rule["record"]] = _renamed(rule["record"], ranges)
    files: list[Path] = []
    rewrites: list[ForRewrite] = []
    range_rewrites: dict[float, float] = {}
    for src in sources:
        shipped = yaml.safe_load(src.read_text())
        doc = yaml.safe_load(src.read_text())
        for group in doc["groups"]:
            if "interval" in group:
                group["interval"] = format_duration(scale(parse_duration(group["interval"])))
            for rule in group["rules"]:
                if "for" in rule:
                    loaded = format_duration(scale(parse_duration(rule["for"])))
                    rewrites.append(
                        ForRewrite(
                            group["name"],
                            rule["alert"],
                            rule.get("labels", {}).get("tier", ""),
                            rule["for"],
                            loaded,
                        )
                    )
                    rule["for"] = loaded
                if ranges is not None:
                    for m in _RANGE.finditer(rule["expr"]):
                        seconds = prom_seconds(m[2])
                        range_rewrites[seconds] = ranges(seconds)
                    rule["expr"] = _rewrite_expr(rule["expr"], ranges, names)
                    if "record" in rule:
                        rule["record"] = names.get(rule["record"], rule["record"])
        out = dest / src.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False, width=10_000))
        reread = yaml.safe_load(out.read_text())
        for g_shipped, g_loaded in zip(shipped["groups"], reread["groups"], strict=True):
            assert _without(g_shipped, "rules") | {"interval": None} == _without(
                g_loaded, "rules"
            ) | {"interval": None}, f"{src.name}: group {g_shipped['name']} changed"
            for r_shipped, r_loaded in zip(g_shipped["rules"], g_loaded["rules"], strict=True):
                what = f"{src.name}: rule {r_shipped.get('alert') or r_shipped.get('record')}"
                assert _without(r_shipped, "for", "record", "expr") == _without(
                    r_loaded, "for", "record", "expr"
                ), f"{what} changed beyond for:, its name's window and its ranges"
                assert ("for" in r_shipped) == ("for" in r_loaded), what
                assert ("record" in r_shipped) == ("record" in r_loaded), what
                if "record" in r_shipped:
                    want = names.get(r_shipped["record"], r_shipped["record"])
                    assert r_loaded["record"] == want, f"{what} loaded as {r_loaded['record']}"
                _check_expr(r_shipped["expr"], r_loaded["expr"], range_map, names, what)
        files.append(out)
    return LoadedRules(files, rewrites, names, range_rewrites)


# --- Alertmanager route ----------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}/{i}"))
        return out
    return {prefix: value}


def rewrite_route(
    dest: Path,
    *,
    webhook_url: str,
    credentials_file: Path,
    group_wait: str,
    group_interval: str,
) -> dict[str, tuple[Any, Any]]:
    """Write the shipped route to ``dest`` pointed at the test's receiver.

    Returns the changed keys (path -> (shipped, loaded)); anything else changing fails.
    """
    shipped = yaml.safe_load(ROUTE_FILE.read_text())
    doc = yaml.safe_load(ROUTE_FILE.read_text())
    routes = [r for r in doc["route"]["routes"] if r.get("receiver") == ROLLBACK_RECEIVER]
    assert len(routes) == 1, "the shipped route has no single rollback-receiver route"
    routes[0]["group_wait"] = group_wait
    routes[0]["group_interval"] = group_interval
    receivers = [r for r in doc["receivers"] if r["name"] == ROLLBACK_RECEIVER]
    assert len(receivers) == 1 and len(receivers[0]["webhook_configs"]) == 1
    webhook = receivers[0]["webhook_configs"][0]
    webhook["url"] = webhook_url
    webhook["http_config"]["authorization"]["credentials_file"] = str(credentials_file)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))

    before, after = _flatten(shipped), _flatten(yaml.safe_load(dest.read_text()))
    changed = {
        k: (before.get(k), after.get(k))
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k)
    }
    allowed = re.compile(
        r"^/route/routes/\d+/(group_wait|group_interval)$"
        r"|^/receivers/\d+/webhook_configs/0/(url|http_config/authorization/credentials_file)$"
    )
    unexpected = sorted(k for k in changed if not allowed.match(k))
    assert not unexpected, f"route rewrite changed more than allowed: {unexpected}"

    check = subprocess.run(
        [require_binary("amtool"), "check-config", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, f"amtool check-config failed:\n{check.stdout}{check.stderr}"
    return changed


# --- processes -------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One child process with its output in a log file; ``stop`` never leaves it behind."""

    def __init__(self, name: str, args: list[str], log_path: Path, base_url: str) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.base_url = base_url
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def start(self, session: aiohttp.ClientSession, timeout: float = READY_TIMEOUT) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; readiness is polled
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(
                    f"{self.base_url}/-/ready", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                await self.stop()
                pytest.fail(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT)


class Alertmanager(ManagedProcess):
    """``prometheus-alertmanager`` alone (clustering disabled) with the rewritten route."""

    def __init__(self, workdir: Path, config: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            f"alertmanager:{self.port}",
            [
                require_binary("prometheus-alertmanager"),
                f"--config.file={config}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={url}/",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            workdir / "alertmanager.log",
            url,
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def alerts(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with session.get(f"{self.base_url}/api/v2/alerts") as resp:
            assert resp.status == 200
            return await resp.json()

    async def webhook_notifications(self, session: aiohttp.ClientSession) -> tuple[float, float]:
        """(sent, failed) notifications of the webhook integration, from its /metrics."""
        async with session.get(f"{self.base_url}/metrics") as resp:
            text = await resp.text()
        values = {
            "alertmanager_notifications_total": 0.0,
            "alertmanager_notifications_failed_total": 0.0,
        }
        for line in text.splitlines():
            for name in values:
                if line.startswith(name + "{") and 'integration="webhook"' in line:
                    values[name] += float(line.rsplit(" ", 1)[1])
        return values["alertmanager_notifications_total"], values[
            "alertmanager_notifications_failed_total"
        ]


@dataclass
class ScrapeTarget:
    job: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)


class Prometheus(ManagedProcess):
    """``prometheus`` scraping the given targets every second, evaluating every second.

    ``port`` may be chosen before (``free_port``) when its URL is needed before it starts.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        rule_files: list[Path],
        alertmanagers: list[str],
        targets: list[ScrapeTarget],
        interval: str = "1s",
        port: int | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.interval = interval
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(p) for p in rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]},
            "scrape_configs": [
                {
                    "job_name": t.job,
                    "static_configs": [{"targets": [t.address], "labels": t.labels}],
                }
                for t in targets
            ],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            f"prometheus:{self.port}",
            [
                require_binary("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--web.external-url={url}/",
            ],
            workdir / "prometheus.log",
            url,
        )

    async def api(self, session: aiohttp.ClientSession, path: str, **params: str) -> Any:
        async with session.get(f"{self.base_url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "success", body
            return body["data"]

    async def alerts(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        return (await self.api(session, "alerts"))["alerts"]

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        return (await self.api(session, "query", query=expr))["result"]

    async def rule_groups(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        return (await self.api(session, "rules"))["groups"]


# --- the delivery tap ------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One POST from an Alertmanager, and what the receiver answered."""

    at: datetime
    payload: dict[str, Any]
    authorization: str
    status: int
    answer: dict[str, Any]

    @property
    def sender(self) -> str:
        return self.payload.get("externalURL", "")


class DeliveryTap:
    """Forwards ``POST /webhook/alertmanager`` to the receiver byte for byte, recording it."""

    def __init__(self, receiver_url: str) -> None:
        self.receiver_url = receiver_url.rstrip("/")
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhook/alertmanager", self._forward)
        app.cleanup_ctx.append(self._session_ctx)
        return app

    async def _session_ctx(self, app: web.Application) -> Any:
        self._session = aiohttp.ClientSession()
        yield
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        at = datetime.now(UTC)
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in {"host", "content-length", "connection", "accept-encoding"}
        }
        async with self._session.post(
            f"{self.receiver_url}/webhook/alertmanager", data=body, headers=headers
        ) as resp:
            answer_raw = await resp.read()
            status = resp.status
            content_type = resp.headers.get("Content-Type", "application/json")
        try:
            answer = json.loads(answer_raw)
        except ValueError:
            answer = {"raw": answer_raw.decode(errors="replace")}
        self.deliveries.append(
            Delivery(at, json.loads(body), request.headers.get("Authorization", ""), status, answer)
        )
        return web.Response(body=answer_raw, status=status, content_type=content_type.split(";")[0])

    def firing(self, **labels: str) -> list[tuple[Delivery, dict[str, Any]]]:
        """(delivery, alert) for each firing alert delivered whose labels include ``labels``."""
        return [
            (d, a)
            for d in self.deliveries
            for a in d.payload.get("alerts", [])
            if a.get("status") == "firing" and labels.items() <= a.get("labels", {}).items()
        ]
