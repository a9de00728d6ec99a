"""Run one server for a benchmark in its own process; prints ``LISTENING <url>`` when bound.

    python benchmarks/_serve.py bare                  # aiohttp handler: parse JSON, answer 200
    python benchmarks/_serve.py floor                 # what every delivery must cost (below)
    python benchmarks/_serve.py receiver [--no-workers] [--memory-route]

``floor`` is the work the design asks of every delivery and nothing else, with the
product's own code for each step: the bearer token, ``intake.parse_delivery`` and
``intake.admit`` (validation, dedup key, job JSON), the Redis store's group-committed ingest
script (real Redis at ``BENCH_REDIS_URL`` under ``BENCH_KEY_PREFIX``), and the per-alert
answer. No middleware, metrics, workers, readiness or policy: the distance from ``floor``
to ``receiver`` is what the app around the webhook costs.

``receiver`` builds the product's app with ``create_app`` from ``RECEIVER_*`` settings in
the environment (the CLI's ``serve`` does the same) and logs as ``serve`` does, JSON at
INFO, to stderr. ``--memory-route`` adds ``GET /_bench/memory`` (RSS, live objects, asyncio
tasks) for the alert storm's samples. Both listen on 127.0.0.1 on a free port and stop on
SIGTERM, running the app's clean-up.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def bare_webhook(request: web.Request) -> web.Response:
    await request.json()
    return web.Response(status=200)


def floor_app() -> web.Application:
    import os

    import pydantic_core

    from receiver import intake
    from receiver.models import utcnow
    from receiver.store.redis import RedisStore
    from receiver.web.middleware import bearer_ok

    store_key = web.AppKey("store", RedisStore)
    token = os.environ.get("BENCH_WEBHOOK_TOKEN", "test-token")

    async def floor_webhook(request: web.Request) -> web.Response:
        if not bearer_ok(request, token):
            return web.Response(status=401)
        payload = intake.parse_delivery(await request.read())
        now = utcnow()
        admissions = [
            intake.admit(item, index=i, group_key=payload.group_key, received_at=now)
            for i, item in enumerate(payload.alerts)
        ]
        fresh = iter(
            await request.app[store_key].ingest(
                [(a.dedup_key, a.wire) for a in admissions if a.wire], 600
            )
        )
        results = []
        for a in admissions:
            outcome, _ = intake.settle(a, next(fresh) if a.wire else False)
            results.append({"index": a.index, "outcome": outcome})
        body = {"status": "ok", "group_key": payload.group_key, "alerts": results}
        return web.Response(body=pydantic_core.to_json(body), content_type="application/json")

    async def store_ctx(app: web.Application) -> Any:
        app[store_key] = RedisStore.from_url(
            os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            prefix=os.environ["BENCH_KEY_PREFIX"],
            retention_seconds=600,
        )
        yield
        await app[store_key].close()

    app = web.Application(client_max_size=1024 * 1024)
    app.cleanup_ctx.append(store_ctx)
    app.router.add_post("/webhook/alertmanager", floor_webhook)
    return app


def bare_app() -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/webhook/alertmanager", bare_webhook)
    return app


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def memory(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "rss_kib": _rss_kib(),
            "gc_objects": len(gc.get_objects()),
            "tasks": len(asyncio.all_tasks()),
        }
    )


def receiver_app(workers: bool, memory_route: bool) -> web.Application:
    from receiver.app import create_app
    from receiver.logs import configure_logging
    from receiver.settings import Settings

    settings = Settings()  # RECEIVER_* and KUBECONFIG from the environment
    configure_logging(settings.log_format.value, settings.log_level)
    app = create_app(settings, run_workers=workers)
    if memory_route:
        app.router.add_get("/_bench/memory", memory)
    return app


async def serve(app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sys.stdout.write(f"LISTENING http://127.0.0.1:{port}\n")
    sys.stdout.flush()
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["bare", "floor", "receiver"])
    parser.add_argument("--no-workers", action="store_true")
    parser.add_argument("--memory-route", action="store_true")
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
    elif args.kind == "floor":
        app = floor_app()
    else:
        app = receiver_app(not args.no_workers, args.memory_route)
    asyncio.run(serve(app))


if __name__ == "__main__":
    main()
