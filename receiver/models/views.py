"""What the decision table reads from a fresh read of a workload, whatever its kind.

Values only: each kind builds them (``receiver.kinds``), ``receiver.decide`` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Revision:
    """An earlier revision of the workload (for a Deployment, one of its ReplicaSets; for
    blue-green, the standby slot; for canary, the stable Deployment)."""

    number: int
    """``deployment.kubernetes.io/revision``; the only order that counts (rule 7)."""
    version: str
    """The pod template's ``app.kubernetes.io/version`` label, ``""`` when absent."""
    name: str
    """The ReplicaSet's (or slot's, or Deployment's) name."""
    bad: bool = False
    """Marked bad: ``rollback-receiver.io/bad`` on it, or its version listed bad."""
    template: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The pod template without the ``pod-template-hash`` label: what an undo restores."""


@dataclass(frozen=True)
class WorkloadView:
    """What the rules read from a fresh GET of the workload."""

    strategy: str
    namespace: str
    name: str
    resource_version: str
    serving_version: str
    serving_revision: str
    became_current_at: datetime | None
    annotations: Mapping[str, str]
    spec_paused: bool
    gitops: str | None
    candidates: tuple[Revision, ...]
    """Earlier revisions, newest (highest number) first."""
    made_current_by_us: bool
    serving: Revision | None = None
    """The revision now serving, when it could be identified."""
    generation: int = 0
    """``metadata.generation`` of the object our write changes."""
    target_problem: str = ""
    """Why the strategy's fixed target cannot be used (a standby not ready, ...); ``""``
    when there is none or the strategy chooses among candidates."""
    unaffected_versions: Mapping[str, str] = field(default_factory=dict)
    """Versions that serve beside ``serving_version`` through an object the strategy does
    not change, each with why its action would not fix them (canary: the stable's)."""
