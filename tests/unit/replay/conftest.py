"""Builders of small Groups for the replay tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rollstream.schemas import (
    Group,
    GroupStats,
    Rollout,
    Sampling,
    ScoredRollout,
    pack_floats,
    pack_ids,
)


def scored(
    group_id: str,
    index: int,
    *,
    task_id: str = "t0",
    reward: float = 0.0,
    correct: bool | None = None,
    version: int = 0,
    prompt_len: int = 2,
    completion_len: int = 3,
    logprob: float = -1.0,
    finish: str = "stop",
) -> ScoredRollout:
    r = Rollout(
        rollout_id=f"{group_id}/{index}",
        group_id=group_id,
        task_id=task_id,
        task="toy",
        sample_index=index,
        group_size=4,
        prompt="p",
        completion="c",
        prompt_ids=pack_ids(range(1, prompt_len + 1)),
        completion_ids=pack_ids(range(10, 10 + completion_len)),
        logprobs=pack_floats([logprob] * completion_len),
        finish_reason=finish,
        policy_version=version,
        sampling=Sampling(n=4, temperature=1.0),
        produced_at=0.0,
    )
    return ScoredRollout(rollout=r, reward=reward, correct=correct, produced_at=0.0)


def group(
    group_id: str,
    *,
    task_id: str = "t0",
    version: int = 0,
    advantages: tuple[float, ...] = (1.0, -1.0),
    rewards: tuple[float, ...] | None = None,
    correct: tuple[bool | None, ...] | None = None,
    pass_rate: float = 0.5,
    completion_len: int = 3,
    estimator: str = "grpo",
    logprobs: tuple[float, ...] | None = None,
) -> Group:
    n = len(advantages)
    rewards = rewards or tuple(1.0 if a > 0 else 0.0 for a in advantages)
    correct = correct or (None,) * n
    logprobs = logprobs or (-1.0,) * n
    samples = [
        scored(
            group_id,
            i,
            task_id=task_id,
            reward=rewards[i],
            correct=correct[i],
            version=version,
            completion_len=completion_len,
            logprob=logprobs[i],
        )
        for i in range(n)
    ]
    stats = GroupStats(
        reward_mean=sum(rewards) / n,
        reward_std=0.5,
        pass_rate=pass_rate,
        generated=n,
        kept=n,
        estimator=estimator,
    )
    return Group(
        group_id=group_id,
        task_id=task_id,
        task="toy",
        samples=samples,
        advantages=list(advantages),
        stats=stats,
        policy_version=version,
        produced_at=0.0,
    )


@pytest.fixture
def make_group() -> Callable[..., Group]:
    return group


@pytest.fixture
def make_scored() -> Callable[..., ScoredRollout]:
    return scored
