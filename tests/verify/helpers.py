"""Helpers shared by this package's tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from receiver.models import RolloutStatus, Verdict

WAITING = RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")


DONE = RolloutStatus(True, False, 'deployment "fraud-scorer" successfully rolled out')


DEADLINE = RolloutStatus(False, True, 'deployment "fraud-scorer" exceeded its progress deadline')


HEALTHY = Verdict(True, "fraud-scorer v2 is healthy (5 checks passed)")


class Script:
    """An async callable answering the scripted values in turn, then the last one forever.

    Exceptions in the script are raised; ``on_call`` runs before each answer.
    """

    def __init__(self, answers: Sequence[Any], on_call: Callable[[], None] | None = None) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.on_call = on_call

    async def __call__(self) -> Any:
        if self.on_call is not None:
            self.on_call()
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer
