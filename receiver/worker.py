"""Workers: take jobs from the queue, hold the workload's lease, run the handler, acknowledge.

Any replica runs workers. A job is renewed while it runs; one left idle for a lease (its
worker died) is taken over by another worker through ``claim_stale``. Actions on one
workload are serialized by a renewed lease of the same length, so two jobs never act on
one workload at once: a job whose lease is lost (another holder has it, or it may have
expired while Redis was unreachable) is cancelled and left pending. The handler decides
what a job means; this module only guarantees at-least-once, serialized execution and never
decides anything about the cluster.

Long because leases, mailboxes, renewal and the start-up path are one concurrency design:
the invariants (one job per workload, a lost lease cancels, no job before start-up facts)
are easier to check when the code that keeps them is side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from receiver.errors import PermanentError, QueueGroupMissing, StoreUnavailable, TemporaryError
from receiver.metrics import Metrics
from receiver.models import Job
from receiver.store import QueuedJob, Store

log = logging.getLogger(__name__)

# Local retries of a job that failed temporarily before it is left for another worker.
_LOCAL_RETRIES = 3
# A job delivered this many times and failing unexpectedly every time is dropped (logged
# and counted) so that one poison job cannot occupy the queue forever.
MAX_DELIVERIES = 5
# A model lease not renewed for this share of its length is given up and its job cancelled:
# the lease may expire (and another replica take it) at one lease after the last renewal,
# and the rest is the time the cancellation needs. Renewals come every third of a lease,
# and sooner again after a failure, so a short Redis failure costs nothing.
LEASE_OUTAGE_SHARE = 2 / 3


@dataclass(frozen=True)
class JobContext:
    """What a handler may want to know about the job it is running."""

    entry_id: str
    deliveries: int
    consumer: str


class JobHandler(Protocol):
    """Plugged into the workers: names the lease a job needs and carries it out."""

    def lease_key(self, job: Job) -> str:
        """Jobs with the same key never run at the same time (the workload they act on)."""

    async def handle(self, job: Job, ctx: JobContext) -> None:
        """Carry out the job. TemporaryError: retry later; PermanentError: give up."""


@dataclass
class Readiness:
    """Why this replica is not ready, by cause; ready when there is no cause left.

    ``lost`` is set by a worker that found the queue's state gone from Redis: the
    supervisor then takes the start-up path (re-read facts, create the group) at once.
    """

    reasons: dict[str, str] = field(default_factory=dict)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def block(self, cause: str, reason: str) -> None:
        self.reasons[cause] = reason
        self.event.clear()

    def unblock(self, cause: str) -> None:
        self.reasons.pop(cause, None)
        if not self.reasons:
            self.event.set()

    @property
    def ready(self) -> bool:
        return not self.reasons

    def report_lost(self, reason: str) -> None:
        """Redis lost the queue's state: no job runs until the start-up facts are re-read."""
        self.block("startup", reason)
        self.lost.set()


@dataclass(eq=False)
class _Lease:
    """A model's lease while a runner holds it; ``lost`` for good once in doubt."""

    name: str
    owner: str
    renewed_at: float  # loop time at the start of the last successful take or renewal
    lost: bool = False
    job: asyncio.Task[bool] | None = None  # the handler in flight under this lease


