"""Builders of ScoredRollouts for the filter tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

from rollstream.schemas import Rollout, Sampling, ScoredRollout, pack_floats, pack_ids
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
    return ScoredRollout(
        rollout=Rollout(
            rollout_id=f"{group_id}/{index}",
            group_id=group_id,
            task_id=task_id,
            task="toy",
            sample_index=index,
            group_size=group_size,
            prompt="q",
            completion=f"answer {index}" if completion is None else completion,
            prompt_ids=pack_ids([1]),
            completion_ids=pack_ids([2, 3]),
            logprobs=pack_floats([-0.5, -0.5]),
            finish_reason=finish,  # type: ignore[arg-type]
            policy_version=version,
            sampling=Sampling(n=group_size),
            produced_at=0.0,
        ),
        reward=reward,
        correct=correct,
        produced_at=0.0,
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
