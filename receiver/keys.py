"""Typed application keys shared by ``app`` (which fills them) and ``web`` (which reads them)."""

from __future__ import annotations

from aiohttp import web

from receiver.control import Control
from receiver.metrics import Metrics
from receiver.notify import Notifier
from receiver.notify.slack.actions import SlackActions
from receiver.readiness import RollbackReadiness
from receiver.settings import Settings
from receiver.store import Store
from receiver.worker import IngestLoad, Readiness

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", Store)
READINESS = web.AppKey("readiness", Readiness)
NOTIFIER = web.AppKey("notifier", Notifier)
INGEST_LOAD = web.AppKey("ingest_load", IngestLoad)
CONTROL = web.AppKey("control", Control)
"""The control layer every door uses (API, CLI through the API, Slack)."""
ROLLBACK_READINESS = web.AppKey("rollback_readiness", RollbackReadiness)
SLACK_ACTIONS = web.AppKey("slack_actions", SlackActions)
"""Slack's buttons and modal (set only when interactivity is configured)."""
