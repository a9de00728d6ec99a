"""What the steps of a job share: the resolved workload, and small readers of records.

Kept apart so the pipeline (``service``) and the manual jobs (``manual_jobs``) use one
definition without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from receiver.clients.k8s import KubeClient
from receiver.decide import Facts
from receiver.models import Incident
from receiver.policy import Resolved
from receiver.rollback import Executor, Workload

__all__ = ["JobTarget", "decision_inputs", "has_event"]


@dataclass
class JobTarget:
    """The workload a job acts on, once resolved: its strategy, cluster client and read."""

    resolved: Resolved
    executor: Executor | None = None
    kube: KubeClient | None = None
    workload: Workload | None = None
    problem: str = ""


def has_event(incident: Incident, kind: str) -> bool:
    return any(e.kind == kind for e in incident.events)


def decision_inputs(workload: Workload | None, facts: Facts) -> dict[str, Any]:
    if workload is None:
        return {"view": None, "problem": facts.workload_problem}
    view = workload.view
    return {
        "workload": f"{view.namespace}/{view.name}",
        "resource_version": view.resource_version,
        "generation": view.generation,
        "serving_version": view.serving_version,
        "serving_revision": view.serving_revision,
        "became_current_at": view.became_current_at.isoformat() if view.became_current_at else None,
        "spec_paused": view.spec_paused,
        "gitops": view.gitops,
        "candidates": [(r.number, r.version, r.bad) for r in view.candidates],
        "recent_rollbacks": len(facts.recent_rollbacks),
        "global_paused": facts.global_paused,
    }
