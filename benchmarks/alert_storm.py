"""Alert storm: N models x 5 alerts x 2 HA deliveries -> exactly N rollbacks, flat memory.

    python benchmarks/alert_storm.py [--quick] [--models N] [--workers W] [--limit SECONDS]

N models (1,000), each alone in its namespace with its own Deployment in the Kubernetes
stand-in (v1 -> v2 -> v3, serving ReplicaSet backdated before the alerts), seeded through
the stand-in's Python API with its controller scoped to the namespaces being written
(``benchmarks/_standin.py`` says why). The policy lists every model with a health
``base_url`` pointing at one model-server stand-in answering for every model name.

Each model gets 5 firing alerts of the same version, one per rule family (error rate,
latency, OOM, accuracy, missing features), with fingerprints and ``startsAt`` of their own,
grouped as Alertmanager groups them (by namespace and model): one notification per model
and per HA replica, the two replicas' bodies differing only in ``externalURL``. All 2N
notifications are posted at once (16 at a time) to a receiver running in its own process
(``benchmarks/_serve.py``, product defaults unless ``--workers``), on real Redis.

Checked and printed: webhook outcomes (5N accepted, 5N duplicate), exactly N template
PATCHes seen by the stand-in, exactly N incidents from ``GET /api/incidents``, the
receiver process' RSS (``/proc/<pid>/status``), live objects and asyncio tasks sampled at
0/25/50/75/100 % of the models verified, and the total time. The stand-in and the model
server run in this process, not in the receiver's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from _common import (
    ADMIN_TOKEN,
    REDIS_URL,
    TRIGGERS,
    WEBHOOK_TOKEN,
    all_incidents,
    delete_prefix,
    fixture_payload,
    model_alert,
    new_prefix,
    notification,
    parse_time,
    print_facts,
    running,
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

from receiver.models import rfc3339
from receiver.settings import Settings

REPLICAS = ("http://alertmanager-0:9093", "http://alertmanager-1:9093")
DEFAULT_WORKERS = Settings.model_fields["worker_count"].default


def storm_bodies(models: list[BenchModel], tag: str) -> list[bytes]:
    """Per model, replica A's then replica B's notification with the same 5 alerts."""
    from datetime import timedelta

    base = parse_time(fixture_payload("firing_single")["alerts"][0]["startsAt"])
    assert base is not None
    bodies = []
    for i, m in enumerate(models):
        alerts = [
            model_alert(
                m.namespace,
                m.name,
                "v3",
                fingerprint=f"{tag}{i:05x}{t}",
                trigger=t,
                starts_at=rfc3339(base + timedelta(seconds=7 * t)),
            )
            for t in range(len(TRIGGERS))
        ]
        bodies.extend(notification(alerts, external_url=url) for url in REPLICAS)
    return bodies


async def post_all(
    session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int = 16
) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    position = 0

    async def sender() -> None:
        nonlocal position
        while position < len(bodies):
            body = bodies[position]
            position += 1
            async with session.post(
                f"{url}/webhook/alertmanager", data=body, headers=webhook_headers()
            ) as resp:
                if resp.status != 200:
                    raise SystemExit(f"webhook answered {resp.status}: {await resp.text()}")
                for alert in (await resp.json())["alerts"]:
                    outcomes[alert["outcome"]] = outcomes.get(alert["outcome"], 0) + 1

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return outcomes


def verified_count(kube: Any, models: list[BenchModel]) -> int:
    done = 0
    for m in models:
        if any(
            e.get("reason") == "ModelRollbackVerified"
            for e in kube.store.items("events", m.namespace)
        ):
            done += 1
    return done


async def memory(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    async with session.get(f"{url}/_bench/memory") as resp:
        return dict(await resp.json())


async def run(count: int, workers: int | None, limit: float) -> bool:
    print_facts()
    prefix = new_prefix()
    started_at = parse_time(fixture_payload("firing_single")["alerts"][0]["startsAt"])
    assert started_at is not None
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        kube = scaled_kube()
        await kube.start(tmpdir)
        server = AnyModelServer(kube)
        await server.start()
        r = aioredis.Redis.from_url(REDIS_URL)
        try:
            models = bench_models(count)
            seeded = await seed(kube, models, started_at, backdate_by=180)
            policy = write_policy(tmpdir / "policy.yaml", models, server.url, verify_timeout="60s")
            env = {
                "RECEIVER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
                "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
                "RECEIVER_REDIS_URL": REDIS_URL,
                "RECEIVER_KEY_PREFIX": prefix,
                "RECEIVER_POLICY_FILE": str(policy),
                "KUBECONFIG": str(kube.kubeconfig),
            }
            if workers is not None:
                env["RECEIVER_WORKER_COUNT"] = str(workers)
            print(
                f"alert storm: {count} models x {len(TRIGGERS)} alerts x {len(REPLICAS)} HA "
                f"deliveries = {2 * count} notifications, {count * len(TRIGGERS) * 2} alerts; "
                f"receiver workers: {workers or f'default ({DEFAULT_WORKERS})'}; "
                f"stand-in seeded in {seeded:.1f}s"
            )
            bodies = storm_bodies(models, prefix[6:14])
            log = tmpdir / "receiver.log"
            with running(["receiver", "--memory-route"], env=env, log_path=log) as receiver:
                async with aiohttp.ClientSession() as session:
                    await wait_ready(session, receiver.url, timeout=300)
                    ok = await storm(session, receiver.url, kube, r, prefix, models, bodies, limit)
                    incidents = await all_incidents(session, receiver.url)
                ok = check(kube, models, incidents) and ok
        finally:
            await r.aclose()
            await server.close()
            await kube.stop()
            delete_prefix(prefix)
    return ok


async def storm(
    session: aiohttp.ClientSession,
    url: str,
    kube: Any,
    r: aioredis.Redis,
    prefix: str,
    models: list[BenchModel],
    bodies: list[bytes],
    limit: float,
) -> bool:
    count = len(models)
    marks = [0, count // 4, count // 2, 3 * count // 4, count]
    samples: list[tuple[int, float, dict[str, int]]] = [(0, 0.0, await memory(session, url))]
    started = time.perf_counter()
    outcomes = await post_all(session, url, bodies)
    posted = time.perf_counter() - started
    print(f"  posted {len(bodies)} notifications in {posted:.1f}s; outcomes {outcomes}")
    expected = count * len(TRIGGERS)
    ok = outcomes.get("accepted") == expected and outcomes.get("duplicate") == expected
    next_mark = 1
    done = 0
    deadline = started + limit
    while True:
        done = verified_count(kube, models)
        while next_mark < len(marks) and done >= marks[next_mark]:
            samples.append(
                (marks[next_mark], time.perf_counter() - started, await memory(session, url))
            )
            next_mark += 1
        depth = int(await r.xlen(f"{prefix}jobs"))
        if done >= count and depth == 0:
            break
        if time.perf_counter() > deadline:
            print(
                f"  STOPPED at the {limit:.0f}s limit: {done}/{count} verified, {depth} jobs left"
            )
            ok = False
            break
        await asyncio.sleep(0.25)
    total = time.perf_counter() - started
    print(f"  {done}/{count} models verified; total {total:.1f}s ({count / total:.1f} models/s)")
    print("  receiver process memory, by models verified:")
    print(f"    {'models':>7} {'at':>8} {'RSS MiB':>8} {'objects':>9} {'tasks':>6}")
    for mark, at, mem in samples:
        print(
            f"    {mark:>7} {at:>7.1f}s {mem['rss_kib'] / 1024:>8.1f} "
            f"{mem['gc_objects']:>9} {mem['tasks']:>6}"
        )
    return ok


def check(kube: Any, models: list[BenchModel], incidents: list[dict[str, Any]]) -> bool:
    count = len(models)
    patches = template_patches(kube)
    patched = {r.path.rsplit("/", 1)[1] for r in patches}
    states: dict[str, int] = {}
    triggers: dict[int, int] = {}
    switched: list[float] = []
    for inc in incidents:
        states[inc["state"]] = states.get(inc["state"], 0) + 1
        received, sw = parse_time(inc["times"]["received"]), parse_time(inc["times"]["switched"])
        if received is not None and sw is not None:
            switched.append((sw - received).total_seconds())
        n = len(inc["triggers"])
        triggers[n] = triggers.get(n, 0) + 1
    all_patches = len(kube.requests_to("PATCH", "/apis/apps/v1/namespaces/*/deployments/*"))
    print(
        f"  template PATCHes: {len(patches)} (on {len(patched)} Deployments; all Deployment "
        f"PATCHes: {all_patches})"
    )
    print(
        f"  incidents: {len(incidents)} ({len({i['id'] for i in incidents})} distinct), "
        f"states {states}, triggers per incident {triggers}"
    )
    if switched:
        print(
            f"  received -> switched under the storm (queueing included): {summarize_ms(switched)}"
        )
    ok = len(patches) == count and len(patched) == count
    ok = ok and len(incidents) == count and len({i["id"] for i in incidents}) == count
    print(f"  exactly {count} rollbacks and {count} incidents: {'yes' if ok else 'NO'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--models", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="RECEIVER_WORKER_COUNT")
    parser.add_argument("--limit", type=float, default=600.0, help="give up after (s)")
    args = parser.parse_args()
    count = args.models or (40 if args.quick else 1_000)
    ok = False
    with contextlib.suppress(KeyboardInterrupt):
        ok = asyncio.run(run(count, args.workers, args.limit))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
