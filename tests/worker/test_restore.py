"""After Redis loses its data, the rollback history is read back from the workloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from receiver.annotations import CHANGED_AT as ANNOTATION_CHANGED_AT
from receiver.clients.k8s import Clusters
from receiver.policy import load_policy
from receiver.restore import restore_facts
from receiver.store import MemoryStore
from tests.worker.conftest import MODEL, NS


async def test_restore_reads_the_last_rollback_from_the_deployment_annotation(world):
    changed = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    await world.kube.patch(
        "deployments",
        NS,
        MODEL,
        {"metadata": {"annotations": {ANNOTATION_CHANGED_AT: "2026-11-25T08:30:00Z"}}},
    )
    store = MemoryStore(retention_seconds=3600)
    clusters = Clusters(world.kube.kubeconfig)
    try:
        await restore_facts(store, load_policy(world.policy_file), clusters)
    finally:
        await clusters.close()
    # Under the key the service's guards read: the workload's, not the model's name.
    got = await store.recent_rollbacks(f"{NS}/deployment/{MODEL}", changed - timedelta(hours=1))
    assert got == [changed]
    assert await store.recent_rollbacks(f"{NS}/{MODEL}", changed - timedelta(hours=1)) == []


async def test_restore_skips_a_model_whose_workload_is_missing(world, tmp_path):
    from tests.worker.conftest import write_policy

    policy = write_policy(tmp_path / "p.yaml", world.model_server.url, deployment="gone")
    store = MemoryStore(retention_seconds=3600)
    clusters = Clusters(world.kube.kubeconfig)
    try:
        await restore_facts(store, load_policy(policy), clusters)  # must not raise
    finally:
        await clusters.close()
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert await store.recent_rollbacks(f"{NS}/deployment/gone", since) == []
