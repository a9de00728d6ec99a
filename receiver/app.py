"""The application factory: one place that wires settings, store, workers and routes.

Each resource has its own cleanup context, appended in dependency order, so a resource is
closed only if it was opened, and in reverse order. Used by the CLI and by the tests alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from receiver import keys
from receiver import web as handlers
from receiver.audit import EventPoster
from receiver.clients.k8s import REQUEST_TIMEOUT_SECONDS, Clusters, own_namespace
from receiver.clients.prometheus import PrometheusClient
from receiver.confirmation import Confirmer
from receiver.control import Control, GlobalPause
from receiver.errors import ReceiverError
from receiver.metrics import Metrics
from receiver.notify import Notifier, build_client
from receiver.notify.slack.actions import AllowList, SlackActions
from receiver.policy import Policy, load_policy
from receiver.readiness import RollbackReadiness
from receiver.restore import restore_facts
from receiver.service import NOTICE_TTL_SECONDS, RollbackService
from receiver.settings import Settings
from receiver.store import MemoryStore, RedisStore, Store
from receiver.web.models import VIEWS, Views
from receiver.worker import IngestLoad, JobHandler, Readiness, WorkerPool, supervise

log = logging.getLogger(__name__)

HANDLER = web.AppKey("job_handler", JobHandler)
WORKERS = web.AppKey("workers", WorkerPool)
POLICY = web.AppKey("policy", Policy)
CLUSTERS = web.AppKey("clusters", Clusters)
SESSION = web.AppKey("session", aiohttp.ClientSession)
CONFIRMER = web.AppKey("confirmer", Confirmer)
NOTIFIER = keys.NOTIFIER  # where tests and tools have always found it

# Slack messages still queued at shutdown get this long to go out.
NOTIFIER_DRAIN_SECONDS = 5.0
# Button presses being handled at shutdown get this long to finish.
SLACK_ACTIONS_DRAIN_SECONDS = 5.0
# One Prometheus query never waits longer than this; confirmation retries within its budget.
PROMETHEUS_TIMEOUT_SECONDS = 10.0


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
    restore: Callable[[], Awaitable[object]] | None = None,
    run_workers: bool = True,
    read_block_seconds: float = 1.0,
    service_options: dict[str, Any] | None = None,
    confirm_options: dict[str, Any] | None = None,
    kube_request_timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> web.Application:
    """Build the receiver. Tests pass their own store/handler; the CLI passes settings only.

    Raises ``ConfigError`` when the policy file is invalid: better not to start than to act
    on a policy nobody meant.
    """
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[handlers.observe])
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics or Metrics()
    app[keys.READINESS] = Readiness()
    app[keys.INGEST_LOAD] = IngestLoad()
    app[POLICY] = load_policy(settings.policy_file)
    # What the models listing and the status page show but the control layer owns.
    unwired = app[VIEWS] = Views()
    _precreate_series(app[keys.METRICS])

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[keys.STORE] = store or build_store(settings)
        yield
        await app[keys.STORE].close()

    async def clients_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession()
        app[CLUSTERS] = Clusters(settings.kubeconfig, request_timeout=kube_request_timeout)
        yield
        await app[CLUSTERS].close()
        await app[SESSION].close()

    async def notifier_ctx(app: web.Application) -> AsyncIterator[None]:
        the_store = app[keys.STORE]
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        notifier = Notifier(
            build_client(app[SESSION], token, settings.slack_api_url),
            default_channel=settings.slack_channel,
            metrics=app[keys.METRICS],
            messages=the_store,
            leases=the_store,
            claims=the_store,
            incidents=the_store,
            notice_ttl_seconds=NOTICE_TTL_SECONDS,
            interactive=interactive(settings),
        )
        app[NOTIFIER] = notifier
        await notifier.start()
        yield
        await notifier.close(NOTIFIER_DRAIN_SECONDS)

    async def handler_ctx(app: web.Application) -> AsyncIterator[None]:
        events = EventPoster()
        the_store = app[keys.STORE]
        prometheus = (
            PrometheusClient(
                app[SESSION], settings.prometheus_url, request_timeout=PROMETHEUS_TIMEOUT_SECONDS
            )
            if settings.prometheus_url
            else None
        )
        app[CONFIRMER] = Confirmer(
            store=the_store,
            incidents=the_store,
            leases=the_store,
            policy=app[POLICY],
            prometheus=prometheus,
            metrics=app[keys.METRICS],
            notifier=app[NOTIFIER],
            **(confirm_options or {}),
        )
        global_pause = GlobalPause(
            app[CLUSTERS],
            namespace=own_namespace(settings.namespace, settings.kubeconfig),
            name=settings.state_configmap,
            metrics=app[keys.METRICS],
        )
        app[keys.CONTROL] = Control(
            store=app[keys.STORE],
            policy=app[POLICY],
            clusters=app[CLUSTERS],
            metrics=app[keys.METRICS],
            global_pause=global_pause,
            http=app[SESSION],
            notifier=app[NOTIFIER],
            events=events,
            retention_seconds=settings.audit_retention_seconds,
        )
        # The status page and GET /api/models read the pause and the statistics here
        # (unless the caller wired views of its own).
        if app[VIEWS] is unwired:
            app[VIEWS] = Views(
                global_pause=app[keys.CONTROL].global_state, stats=app[keys.CONTROL].stats
            )
        app[HANDLER] = handler or RollbackService(
            store=app[keys.STORE],
            policy=app[POLICY],
            clusters=app[CLUSTERS],
            metrics=app[keys.METRICS],
            session=app[SESSION],
            notifier=app[NOTIFIER],
            events=events,
            dry_run=settings.dry_run,
            confirmer=app[CONFIRMER],
            global_paused=lambda: global_pause.paused,
            **(service_options or {}),
        )
        yield
        await events.close()

    async def control_ctx(app: web.Application) -> AsyncIterator[None]:
        """The global pause read before any job is decided, then refreshed in the background
        (the replica stays unready until the first read); drill metrics from the stats."""
        control = app[keys.CONTROL]
        readiness = app[keys.READINESS]
        if not await control.global_pause.load():
            readiness.block("global_pause", "the global pause could not be read yet")
        stopping = asyncio.Event()
        task = asyncio.create_task(
            control.global_pause.run(stopping, lambda: readiness.unblock("global_pause")),
            name="global-pause",
        )
        try:
            await control.publish_drill_stats()
        except ReceiverError as e:
            log.warning("drill statistics not exported yet: %s", e)
        yield
        stopping.set()
        await task

    async def slack_ctx(app: web.Application) -> AsyncIterator[None]:
        """Slack's buttons over HTTP and, with an app token, Socket Mode; presses being
        handled are drained at shutdown."""
        if not interactive(settings):
            yield
            return
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
        client = build_client(app[SESSION], token, settings.slack_api_url)
        actions = SlackActions(
            control=app[keys.CONTROL],
            store=app[keys.STORE],
            notifier=app[NOTIFIER],
            client=client,
            session=app[SESSION],
            allowed=AllowList(settings.slack_allowed_users, client),
        )
        app[keys.SLACK_ACTIONS] = actions
        secret = settings.slack_app_token
        app_token = secret.get_secret_value() if secret else None
        async with handlers.slack.socket_mode(
            app_token, settings.slack_api_url, actions, app[SESSION]
        ):
            yield
        await actions.close(SLACK_ACTIONS_DRAIN_SECONDS)

    async def workers_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = WorkerPool(
            app[keys.STORE],
            app[HANDLER],
            metrics=app[keys.METRICS],
            readiness=app[keys.READINESS],
            lease_seconds=settings.job_lease_seconds,
            concurrency=settings.worker_count,
            read_block_seconds=read_block_seconds,
            ingest_load=app[keys.INGEST_LOAD],
        )
        app[WORKERS] = pool
        tasks = [
            asyncio.create_task(
                supervise(
                    app[keys.STORE],
                    app[keys.READINESS],
                    app[keys.METRICS],
                    restore=restore
                    or (lambda: restore_facts(app[keys.STORE], app[POLICY], app[CLUSTERS])),
                    interval=min(1.0, settings.job_lease_seconds / 3),
                    stopping=pool.stopping,
                ),
                name="supervise",
            )
        ]
        if run_workers:
            tasks.append(asyncio.create_task(pool.run(), name="workers"))
            tasks.append(
                asyncio.create_task(app[CONFIRMER].run(pool.stopping), name="confirmations")
            )
        yield
        pool.stop()
        _, late = await asyncio.wait(tasks, timeout=pool.read_block_seconds + 2.0)
        for task in late:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def readiness_ctx(app: web.Application) -> AsyncIterator[None]:
        readiness = RollbackReadiness(
            store=app[keys.STORE],
            policy=app[POLICY],
            clusters=app[CLUSTERS],
            metrics=app[keys.METRICS],
            session=app[SESSION],
            interval_seconds=settings.readiness_interval_seconds,
        )
        app[keys.ROLLBACK_READINESS] = readiness
        stopping = asyncio.Event()
        task = asyncio.create_task(readiness.run(stopping), name="rollback-readiness")
        yield
        stopping.set()
        # A check in flight is a few requests with their own timeouts; not worth waiting on.
        _, late = await asyncio.wait({task}, timeout=2.0)
        for pending in late:
            pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(clients_ctx)
    app.cleanup_ctx.append(notifier_ctx)
    app.cleanup_ctx.append(handler_ctx)
    app.cleanup_ctx.append(control_ctx)
    app.cleanup_ctx.append(slack_ctx)
    app.cleanup_ctx.append(workers_ctx)
    app.cleanup_ctx.append(readiness_ctx)
    handlers.add_routes(app)
    return app


def interactive(settings: Settings) -> bool:
    """Slack interactivity is configured: a signing secret (HTTP) or an app token (Socket
    Mode). Only then do messages carry buttons."""
    return settings.slack_signing_secret is not None or settings.slack_app_token is not None


def _precreate_series(metrics: Metrics) -> None:
    """Export the failure series at 0 from the start, so ``increase()`` in the meta-alerts
    sees the first failure instead of a series that appears already at 1."""
    for result in ("applied", "failed", "verified", "verification_failed"):
        metrics.rollbacks.labels(strategy="rollout-undo", result=result)
    for result in ("sent", "lost"):
        metrics.notifications.labels(result=result)
    for result in ("done", "failed"):
        metrics.jobs.labels(result=result)
    for result in ("passed", "failed", "refused"):
        metrics.drills.labels(result=result)
