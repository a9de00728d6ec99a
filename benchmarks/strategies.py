"""Recovery latency of the three strategies, with what the time is made of.

    python benchmarks/strategies.py [--quick] [--models N] [--only blue-green,canary,...]

For each strategy, N models (200) plus 5 warm-up ones (not counted), each alone in its
namespace in the Kubernetes stand-in (scaled as in ``_standin.py``), and the product's app
(``create_app``, product defaults: 16 workers, 0.5 s poll as the watch's fallback) on real
Redis, JSON logs at INFO to a file, in this process and event loop with the stand-in and a
model server that answers the Open Inference Protocol for every model, so their cost is in
every figure. One alert at a time; the next once the previous incident has its verdict.

- ``blue-green``: ``<m>-blue`` runs v1 warm, ``<m>-green`` v2, the Service ``<m>`` selects
  green; the alert names v2. Pre-check probes go to the standby's slot URL, verification to
  the Service's URL (answering as the selected slot).
- ``rollout-undo``: v1 -> v2 -> v3, serving ReplicaSet backdated 3 min; the alert names v3.
- ``canary``: ``<m>-stable`` v1 (2 replicas), ``<m>-canary`` v2 (1 replica); the alert
  names v2. The Service's URL answers as the canary while it has pods.

Moments, all on this process's wall clock: ``received`` (the incident's), each request's
arrival at the stand-in (the API server) and at the model server, and the moment the
stand-in's store first holds a completed rollout of the restored Deployment. A PATCH is
applied synchronously on arrival (the stand-in has no admission or storage latency).
Targets (design.md, Speed): blue-green received -> switched p99 < 100 ms including the
pre-check, -> healthy < 1 s; rollout-undo received -> PATCH applied < 100 ms and rollout
complete -> noticed < 100 ms; canary received -> scaled to zero < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import gc
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from _common import (
    ADMIN_TOKEN,
    REDIS_URL,
    WEBHOOK_TOKEN,
    all_incidents,
    delete_prefix,
    fixture_payload,
    model_alert,
    new_prefix,
    notification,
    parse_time,
    percentile,
    print_facts,
    wait_ready,
    webhook_headers,
)
from _standin import (
    BenchModel,
    IndexedStore,
    ScopedController,
    bench_models,
    seed,
    wait_all_complete,
)
from aiohttp import web
from aiohttp.test_utils import TestServer

from receiver.app import create_app
from receiver.logs import JsonFormatter
from receiver.models import rfc3339
from receiver.settings import Settings
from tests.standins.kube.server import KubeStandIn, rollout_complete
from tests.worker.conftest import SAMPLE_REQUEST, VERSION_LABEL

WARMUP_MODELS = 5
STRATEGIES = ("blue-green", "rollout-undo", "canary")


# ------------------------------------------------------------------------- the clocks


@dataclass
class Stamps:
    """Arrival times (``time.time()``) of requests and of completed rollouts."""

    kube: list[tuple[float, Any]] = field(default_factory=list)
    model: list[tuple[float, str, str, str]] = field(default_factory=list)  # (t, ns, target, route)
    completed: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    gone: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """When a Deployment's last pod went (a canary scaled to zero)."""


class StampedRequests(list):  # type: ignore[type-arg]
    """The stand-in's request log, stamping each arrival."""

    def __init__(self, stamps: Stamps) -> None:
        super().__init__()
        self.stamps = stamps

    def append(self, record: Any) -> None:
        self.stamps.kube.append((time.time(), record))
        super().append(record)


