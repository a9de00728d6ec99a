"""The end-to-end stack: real Prometheus and Alertmanager, the receiver, the stand-ins.

``make_stack(alertmanagers=1)`` starts, in this order:

1. the instrumented model server (``instrumented.py``), its served version following the
   pod template of ``ml-prod/fraud-scorer`` in the Kubernetes stand-in (``kube``);
2. the receiver (``create_app`` with real Redis, the stand-in's kubeconfig and a policy
   mapping the model to its Deployment, health checks against the model server), on a
   real loopback port, with a recording pass-through (``DeliveryTap``) in front of its
   webhook;
3. the Alertmanager(s), each alone (``--cluster.listen-address=``), with the shipped
   route rewritten (webhook url, credentials file; ``group_wait`` / ``group_interval``
   shortened, see ``GROUP_WAIT`` / ``GROUP_INTERVAL``);
4. Prometheus with the shipped rule files (``for:`` scaled by ``FOR_SCALE``, range
   windows by ``RANGE_SCALE``), scraping the model server (target label ``namespace``)
   and the receiver every second. The receiver confirms against it
   (``RECEIVER_PROMETHEUS_URL``): its port is chosen before the receiver starts.

Everything stops when the test ends (processes terminated, waited, killed on timeout),
and the scenario's timeline is printed and written to ``tmp_path/timeline.txt``.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from receiver.app import create_app
from tests.conftest import ADMIN_TOKEN, WEBHOOK_TOKEN, free_port, wait_for
from tests.e2e.harness import (
    Alertmanager,
    DeliveryTap,
    LoadedRules,
    Prometheus,
    ScrapeTarget,
    require_binary,
    rewrite_route,
    rewrite_rules,
)
from tests.e2e.instrumented import Behaviour, InstrumentedModelServer

NS = "ml-prod"
MODEL = "fraud-scorer"
VERSION_LABEL = "app.kubernetes.io/version"
SAMPLE_REQUEST = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# How the shipped windows are shortened: every for: by 60 (a minute becomes a second, so
# 5m -> 5s, 15m -> 15s), evaluation and scrape every second; every range window by 30
# (5m -> 10s, 30m -> 1m, 1h -> 2m), so the shortest still spans ten scrapes, with the
# recording rules' names stating their new window (...:rate5m -> ...:rate10s). The
# receiver confirms a rollback once the target has served for the alert's window plus its
# for: (5m + 5m shipped, 10s + 5s loaded), both read from this Prometheus. The route's
# group_wait (10s) and group_interval (1m) are shortened for speed; repeat_interval (15m)
# stays.
FOR_SCALE = 1 / 60
RANGE_SCALE = 1 / 30
INTERVAL = "1s"
GROUP_WAIT = "1s"
GROUP_INTERVAL = "5s"
# How often the receiver looks for due confirmations (5s by default).
CONFIRM_POLL_SECONDS = 0.5
SHIPPED_GROUP_WAIT = "10s"
SHIPPED_GROUP_INTERVAL = "1m"


def serving_version(kube: Any) -> str | None:
    dep = kube.store.get("deployments", NS, MODEL)
    if dep is None:
        return None
    return dep["spec"]["template"]["metadata"]["labels"].get(VERSION_LABEL)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Timeline:
    """Named moments of one scenario, printed as offsets from the degradation."""

    title: str
    marks: list[tuple[str, datetime, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def mark(self, name: str, at: datetime | None = None, note: str = "") -> datetime:
        at = at or datetime.now(UTC)
        self.marks.append((name, at, note))
        return at

    def render(self) -> str:
        lines = [f"timeline: {self.title}", *(f"  {n}" for n in self.notes)]
        if self.marks:
            origin = next((at for n, at, _ in self.marks if n == "degraded"), self.marks[0][1])
            previous = origin
            for name, at, note in sorted(self.marks, key=lambda m: m[1]):
                offset = (at - origin).total_seconds()
                step = (at - previous).total_seconds()
                stamp = at.isoformat(timespec="milliseconds")
                lines.append(
                    f"  {offset:+8.2f}s  (+{step:6.2f}s)  {name:<30} {stamp}  {note}".rstrip()
                )
                previous = at
        return "\n".join(lines)


@dataclass
class Stack:
    kube: Any
    model: InstrumentedModelServer
    receiver_url: str
    tap: DeliveryTap
    prometheus: Prometheus
    alertmanagers: list[Alertmanager]
    rules: LoadedRules
    session: aiohttp.ClientSession
    timeline: Timeline

    # --- the cluster --------------------------------------------------------------------

    async def roll_out_bad_version(self, behaviour: Behaviour) -> datetime:
        """Roll v3 out with ``behaviour`` over the healthy v2; returns when v3 began serving."""
        self.model.behave("v3", behaviour)
        self.model.bad_versions = {"v3"} if behaviour.error_ratio else set()
        at = self.timeline.mark("degraded", note=f"v3 rolled out: {behaviour}")
        await self.kube.set_version(NS, MODEL, "v3", wait=True)
        self.kube.requests.clear()
        return at

    def serving_version(self) -> str | None:
        return serving_version(self.kube)

    def deployment_patches(self) -> list[Any]:
        return self.kube.requests_to("PATCH", f"*/deployments/{MODEL}")

    def template_changes(self) -> list[Any]:
        return [
            r
            for r in self.deployment_patches()
            if "spec" in (r.body or {}) and "dryRun" not in r.query
        ]

    # --- Prometheus ---------------------------------------------------------------------

    async def model_alerts(self, alertname: str, version: str = "v3") -> list[dict[str, Any]]:
        return [
            a
            for a in await self.prometheus.alerts(self.session)
            if a["labels"].get("alertname") == alertname
            and a["labels"].get("model") == MODEL
            and a["labels"].get("model_version") == version
        ]

    async def wait_alert(
        self, alertname: str, state: str = "firing", timeout: float = 120
    ) -> dict[str, Any]:
        """Poll Prometheus until the model's alert is in ``state``; marks its activeAt."""
        seen_pending = False

        async def reached() -> dict[str, Any] | None:
            nonlocal seen_pending
            for alert in await self.model_alerts(alertname):
                if alert["state"] == "pending" and not seen_pending:
                    seen_pending = True
                    self.timeline.mark("pending seen (poll)")
                if alert["state"] == state:
                    return alert
            return None

        alert = await wait_for(reached, timeout=timeout, interval=0.2, what=f"{alertname} {state}")
        self.timeline.mark(f"{state} seen (poll)")
        self.timeline.mark("alert activeAt (Prometheus)", parse_time(alert["activeAt"]))
        return alert

    # --- the receiver -------------------------------------------------------------------

    async def incidents(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.receiver_url}/api/incidents", headers=ADMIN) as resp:
            assert resp.status == 200
            return (await resp.json())["items"]

    async def incident(self, incident_id: str) -> dict[str, Any]:
        async with self.session.get(
            f"{self.receiver_url}/api/incidents/{incident_id}", headers=ADMIN
        ) as resp:
            assert resp.status == 200
            return await resp.json()

    async def wait_incident(self, state: str, timeout: float = 60) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            return next((i for i in await self.incidents() if i["state"] == state), None)

        item = await wait_for(reached, timeout=timeout, interval=0.1, what=f"an incident {state}")
        times = item["times"]
        for name in ("received", "acting", "switched", "healthy", "confirmed"):
            if times.get(name):
                self.timeline.mark(f"{name} (receiver)", parse_time(times[name]))
        last = (await self.incident(item["id"]))["events"][-1]
        self.timeline.mark(f"last event: {last['kind']} (receiver)", parse_time(last["at"]))
        return item

    async def wait_confirmation(self, incident_id: str, timeout: float = 60) -> dict[str, Any]:
        """The incident's detail once its confirmation is recorded, either way."""

        async def decided() -> dict[str, Any] | None:
            detail = await self.incident(incident_id)
            return detail if detail["state"] in ("confirmed", "unconfirmed") else None

        detail = await wait_for(
            decided, timeout=timeout, interval=0.1, what=f"{incident_id} confirmed or not"
        )
        if detail["times"].get("confirmed"):
            self.timeline.mark("confirmed (receiver)", parse_time(detail["times"]["confirmed"]))
        return detail

    async def receiver_metric(self, name: str, **labels: str) -> float:
        """The sum of the receiver's ``name`` series whose labels include ``labels``."""
        async with self.session.get(f"{self.receiver_url}/metrics") as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(
                f'{k}="{v}"' in line.split("}", 1)[0] for k, v in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def receiver_alert_outcomes(self) -> dict[str, float]:
        async with self.session.get(f"{self.receiver_url}/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("receiver_alerts_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                out[outcome] = float(line.rsplit(" ", 1)[1])
        return out

    def mark_first_delivery(self, **labels: str) -> None:
        deliveries = self.tap.firing(**labels)
        if deliveries:
            first = min(d.at for d, _ in deliveries)
            self.timeline.mark("delivered by Alertmanager", first, note="at the receiver's door")


MakeStack = Callable[..., Awaitable[Stack]]


def write_policy(path: Path, base_url: str) -> Path:
    policy = {
        "defaults": {"verify_timeout": "60s", "cooldown": "30m"},
        "models": [
            {
                "name": MODEL,
                "namespace": NS,
                "tier": "critical",
                "deployment": MODEL,
                "health": {"base_url": base_url, "sample_request": copy.deepcopy(SAMPLE_REQUEST)},
            }
        ],
    }
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture
async def make_stack(
    kube: Any,
    make_settings: Callable[..., Any],
    aiohttp_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeStack]:
    started: list[Any] = []
    stacks: list[Stack] = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def make(*, alertmanagers: int = 1, traffic_rate: float = 100.0) -> Stack:
        # Called from the test body, so a missing binary fails the test itself.
        for binary in ("prometheus", "prometheus-alertmanager", "amtool"):
            require_binary(binary)
        # The cluster as the receiver finds it at start: v1, then v2 (healthy) serving.
        await kube.create_namespace(NS)
        await kube.create_deployment(NS, MODEL, "v1")
        await kube.set_version(NS, MODEL, "v2", wait=True)
        model = InstrumentedModelServer(
            model=MODEL, version_source=lambda: serving_version(kube), traffic_rate=traffic_rate
        )
        await model.start()
        started.append(model)

        policy = write_policy(tmp_path / "policy.yaml", model.url)
        prometheus_port = free_port()
        settings = make_settings(
            kubeconfig=kube.kubeconfig,
            policy_file=policy,
            prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        )
        receiver = await aiohttp_server(
            create_app(settings, confirm_options={"interval_seconds": CONFIRM_POLL_SECONDS})
        )
        receiver_url = str(receiver.make_url("")).rstrip("/")
        tap = DeliveryTap(receiver_url)
        tap_server = await aiohttp_server(tap.make_app())

        secret = tmp_path / "secrets" / "webhook-token"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(WEBHOOK_TOKEN)
        route = tmp_path / "alertmanager.yml"
        rewrite_route(
            route,
            webhook_url=str(tap_server.make_url("/webhook/alertmanager")),
            credentials_file=secret,
            group_wait=GROUP_WAIT,
            group_interval=GROUP_INTERVAL,
        )
        ams = [Alertmanager(tmp_path / f"alertmanager-{i}", route) for i in range(alertmanagers)]
        for am in ams:
            started.append(am)
            await am.start(session)

        rules = rewrite_rules(
            tmp_path / "rules", lambda s: s * FOR_SCALE, ranges=lambda s: s * RANGE_SCALE
        )
        receiver_address = receiver_url.removeprefix("http://")
        prometheus = Prometheus(
            tmp_path / "prometheus",
            rule_files=rules.files,
            alertmanagers=[am.address for am in ams],
            targets=[
                ScrapeTarget("model-servers", model.metrics_address, {"namespace": NS}),
                ScrapeTarget(
                    "rollback-receiver", receiver_address, {"namespace": "rollback-receiver"}
                ),
            ],
            interval=INTERVAL,
            port=prometheus_port,
        )
        started.append(prometheus)
        await prometheus.start(session)

        async def scraping() -> bool:
            up = await prometheus.query(session, 'up{job="model-servers"} == 1')
            groups = await prometheus.rule_groups(session)
            return bool(up) and len(groups) == len(rules.files)

        await wait_for(scraping, timeout=30, interval=0.2, what="Prometheus scraping the model")

        async def ready() -> bool:
            async with session.get(f"{receiver_url}/readyz") as resp:
                return resp.status == 200

        await wait_for(ready, timeout=30, interval=0.1, what="the receiver ready")

        timeline = Timeline(request.node.name)
        timeline.notes.append(
            f"scrape/eval {INTERVAL}; for: x{FOR_SCALE:.4f}, ranges x{RANGE_SCALE:.4f} of "
            f"shipped; route group_wait "
            f"{GROUP_WAIT} (shipped {SHIPPED_GROUP_WAIT}), group_interval {GROUP_INTERVAL} "
            f"(shipped {SHIPPED_GROUP_INTERVAL}); {alertmanagers} Alertmanager(s); "
            f"simulated traffic {traffic_rate}/s"
        )
        stack = Stack(kube, model, receiver_url, tap, prometheus, ams, rules, session, timeline)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for item in reversed(started):
            if isinstance(item, InstrumentedModelServer):
                await item.close()
            else:
                await item.stop()
        await session.close()
        for stack in stacks:
            text = stack.timeline.render()
            (tmp_path / "timeline.txt").write_text(text + "\n")
            with capsys.disabled():
                print("\n" + text)
