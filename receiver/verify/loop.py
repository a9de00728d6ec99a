"""The wait after an action: the rollout complete, then the model healthy, by a deadline.

The caller passes readers (a rollout status, a probe, the rollout's changes) built by the
strategy, so this module judges time only: it neither talks to Kubernetes nor knows a kind.
A watch tells the moment the rollout is complete, so the probes start at once instead of
at the next tick of a poll; polling stays as the fallback when the watch breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from receiver.errors import PermanentError, ReceiverError, TemporaryError
from receiver.models import RolloutStatus, Verdict

__all__ = ["WATCH_FALLBACK_SECONDS", "verify"]

logger = logging.getLogger(__name__)

WATCH_FALLBACK_SECONDS = 2.0
"""While a watch runs, the rollout is still read this often: a change the watched object
alone cannot show (an old pod that terminates) must not wait for the deadline."""


class _Wakeup:
    """Follows the rollout's changes in the background and wakes the wait with a final
    answer (complete or failed); remembers whether the watch is still running."""

    def __init__(self, changes: Callable[[], AsyncIterator[RolloutStatus]] | None) -> None:
        self.event = asyncio.Event()
        self.final: RolloutStatus | None = None
        self.watching = changes is not None
        self._task = (
            asyncio.create_task(self._follow(changes), name="verify-watch")
            if changes is not None
            else None
        )

    async def _follow(self, changes: Callable[[], AsyncIterator[RolloutStatus]]) -> None:
        try:
            async with contextlib.aclosing(changes()) as stream:
                async for status in stream:
                    if status.done or status.failed:
                        self.final = status
                        self.event.set()
                        return
        except ReceiverError as exc:
            logger.info("the rollout watch ended, polling instead: %s", exc)
        except Exception:
            # A watch is an optimisation: whatever broke it, polling still verifies.
            logger.warning("the rollout watch failed, polling instead", exc_info=True)
        finally:
            self.watching = False
            self.event.set()

    async def wait(self, poll_interval: float, watch_fallback: float, remaining: float) -> None:
        """Until the watch says the rollout may be done, or the next poll is due."""
        interval = watch_fallback if self.watching else poll_interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), min(interval, remaining))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def verify(
    *,
    read_rollout: Callable[[], Awaitable[RolloutStatus]],
    probe: Callable[[], Awaitable[Verdict]],
    # A parameter, not the caller's asyncio.timeout: the deadline is measured on ``clock``
    # and its expiry is a verdict, not an exception.
    timeout: float,  # noqa: ASYNC109
    poll_interval: float = 0.5,
    changes: Callable[[], AsyncIterator[RolloutStatus]] | None = None,
    watch_fallback: float = WATCH_FALLBACK_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """Wait for the rollout to complete, then for the probe to pass, within ``timeout``.

    With ``changes`` (a watch of the rollout), its first complete (or failed) answer ends
    the wait for the rollout at once, and the rollout is still read every
    ``watch_fallback`` seconds meanwhile; without it, or once it has ended, every
    ``poll_interval``. A model server may need a while to load
    after its pod is ready, so a failing probe is retried every ``poll_interval`` until
    the deadline. A failed rollout (progress deadline exceeded, paused) ends at once. Past
    the deadline the verdict reads ``timed out after Ns: <last reason>``. A
    ``TemporaryError`` from ``read_rollout`` (API server busy) is a failed poll; other
    exceptions propagate, and so does cancellation. Each read or probe is also cut at the
    deadline, so a hanging call cannot stretch verification.
    """
    deadline = clock() + timeout
    last = Verdict(False, "no check finished")
    rollout_done = False
    wakeup = _Wakeup(changes)

    def timed_out() -> Verdict:
        return Verdict(False, f"timed out after {timeout:g}s: {last.reason}", last.checks)

    try:
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return timed_out()
            running = "the probe" if rollout_done else "the rollout read"
            probed = False
            # A change seen from here on is newer than the read below: it wakes the wait.
            wakeup.event.clear()
            # Cut a hanging read or probe at the deadline; this is the only TimeoutError
            # caught below (``expired()``), so one raised by a reader still propagates.
            cut = asyncio.timeout(remaining)
            try:
                async with cut:
                    if not rollout_done and wakeup.final is not None:
                        # The watch's answer is final (judged with the pods): no re-read.
                        status = wakeup.final
                        if status.failed:
                            return Verdict(False, f"rollout failed: {status.message}")
                        rollout_done = True
                    if not rollout_done:
                        try:
                            status = await read_rollout()
                        except TemporaryError as exc:
                            last = Verdict(False, f"could not read the rollout: {exc}")
                        except PermanentError as exc:
                            # The workload is gone or we may no longer read it (404, 403):
                            # it will not heal by waiting, and the incident must not stay
                            # acting.
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
                        # Not healthy yet: read the rollout again before the next probe, so
                        # a template changed meanwhile (a person's deploy) is seen, not
                        # latched as done.
                        rollout_done = False
                        wakeup.final = None
                        probed = True
            except TimeoutError:
                if not cut.expired():
                    raise
                last = Verdict(False, f"{last.reason} ({running} was still running)", last.checks)
                return timed_out()
            remaining = deadline - clock()
            if remaining <= 0:
                return timed_out()
            logger.debug("verification continues: %s", last.reason)
            if probed:  # the probe answered: the model may still be loading
                await asyncio.sleep(min(poll_interval, remaining))
            else:
                await wakeup.wait(poll_interval, watch_fallback, remaining)
    finally:
        await wakeup.close()
