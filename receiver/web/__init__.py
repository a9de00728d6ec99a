"""The HTTP surface: the only place where errors become HTTP statuses.

``webhook`` (Alertmanager), ``api`` (the admin API under ``/api``, behind the admin token
by construction), ``probes`` (health, readiness, metrics), ``middleware`` (JSON errors,
request metrics, the admin token). ``receiver.app`` calls :func:`add_routes` and installs
:func:`observe`.
"""

from receiver.web.middleware import observe
from receiver.web.routes import add_routes

__all__ = ["add_routes", "observe"]
