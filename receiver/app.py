"""The application factory: one place that wires settings, store, workers and routes.

Each resource has its own cleanup context, appended in dependency order, so a resource is
closed only if it was opened, and in reverse order. Used by the CLI and by the tests alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from receiver import keys
from receiver import web as handlers
from receiver.metrics import Metrics
from receiver.settings import Settings
from receiver.store import MemoryStore, RedisStore, Store
from receiver.worker import JobHandler, LoggingHandler, Readiness, WorkerPool, supervise

log = logging.getLogger(__name__)

HANDLER = web.AppKey("job_handler", JobHandler)
WORKERS = web.AppKey("workers", WorkerPool)


async def _no_restore() -> None:
    return None


def build_store(settings: Settings) -> Store:
    """Redis when a URL is set, else the embedded single-replica store."""
    if settings.redis_url:
        return RedisStore.from_url(
            settings.redis_url,
            prefix=settings.key_prefix,
            retention_seconds=settings.audit_retention_seconds,
        )
    return MemoryStore(retention_seconds=settings.audit_retention_seconds)


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    store: Store | None = None,
    handler: JobHandler | None = None,
    restore: Callable[[], Awaitable[None]] | None = None,
    run_workers: bool = True,
    read_block_seconds: float = 1.0,
) -> web.Application:
    """Build the receiver. Tests pass their own store/handler; the CLI passes settings only."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[handlers.observe])
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics or Metrics()
    app[keys.READINESS] = Readiness()
    app[HANDLER] = handler or LoggingHandler()

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.STORE] = store or build_store(settings)
        yield
        await app[keys.STORE].close()

    async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = WorkerPool(
            app[keys.STORE],
            app[HANDLER],
            metrics=app[keys.METRICS],
            readiness=app[keys.READINESS],
            lease_seconds=settings.job_lease_seconds,
            concurrency=settings.worker_count,
            read_block_seconds=read_block_seconds,
        )
        app[WORKERS] = pool
        tasks = [
            asyncio.create_task(
                supervise(
                    app[keys.STORE],
                    app[keys.READINESS],
                    app[keys.METRICS],
                    restore=restore or _no_restore,
                    interval=min(1.0, settings.job_lease_seconds / 3),
                    stopping=pool.stopping,
                ),
                name="supervise",
            )
        ]
        if run_workers:
            tasks.append(asyncio.create_task(pool.run(), name="workers"))
        yield
        pool.stop()
        _, late = await asyncio.wait(tasks, timeout=pool.read_block_seconds + 2.0)
        for task in late:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(workers_ctx)
    handlers.add_routes(app)
    return app
