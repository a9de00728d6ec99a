"""Start-up facts: after Redis lost its data, re-read what the Kubernetes objects remember.

The decision reads each workload fresh anyway; what the store must learn again is the
rollback history the guards count (our ``changed-at`` annotation). Models are read in
parallel (bounded), each with the client's request timeout, so a broken entry costs one
timeout, not one per model in turn, while every worker waits.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from receiver.clients.k8s import Clusters
from receiver.errors import ReceiverError
from receiver.policy import Policy
from receiver.rollback import executor_for, workload_lease_key
from receiver.store import Store

log = logging.getLogger(__name__)

# Workloads read at once while restoring; the API server's default client QPS is about this.
_PARALLEL_READS = 8


@dataclass
class Restored:
    """What the start-up read found: models read, and the ones that could not be read."""

    read: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self, total: int) -> str:
        if not self.failed:
            return f"start-up facts read for all {total} models"
        names = ", ".join(sorted(self.failed))
        return (
            f"start-up facts read for {self.read} of {total} models; not read: {names}"
            " (their workloads are read fresh before any decision)"
        )


async def restore_facts(store: Store, policy: Policy, clusters: Clusters) -> Restored:
    """Re-read our last change of each model into the store's rollback history.

    A model whose workload cannot be read is reported, not fatal: one broken entry must
    not keep the whole receiver unready, and every decision re-reads its workload anyway.
    """
    result = Restored()
    gate = asyncio.Semaphore(_PARALLEL_READS)

    async def one(index: int) -> None:
        model = policy.models[index]
        name = f"{model.namespace}/{model.name}"
        async with gate:
            try:
                executor = executor_for(policy.effective(model).strategy.value)
                kube = await clusters.get(model.cluster)
                changed = await executor.last_change(kube, model)
            except ReceiverError as e:
                result.failed[name] = str(e)
                log.warning("start-up facts of %s not read: %s", name, e)
                return
        if changed is not None:
            # The same key the service counts under for the guards.
            await store.record_rollback(workload_lease_key(executor, model), changed)
        result.read += 1

    await asyncio.gather(*(one(i) for i in range(len(policy.models))))
    log.info(result.summary(len(policy.models)))
    return result
