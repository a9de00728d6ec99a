"""Verdicts of verification: a rollout's progress and a health probe's answer.

Values only: the kinds judge rollouts (``receiver.kinds``), ``receiver.verify`` probes and
waits. Being unhealthy is an answer, not an exception.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """kubectl's judgement of a rollout: ``done``, ``failed`` (will not finish on its own),
    or neither (still waiting), with kubectl's wording in ``message``."""

    done: bool
    failed: bool
    message: str


@dataclass(frozen=True, slots=True)
class Check:
    """One request of a probe: what was asked, what came back, how long it took."""

    name: str
    url: str
    ok: bool
    status: int | None
    detail: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of a probe or of verification: healthy, or unhealthy with a reason a
    person can act on, plus the checks that led to it."""

    healthy: bool
    reason: str
    checks: tuple[Check, ...] = ()
