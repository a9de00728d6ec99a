"""The receiver's exception hierarchy.

Library exceptions (``kubernetes.client.ApiException``, ``redis.RedisError``) never travel
past the adapter that caught them: ``k8s`` and ``store`` translate them into these, chained
with ``raise ... from``. Permanent errors are not worth retrying; temporary ones are, after
``delay`` seconds. Only ``web`` turns errors into HTTP statuses.
"""

from __future__ import annotations

# Error texts from remote servers are cut to this size so a misbehaving peer cannot flood
# the logs or smuggle large payloads into Slack messages.
TEXT_ERROR_MAX_SIZE = 512


def truncate(text: str, limit: int = TEXT_ERROR_MAX_SIZE) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReceiverError(Exception):
    """Base of every error the receiver raises on purpose."""


class PermanentError(ReceiverError):
    """Retrying cannot help: the input or the state of the world is wrong."""


class TemporaryError(ReceiverError):
    """Worth retrying after ``delay`` seconds: a dependency is unavailable or busy."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class ConfigError(PermanentError):
    """Settings or the policy file are invalid; the message names the key and the fix."""


class StoreUnavailable(TemporaryError):
    """Redis could not be reached or answered with an error."""


class QueueGroupMissing(StoreUnavailable):
    """The job stream has no consumer group: Redis lost its data (a restart without
    persistence, a flush, an eviction). Only the start-up path creates it again, after the
    facts kept on the Kubernetes objects were re-read."""


class KubeError(ReceiverError):
    """Base of errors from the Kubernetes API, carrying the HTTP status and reason."""

    status: int = 0

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError, PermanentError):
    """The object does not exist (404)."""


class KubeForbidden(KubeError, PermanentError):
    """RBAC refused the request (403): grant the verb in deploy/rbac.yaml."""


class KubeInvalid(KubeError, PermanentError):
    """The API server rejected the request as invalid (422)."""


class KubeConflict(KubeError, TemporaryError):
    """Optimistic concurrency lost (409): read again and decide again."""

    def __init__(self, message: str, *, status: int = 409, reason: str = "Conflict") -> None:
        KubeError.__init__(self, message, status=status, reason=reason)
        self.delay = 0.0


class KubeUnavailable(KubeError, TemporaryError):
    """The API server is overloaded, failing or unreachable (429, 5xx, timeouts)."""

    def __init__(
        self, message: str, *, status: int = 0, reason: str = "", delay: float = 1.0
    ) -> None:
        KubeError.__init__(self, message, status=status, reason=reason)
        self.delay = delay
