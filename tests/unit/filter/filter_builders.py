"""Builders of ScoredRollouts for the filter tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

from rollstream.schemas import ScoredRollout, synthetic
from rollstream.services.filter.chain import KEEP, CandidateGroup, Decision, Filter, FilterParams


def scored(
    index: int,
    reward: float = 0.0,
    *,
    group_id: str = "g1",
    task_id: str = "t1",
    correct: bool | None = None,
    completion: str | None = None,
    finish: str = "stop",
    version: int = 0,
    group_size: int = 4,
) -> ScoredRollout:
    """Sample `index` of a group; its rollout_id is "<group_id>/<index>"."""
    return synthetic.scored(
        group_id,
        index,
        [1],
        [2, 3],
        group_size=group_size,
        logprobs=-0.5,
        reward=reward,
        correct=correct,
        task_id=task_id,
        text=("q", f"answer {index}" if completion is None else completion),
        finish_reason=finish,  # type: ignore[arg-type]
        policy_version=version,
    )


def group_of(rewards: list[float], **kw) -> list[ScoredRollout]:
    """One sample per reward, indices 0..n-1, group_size n."""
    return [scored(i, r, group_size=len(rewards), **kw) for i, r in enumerate(rewards)]


class Counting(Filter):
    """Keeps every group and counts them ("filter_builders:Counting"): state a live change of
    the chain must not reset."""

    name = "counting"

    class Params(FilterParams):
        limit: int = 100

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.seen = 0

    def apply(self, group: CandidateGroup) -> Decision:
        self.seen += 1
        return KEEP
