"""Recovery latency of rollout-undo: received -> PATCH applied, and received -> healthy.

    python benchmarks/recovery_latency.py [--quick] [--models N]

N models (200), each alone in its namespace with its own Deployment in the Kubernetes
stand-in, rolled out v1 -> v2 -> v3 with the serving ReplicaSet backdated 3 minutes before
the alert's ``startsAt``. The policy lists all of them (tier critical, rollout-undo) with a
health ``base_url`` pointing at one model-server stand-in that answers for every model name
with the version its Deployment's template serves, so verification is the rollout plus the
Open Inference Protocol checks (live, ready, model ready, metadata version, a sample
inference).

The receiver is the product's app (``create_app``, product defaults: 16 model slots
(``RECEIVER_WORKER_COUNT``), 1 s stream block, 0.5 s verification poll), on real Redis,
listening on loopback in this process, with JSON logs at INFO to a file. The stand-in and
the model server run in this same process and event loop, so their cost is inside every
figure. A few warm-up models go first (not counted), the app is ready (``/readyz``) before
the first alert, then one alert at a time (``firing_single.json`` relabelled for the model,
a fingerprint of its own): the next is posted once the previous incident is verified.

Per incident, from ``GET /api/incidents``: ``times.switched - times.received`` (webhook
accepted the alert -> the rollback PATCH answered) and ``times.healthy - times.received``
(the rollout of the restored version plus the probes; quantized by the 0.5 s poll).
Design target: received -> PATCH applied p99 < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
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
    print_facts,
    summarize_ms,
    wait_ready,
    webhook_headers,
)
from _standin import (
    AnyModelServer,
    BenchModel,
    bench_models,
    scaled_kube,
    seed,
    template_patches,
    write_policy,
)
from aiohttp import web

from receiver.app import create_app
from receiver.logs import JsonFormatter
from receiver.settings import Settings

TARGET_SWITCHED_P99 = 0.200
WARMUP_MODELS = 5


def file_logging(path: Path) -> logging.Handler:
    """The product's JSON log lines at INFO, to a file instead of stderr."""
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


async def finished(kube: Any, m: BenchModel, timeout: float) -> str:  # noqa: ASYNC109
    """Wait for the receiver's verdict Event on the model's Deployment; its reason."""
    wanted = {"ModelRollbackVerified", "ModelRollbackVerificationFailed"}

    def verdict() -> str | None:
        for event in kube.store.items("events", m.namespace):
            if event.get("reason") in wanted:
                return str(event["reason"])
        return None

    return str(await kube.wait_for(verdict, timeout, f"verdict on {m.namespace}/{m.name}"))


async def run(count: int) -> None:
    print_facts()
    prefix = new_prefix()
    started_at = fixture_payload("firing_single")["alerts"][0]["startsAt"]
    alert_started = parse_time(started_at)
    assert alert_started is not None
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        file_logging(tmpdir / "receiver.log")
        kube = scaled_kube()
        await kube.start(tmpdir)
        server = AnyModelServer(kube)
        await server.start()
        runner: web.AppRunner | None = None
        try:
            warm = bench_models(WARMUP_MODELS, tag="w")
            models = bench_models(count)
            seconds = await seed(kube, warm + models, alert_started, backdate_by=180)
            print(
                f"recovery latency: {count} models (+{WARMUP_MODELS} warm-up), seeded v1->v2->v3 "
                f"in the stand-in in {seconds:.1f}s; health base_url = one model-server "
                "stand-in for every model"
            )
            policy = write_policy(tmpdir / "policy.yaml", warm + models, server.url)
            settings = Settings(
                webhook_token=WEBHOOK_TOKEN,
                admin_token=ADMIN_TOKEN,
                redis_url=REDIS_URL,
                key_prefix=prefix,
                policy_file=policy,
                kubeconfig=kube.kubeconfig,
            )
            app = create_app(settings)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            assert site._server is not None and site._server.sockets
            url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, url, timeout=120)
                verdicts: dict[str, int] = {}
                for i, m in enumerate(warm + models):
                    body = notification(
                        [
                            model_alert(
                                m.namespace,
                                m.name,
                                "v3",
                                fingerprint=f"{prefix[6:16]}{i:06x}",
                                starts_at=started_at,
                            )
                        ]
                    )
                    async with session.post(
                        f"{url}/webhook/alertmanager", data=body, headers=webhook_headers()
                    ) as resp:
                        answer = await resp.json()
                        outcome = answer["alerts"][0]["outcome"]
                        if resp.status != 200 or outcome != "accepted":
                            raise SystemExit(f"{m.name}: webhook answered {resp.status} {answer}")
                    reason = await finished(kube, m, timeout=60)
                    verdicts[reason] = verdicts.get(reason, 0) + 1
                    await asyncio.sleep(0.05)
                incidents = await all_incidents(session, url)
            report(models, incidents, kube, verdicts)
        finally:
            if runner is not None:
                await runner.cleanup()
            await server.close()
            await kube.stop()
            delete_prefix(prefix)


def report(
    models: list[BenchModel], incidents: list[dict[str, Any]], kube: Any, verdicts: dict[str, int]
) -> None:
    measured = {m.name for m in models}
    switched: list[float] = []
    healthy: list[float] = []
    states: dict[str, int] = {}
    for inc in incidents:
        if inc["model"] not in measured:
            continue
        states[inc["state"]] = states.get(inc["state"], 0) + 1
        times = inc["times"]
        received = parse_time(times["received"])
        assert received is not None
        sw: datetime | None = parse_time(times["switched"])
        he: datetime | None = parse_time(times["healthy"])
        if sw is not None:
            switched.append((sw - received).total_seconds())
        if he is not None:
            healthy.append((he - received).total_seconds())
    patches = len(template_patches(kube))
    print(f"  incidents (measured models): {sum(states.values())}  states {states}")
    print(f"  template PATCHes seen by the stand-in (warm-up included): {patches}")
    print(f"  verdict Events: {verdicts}")
    print(f"  received -> PATCH applied (switched): {summarize_ms(switched)}")
    print(f"  received -> healthy (rollout + probes): {summarize_ms(healthy)}")
    ticks = kube.controller.tick_seconds
    if ticks:
        print(
            f"  stand-in controller ticks: {len(ticks)}, max {max(ticks) * 1000:.1f} ms "
            "(same event loop)"
        )
    p99 = sorted(switched)[max(0, -(-99 * len(switched) // 100) - 1)]
    verdict = "meets" if p99 < TARGET_SWITCHED_P99 else "MISSES"
    print(f"  received -> switched p99 {p99 * 1000:.1f} ms: {verdict} the < 200 ms target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--models", type=int, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    asyncio.run(run(args.models or (20 if args.quick else 200)))
    print(f"  total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
