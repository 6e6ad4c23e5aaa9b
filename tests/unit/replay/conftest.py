"""Builders of small Groups for the replay tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rollstream.schemas import Group, ScoredRollout
from rollstream.schemas import synthetic as syn


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
    return syn.scored(
        group_id,
        index,
        range(1, prompt_len + 1),
        range(10, 10 + completion_len),
        group_size=4,
        logprobs=logprob,
        reward=reward,
        correct=correct,
        task_id=task_id,
        finish_reason=finish,
        policy_version=version,
        temperature=1.0,
    )


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
    return syn.group(
        group_id,
        samples,
        advantages,
        reward_mean=sum(rewards) / n,
        pass_rate=pass_rate,
        estimator=estimator,
        task_id=task_id,
        policy_version=version,
    )


@pytest.fixture
def make_group() -> Callable[..., Group]:
    return group


@pytest.fixture
def make_scored() -> Callable[..., ScoredRollout]:
    return scored
