"""The built-in tasks' checkers as a reward: 1.0 when `get_task(rollout.task).check(completion,
answer)` says correct, else 0.0.

Unknown task or a rollout without an answer is an error (the rollout goes to the dead-letter
topic). Pure apart from importing the task (user tasks by dotted path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rollstream.schemas import Rollout
from rollstream.services.scorer.reward import RewardParams, parse_params, require_answer


def _default_lookup(name: str) -> Any:
    from rollstream.services.tasks import get_task

    return get_task(name)


class TaskCheck:
    """1.0 iff the task named by `rollout.task` accepts the completion, else 0.0."""

    name = "task"
    checker = True
    inline = True

    class Params(RewardParams):
        pass

    def __init__(self, lookup: Callable[[str], Any] | None = None, **params: object) -> None:
        parse_params(self.Params, dict(params), self.name)
        self._lookup = lookup or _default_lookup

    def score(self, rollout: Rollout) -> float:
        answer = require_answer(rollout, self.name)
        task = self._lookup(rollout.task)
        return 1.0 if task.check(rollout.completion, answer) else 0.0