class IngestLoad:
    """Webhook deliveries in flight, so that the workers let them have the event loop first.

    A delivery is answered on Alertmanager's clock (a slow answer is resent, and adds
    load); a job waits safely in the durable queue. While deliveries keep arriving, the
    workers of a replica keep to ``share`` of the time: one job at a time, and after a job
    that took ``t`` the next starts ``t * (1 - share) / share`` later (at most
    ``max_pause``). Once no delivery has arrived for ``quiet`` seconds, jobs start at
    once. A storm is absorbed first and worked through next; a lone alert is not delayed.
    """

    def __init__(
        self,
        share: float = 0.1,
        quiet: float = 0.05,
        max_pause: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = share
        self.quiet = quiet
        self.max_pause = max_pause
        self.in_flight = 0
        self._clock = clock
        self._last_seen = float("-inf")
        self._next_start = float("-inf")

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._last_seen = self._clock()

    def delay(self) -> float:
        """Seconds until a worker may start a job; 0 grants it the start now."""
        now = self._clock()
        if not self._busy(now):
            return 0.0
        if now >= self._next_start:
            # One job at a time while busy: ``ran`` sets the real pause when it ends.
            self._next_start = now + self.max_pause
            return 0.0
        return self._next_start - now

    async def turn(self) -> None:
        """Return when a worker may start its next job.

        Time decides, not an event: re-checked at least every ``quiet`` seconds, so the end
        of a storm releases the workers promptly.
        """
        wait = self.delay()
        while wait > 0:
            await asyncio.sleep(min(wait, self.quiet))
            wait = self.delay()

    def ran(self, seconds: float) -> None:
        """A job took ``seconds``; while deliveries arrive, pause the next start to match.

        Only while they arrive: a job that ended with no delivery in flight or recent
        leaves no pause behind, or the next lone alert would wait out the quiet period.
        """
        now = self._clock()
        if not self._busy(now):
            self._next_start = now
            return
        self._next_start = now + min(seconds * (1 - self.share) / self.share, self.max_pause)

    def _busy(self, now: float) -> bool:
        """A delivery is in flight, or one arrived within the quiet period."""
        return self.in_flight > 0 or now - self._last_seen < self.quiet


class WorkerPool:
    """Reads jobs and runs them, one model at a time per model, ``concurrency`` models at once.

    Jobs are dispatched to a mailbox per lease key (the model): the first job of a model
    starts a runner that takes the model's lease, then a slot, and works through every job
    of that model that arrives meanwhile, so the alerts of one model never occupy several
    slots waiting on each other's lease, and a model whose lease another replica holds
    occupies no slot. Every job held here, running or waiting in a mailbox, is renewed
    every third of a lease; a job whose holder died is taken over elsewhere.

    A model lease renewal answered False (another holder, or the key is gone) cancels the
    job in flight under it; so does a lease left unrenewed for ``lease_outage_seconds``
    (Redis unreachable), before it can expire. The job stays pending and is re-driven after
    a lease, and no other job of that model runs here until the lease is held again.
    """

    def __init__(
        self,
        store: Store,
        handler: JobHandler,
        *,
        metrics: Metrics,
        readiness: Readiness,
        lease_seconds: float,
        concurrency: int = 16,
        consumer: str | None = None,
        read_block_seconds: float = 1.0,
        ingest_load: IngestLoad | None = None,
    ) -> None:
        self.store = store
        self.ingest_load = ingest_load
        self.handler = handler
        self.metrics = metrics
        self.readiness = readiness
        self.lease_seconds = lease_seconds
        self.lease_outage_seconds = lease_seconds * LEASE_OUTAGE_SHARE
        self.concurrency = concurrency
        # Jobs taken from the stream but not finished, at most: enough to keep every slot
        # busy, few enough to leave the rest of the queue to other replicas.
        self.max_held = concurrency * 8
        self.consumer = consumer or f"receiver-{uuid.uuid4().hex[:12]}"
        self.read_block_seconds = min(read_block_seconds, lease_seconds / 3)
        # Pending entries are scanned at least every third of a lease (design.md).
        self.scan_interval = lease_seconds / 3
        self.stopping = asyncio.Event()
        self._held: dict[str, QueuedJob] = {}  # entry id -> job, running or waiting
        self._lost: set[str] = set()  # entry ids taken over by another worker
        self._mailboxes: dict[str, deque[QueuedJob]] = {}
        self._leases: dict[str, _Lease] = {}  # lease name -> the lease, while held
        self._slots = asyncio.Semaphore(concurrency)
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()  # stopping and no model runner left
        self._tg: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Run until ``stop``; a job interrupted by cancellation stays pending for another."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self._consume(), name="worker-read")
            tg.create_task(self._reclaim(), name="worker-reclaim")
            tg.create_task(self._renew_jobs(), name="worker-renew-jobs")
            tg.create_task(self._renew_leases(), name="worker-renew-leases")

    def stop(self) -> None:
        """Ask the loops to finish: each ends after its current read or job.

        Cooperative on purpose: cancelling a blocked stream read is not reliably delivered
        through the Redis client, so loops notice ``stopping`` within ``read_block_seconds``.
        """
        self.stopping.set()
        self._room.set()
        if not self._mailboxes:
            self._drained.set()

    async def _ready_or_stopping(self) -> bool:
        """Wait until ready (True) or stopping (False)."""
        if self.readiness.event.is_set():
            return not self.stopping.is_set()
        ready = asyncio.ensure_future(self.readiness.event.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (ready, stop):
                t.cancel()
        return not self.stopping.is_set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _consume(self) -> None:
        while await self._ready_or_stopping():
            room = self.max_held - len(self._held)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                taken = await self.store.read(
                    self.consumer, count=min(room, 64), block_seconds=self.read_block_seconds
                )
            except QueueGroupMissing as e:
                self._report_lost(e)
                continue
            except StoreUnavailable as e:
                log.warning("cannot read jobs: %s", e)
                await self._pause(self.scan_interval)
                continue
            for item in taken:
                self.dispatch(item)

    async def _reclaim(self) -> None:
        while not self.stopping.is_set():
            await self._pause(self.scan_interval)
            if not await self._ready_or_stopping():
                return
            room = self.max_held - len(self._held)
            if room <= 0:
                continue
            try:
                stale = await self.store.claim_stale(
                    self.consumer, min_idle_seconds=self.lease_seconds, count=room
                )
            except QueueGroupMissing as e:
                self._report_lost(e)
                continue
            except StoreUnavailable as e:
                log.warning("cannot scan pending jobs: %s", e)
                continue
            for item in stale:
                self.metrics.jobs.labels(result="reclaimed").inc()
                log.info(
                    "took over job %s (delivery %d) left idle by another worker",
                    item.entry_id,
                    item.deliveries,
                )
                self.dispatch(item)

    def _report_lost(self, error: QueueGroupMissing) -> None:
        """The group is gone: wait (unready) for the supervisor, never create it here.

        Creating it here would let jobs be decided before the start-up facts are re-read.
        """
        log.warning("%s", error)
        self.readiness.report_lost("Redis lost the job queue: re-reading start-up facts")

    def dispatch(self, item: QueuedJob) -> None:
        """Hand a job to its model's mailbox, starting the model's runner if none runs."""
        if item.entry_id in self._held:
            return
        self._held[item.entry_id] = item
        self._lost.discard(item.entry_id)
        key = self.handler.lease_key(item.job)
        box = self._mailboxes.get(key)
        if box is not None:
            box.append(item)
            return
        self._mailboxes[key] = deque([item])
        assert self._tg is not None, "dispatch() is called by run()'s loops"
        self._tg.create_task(self._run_model(key), name=f"model:{key}")

    def _forget(self, entry_id: str) -> None:
        self._held.pop(entry_id, None)
        self._lost.discard(entry_id)
        if len(self._held) < self.max_held:
            self._room.set()

    async def _run_model(self, key: str) -> None:
        """Take the model's lease (holding no slot meanwhile), then a slot, then its jobs."""
        box = self._mailboxes[key]
        try:
            while box and await self._ready_or_stopping():
                lease = await self._take_lease(key)
                if lease is None:  # stopping
                    break
                try:
                    async with self._slots:
                        await self._work_through(box, lease)
                finally:
                    if self._leases.get(key) is lease:
                        del self._leases[key]
                    with contextlib.suppress(StoreUnavailable):
                        await self.store.release_lease(key, lease.owner)
        finally:
            # Unregister before any await, so a job dispatched from now on starts a runner
            # of its own (which waits for the lease) instead of joining a closed mailbox.
            self._mailboxes.pop(key, None)
            if self.stopping.is_set() and not self._mailboxes:
                self._drained.set()
            for left in box:  # stopping: they stay pending in the stream for another
                self._forget(left.entry_id)

    async def _work_through(self, box: deque[QueuedJob], lease: _Lease) -> None:
        """Run the model's jobs while the lease is held and the replica is ready."""
        while box and not self.stopping.is_set() and self.readiness.event.is_set():
            if not self._lease_held(lease):
                return  # back to waiting for the lease; the jobs wait in the mailbox
            if self.ingest_load is not None:
                # Under a burst of deliveries, intake goes first (see IngestLoad).
                await self.ingest_load.turn()
                if self.stopping.is_set():
                    return
            item = box.popleft()
            if item.entry_id in self._lost:
                self._forget(item.entry_id)
                continue
            started = time.monotonic()
            try:
                await self._process(item, lease)
            finally:
                self._forget(item.entry_id)
                if self.ingest_load is not None:
                    self.ingest_load.ran(time.monotonic() - started)

    async def _take_lease(self, key: str) -> _Lease | None:
        """Wait for the model's lease; None when stopping first."""
        loop = asyncio.get_running_loop()
        owner = f"{self.consumer}:{uuid.uuid4().hex[:8]}"
        delay = 0.01
        while not self.stopping.is_set():
            started = loop.time()
            try:
                if await self.store.acquire_lease(key, owner, self.lease_seconds):
                    lease = _Lease(key, owner, renewed_at=started)
                    self._leases[key] = lease
                    return lease
            except StoreUnavailable as e:
                log.warning("cannot take lease %s: %s", key, e)
            await self._pause(delay)
            delay = min(delay * 2, 0.25)
        return None

    def _lease_held(self, lease: _Lease) -> bool:
        """False once the lease is lost or may have been (unrenewed for too long)."""
        if not lease.lost:
            unrenewed = asyncio.get_running_loop().time() - lease.renewed_at
            if unrenewed >= self.lease_outage_seconds:
                self._lose(lease, f"not renewed for {unrenewed:.1f}s: Redis is failing")
        return not lease.lost

    def _lose(self, lease: _Lease, why: str) -> None:
        if lease.lost:
            return
        lease.lost = True
        in_flight = lease.job is not None and not lease.job.done()
        log.warning(
            "lease %s lost (%s): %s; no job of it runs here until the lease is held again",
            lease.name,
            why,
            "its job in flight is cancelled and left pending"
            if in_flight
            else "no job was running",
        )
        if in_flight:
            assert lease.job is not None
            lease.job.cancel()

    async def _process(self, item: QueuedJob, lease: _Lease) -> None:
        """Run one job under its model's lease; acknowledge it unless it should run again."""
        ctx = JobContext(item.entry_id, item.deliveries, self.consumer)
        job = asyncio.create_task(self._run_handler(item.job, ctx), name=f"job:{item.entry_id}")
        lease.job = job
        try:
            ack = await self._watch(job, lease)
        finally:
            lease.job = None
        if ack is None:
            # Not acknowledged: re-driven after a lease, under the lease, by its holder.
            log.warning("job %s left pending: lease %s lost while it ran", ctx.entry_id, lease.name)
            self.metrics.jobs.labels(result="retried").inc()
            return
        try:
            if ack and item.entry_id not in self._lost:
                await self.store.ack(item.entry_id)
        except StoreUnavailable as e:
            # The job stays pending; it is re-driven once Redis is back.
            log.warning("job %s left pending: %s", item.entry_id, e)
            self.metrics.jobs.labels(result="retried").inc()

    async def _watch(self, job: asyncio.Task[bool], lease: _Lease) -> bool | None:
        """The handler's answer, or None when it was cancelled because the lease was lost.

        Renewals happen elsewhere; this wakes when the lease would have gone unrenewed for
        ``lease_outage_seconds``, so a hung Redis cannot keep a job running past its lease.
        """
        loop = asyncio.get_running_loop()
        try:
            while not job.done():
                if not self._lease_held(lease):
                    job.cancel()  # done by _lose already, unless it was lost before it began
                    await asyncio.wait({job})
                    break
                deadline = lease.renewed_at + self.lease_outage_seconds
                await asyncio.wait({job}, timeout=max(deadline - loop.time(), 0.0))
        except asyncio.CancelledError:
            job.cancel()  # the pool itself is being cancelled: the job stays pending
            await asyncio.wait({job})
            raise
        if lease.lost or job.cancelled():
            return None
        return job.result()

    async def _run_handler(self, job: Job, ctx: JobContext) -> bool:
        """True when the job is finished (done or given up), False to leave it pending."""
        for attempt in range(1, _LOCAL_RETRIES + 1):
            try:
                await self.handler.handle(job, ctx)
            except TemporaryError as e:
                if attempt == _LOCAL_RETRIES or ctx.entry_id in self._lost:
                    log.warning("job %s left for a later retry: %s", ctx.entry_id, e)
                    self.metrics.jobs.labels(result="retried").inc()
                    return False
                await asyncio.sleep(e.delay)
                continue
            except PermanentError as e:
                log.error("job %s failed for good: %s", ctx.entry_id, e)
                self.metrics.jobs.labels(result="failed").inc()
                return True
            except Exception:
                log.exception(
                    "job %s raised unexpectedly (delivery %d)", ctx.entry_id, ctx.deliveries
                )
                if ctx.deliveries >= MAX_DELIVERIES:
                    self.metrics.jobs.labels(result="failed").inc()
                    return True
                self.metrics.jobs.labels(result="retried").inc()
                return False
            self.metrics.jobs.labels(result="done").inc()
            return True
        return False

    async def _renew_jobs(self) -> None:
        """Every third of a lease: renew each held job, so no other worker takes it over."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self.scan_interval)
            if self._drained.is_set():
                return
            for entry_id in list(self._held):
                try:
                    if not await self.store.renew_job(self.consumer, entry_id):
                        log.warning("job %s was taken over by another worker", entry_id)
                        self._lost.add(entry_id)
                except StoreUnavailable as e:
                    log.warning("cannot renew job %s: %s", entry_id, e)

    async def _renew_leases(self) -> None:
        """Every third of a lease, and soon again after a failure: renew each model lease.

        On its own loop, ahead of the jobs' renewals, and all at once, so a slow Redis
        delays no lease behind the others.
        """
        wait = self.scan_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), wait)
            if self._drained.is_set():
                return
            held = [lease for lease in self._leases.values() if not lease.lost]
            answered = await asyncio.gather(*(self._renew_lease(lease) for lease in held))
            wait = self.scan_interval if all(answered) else self.scan_interval / 4

    async def _renew_lease(self, lease: _Lease) -> bool:
        """Renew one lease; False when Redis did not answer (the lease is then in doubt)."""
        started = asyncio.get_running_loop().time()
        try:
            held = await self.store.renew_lease(lease.name, lease.owner, self.lease_seconds)
        except StoreUnavailable as e:
            log.warning(
                "cannot renew lease %s: %s; its job is cancelled if this lasts %.1fs",
                lease.name,
                e,
                self.lease_outage_seconds,
            )
            return False
        if held:
            lease.renewed_at = max(lease.renewed_at, started)
        else:
            self._lose(lease, "another holder has it, or it expired")
        return True


Restore = Callable[[], Awaitable[object]]


async def supervise(
    store: Store,
    readiness: Readiness,
    metrics: Metrics,
    *,
    restore: Restore,
    interval: float,
    stopping: asyncio.Event | None = None,
) -> None:
    """Keep readiness true to Redis' state; after data loss, re-read facts before work resumes.

    A missing epoch key means Redis lost its data (or this is the first start), and so does
    a missing consumer group reported by a worker (``Readiness.report_lost``): the group is
    created again here, and only here, and ``restore`` re-reads the facts kept on the
    Kubernetes objects before any job is decided. Meanwhile ``/readyz`` answers 503 and
    jobs wait in the stream. A start-up path that failed half-way is taken again in full.
    """
    readiness.block("startup", "start-up facts not read yet")
    stopping = stopping or asyncio.Event()
    redo = False
    while not stopping.is_set():
        if readiness.lost.is_set():
            readiness.lost.clear()
            redo = True
        try:
            await store.ping()
            readiness.unblock("redis")
            if redo or await store.get_epoch() is None:
                redo = True
                readiness.block("startup", "Redis lost its data: re-reading start-up facts")
                await store.ensure_group()
                await restore()
                await store.set_epoch(uuid.uuid4().hex)
                redo = False
                log.info("epoch set; taking jobs")
            readiness.unblock("startup")
            stats = await store.queue_stats()
            metrics.queue_depth.set(stats.depth)
            metrics.queue_lag.set(stats.oldest_age_seconds)
        except StoreUnavailable as e:
            # /readyz is unauthenticated: say what is wrong, never the address or the text.
            log.warning("Redis unavailable: %s", e)
            readiness.block("redis", "Redis is unreachable or failing; see the receiver's log")
        except Exception as e:  # restore failed: stay unready and try again
            log.exception("re-reading start-up facts failed")
            readiness.block("startup", f"re-reading start-up facts failed: {e}")
        metrics.ready.set(1 if readiness.ready else 0)
        await _first_of(stopping, readiness.lost, seconds=interval)


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Wait until one of ``events`` is set, or ``seconds`` have passed."""
    waiters = {asyncio.ensure_future(e.wait()) for e in events}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
