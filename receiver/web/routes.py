"""Every route of the receiver, in one place: ``add_routes(app)``."""

from __future__ import annotations

from aiohttp import web

from receiver import keys
from receiver.web import api, models, probes, slack, status, webhook
from receiver.web.middleware import REQUEST_COUNTS, RequestCounts


def add_routes(app: web.Application) -> None:
    """The webhook, Slack's interactivity, probes and status page on ``app``; the admin API
    as a sub-application at ``/api``.

    ``app`` must hold its metrics already (``keys.METRICS``): requests are counted there.
    """
    app[REQUEST_COUNTS] = RequestCounts(app[keys.METRICS])
    app.router.add_post(webhook.PATH, webhook.handler(app))
    app.router.add_post(slack.PATH, slack.receive)
    probes.add_routes(app)
    status.add_routes(app)
    admin = api.build()
    models.add_routes(admin)
    app.add_subapp("/api", admin)
