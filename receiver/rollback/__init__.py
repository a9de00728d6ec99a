"""Rollback strategies, one module each, chosen by the policy's ``strategy`` name."""

from __future__ import annotations

from receiver.errors import PermanentError
from receiver.policy import ModelPolicy
from receiver.rollback.base import Applied, Executor, Workload
from receiver.rollback.blue_green import BlueGreen
from receiver.rollback.canary import Canary
from receiver.rollback.rollout_undo import RolloutUndo

__all__ = [
    "Applied",
    "Executor",
    "StrategyUnavailable",
    "Workload",
    "executor_for",
    "workload_lease_key",
]

# Executors hold no state (clients come with each call): one of each serves every job.
_EXECUTORS: dict[str, Executor] = {
    executor.name: executor for executor in (RolloutUndo(), BlueGreen(), Canary())
}


class StrategyUnavailable(PermanentError):
    """The policy names a strategy this version cannot execute."""


def executor_for(strategy: str) -> Executor:
    """The executor of a strategy; ``StrategyUnavailable`` names what exists."""
    try:
        return _EXECUTORS[strategy]
    except KeyError:
        known = ", ".join(sorted(_EXECUTORS))
        raise StrategyUnavailable(
            f"strategy {strategy!r} cannot be executed by this receiver (available: {known});"
            " the alert is notified only"
        ) from None


def workload_lease_key(executor: Executor, model: ModelPolicy) -> str:
    """The key of the workload a model's actions change: the per-workload lease and the
    rollback history the guards count are both kept under it."""
    key = executor.workload_key(model)
    return f"{model.cluster}/{key}" if model.cluster else key
