"""The wait after an action: the rollout complete, then the model healthy, by a deadline.

The caller passes readers (a rollout status, a probe) built by the strategy, so this module
judges time only: it neither talks to Kubernetes nor knows a kind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from receiver.errors import PermanentError, TemporaryError
from receiver.models import RolloutStatus, Verdict

__all__ = ["verify"]

logger = logging.getLogger(__name__)


async def verify(
    *,
    read_rollout: Callable[[], Awaitable[RolloutStatus]],
    probe: Callable[[], Awaitable[Verdict]],
    # A parameter, not the caller's asyncio.timeout: the deadline is measured on ``clock``
    # and its expiry is a verdict, not an exception.
    timeout: float,  # noqa: ASYNC109
    poll_interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """Wait for the rollout to complete, then for the probe to pass, within ``timeout``.

    A model server may need a while to load after its pod is ready, so a failing probe is
    retried every ``poll_interval`` until the deadline, as is an unfinished rollout. A
    failed rollout (progress deadline exceeded, paused) ends at once. Past the deadline
    the verdict reads ``timed out after Ns: <last reason>``. A ``TemporaryError`` from
    ``read_rollout`` (API server busy) is a failed poll; other exceptions propagate, and
    so does cancellation. Each read or probe is also cut at the deadline, so a hanging
    call cannot stretch verification.
    """
    deadline = clock() + timeout
    last = Verdict(False, "no check finished")
    rollout_done = False

    def timed_out() -> Verdict:
        return Verdict(False, f"timed out after {timeout:g}s: {last.reason}", last.checks)

    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return timed_out()
        running = "the probe" if rollout_done else "the rollout read"
        # Cut a hanging read or probe at the deadline; this is the only TimeoutError
        # caught below (``expired()``), so one raised by a reader still propagates.
        cut = asyncio.timeout(remaining)
        try:
            async with cut:
                if not rollout_done:
                    try:
                        status = await read_rollout()
                    except TemporaryError as exc:
                        last = Verdict(False, f"could not read the rollout: {exc}")
                    except PermanentError as exc:
                        # The workload is gone or we may no longer read it (404, 403): it
                        # will not heal by waiting, and the incident must not stay acting.
                        return Verdict(False, f"could not read the rollout: {exc}")
                    else:
                        if status.failed:
                            return Verdict(False, f"rollout failed: {status.message}")
                        rollout_done = status.done
                        if not rollout_done:
                            last = Verdict(False, status.message)
                if rollout_done:
                    running = "the probe"
                    verdict = await probe()
                    if verdict.healthy:
                        return verdict
                    last = verdict
        except TimeoutError:
            if not cut.expired():
                raise
            last = Verdict(False, f"{last.reason} ({running} was still running)", last.checks)
            return timed_out()
        remaining = deadline - clock()
        if remaining <= 0:
            return timed_out()
        logger.debug("verification continues: %s", last.reason)
        await asyncio.sleep(min(poll_interval, remaining))
