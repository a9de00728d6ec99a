"""Every route of the receiver, in one place: ``add_routes(app)``."""

from __future__ import annotations

from aiohttp import web

from receiver.web import api, probes, slack, webhook


def add_routes(app: web.Application) -> None:
    """The webhook, Slack's interactivity and probes on ``app``; the admin API as a
    sub-application at ``/api``."""
    app.router.add_post(webhook.PATH, webhook.receive)
    app.router.add_post(slack.PATH, slack.receive)
    probes.add_routes(app)
    app.add_subapp("/api", api.build())
