"""The policy resolved once per job: the model's entry and its effective settings.

Resolved here, once, and passed down, so the decision, the guards' window and the
verification deadline all read the same values (model > its tier > defaults, the alert's
``tier`` label used only when the entry names none). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from receiver.models import LABEL_TIER, Job
from receiver.policy.schema import EffectiveSettings, ModelPolicy, Policy

__all__ = ["Resolved", "resolve", "resolve_model"]


@dataclass(frozen=True)
class Resolved:
    """What the policy says about one job: its model (None when unknown) and settings."""

    policy_version: str
    model: ModelPolicy | None
    settings: EffectiveSettings | None
    unknown_detail: str = ""
    """For an unknown model: why, and what to add to the policy."""

    @property
    def strategy(self) -> str:
        return self.settings.strategy.value if self.settings is not None else ""


def resolve(policy: Policy, job: Job) -> Resolved:
    """The model entry for the job's (cluster, namespace, model) and its settings."""
    model = policy.lookup(job.cluster, job.namespace, job.model)
    if model is None:
        return Resolved(policy.version, None, None, _unknown_model_detail(policy, job))
    return resolve_model(policy, model, alert_tier=job.labels.get(LABEL_TIER) or None)


def resolve_model(policy: Policy, model: ModelPolicy, *, alert_tier: str | None = None) -> Resolved:
    """Settings of a known model entry (readiness and control act on entries directly)."""
    return Resolved(policy.version, model, policy.effective(model, alert_tier=alert_tier))


def _unknown_model_detail(policy: Policy, job: Job) -> str:
    where = f" in cluster {job.cluster!r}" if job.cluster else ""
    detail = (
        f"{job.namespace}/{job.model}{where} is not in the policy file (version"
        f" {policy.version}): no action; add it under models to enable rollbacks"
    )
    if job.cluster and policy.lookup("", job.namespace, job.model) is not None:
        detail += (
            f"; an entry without cluster exists and matches only alerts without a cluster"
            f" label: add cluster: {job.cluster} to it"
        )
    return detail