class StampedStore(IndexedStore):
    """Records when each Deployment's rollout turns complete; finds a watch's position in
    the change history by bisection on the history itself (the stand-in copies every
    resourceVersion into a new list first, for each watch at each change)."""

    stamps: Stamps | None = None

    def changes_since(self, rv: int) -> Iterator[Any]:
        start = bisect.bisect_right(self.history, rv, key=lambda change: change.rv)
        yield from self.history[start:]

    def _commit(
        self, kind: str, obj: dict[str, Any], change_type: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        result = super()._commit(kind, obj, change_type, old)
        if (
            self.stamps is not None
            and kind == "deployments"
            and change_type == "MODIFIED"
            and rollout_complete(obj)
            and (old is None or not rollout_complete(old))
        ):
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            self.stamps.completed.setdefault(key, []).append(time.time())
        if (
            self.stamps is not None
            and kind == "deployments"
            and old is not None
            and (old.get("status") or {}).get("replicas")
            and not (obj.get("status") or {}).get("replicas")
        ):
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            self.stamps.gone.setdefault(key, []).append(time.time())
        return result


class WatchEndingKube(KubeStandIn):
    """Ends a watch when its client goes away, as the API server does. The stand-in's
    handler (aiohttp does not cancel handlers on disconnect) would otherwise keep scanning
    every change for a closed connection until ``timeoutSeconds``: with one watch per
    verification, hundreds of them."""

    async def _watch(self, request: web.Request, resource: Any, namespace: str | None) -> Any:
        serving = asyncio.ensure_future(super()._watch(request, resource, namespace))
        while not serving.done():
            transport = request.transport
            if transport is None or transport.is_closing():
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await serving
                return web.Response(status=499)
            await asyncio.wait({serving}, timeout=0.05)
        return serving.result()


def stamped_kube(stamps: Stamps) -> KubeStandIn:
    kube = WatchEndingKube(step=0.01)
    store = StampedStore()
    store.stamps = stamps
    kube.store = store
    kube.controller = ScopedController(store, step=0.01)
    kube.requests = StampedRequests(stamps)
    return kube


# ------------------------------------------------------------------------- model server


def version_of(kube: KubeStandIn, namespace: str, name: str) -> str | None:
    d = kube.store.get("deployments", namespace, name)
    if d is None:
        return None
    return d["spec"]["template"]["metadata"]["labels"].get(VERSION_LABEL)


class OipServer:
    """Open Inference Protocol for every model at ``/<namespace>/<target>/v2/...``.

    ``target`` is a Deployment (its template's version), ``svc`` (blue-green: the slot the
    Service selects) or ``canary-svc`` (the canary while it has pods, else the stable).
    """

    def __init__(self, kube: KubeStandIn, stamps: Stamps) -> None:
        self.kube = kube
        self.stamps = stamps
        self.server: TestServer | None = None

    def served(self, namespace: str, target: str) -> str | None:
        name = namespace.removeprefix("bench-")
        if target == "svc":
            service = self.kube.store.get("services", namespace, name)
            if service is None:
                return None
            return version_of(self.kube, namespace, f"{name}-{service['spec']['selector']['slot']}")
        if target == "canary-svc":
            canary = self.kube.store.get("deployments", namespace, f"{name}-canary") or {}
            pods = (canary.get("status") or {}).get("replicas")
            return version_of(self.kube, namespace, f"{name}-{'canary' if pods else 'stable'}")
        return version_of(self.kube, namespace, target)

    async def handle(self, request: web.Request) -> web.Response:
        namespace, target, rest = (request.match_info[k] for k in ("ns", "target", "rest"))
        self.stamps.model.append((time.time(), namespace, target, rest))
        await request.read()
        version = self.served(namespace, target)
        if version is None:
            return web.json_response({"error": "not loaded"}, status=404)
        if rest.endswith("/infer"):
            return web.json_response(
                {
                    "model_version": version,
                    "outputs": [{"name": "o", "datatype": "FP32", "shape": [1], "data": [0.5]}],
                }
            )
        if rest.startswith("models/") and rest.count("/") == 1:
            return web.json_response({"name": rest.split("/")[1], "versions": [version]})
        return web.json_response({"ok": True})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{ns}/{target}/v2/{rest:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


# ------------------------------------------------------------------------- scenarios


def model_entry(strategy: str, m: BenchModel, url: str) -> dict[str, Any]:
    base = f"{url}/{m.namespace}"
    entry: dict[str, Any] = {"name": m.name, "namespace": m.namespace, "tier": "critical"}
    health: dict[str, Any] = {"sample_request": SAMPLE_REQUEST}
    if strategy == "blue-green":
        entry.update(
            strategy="blue-green",
            service=m.name,
            slots={"blue": f"{m.name}-blue", "green": f"{m.name}-green"},
        )
        health["base_url"] = f"{base}/svc"
        health["slot_urls"] = {"blue": f"{base}/{m.name}-blue", "green": f"{base}/{m.name}-green"}
    elif strategy == "canary":
        entry.update(
            strategy="canary",
            canary={"deployment": f"{m.name}-canary", "stable": f"{m.name}-stable"},
        )
        health["base_url"] = f"{base}/canary-svc"
    else:
        entry["deployment"] = m.name
        health["base_url"] = f"{base}/{m.name}"
    entry["health"] = health
    return entry


async def seed_strategy(kube: KubeStandIn, strategy: str, models: list[BenchModel]) -> str:
    """The cluster of the scenario; returns the version the alerts name."""
    timeout = 60 + len(models) * 0.3
    if strategy == "rollout-undo":
        started = parse_time(fixture_payload("firing_single")["alerts"][0]["startsAt"])
        assert started is not None
        await seed(kube, models, started, backdate_by=180)
        return "v3"

    def named(suffix: str) -> list[BenchModel]:
        return [BenchModel(m.namespace, f"{m.name}-{suffix}") for m in models]

    if strategy == "blue-green":
        for m in models:
            await kube.create_deployment(
                m.namespace, f"{m.name}-blue", "v1", app=m.name, labels={"slot": "blue"}, wait=False
            )
            await kube.create_deployment(
                m.namespace,
                f"{m.name}-green",
                "v2",
                app=m.name,
                labels={"slot": "green"},
                wait=False,
            )
            await kube.create_service(m.namespace, m.name, {"app": m.name, "slot": "green"})
        await wait_all_complete(kube, named("blue") + named("green"), 1, timeout=timeout)
    else:
        for m in models:
            await kube.create_deployment(
                m.namespace,
                f"{m.name}-stable",
                "v1",
                app=m.name,
                labels={"track": "stable"},
                wait=False,
            )
            await kube.create_deployment(
                m.namespace,
                f"{m.name}-canary",
                "v2",
                app=m.name,
                replicas=1,
                labels={"track": "canary"},
                wait=False,
            )
        await wait_all_complete(kube, named("stable") + named("canary"), 1, timeout=timeout)
    kube.requests.clear()
    return "v2"


async def verdict(kube: KubeStandIn, m: BenchModel, timeout: float) -> str:  # noqa: ASYNC109
    wanted = {"ModelRollbackVerified", "ModelRollbackVerificationFailed"}

    def found() -> str | None:
        for event in kube.store.items("events", m.namespace):
            if event.get("reason") in wanted:
                return str(event["reason"])
        return None

    return str(await kube.wait_for(found, timeout, f"a verdict on {m.namespace}/{m.name}"))


@dataclass
class Phase:
    strategy: str
    models: list[BenchModel]
    incidents: list[dict[str, Any]]
    stamps: Stamps
    verdicts: dict[str, int]
    seed_seconds: float


async def run_phase(strategy: str, count: int, tmpdir: Path) -> Phase:
    stamps = Stamps()
    prefix = new_prefix()
    kube = stamped_kube(stamps)
    await kube.start(tmpdir / strategy)
    oip = OipServer(kube, stamps)
    url = await oip.start()
    runner: web.AppRunner | None = None
    try:
        warm = bench_models(WARMUP_MODELS, tag="w")
        models = bench_models(count)
        started = time.perf_counter()
        version = await seed_strategy(kube, strategy, warm + models)
        seeded = time.perf_counter() - started
        # The stand-in's objects and change history live in this process (a receiver in
        # production holds none of them): keep the collector from walking them in the
        # middle of a measured switch.
        gc.collect()
        gc.freeze()
        policy = tmpdir / f"{strategy}.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "defaults": {"verify_timeout": "30s", "cooldown": "30m"},
                    "models": [model_entry(strategy, m, url) for m in warm + models],
                }
            )
        )
        settings = Settings(
            webhook_token=WEBHOOK_TOKEN,
            admin_token=ADMIN_TOKEN,
            redis_url=REDIS_URL,
            key_prefix=prefix,
            policy_file=policy,
            kubeconfig=kube.kubeconfig,
        )
        runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None and site._server.sockets
        app_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        verdicts: dict[str, int] = {}
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, app_url, timeout=120)
            for i, m in enumerate(warm + models):
                starts_at = None
                if strategy != "rollout-undo":
                    # The version became current while seeding: the alert starts now.
                    starts_at = rfc3339(datetime.now(UTC) - timedelta(seconds=1))
                body = notification(
                    [
                        model_alert(
                            m.namespace,
                            m.name,
                            version,
                            fingerprint=f"{prefix[6:16]}{i:06x}",
                            starts_at=starts_at
                            or fixture_payload("firing_single")["alerts"][0]["startsAt"],
                        )
                    ]
                )
                async with session.post(
                    f"{app_url}/webhook/alertmanager", data=body, headers=webhook_headers()
                ) as resp:
                    answer = await resp.json()
                    if resp.status != 200 or answer["alerts"][0]["outcome"] != "accepted":
                        raise SystemExit(f"{m.name}: webhook answered {resp.status} {answer}")
                reason = await verdict(kube, m, timeout=60)
                verdicts[reason] = verdicts.get(reason, 0) + 1
                await asyncio.sleep(0.05)
            incidents = await all_incidents(session, app_url)
        return Phase(strategy, models, incidents, stamps, verdicts, seeded)
    finally:
        gc.unfreeze()
        if runner is not None:
            await runner.cleanup()
        await oip.close()
        await kube.stop()
        delete_prefix(prefix)


