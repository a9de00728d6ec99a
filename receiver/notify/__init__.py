"""Telling people what happened: one package per sink. Slack is the one there is, and its
names (``Notifier``, ``build_client``, ``RetryPolicy``, the render functions) are these."""

from receiver.notify import slack
from receiver.notify.slack import *  # noqa: F403 - the Slack sink's public names, as they are

__all__ = slack.__all__
