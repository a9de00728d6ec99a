"""Run one server for a benchmark in its own process; prints ``LISTENING <url>`` when bound.

    python benchmarks/_serve.py bare                  # aiohttp handler: parse JSON, answer 200
    python benchmarks/_serve.py receiver [--no-workers] [--memory-route]

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

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def bare_webhook(request: web.Request) -> web.Response:
    await request.json()
    return web.Response(status=200)


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
    parser.add_argument("kind", choices=["bare", "receiver"])
    parser.add_argument("--no-workers", action="store_true")
    parser.add_argument("--memory-route", action="store_true")
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare_app()
    else:
        app = receiver_app(not args.no_workers, args.memory_route)
    asyncio.run(serve(app))


if __name__ == "__main__":
    main()