# ------------------------------------------------------------------------- report


def first_after(
    moments: list[tuple[float, Any]], after: float, match: Callable[[Any], bool]
) -> float | None:
    for t, item in moments:
        if t >= after and match(item):
            return t
    return None


def is_write(record: Any, path: str) -> bool:
    body = record.body if isinstance(record.body, dict) else {}
    return (
        record.method == "PATCH"
        and record.path == path
        and "spec" in body
        and "dryRun" not in record.query
    )


def ms(values: list[float], target: float | None = None) -> str:
    if not values:
        return "n=0"
    p99 = percentile(values, 99)
    line = (
        f"n={len(values)}  p50={percentile(values, 50) * 1000:.1f}  "
        f"p90={percentile(values, 90) * 1000:.1f}  p99={p99 * 1000:.1f}  "
        f"max={max(values) * 1000:.1f} ms"
    )
    if target is not None:
        line += f"  ({'meets' if p99 < target else 'MISSES'} < {target * 1000:.0f} ms)"
    return line


def report(phase: Phase, *, trace: bool = False) -> None:
    measured = {m.name: m for m in phase.models}
    stamps = phase.stamps
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            rows.setdefault(name, []).append(value)

    slowest: tuple[float, str, float, float] | None = None
    states: dict[str, int] = {}
    model_stamps = [(t, (ns, target, rest)) for t, ns, target, rest in stamps.model]
    for inc in phase.incidents:
        m = measured.get(inc["model"])
        if m is None:
            continue
        states[inc["state"]] = states.get(inc["state"], 0) + 1
        received = parse_time(inc["times"]["received"])
        healthy = parse_time(inc["times"]["healthy"])
        if received is None:
            continue
        r = received.timestamp()
        ns = m.namespace
        if phase.strategy == "blue-green":
            write_path = f"/api/v1/namespaces/{ns}/services/{m.name}"
            restored = f"{m.name}-blue"
        elif phase.strategy == "canary":
            write_path = f"/apis/apps/v1/namespaces/{ns}/deployments/{m.name}-canary"
            restored = f"{m.name}-canary"
        else:
            write_path = f"/apis/apps/v1/namespaces/{ns}/deployments/{m.name}"
            restored = m.name
        write = first_after(stamps.kube, r, lambda rec, p=write_path: is_write(rec, p))
        add("received -> write applied", write - r if write else None)
        end = healthy.timestamp() if healthy is not None else r + 30
        if write is not None and (slowest is None or write - r > slowest[0]):
            slowest = (write - r, ns, r, end)
        if healthy is not None:
            add("received -> healthy", healthy.timestamp() - r)
        if write is None:
            continue
        reads = first_after(stamps.kube, r, lambda rec, n=ns: rec.method == "GET" and n in rec.path)
        add("  received -> first API read (queue, lease, job)", reads - r if reads else None)
        if phase.strategy == "blue-green":
            standby = [
                t
                for t, (n, target, _) in model_stamps
                if n == ns and target == restored and t < write
            ]
            if standby and reads:
                add("  pre-check: first API read -> first standby probe", standby[0] - reads)
                add("  pre-check: standby probes (5 requests)", standby[-1] - standby[0])
                add("  last standby probe -> PATCH arrives (decide, record)", write - standby[-1])
        elif reads:
            add("  first API read -> PATCH arrives (reads, decide, record)", write - reads)
        target = (
            "svc"
            if phase.strategy == "blue-green"
            else ("canary-svc" if phase.strategy == "canary" else m.name)
        )
        probe = first_after(
            model_stamps, write, lambda item, n=ns, tg=target: item[0] == n and item[1] == tg
        )
        # What verification waits for: the restored rollout complete, or the canary gone.
        moments = stamps.gone if phase.strategy == "canary" else stamps.completed
        done = next((t for t in moments.get((ns, restored), []) if t >= write), None)
        watch = first_after(
            stamps.kube,
            write,
            lambda rec, n=ns: rec.query.get("watch") == "true" and n in rec.path,
        )
        add("  PATCH -> watch opened", watch - write if watch else None)
        what = "canary's last pod gone" if phase.strategy == "canary" else "rollout complete"
        if done is not None:
            add(f"  PATCH -> {what} in the stand-in (controller)", done - write)
            if probe is not None:
                add(f"{what} -> noticed (first probe)", probe - done)
        elif probe is not None:
            add("  PATCH -> first probe", probe - write)
        if probe is not None and healthy is not None:
            add("  probes through health.base_url (5 requests)", healthy.timestamp() - probe)

    print(
        f"\n{phase.strategy}: {len(phase.models)} models (+{WARMUP_MODELS} warm-up), "
        f"seeded in {phase.seed_seconds:.1f}s; incidents {states}; verdicts {phase.verdicts}"
    )
    targets = {
        ("blue-green", "received -> write applied"): 0.100,
        ("blue-green", "received -> healthy"): 1.0,
        ("rollout-undo", "received -> write applied"): 0.100,
        ("rollout-undo", "rollout complete -> noticed (first probe)"): 0.100,
        ("canary", "received -> write applied"): 0.100,
    }
    for name, values in rows.items():
        print(f"  {name:58s} {ms(values, targets.get((phase.strategy, name)))}")
    if trace and slowest is not None:
        _, ns, r, end = slowest
        print(f"  timeline of the slowest switch ({ns}), ms after received:")
        lines = [(t, f"API {rec.method} {rec.path}") for t, rec in stamps.kube if ns in rec.path]
        lines += [(t, f"model server {tg} {rest}") for t, n, tg, rest in stamps.model if n == ns]
        for t, line in sorted(lines):
            if r - 0.01 <= t <= end + 0.05:
                print(f"    {(t - r) * 1000:8.1f}  {line}")


async def main_async(count: int, only: list[str], trace: bool = False) -> None:
    print_facts()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        handler = logging.FileHandler(tmpdir / "receiver.log")
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        for strategy in only:
            (tmpdir / strategy).mkdir()
            report(await run_phase(strategy, count, tmpdir), trace=trace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--only", default=",".join(STRATEGIES))
    parser.add_argument("--trace", action="store_true", help="the slowest switch's timeline")
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(STRATEGIES)
    if unknown:
        raise SystemExit(f"unknown strategies {sorted(unknown)}; choose from {STRATEGIES}")
    started = time.perf_counter()
    asyncio.run(main_async(args.models or (10 if args.quick else 200), only, args.trace))
    print(f"  total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
